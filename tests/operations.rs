//! What an operator runs the agent with: the health port's endpoints and retention, against a
//! real agent process, real PostgreSQL and a loopback HTTP target.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// `GET http://127.0.0.1:{port}{path}`: status and body, or `None` while nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The value of one series (`name{labels}` exactly as exposed) in a metrics exposition.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until `path` answers `status`, and returns the body.
async fn wait_for_status(port: u16, path: &str, status: u16) -> String {
    wait_for(
        Duration::from_secs(20),
        &format!("{path} to answer {status}"),
        || async {
            get(port, path)
                .await
                .filter(|(s, _)| *s == status)
                .map(|(_, body)| body)
        },
    )
    .await
}

/// An active agent checking a loopback server: alive, ready as active, and every family of
/// metrics moves; once its database is gone, it is alive but not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_agent_serves_healthz_readyz_and_metrics() {
    let db = TestDb::migrated();
    let target = TestServer::http().await;
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(
        1,
        "plain",
        "HTTP",
        &target.url("http", "127.0.0.1", "/ok"),
    ));
    let port = refused_port();
    let _agent = AgentProcess::run(&db.url, 1, &[("HEALTH_PORT", port.to_string())]);

    assert_eq!(wait_for_status(port, "/healthz", 200).await, "ok\n");
    assert_eq!(
        wait_for_status(port, "/readyz", 200).await,
        "ready: active\n"
    );
    let up = r#"uptimeo_checks_total{monitor_type="HTTP",status="up"}"#;
    let text = wait_for(
        Duration::from_secs(20),
        "checks and rows counted",
        || async {
            let (_, text) = get(port, "/metrics").await?;
            let counted = metric(&text, up)? >= 2.0
                && metric(&text, "uptimeo_heartbeats_written_total")? >= 1.0;
            counted.then_some(text)
        },
    )
    .await;

    assert_eq!(metric(&text, "uptimeo_lease_active"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "uptimeo_lease_epoch"), Some(1.0));
    let changed = r#"uptimeo_config_reloads_total{outcome="changed"}"#;
    assert_eq!(metric(&text, changed), Some(1.0));
    let connect_phase = r#"uptimeo_check_phase_seconds_count{phase="connect"}"#;
    assert!(metric(&text, connect_phase).unwrap_or(0.0) >= 2.0, "{text}");
    // An IP literal needs no lookup: no DNS phase was observed.
    let dns = r#"uptimeo_check_phase_seconds_count{phase="dns"}"#;
    assert_eq!(metric(&text, dns), Some(0.0));
    assert!(metric(&text, "uptimeo_schedule_lateness_seconds_count").unwrap_or(0.0) >= 2.0);
    assert!(metric(&text, "uptimeo_writer_batch_rows_count").unwrap_or(0.0) >= 1.0);
    assert_eq!(metric(&text, "uptimeo_write_errors_total"), Some(0.0));
    assert!(metric(&text, "uptimeo_writer_queue_rows").is_some());
    assert_eq!(get(port, "/nothing-here").await.map(|(s, _)| s), Some(404));

    // The database disappears: still alive, no longer ready.
    let drop_sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name);
    connect(&admin_url())
        .await
        .batch_execute(&drop_sql)
        .await
        .expect("drop");
    let body = wait_for_status(port, "/readyz", 503).await;
    assert!(body.starts_with("not ready:"), "{body}");
    assert_eq!(get(port, "/healthz").await.map(|(s, _)| s), Some(200));
}

/// With its database cut off (connections closed as they open), `/readyz` and the lease's
/// log lines say that no connection could be made and why, not that a query timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_off_is_reported_as_unreachable_with_the_reason() {
    let db = TestDb::migrated();
    db.execute(BASE_CONFIG);
    let proxy = TcpProxy::start(url_host_port(&db.url)).await;
    let port = refused_port();
    let agent = AgentProcess::run(&proxy.url(&db.url), 1, &[("HEALTH_PORT", port.to_string())]);
    agent
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    wait_for_status(port, "/readyz", 200).await;
    proxy.cut();
    let body = wait_for_status(port, "/readyz", 503).await;
    assert!(
        body.starts_with("not ready: database unreachable: no database connection within"),
        "{body}"
    );
    let renewal = agent
        .wait_for_msg("lease renewal failed", Duration::from_secs(15))
        .await;
    let error = renewal["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("no database connection within"),
        "{error}"
    );
}

/// A standby is ready (it can take over) and says it does not hold the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_is_ready_and_reports_the_lease_as_not_held() {
    let db = TestDb::migrated();
    db.execute(BASE_CONFIG);
    let (active_port, standby_port) = (refused_port(), refused_port());
    let active = AgentProcess::run(&db.url, 1, &[("HEALTH_PORT", active_port.to_string())]);
    active
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let standby = AgentProcess::run(&db.url, 2, &[("HEALTH_PORT", standby_port.to_string())]);
    standby
        .wait_for_msg(
            "waiting as standby: another agent holds the lock",
            Duration::from_secs(15),
        )
        .await;

    assert_eq!(
        wait_for_status(standby_port, "/readyz", 200).await,
        "ready: standby\n"
    );
    let (_, text) = get(standby_port, "/metrics").await.expect("metrics");
    assert_eq!(metric(&text, "uptimeo_lease_active"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "uptimeo_lease_epoch"), Some(0.0));
    let (_, text) = get(active_port, "/metrics").await.expect("metrics");
    assert_eq!(metric(&text, "uptimeo_lease_active"), Some(1.0), "{text}");
}

/// Names of the partitions attached to `api_heartbeats`.
async fn partitions(db: &TestDb) -> BTreeSet<String> {
    db.client()
        .await
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'api_heartbeats'::regclass",
            &[],
        )
        .await
        .expect("partitions")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Partitions of past days, each holding a row: a standby drops nothing; once it holds the
/// lease, exactly the daily partitions wholly older than 30 days go, and with them their
/// rows, while a differently named old partition and the 30th day stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_expired_daily_partitions_once_lease_holder() {
    let db = TestDb::migrated();
    db.execute(BASE_CONFIG);
    let client = db.client().await;
    let today: chrono::NaiveDate = client
        .query_one("SELECT (now() AT TIME ZONE 'utc')::date", &[])
        .await
        .expect("today")
        .get(0);
    let day = |ago: u64| today - chrono::Days::new(ago);
    let name = |ago: u64| format!("api_heartbeats_{}", day(ago).format("%Y_%m_%d"));
    for ago in [40, 31, 30, 2] {
        db.execute(&format!(
            "SELECT uptimeo_ensure_heartbeat_partition('{d}'); \
             INSERT INTO api_heartbeats (executed_at, success) VALUES ('{d} 12:00', true);",
            d = day(ago)
        ));
    }
    db.execute(
        "CREATE TABLE api_heartbeats_archive PARTITION OF api_heartbeats \
             FOR VALUES FROM ('2020-01-01') TO ('2021-01-01'); \
         INSERT INTO api_heartbeats (executed_at, success) VALUES ('2020-06-01', true); \
         INSERT INTO datacenter_leases (datacenter_id, holder_agent_id, holder_instance, epoch, \
             expires_at) VALUES (1, 2, 'another agent', 4, now() + interval '1 hour');",
    );
    let before = partitions(&db).await;

    let agent = AgentProcess::run(
        &db.url,
        1,
        &[
            ("RETENTION_DAYS", "30".to_string()),
            ("RETENTION_CHECK_INTERVAL", "0.2".to_string()),
        ],
    );
    let skipped = "retention sweep skipped: not the lease holder";
    wait_for(Duration::from_secs(15), "two sweeps as standby", || async {
        (agent.records_with(skipped).len() >= 2).then_some(())
    })
    .await;
    assert!(agent.records_with("partition dropped").is_empty());
    assert!(partitions(&db).await.is_superset(&before));

    // The other holder's lease runs out: this agent takes it and sweeps.
    db.execute("UPDATE datacenter_leases SET expires_at = now() WHERE datacenter_id = 1");
    agent
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let dropped = wait_for(
        Duration::from_secs(15),
        "two partitions dropped",
        || async {
            let records = agent.records_with("partition dropped");
            (records.len() >= 2).then_some(records)
        },
    )
    .await;
    let dropped: BTreeSet<String> = dropped
        .iter()
        .map(|r| r["partition"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(dropped, BTreeSet::from([name(40), name(31)]));

    let after = partitions(&db).await;
    for kept in [name(30), name(2), "api_heartbeats_archive".to_string()] {
        assert!(after.contains(&kept), "{kept} missing from {after:?}");
    }
    assert!(!after.contains(&name(40)) && !after.contains(&name(31)));
    // Dropped, not detached and left behind.
    let leftover: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = ANY($1)",
            &[&vec![name(40), name(31)]],
        )
        .await
        .expect("leftover")
        .get(0);
    assert_eq!(leftover, 0);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM api_heartbeats", &[])
        .await
        .expect("rows")
        .get(0);
    assert_eq!(rows, 3, "the rows of day 30, day 2 and the archive remain");
    // Later sweeps find nothing more to drop.
    let finished = "retention sweep finished";
    let sweeps = agent.records_with(finished).len();
    wait_for(Duration::from_secs(15), "two more sweeps", || async {
        (agent.records_with(finished).len() >= sweeps + 2).then_some(())
    })
    .await;
    assert_eq!(agent.records_with("partition dropped").len(), 2);
}
