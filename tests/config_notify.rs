//! Configuration changes are applied at once: the agent LISTENs for the NOTIFY of the
//! configuration tables' triggers, and the poll (60 s here) is only the fallback.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;

/// When the agent logged that it started monitor `id` against `url`, if it did.
fn started_at(agent: &AgentProcess, id: i32, url: &str) -> Option<DateTime<Utc>> {
    agent
        .records_with("monitor started")
        .into_iter()
        .find(|r| r["monitor_id"] == id && r["url"] == url)
        .map(|r| {
            let ts = r["ts"].as_str().expect("ts");
            DateTime::parse_from_rfc3339(ts).expect("rfc3339").to_utc()
        })
}

/// Commits `sql`, then waits until monitor `id` starts against `url`; returns how long after
/// the statement was sent (an upper bound: it includes the test's connecting) the agent
/// started it.
async fn applied_after(db: &TestDb, agent: &AgentProcess, sql: &str, id: i32, url: &str) -> f64 {
    let sent = Utc::now();
    db.execute(sql);
    let started = wait_for(Duration::from_secs(10), "the change applied", || {
        let started = started_at(agent, id, url);
        async move { started }
    })
    .await;
    (started - sent).as_seconds_f64()
}

/// An URL edit, a new monitor, and an edit after the listening connection was killed are each
/// applied within 1 s, although the poll runs once a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_applied_within_a_second_without_waiting_for_the_poll() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(BASE_CONFIG);
    let url = |path: &str| http.url("http", "127.0.0.1", path);
    db.execute(&monitor_sql(1, "edited", "HTTP", &url("/old")));
    let agent = AgentProcess::run(&db.url, 1, &[("CONFIG_RELOAD_INTERVAL", "60".into())]);
    wait_for(Duration::from_secs(15), "the first monitor", || {
        let started = started_at(&agent, 1, &url("/old"));
        async move { started }
    })
    .await;
    agent
        .wait_for_msg("config listen started", Duration::from_secs(10))
        .await;

    let edit = format!(
        "UPDATE api_monitors SET url = '{}' WHERE id = 1",
        url("/new")
    );
    let edited = applied_after(&db, &agent, &edit, 1, &url("/new")).await;
    let added = applied_after(
        &db,
        &agent,
        &monitor_sql(2, "added", "HTTP", &url("/added")),
        2,
        &url("/added"),
    )
    .await;

    // The listening connection dies: the agent listens again and catches up.
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    );
    agent
        .wait_for_msg(
            "config listen lost; polling until it is back",
            Duration::from_secs(10),
        )
        .await;
    wait_for(Duration::from_secs(10), "listening again", || {
        let n = agent.records_with("config listen started").len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let edit = format!(
        "UPDATE api_monitors SET url = '{}' WHERE id = 1",
        url("/again")
    );
    let after_reconnect = applied_after(&db, &agent, &edit, 1, &url("/again")).await;

    eprintln!(
        "applied after: url edit {edited:.3} s, new monitor {added:.3} s, \
         edit after reconnect {after_reconnect:.3} s"
    );
    for (what, seconds) in [
        ("url edit", edited),
        ("new monitor", added),
        ("edit after reconnect", after_reconnect),
    ] {
        assert!(seconds < 1.0, "{what} applied after {seconds:.3} s");
    }
}
