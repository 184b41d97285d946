DROP FUNCTION IF EXISTS uptimeo_sync_sequences();
DROP FUNCTION IF EXISTS uptimeo_ensure_heartbeat_partition(date);
DROP TABLE IF EXISTS datacenter_leases;
ALTER TABLE api_heartbeats DROP COLUMN IF EXISTS scheduled_at;
ALTER TABLE api_heartbeats DROP COLUMN IF EXISTS lease_epoch;
ALTER TABLE api_heartbeats DROP COLUMN IF EXISTS status;
