ALTER TABLE api_monitors
    DROP COLUMN IF EXISTS expected_status,
    DROP COLUMN IF EXISTS body_match,
    DROP COLUMN IF EXISTS body_match_mode,
    DROP COLUMN IF EXISTS timeout_ms,
    DROP COLUMN IF EXISTS max_redirects,
    DROP COLUMN IF EXISTS ip_family,
    DROP COLUMN IF EXISTS tls_verify,
    DROP COLUMN IF EXISTS min_cert_days;
