//! Hazards met while running, on real agent processes and real PostgreSQL: a check that
//! panics.

mod common;

use std::time::Duration;

use chrono::DateTime;
use common::*;

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
