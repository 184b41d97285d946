-- Per-check figures the fixed columns cannot hold: phase timings in microseconds, the HTTP and
-- TLS versions, the address used, the served certificate's expiry, redirects, truncation.
-- One nullable jsonb column, so that adding a figure never needs another migration.
ALTER TABLE api_heartbeats ADD COLUMN IF NOT EXISTS details jsonb;
