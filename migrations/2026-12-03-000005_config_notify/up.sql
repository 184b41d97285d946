-- Two additions: a NOTIFY when the configuration changes, and a key that makes heartbeat
-- inserts idempotent.

-- Every committed statement that changes a configuration table sends one notification on the
-- channel `uptimeo_config`, with the table's name as payload. PostgreSQL delivers it at commit,
-- once per distinct payload per transaction; listening agents reload at once.
CREATE OR REPLACE FUNCTION uptimeo_notify_config_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('uptimeo_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    config_table text;
BEGIN
    FOREACH config_table IN ARRAY
        ARRAY['api_monitors', 'schedules', 'datacenter_monitors', 'datacenters']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS uptimeo_config_changed ON %I', config_table);
        EXECUTE format(
            'CREATE TRIGGER uptimeo_config_changed '
            'AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION uptimeo_notify_config_changed()',
            config_table);
    END LOOP;
END
$$;

-- One row per check: a result written twice (a spool replayed after a crash, a retry after a
-- lost commit acknowledgement) is skipped by `ON CONFLICT DO NOTHING` on this key. A unique
-- index on a partitioned table must contain the partition key, executed_at; a replayed row
-- carries the very same executed_at. Rows of the original agent have no scheduled_at (NULL),
-- and NULLs never conflict, so existing data cannot break the index.
CREATE UNIQUE INDEX IF NOT EXISTS api_heartbeats_check_key
    ON api_heartbeats (monitor_id, scheduled_at, executed_at);
