DROP TRIGGER IF EXISTS uptimeo_config_changed ON agents;
