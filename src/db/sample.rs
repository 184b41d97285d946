//! The sample configuration used by the README's quick start and by `compose.yaml`: nine
//! datacenters with two agents each, and one monitor aimed at the agent's own `/healthz`, so
//! that heartbeats arrive without internet access.

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use super::DbError;

/// Rows are inserted only where absent (explicit ids, `ON CONFLICT DO NOTHING`); the sequences
/// are then moved past the highest id so that later inserts without ids never collide.
const SAMPLE_SQL: &str = r#"
INSERT INTO regions (id, name, region_code, group_name) VALUES
    (1, 'North America', 'na', 'americas'),
    (2, 'Europe', 'eu', 'emea'),
    (3, 'Asia Pacific', 'apac', 'apac')
ON CONFLICT (id) DO NOTHING;

INSERT INTO datacenters (id, code, name, region_id) VALUES
    (1, 'va', 'Virginia', 1),
    (2, 'ny', 'New York', 1),
    (3, 'rdn', 'Reading', 2),
    (4, 'chi', 'Chicago', 1),
    (5, 'sf', 'San Francisco', 1),
    (6, 'lon', 'London', 2),
    (7, 'dam', 'Amsterdam', 2),
    (8, 'sto', 'Stockholm', 2),
    (9, 'syd', 'Sydney', 3)
ON CONFLICT (id) DO NOTHING;

INSERT INTO agents (id, name, datacenter_id)
SELECT d.id * 2 - 2 + n, d.code || '-' || n, d.id
FROM datacenters d CROSS JOIN (VALUES (1), (2)) AS k(n)
WHERE d.id BETWEEN 1 AND 9
ON CONFLICT (id) DO NOTHING;

INSERT INTO schedules
    (id, name, interval, include_response_body, thresholds_warning, thresholds_critical)
VALUES (1, 'every 10 seconds', 10, true, 200, 1000)
ON CONFLICT (id) DO NOTHING;

INSERT INTO api_monitors (id, name, method, type, url, schedule_id, headers, body) VALUES
    (1, 'agent health', 'GET', 'HTTP', 'http://127.0.0.1:8080/healthz', 1,
     '{"Accept": "text/plain"}', NULL)
ON CONFLICT (id) DO NOTHING;

INSERT INTO datacenter_monitors (datacenter_id, monitor_id)
SELECT id, 1 FROM datacenters WHERE id BETWEEN 1 AND 9
ON CONFLICT DO NOTHING;

SELECT uptimeo_sync_sequences();
"#;

/// Inserts the sample configuration where its rows are absent.
pub async fn insert_sample(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    conn.batch_execute(SAMPLE_SQL).await?;
    Ok(())
}
