//! Hazards met while running, on real agent processes and real PostgreSQL: the agent's own
//! rows deleted under it, secrets in request headers and in the connection string, and a
//! check that panics.

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use common::*;

/// The `error` of the process's last line (`agent failed`), once it exited.
async fn exit_error(agent: &mut AgentProcess) -> (i32, String) {
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits within 10 s");
    let failed = agent
        .wait_for_msg("agent failed", Duration::from_secs(5))
        .await;
    assert_eq!(failed["level"], "CRIT");
    let error = failed["error"].as_str().unwrap_or_default().to_string();
    (status.code().unwrap_or(-1), error)
}

fn assert_no_panic(agent: &AgentProcess) {
    let lines = agent.lines();
    assert!(lines.iter().all(|l| !l.contains("panicked")), "{lines:?}");
}

/// A standby whose agents row is deleted, a leader moved to another datacenter, then the
/// datacenter deleted under the new leader: each stops its checks, logs why, releases the
/// lease and exits with status 1 (no panic), and a remaining standby takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_whose_rows_go_away_stop_and_exit_with_the_reason() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 2));
    db.execute("INSERT INTO agents (id, name, datacenter_id) VALUES (4, 'va-3', 1)");
    let mut leader = AgentProcess::run(&db.url, 1, &[]);
    leader
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let mut next = AgentProcess::run(&db.url, 2, &[]);
    // Polls only once a minute: its row's deletion reaches it through LISTEN/NOTIFY.
    let mut doomed = AgentProcess::run(&db.url, 4, &[("CONFIG_RELOAD_INTERVAL", "60".into())]);
    for standby in [&next, &doomed] {
        standby
            .wait_for_msg(
                "waiting as standby: another agent holds the lock",
                Duration::from_secs(15),
            )
            .await;
    }

    // A standby's row deleted (it has no heartbeats, so no foreign key keeps it).
    let deleted = std::time::Instant::now();
    db.execute("DELETE FROM agents WHERE id = 4");
    let (code, error) = exit_error(&mut doomed).await;
    assert!(
        deleted.elapsed() < Duration::from_secs(3),
        "exited {:?} after the deletion",
        deleted.elapsed()
    );
    assert_eq!(code, 1);
    assert!(error.contains("agent 4 does not exist"), "{error}");
    let removed = doomed.records_with("datacenter or agent removed; stopping checks");
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["level"], "ERRO");
    assert_no_panic(&doomed);

    // The leader moved to datacenter 2: noticed at the next poll (agents sends no notification).
    db.execute("UPDATE agents SET datacenter_id = 2 WHERE id = 1");
    let (code, error) = exit_error(&mut leader).await;
    assert_eq!(code, 1);
    assert!(
        error.contains("agent 1 belongs to datacenter 2, not to datacenter 1"),
        "{error}"
    );
    assert!(!leader.records_with("lease released").is_empty());
    assert_no_panic(&leader);
    let stored: Vec<i64> = first_column(
        &db.url,
        "SELECT count(*) FROM api_heartbeats WHERE agent_id = 1",
    )
    .await;
    assert_eq!(stored, vec![executed_checks(&leader) as i64], "all stored");
    next.wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(5))
        .await;
    wait_for(Duration::from_secs(10), "checks of the new leader", || {
        let db = &db;
        async move {
            let n: Vec<i64> = first_column(
                &db.url,
                "SELECT count(*) FROM api_heartbeats WHERE agent_id = 2",
            )
            .await;
            (n[0] >= 2).then_some(())
        }
    })
    .await;

    // The datacenter deleted (its agents detached first, as the foreign key demands).
    let deleted = Utc::now().naive_utc();
    db.execute(
        "BEGIN; UPDATE agents SET datacenter_id = NULL WHERE datacenter_id = 1; \
         DELETE FROM datacenters WHERE id = 1; COMMIT;",
    );
    let (code, error) = exit_error(&mut next).await;
    assert_eq!(code, 1);
    assert!(error.contains("datacenter 1 does not exist"), "{error}");
    assert_no_panic(&next);
    let last: Vec<Option<NaiveDateTime>> = first_column(
        &db.url,
        "SELECT max(executed_at) FROM api_heartbeats WHERE agent_id = 2",
    )
    .await;
    let last = last[0].expect("checks of agent 2");
    assert!(
        last < deleted + chrono::Duration::seconds(1),
        "checks went on after the deletion: last {last}, deleted {deleted}"
    );
}

/// Secret request headers and the database password: sent where they belong (the target gets
/// the headers), but found in no log line (stdout and stderr, at trace level) and in no column
/// of any stored heartbeat, for a successful check, a redirected one and a failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_line_and_no_stored_column() {
    let role = DbRole::create();
    let db = TestDb::migrated();
    let (server, heads) = ScriptedServer::recording(|head| {
        if head.starts_with("GET /hop ") {
            b"HTTP/1.1 302 Found\r\nLocation: /landed\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        }
    })
    .await;
    let secrets = [
        ("Authorization", "Bearer sekrit-authz-7f3a"),
        ("Cookie", "session=sekrit-cookie-91bd"),
        ("Proxy-Authorization", "Basic sekrit-proxy-55c2"),
        ("X-Api-Key", "sekrit-apikey-0e4d"),
        ("X-Auth-Token", "sekrit-token-a8b1"),
        ("X-Client-Secret", "sekrit-client-3c9e"),
    ];
    let headers = serde_json::Value::Object(
        secrets
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect(),
    );
    let mut sql = BASE_CONFIG.to_string();
    for (id, url) in [
        (1, server.url("/ok")),
        (2, server.url("/hop")),
        (3, format!("http://127.0.0.1:{}/", refused_port())),
    ] {
        sql.push_str(&monitor_sql(id, &format!("m{id}"), "HTTP", &url));
        sql.push_str(&format!(
            "UPDATE api_monitors SET headers = '{headers}' WHERE id = {id};"
        ));
    }
    db.execute(&sql);

    let url = format!(
        "postgres://{}:{}@{}/{}",
        role.name,
        role.password,
        url_host_port(&db.url),
        db.name
    );
    let mut agent = AgentProcess::run(&url, 1, &[("LOG_LEVEL", "trace".into())]);
    wait_for(Duration::from_secs(20), "three heartbeats of each", || {
        let db = &db;
        async move {
            let n: Vec<i64> = first_column(
                &db.url,
                "SELECT count(*) FROM (SELECT monitor_id FROM api_heartbeats \
                 GROUP BY monitor_id HAVING count(*) >= 3) m",
            )
            .await;
            (n[0] == 3).then_some(())
        }
    })
    .await;
    terminate(&mut agent).await;
    agent.wait_for_msg("stopped", Duration::from_secs(5)).await;

    // Sent: the target saw every value (the redirect stays on the origin, so it keeps them).
    let heads = heads.lock().expect("heads").join("\n");
    for (_, value) in &secrets {
        assert!(heads.contains(value), "{value} was not sent");
    }
    assert!(heads.contains("GET /landed "), "the redirect was followed");

    // Never logged nor stored.
    let rows: Vec<String> = first_column(&db.url, "SELECT h::text FROM api_heartbeats h").await;
    assert!(rows.len() >= 9);
    assert!(
        rows.iter().any(|r| r.contains("***")),
        "masked values are stored"
    );
    let lines = agent.lines();
    assert!(lines.len() > 20, "a trace-level log: {} lines", lines.len());
    for value in secrets
        .iter()
        .map(|(_, v)| *v)
        .chain([role.password.as_str()])
    {
        assert!(lines.iter().all(|l| !l.contains(value)), "{value} logged");
        assert!(rows.iter().all(|r| !r.contains(value)), "{value} stored");
    }
}

/// A monitor whose check panics (the debug-only `TESTPANIC` type): each panic is stored as an
/// `internal` failure and logged, and the supervisor restarts the monitor after 1, 2, then 4 s,
/// naming it; the other monitors run every slot, never restarted, and the process stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_check_is_restarted_with_backoff_and_the_others_run_on() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 2));
    db.execute(&monitor_sql(3, "panicky", "TESTPANIC", "http://127.0.0.1/"));
    let mut agent = AgentProcess::run(&db.url, 1, &[]);

    const RESTARTING: &str = "monitor stopped unexpectedly; restarting";
    let restarts = wait_for(Duration::from_secs(40), "three restarts", || {
        let found = agent.records_with(RESTARTING);
        async move { (found.len() >= 3).then_some(found) }
    })
    .await;
    for (i, restart) in restarts.iter().take(3).enumerate() {
        assert_eq!(restart["monitor_id"], 3);
        assert_eq!(restart["monitor_name"], "panicky");
        assert_eq!(restart["failures"], i + 1);
        assert_eq!(restart["restart_in_s"], 1 << i, "{restart}");
    }
    let panicked = agent.records_with("check panicked; stopping the monitor");
    assert!(panicked.len() >= 3);
    assert!(panicked[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("test panic in a check of monitor 3")));

    // The backoff is kept: each start comes at least its delay after the stop before it.
    let ts = |r: &serde_json::Value| {
        DateTime::parse_from_rfc3339(r["ts"].as_str().expect("ts")).expect("rfc3339")
    };
    let starts: Vec<_> = agent
        .records_with("monitor started")
        .into_iter()
        .filter(|r| r["monitor_id"] == 3)
        .collect();
    assert!(starts.len() >= 3, "{starts:?}");
    for i in 0..2 {
        let gap = (ts(&starts[i + 1]) - ts(&restarts[i])).as_seconds_f64();
        assert!(gap >= f64::from(1 << i) - 0.05, "restart {i} after {gap} s");
    }

    // Every panic is a stored failure (the third one may still be on its way to the table);
    // the others have every slot, all up, started once.
    let failures: Vec<String> = wait_for(Duration::from_secs(5), "three failures", || {
        let db = &db;
        async move {
            let failures: Vec<String> = first_column(
                &db.url,
                "SELECT error_type || ': ' || error_message FROM api_heartbeats \
                 WHERE monitor_id = 3",
            )
            .await;
            (failures.len() >= 3).then_some(failures)
        }
    })
    .await;
    assert!(failures
        .iter()
        .all(|f| f.starts_with("internal: the check panicked: test panic")));
    for id in [1, 2] {
        let starts = agent
            .records_with("monitor started")
            .iter()
            .filter(|r| r["monitor_id"] == id)
            .count();
        assert_eq!(starts, 1, "monitor {id} was restarted");
    }
    let gaps: Vec<i64> = first_column(
        &db.url,
        "SELECT count(*) FROM (SELECT monitor_id, generate_series(min(scheduled_at), \
             max(scheduled_at), interval '1 second') AS slot FROM api_heartbeats \
             WHERE monitor_id IN (1, 2) GROUP BY monitor_id) g \
         WHERE NOT EXISTS (SELECT 1 FROM api_heartbeats h WHERE h.monitor_id = g.monitor_id \
             AND h.scheduled_at = g.slot AND h.success)",
    )
    .await;
    assert_eq!(
        gaps,
        vec![0],
        "slots of the healthy monitors missing or failed"
    );
    assert!(
        agent.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
    terminate(&mut agent).await;
}

/// A login role with a password, for the length of a test; dropped after the test's database
/// (declare it first). The server trusts 127.0.0.1, so the password is carried, not checked.
struct DbRole {
    name: String,
    password: String,
}

impl DbRole {
    fn create() -> Self {
        let name = format!("uptimeo_secret_{}", std::process::id());
        let password = format!("pw-sekrit-{}-Qz", std::process::id());
        let sql = format!(
            "DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}'"
        );
        block_on_own_runtime(async move {
            connect(&admin_url())
                .await
                .batch_execute(&sql)
                .await
                .expect("role");
        });
        Self { name, password }
    }
}

impl Drop for DbRole {
    fn drop(&mut self) {
        let sql = format!("DROP ROLE IF EXISTS {}", self.name);
        block_on_own_runtime(async move {
            let _ = connect(&admin_url()).await.batch_execute(&sql).await;
        });
    }
}

/// Files under `dir`, recursively, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read dir").flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A run writes only in its own subdirectory of SPOOL_DIR: its working directory, HOME and
/// TMPDIR (each a fresh empty directory) are still empty after a run of checks and a SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_only_in_its_spool_directory() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 2));
    let (cwd, home, tmp, spool) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let path = |d: &tempfile::TempDir| d.path().display().to_string();
    let mut agent = AgentProcess::run_in(
        Some(cwd.path()),
        &db.url,
        1,
        &[
            ("HOME", path(&home)),
            ("TMPDIR", path(&tmp)),
            ("SPOOL_DIR", path(&spool)),
        ],
    );
    wait_for(Duration::from_secs(15), "checks stored", || async {
        let stored: Vec<i64> = first_column(&db.url, "SELECT count(*) FROM api_heartbeats").await;
        (stored[0] >= 4).then_some(())
    })
    .await;
    let spooled = files_under(spool.path());
    terminate(&mut agent).await;

    for (name, dir) in [
        ("working directory", &cwd),
        ("HOME", &home),
        ("TMPDIR", &tmp),
    ] {
        assert_eq!(files_under(dir.path()), Vec::<String>::new(), "{name}");
    }
    assert!(spooled.contains(&"dc1-agent1".to_string()), "{spooled:?}");
    let after = files_under(spool.path());
    assert!(
        after.iter().all(|f| f.starts_with("dc1-agent1")),
        "{after:?}"
    );
}
