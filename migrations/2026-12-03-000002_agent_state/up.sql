-- What this agent adds to the original schema. Only additions: new tables, nullable columns.

-- up, warning, critical or down.
ALTER TABLE api_heartbeats ADD COLUMN IF NOT EXISTS status varchar(10);
-- The lease epoch (fencing token) under which the check ran.
ALTER TABLE api_heartbeats ADD COLUMN IF NOT EXISTS lease_epoch bigint;
-- The schedule slot (UTC) the check belongs to; executed_at is when it actually started.
ALTER TABLE api_heartbeats ADD COLUMN IF NOT EXISTS scheduled_at timestamp;

-- One row per datacenter: who runs its checks, under which epoch, until when (database clock).
CREATE TABLE IF NOT EXISTS datacenter_leases (
    datacenter_id int PRIMARY KEY REFERENCES datacenters ON DELETE CASCADE,
    holder_agent_id int,
    holder_instance text,
    epoch bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    renewed_at timestamptz,
    expires_at timestamptz NOT NULL
);

-- Creates the UTC day's partition of api_heartbeats unless one exists. Several agents may call
-- this at once: a transaction-scoped advisory lock serialises them. A day already covered, even
-- partly, by a partition of another name is left alone.
-- Returns 'created', 'exists' or 'covered'.
CREATE OR REPLACE FUNCTION uptimeo_ensure_heartbeat_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part_name text := format('api_heartbeats_%s', to_char(day, 'YYYY_MM_DD'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('uptimeo-agent:api_heartbeats:partitions'));
    IF to_regclass(quote_ident(part_name)) IS NOT NULL THEN
        RETURN 'exists';
    END IF;
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF api_heartbeats FOR VALUES FROM (%L) TO (%L)',
            part_name, day::timestamp, (day + 1)::timestamp);
    EXCEPTION WHEN invalid_object_definition THEN
        -- "would overlap partition ...": another partition already holds this range.
        RETURN 'covered';
    END;
    RETURN 'created';
END
$$;

-- Seed data is loaded with explicit ids, which leaves the sequences behind max(id). Moves each
-- sequence of the original tables past the highest id so that inserts without ids never
-- collide. Called here once, and again after the sample configuration is inserted.
CREATE OR REPLACE FUNCTION uptimeo_sync_sequences() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    seq text;
BEGIN
    FOREACH t IN ARRAY ARRAY['schedules', 'api_monitors', 'regions', 'datacenters', 'agents',
                             'api_heartbeats']
    LOOP
        seq := pg_get_serial_sequence(t, 'id');
        IF seq IS NOT NULL THEN
            EXECUTE format('SELECT setval(%L, COALESCE((SELECT max(id) FROM %I), 0) + 1, false)',
                           seq, t);
        END IF;
    END LOOP;
END
$$;

SELECT uptimeo_sync_sequences();
