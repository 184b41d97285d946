-- The original agent's schema, exactly. Every statement is conditional so that this migration
-- also applies over a database that the original agent's SQL already created, with its rows and
-- its partitions (of any name) left as they are.

CREATE TABLE IF NOT EXISTS schedules (
    id serial PRIMARY KEY,
    name varchar(50) NOT NULL,
    interval int NOT NULL,
    include_response_body boolean DEFAULT false,
    thresholds_warning int,
    thresholds_critical int
);

CREATE TABLE IF NOT EXISTS api_monitors (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL,
    method varchar(10) NOT NULL,
    type varchar(10) NOT NULL,
    url text NOT NULL,
    schedule_id int REFERENCES schedules,
    headers jsonb,
    body jsonb
);

CREATE TABLE IF NOT EXISTS regions (
    id serial PRIMARY KEY,
    name varchar(50) NOT NULL,
    region_code varchar(20),
    group_name varchar(20)
);

CREATE TABLE IF NOT EXISTS datacenters (
    id serial PRIMARY KEY,
    code varchar(10) NOT NULL,
    name varchar(50) NOT NULL,
    region_id int REFERENCES regions
);

CREATE TABLE IF NOT EXISTS datacenter_monitors (
    datacenter_id int REFERENCES datacenters ON DELETE CASCADE,
    monitor_id int REFERENCES api_monitors ON DELETE CASCADE,
    PRIMARY KEY (datacenter_id, monitor_id)
);

CREATE TABLE IF NOT EXISTS agents (
    id serial PRIMARY KEY,
    name varchar(50) NOT NULL,
    datacenter_id int REFERENCES datacenters
);

CREATE TABLE IF NOT EXISTS api_heartbeats (
    id bigserial,
    monitor_id int REFERENCES api_monitors,
    agent_id int REFERENCES agents,
    executed_at timestamp NOT NULL,
    success boolean,
    response_time_ms int,
    response_size_bytes int,
    response_status_code int,
    response_content_type varchar(50),
    response_server varchar(50),
    response_cache_status varchar(50),
    dns_lookup_ms int,
    tcp_connect_ms int,
    tls_handshake_ms int,
    time_to_first_byte_ms int,
    warning_threshold_ms int,
    critical_threshold_ms int,
    error_type varchar(50),
    error_message text,
    raw_request_headers jsonb,
    raw_response_headers jsonb,
    raw_response_body jsonb,
    PRIMARY KEY (id, executed_at)
) PARTITION BY RANGE (executed_at);

-- The two indexes, unless the database already has equivalent ones under other names: building
-- a duplicate over every existing partition would cost time and disk for nothing.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_indexes
        WHERE schemaname = current_schema() AND tablename = 'api_heartbeats'
          AND indexdef LIKE '%(executed_at DESC)'
    ) THEN
        CREATE INDEX api_heartbeats_executed_at_idx ON api_heartbeats (executed_at DESC);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_indexes
        WHERE schemaname = current_schema() AND tablename = 'api_heartbeats'
          AND indexdef LIKE '%(monitor_id, executed_at)'
    ) THEN
        CREATE INDEX api_heartbeats_monitor_id_executed_at_idx
            ON api_heartbeats (monitor_id, executed_at);
    END IF;
END
$$;
