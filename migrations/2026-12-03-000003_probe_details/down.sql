ALTER TABLE api_heartbeats DROP COLUMN IF EXISTS details;
