//! The agent as a process against real PostgreSQL and real loopback servers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Heartbeat rows of a monitor as JSON objects, oldest first.
async fn heartbeats(db: &TestDb, monitor_id: i32) -> Vec<serde_json::Value> {
    db.client()
        .await
        .query(
            "SELECT to_jsonb(h) FROM api_heartbeats h WHERE monitor_id = $1 ORDER BY executed_at",
            &[&monitor_id],
        )
        .await
        .expect("heartbeats")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn first_heartbeat(db: &TestDb, monitor_id: i32) -> serde_json::Value {
    wait_for(Duration::from_secs(20), "a heartbeat", || async {
        heartbeats(db, monitor_id).await.into_iter().next()
    })
    .await
}

/// HTTP, HTTPS (through localhost, trusted through the test's CA) and a refused port: every
/// stored field, the partitions, and /healthz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stores_timed_heartbeats_for_http_https_and_refused_port() {
    let db = TestDb::migrated();
    let pki = TestPki::new();
    let http = TestServer::http().await;
    let https = TestServer::https(&pki).await;
    let refused = refused_port();
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(
        1,
        "plain",
        "HTTP",
        &http.url("http", "127.0.0.1", "/ok"),
    ));
    db.execute(&monitor_sql(
        2,
        "secure",
        "HTTPS",
        &https.url("https", "localhost", "/ok"),
    ));
    db.execute(&monitor_sql(
        3,
        "refused",
        "HTTP",
        &format!("http://127.0.0.1:{refused}/"),
    ));
    db.execute(
        "UPDATE api_monitors SET headers = '{\"Authorization\": \"Bearer hunter2\"}' WHERE id = 1",
    );
    let health_port = refused_port();

    let agent = AgentProcess::run(
        &db.url,
        1,
        &[
            ("SSL_CERT_FILE", pki.ca_file.path().display().to_string()),
            ("HEALTH_PORT", health_port.to_string()),
        ],
    );
    agent
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;

    // Plain HTTP to an IP literal: no lookup, no handshake.
    let plain = first_heartbeat(&db, 1).await;
    assert_eq!(plain["success"], true, "{plain}");
    assert_eq!(plain["status"], "up");
    assert_eq!(plain["agent_id"], 1);
    assert_eq!(plain["response_status_code"], 200);
    assert_eq!(plain["response_content_type"], "application/json");
    assert_eq!(plain["response_server"], "uptimeo-test");
    assert_eq!(plain["response_cache_status"], "HIT");
    assert_eq!(plain["response_size_bytes"], TEST_BODY.len());
    assert_eq!(plain["raw_response_body"], json!({"ok": true}));
    assert_eq!(plain["raw_response_headers"]["server"], "uptimeo-test");
    assert_eq!(plain["raw_request_headers"]["authorization"], "***");
    assert!(plain["raw_request_headers"]["user-agent"]
        .as_str()
        .unwrap()
        .starts_with("uptimeo"));
    assert_eq!(plain["warning_threshold_ms"], 200);
    assert_eq!(plain["critical_threshold_ms"], 1000);
    assert!(plain["dns_lookup_ms"].is_null());
    assert!(plain["tls_handshake_ms"].is_null());
    assert!(plain["tcp_connect_ms"].is_i64());
    let (ttfb, total) = (
        plain["time_to_first_byte_ms"].as_i64().unwrap(),
        plain["response_time_ms"].as_i64().unwrap(),
    );
    assert!(ttfb <= total, "{plain}");
    assert!(plain["error_type"].is_null() && plain["error_message"].is_null());
    assert!(plain["lease_epoch"].as_i64().unwrap() >= 1);
    assert!(plain["scheduled_at"].is_string());

    // HTTPS through a name: every phase measured.
    let secure = first_heartbeat(&db, 2).await;
    assert_eq!(secure["success"], true, "{secure}");
    for phase in [
        "dns_lookup_ms",
        "tcp_connect_ms",
        "tls_handshake_ms",
        "time_to_first_byte_ms",
    ] {
        assert!(secure[phase].is_i64(), "{phase} missing: {secure}");
    }
    assert_eq!(secure["response_status_code"], 200);
    let details = &secure["details"];
    assert_eq!(details["http_version"], "HTTP/2", "{details}");
    assert_eq!(details["tls_version"], "TLSv1.3");
    assert_eq!(
        details["remote_addr"],
        format!("127.0.0.1:{}", https.addr.port())
    );
    assert!(
        details["cert_days_left"].as_i64().unwrap() > 300,
        "{details}"
    );
    assert_eq!(details["redirects"], 0);
    assert_eq!(details["body_truncated"], false);
    let tls_us = details["tls_us"].as_i64().unwrap();
    let tls_ms = secure["tls_handshake_ms"].as_i64().unwrap();
    assert!(
        (tls_us - tls_ms * 1000).abs() <= 500,
        "{tls_us} us vs {tls_ms} ms"
    );

    // A refused port: a connect failure and no phases after DNS.
    let down = first_heartbeat(&db, 3).await;
    assert_eq!(down["success"], false);
    assert_eq!(down["status"], "down");
    assert_eq!(down["error_type"], "connect");
    assert!(
        down["error_message"].as_str().unwrap().contains("refused"),
        "{down}"
    );
    for phase in [
        "tcp_connect_ms",
        "tls_handshake_ms",
        "time_to_first_byte_ms",
    ] {
        assert!(down[phase].is_null(), "{phase} should be NULL: {down}");
    }

    // Today's and tomorrow's partitions.
    let today = chrono::Utc::now().date_naive();
    for day in [today, today.succ_opt().unwrap()] {
        let name = format!("api_heartbeats_{}", day.format("%Y_%m_%d"));
        let found = db
            .client()
            .await
            .query_opt("SELECT 1 FROM pg_class WHERE relname = $1", &[&name])
            .await
            .unwrap();
        assert!(found.is_some(), "partition {name} missing");
    }

    // Health.
    let health = reqwest::get(format!("http://127.0.0.1:{health_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // No secret in any log line.
    assert!(agent.lines().iter().all(|l| !l.contains("hunter2")));
}

/// SIGTERM: exit 0 within 5 s, every finished check stored, lease released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_quickly_and_loses_nothing() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 2));
    // A long flush delay: results are still buffered when the signal comes.
    let mut agent = AgentProcess::run(&db.url, 1, &[("WRITE_FLUSH_DELAY_MS", "60000".into())]);
    wait_for(Duration::from_secs(20), "three finished checks", || {
        let n = agent.records_with("check finished").len();
        async move { (n >= 3).then_some(()) }
    })
    .await;

    let signalled = Instant::now();
    agent.signal("TERM");
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exited within 5 s");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5));

    let finished = agent.records_with("check finished").len()
        + agent.records_with("Monitor execution failed").len();
    let client = db.client().await;
    let stored: i64 = client
        .query_one("SELECT count(*) FROM api_heartbeats", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, finished, "every finished check is stored");
    assert!(!agent.records_with("lease released").is_empty());
    let holder: Option<String> = client
        .query_one(
            "SELECT holder_instance FROM datacenter_leases WHERE datacenter_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(holder.is_none(), "lease released");
}

/// A second agent waits as standby and takes over within 4 s of the first being killed
/// (its first heartbeat stored, with the default lease timing); the two never run checks at
/// the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_after_sigkill_without_overlap() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 2));

    // The default lease timing: the lease expires at most 2 s after the kill, a monitor's
    // slot comes within 1 s, and its heartbeat is written within the 200 ms flush delay.
    let defaults = default_lease_timing();
    let mut first = AgentProcess::run(&db.url, 1, &defaults);
    first
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let second = AgentProcess::run(&db.url, 2, &defaults);
    second
        .wait_for_msg(
            "waiting as standby: another agent holds the lock",
            Duration::from_secs(15),
        )
        .await;
    let client = db.client().await;
    let count = |agent: i32| {
        let client = &client;
        async move {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM api_heartbeats WHERE agent_id = $1",
                    &[&agent],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    wait_for(
        Duration::from_secs(20),
        "heartbeats of the first agent",
        || async { (count(1).await >= 4).then_some(()) },
    )
    .await;
    assert_eq!(count(2).await, 0, "the standby ran no check");

    first.child.kill().expect("SIGKILL");
    let killed = Instant::now();
    first
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("killed");
    wait_for(
        Duration::from_secs(10),
        "heartbeats of the standby",
        || async { (count(2).await >= 1).then_some(()) },
    )
    .await;
    eprintln!(
        "takeover: first heartbeat of the standby stored {:?} after the SIGKILL",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "took over in {:?}",
        killed.elapsed()
    );

    let row = client
        .query_one(
            "SELECT (SELECT max(executed_at) FROM api_heartbeats WHERE agent_id = 1) < \
                    (SELECT min(executed_at) FROM api_heartbeats WHERE agent_id = 2), \
                    (SELECT max(lease_epoch) FROM api_heartbeats WHERE agent_id = 1) < \
                    (SELECT min(lease_epoch) FROM api_heartbeats WHERE agent_id = 2)",
            &[],
        )
        .await
        .unwrap();
    let (ordered, newer_epoch): (bool, bool) = (row.get(0), row.get(1));
    assert!(
        ordered,
        "the standby's first check started after the leader's last"
    );
    assert!(newer_epoch, "the new holder runs under a higher epoch");
}

/// Editing one monitor's URL restarts that monitor only, within the reload interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_url_restarts_only_that_monitor() {
    let db = TestDb::migrated();
    let old = TestServer::http().await;
    let new = TestServer::http().await;
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(
        1,
        "edited",
        "HTTP",
        &old.url("http", "127.0.0.1", "/x"),
    ));
    db.execute(&monitor_sql(
        2,
        "untouched",
        "HTTP",
        &old.url("http", "127.0.0.1", "/y"),
    ));
    let agent = AgentProcess::run(&db.url, 1, &[]);
    first_heartbeat(&db, 1).await;
    first_heartbeat(&db, 2).await;

    let edited = Instant::now();
    db.execute(&format!(
        "UPDATE api_monitors SET url = '{}' WHERE id = 1",
        new.url("http", "127.0.0.1", "/x")
    ));
    wait_for(
        Duration::from_secs(10),
        "a check against the new URL",
        || {
            let hits = new.hits();
            async move { (hits > 0).then_some(()) }
        },
    )
    .await;
    // Reload every 1 s, plus at most one 1 s slot.
    assert!(
        edited.elapsed() < Duration::from_secs(4),
        "applied after {:?}",
        edited.elapsed()
    );

    let starts = |id: i32| {
        agent
            .records_with("monitor started")
            .iter()
            .filter(|r| r["monitor_id"] == id)
            .count()
    };
    assert_eq!(starts(1), 2, "the edited monitor restarted once");
    assert_eq!(starts(2), 1, "the other monitor kept running");
}

/// A target that never answers, with the timeout at its default (the interval): each check
/// times out just after the next slot, which waits for it instead of being skipped, so every
/// slot gets its `timeout` heartbeat and lateness does not grow from one check to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_answers_gets_a_heartbeat_every_slot() {
    let db = TestDb::migrated();
    let silent = ScriptedServer::start(|stream, _| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
    })
    .await;
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(1, "silent", "HTTP", &silent.url("/")));
    let agent = AgentProcess::run(&db.url, 1, &[]);
    let rows = wait_for(Duration::from_secs(30), "eight heartbeats", || async {
        let rows = heartbeats(&db, 1).await;
        (rows.len() >= 8).then_some(rows)
    })
    .await;
    // `timestamp` columns, as `to_jsonb` writes them (no offset).
    let time = |r: &serde_json::Value, column: &str| {
        let text = r[column].as_str().unwrap();
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").unwrap()
    };
    let slot = |r: &serde_json::Value| time(r, "scheduled_at");
    let executed = |r: &serde_json::Value| time(r, "executed_at");
    for pair in rows.windows(2) {
        assert_eq!(
            (slot(&pair[1]) - slot(&pair[0])).num_milliseconds(),
            1000,
            "consecutive slots: {pair:?}"
        );
    }
    for r in &rows {
        assert_eq!(r["error_type"], "timeout", "{r}");
        // The same message every slot, naming the timeout (not what was left of it).
        assert_eq!(
            r["error_message"],
            "no complete response within 1s (timed out during waiting for the response)"
        );
        let late = (executed(r) - slot(r)).num_milliseconds();
        assert!(late < 250, "started {late} ms after its slot: {r}");
    }
    assert!(agent.records_with("slot skipped").is_empty());
}

/// A second process with the same `AGENT_ID` waits as a standby and says that the holder is
/// itself by id; a standby of another id names the holder too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_the_same_agent_id_is_told_so() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 1));
    let first = AgentProcess::run(&db.url, 1, &[]);
    first
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let twin = AgentProcess::run(&db.url, 1, &[]);
    let line = twin
        .wait_for_msg(
            "waiting as standby: another process with this AGENT_ID holds the lease \
             (give each agent its own id)",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        (&line["level"], &line["holder_agent_id"]),
        (&json!("WARN"), &json!(1))
    );
    let standby = AgentProcess::run(&db.url, 2, &[]);
    let line = standby
        .wait_for_msg(
            "waiting as standby: another agent holds the lock",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        (&line["level"], &line["holder_agent_id"]),
        (&json!("INFO"), &json!(1))
    );
}

/// Bad settings give one clear error line and a non-zero exit, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_with_one_clear_line() {
    let db = TestDb::migrated();
    db.execute(BASE_CONFIG);
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![
                ("DB_CONN_STRING", db.url.clone()),
                ("DATACENTER_ID", "99".into()),
            ],
            "datacenter 99 does not exist",
        ),
        (
            vec![
                ("DB_CONN_STRING", db.url.clone()),
                ("DATACENTER_ID", "1".into()),
                ("AGENT_ID", "3".into()),
            ],
            "belongs to datacenter 2",
        ),
        (vec![("DB_CONN_STRING", db.url.clone())], "--datacenter-id"),
        (
            vec![
                ("DB_CONN_STRING", db.url.clone()),
                ("DATACENTER_ID", "x".into()),
            ],
            "invalid value",
        ),
        (
            vec![
                (
                    "DB_CONN_STRING",
                    format!("postgres://u:topsecret@127.0.0.1:{}/db", refused_port()),
                ),
                ("DATACENTER_ID", "1".into()),
            ],
            "cannot connect to PostgreSQL",
        ),
    ];
    for (env, expected) in cases {
        let mut agent = AgentProcess::start(&[], &env);
        let status = agent
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("exits");
        tokio::time::sleep(Duration::from_millis(100)).await; // let the reader threads finish
        let lines = agent.lines();
        assert!(!status.success(), "{expected}: {status:?}");
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "{expected} not in {lines:?}"
        );
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("panicked") && !l.contains("topsecret")),
            "{lines:?}"
        );
        let errors = lines
            .iter()
            .filter(|l| l.contains("\"CRIT\"") || l.contains("\"ERRO\"") || l.starts_with("error:"))
            .count();
        assert_eq!(errors, 1, "{lines:?}");
    }
}
