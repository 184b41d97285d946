DROP INDEX IF EXISTS api_heartbeats_check_key;
DROP TRIGGER IF EXISTS uptimeo_config_changed ON api_monitors;
DROP TRIGGER IF EXISTS uptimeo_config_changed ON schedules;
DROP TRIGGER IF EXISTS uptimeo_config_changed ON datacenter_monitors;
DROP TRIGGER IF EXISTS uptimeo_config_changed ON datacenters;
DROP FUNCTION IF EXISTS uptimeo_notify_config_changed();
