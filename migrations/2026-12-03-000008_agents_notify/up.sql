-- Changes to `agents` notify too, so that an agent whose row is deleted or moved to another
-- datacenter stops at once rather than at the next poll.
DROP TRIGGER IF EXISTS uptimeo_config_changed ON agents;
CREATE TRIGGER uptimeo_config_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION uptimeo_notify_config_changed();
