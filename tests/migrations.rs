//! Migrations: fresh databases, databases of the original agent, concurrent agents.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use uptimeo_agent::db::heartbeats::{self, PartitionOutcome};
use uptimeo_agent::db::DbTarget;

/// Columns of every table in the public schema, as "table.column type".
async fn schema_snapshot(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT table_name || '.' || column_name || ' ' || data_type \
             FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn migrate_process(url: &str) -> (bool, Vec<serde_json::Value>) {
    let mut agent = AgentProcess::start(&["migrate"], &[("DB_CONN_STRING", url.to_string())]);
    let status = agent
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("migrate exits");
    tokio::time::sleep(Duration::from_millis(100)).await;
    (status.success(), agent.records())
}

fn applied_count(records: &[serde_json::Value]) -> i64 {
    records
        .iter()
        .find(|r| r["msg"] == "migrations applied")
        .and_then(|r| r["count"].as_i64())
        .expect("a 'migrations applied' line")
}

/// A fresh database gets the schema; a second run applies nothing and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_database_migrates_once_and_a_second_run_changes_nothing() {
    let db = TestDb::empty();
    let (ok, records) = migrate_process(&db.url).await;
    assert!(ok, "{records:?}");
    assert!(applied_count(&records) >= 2);
    let before = schema_snapshot(&db).await;
    for table in [
        "schedules.interval integer",
        "api_heartbeats.status character varying",
        "datacenter_leases.epoch bigint",
    ] {
        assert!(before.iter().any(|c| c == table), "{table} missing");
    }

    let (ok, records) = migrate_process(&db.url).await;
    assert!(ok);
    assert_eq!(applied_count(&records), 0);
    assert_eq!(schema_snapshot(&db).await, before);
}

/// Over a database built by the original agent's SQL, with rows and a partition of another
/// name covering today: every row stays, sequences stop lagging, today's rows still insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrates_over_an_original_database_without_losing_rows() {
    let db = TestDb::empty();
    db.execute(include_str!("fixtures/original_schema.sql"));
    let client = db.client().await;
    let dump = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, serde_json::Value>(0))
                .collect::<Vec<_>>()
        }
    };
    const HEARTBEATS: &str = "SELECT to_jsonb(h) FROM api_heartbeats h ORDER BY id";
    const MONITORS: &str = "SELECT to_jsonb(m) FROM api_monitors m ORDER BY id";
    let (heartbeats_before, monitors_before) = (dump(HEARTBEATS).await, dump(MONITORS).await);
    assert_eq!(heartbeats_before.len(), 50);

    let (ok, records) = migrate_process(&db.url).await;
    assert!(ok, "{records:?}");

    // Rows unchanged but for the new columns, which are null (so existing monitors keep
    // their behaviour).
    let strip = |rows: Vec<serde_json::Value>, added: &[&str]| {
        rows.into_iter()
            .map(|mut r| {
                for c in added {
                    let value = r.as_object_mut().unwrap().remove(*c);
                    assert_eq!(value, Some(serde_json::Value::Null), "new column {c}");
                }
                r
            })
            .collect::<Vec<_>>()
    };
    let heartbeat_columns = ["status", "lease_epoch", "scheduled_at", "details"];
    let monitor_columns = [
        "expected_status",
        "body_match",
        "body_match_mode",
        "timeout_ms",
        "max_redirects",
        "ip_family",
        "tls_verify",
        "min_cert_days",
    ];
    assert_eq!(
        strip(dump(HEARTBEATS).await, &heartbeat_columns),
        heartbeats_before
    );
    assert_eq!(
        strip(dump(MONITORS).await, &monitor_columns),
        monitors_before
    );

    // No duplicate indexes were built over the existing ones.
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'api_heartbeats'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        indexes, 5,
        "primary key, the two original indexes, the check key (for idempotent inserts) and \
         the covering (agent_id, executed_at) index (for datacenter queries)"
    );

    // Sequences moved past the seed's explicit ids.
    client
        .batch_execute("INSERT INTO schedules (name, interval) VALUES ('new', 30)")
        .await
        .expect("no id clash");

    // Today is covered by the user's partition; the agent leaves it alone and rows still land.
    let target = DbTarget::parse(&db.url).unwrap();
    let mut conn = target.connect().await.unwrap();
    let today = Utc::now().date_naive();
    assert_eq!(
        heartbeats::ensure_partition(&mut conn, today)
            .await
            .unwrap(),
        PartitionOutcome::Covered
    );
    client
        .batch_execute("INSERT INTO api_heartbeats (monitor_id, agent_id, executed_at, success) VALUES (1, 1, now() AT TIME ZONE 'UTC', true)")
        .await
        .expect("insert today");
    let total: i64 = client
        .query_one("SELECT count(*) FROM api_heartbeats", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 51);
}

/// Several agents migrating one empty database at once: all succeed, migrations run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_run_exactly_once() {
    let db = TestDb::empty();
    let runs = (0..4).map(|_| migrate_process(&db.url));
    let results = futures_util::future::join_all(runs).await;
    let mut total_applied = 0;
    for (ok, records) in &results {
        assert!(ok, "{records:?}");
        total_applied += applied_count(records);
    }
    let versions: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM __diesel_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total_applied, versions,
        "each migration applied by exactly one agent"
    );
}

/// Many agents creating the same day's partition at once: all succeed, one creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_partition_creation_is_safe() {
    let db = TestDb::migrated();
    let target = DbTarget::parse(&db.url).unwrap();
    let day = Utc::now().date_naive() + chrono::Days::new(40);
    let attempts = (0..6).map(|_| {
        let target = target.clone();
        async move {
            let mut conn = target.connect().await.unwrap();
            heartbeats::ensure_partition(&mut conn, day)
                .await
                .expect("no failure")
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let created = outcomes
        .iter()
        .filter(|o| **o == PartitionOutcome::Created)
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, PartitionOutcome::Created | PartitionOutcome::Exists)));
}

/// A schema migrated by a newer agent (versions this binary does not embed): the running agent
/// warns once per new set of unknown versions, naming them, and keeps running its checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_warned_about_once() {
    const NEWER: &str = "database schema is newer than this agent";
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 1));
    let agent = AgentProcess::run(&db.url, 1, &[]);
    agent
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let unchanged = || agent.records_with("config unchanged").len();
    // Reloads (one a second) come and go without a word while the schema is known.
    let before = unchanged();
    wait_for(Duration::from_secs(10), "two reloads", || {
        let n = unchanged();
        async move { (n >= before + 2).then_some(()) }
    })
    .await;
    assert!(agent.records_with(NEWER).is_empty());

    for (version, expected) in [
        ("20991231000001", "20991231000001"),
        ("20991231000002", "20991231000001,20991231000002"),
    ] {
        db.execute(&format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{version}')"
        ));
        let warned = wait_for(Duration::from_secs(10), "the warning", || {
            let found = agent
                .records_with(NEWER)
                .into_iter()
                .find(|r| r["unknown_versions"] == expected);
            async move { found }
        })
        .await;
        assert_eq!(warned["level"], "WARN");
        assert!(warned["known_versions"]
            .as_str()
            .is_some_and(|v| v.contains("20261203000001")));
        // Three more reloads say nothing more.
        let seen = unchanged();
        wait_for(Duration::from_secs(10), "three more reloads", || {
            let n = unchanged();
            async move { (n >= seen + 3).then_some(()) }
        })
        .await;
        let warnings = agent.records_with(NEWER);
        assert_eq!(
            warnings
                .iter()
                .filter(|r| r["unknown_versions"] == expected)
                .count(),
            1,
            "{warnings:?}"
        );
    }
    assert_eq!(agent.records_with(NEWER).len(), 2);
    assert!(executed_checks(&agent) > 0, "checks ran throughout");
}
