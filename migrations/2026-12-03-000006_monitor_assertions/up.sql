-- What a monitor expects of its target, and how it reaches it. Every column is nullable and
-- NULL keeps the behaviour of a row written before this migration: any 2xx status, no body
-- check, the schedule's interval as the timeout, 10 redirects, both address families,
-- certificates verified, no expiry margin.
ALTER TABLE api_monitors
    ADD COLUMN IF NOT EXISTS expected_status text,
    ADD COLUMN IF NOT EXISTS body_match text,
    ADD COLUMN IF NOT EXISTS body_match_mode varchar(20),
    ADD COLUMN IF NOT EXISTS timeout_ms int,
    ADD COLUMN IF NOT EXISTS max_redirects int,
    ADD COLUMN IF NOT EXISTS ip_family varchar(4),
    ADD COLUMN IF NOT EXISTS tls_verify boolean,
    ADD COLUMN IF NOT EXISTS min_cert_days int;

COMMENT ON COLUMN api_monitors.expected_status IS
    'Accepted HTTP status codes, e.g. 200-299,301 (NULL: any 2xx)';
COMMENT ON COLUMN api_monitors.body_match IS
    'Text (or regular expression) the decoded body must contain, see body_match_mode';
COMMENT ON COLUMN api_monitors.body_match_mode IS
    'contains (default), not_contains, regex or not_regex';
COMMENT ON COLUMN api_monitors.timeout_ms IS
    'Longest a check may take, in ms, at most the interval (NULL: the interval)';
COMMENT ON COLUMN api_monitors.max_redirects IS
    'Most redirects followed, 0 to not follow (NULL: 10)';
COMMENT ON COLUMN api_monitors.ip_family IS 'any (default), 4 or 6';
COMMENT ON COLUMN api_monitors.tls_verify IS
    'false accepts any certificate, still recorded (NULL: verify)';
COMMENT ON COLUMN api_monitors.min_cert_days IS
    'Fail when the served certificate expires in fewer days (NULL: no margin)';
