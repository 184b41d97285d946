//! The assertion columns of `api_monitors`, end to end: rows with expectations, a running
//! agent, and the heartbeats it stores.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The newest heartbeat of a monitor: (success, status, error_type, error_message,
/// response_time_ms).
type Beat = (
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
);

async fn latest(db: &TestDb, monitor_id: i32) -> Option<Beat> {
    db.client()
        .await
        .query_opt(
            "SELECT success, status, error_type, error_message, response_time_ms \
             FROM api_heartbeats WHERE monitor_id = $1 ORDER BY executed_at DESC LIMIT 1",
            &[&monitor_id],
        )
        .await
        .expect("heartbeat query")
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

/// Each expectation column, met and not met, through a real agent process; a row whose
/// expectation cannot be parsed is skipped with a warning naming it while the rest run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_in_monitor_rows_decide_the_heartbeats() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    // Self-signed for `localhost`, and not trusted by the agent (no SSL_CERT_FILE).
    let pki = TestPki::new();
    let https = TestServer::https(&pki).await;
    let silent = ScriptedServer::start(|stream, _| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;

    let url = |path: &str| http.url("http", "127.0.0.1", path);
    let tls = https.url("https", "localhost", "/");
    // (id, url, column assignments)
    let monitors: Vec<(i32, String, &str)> = vec![
        (1, url("/status/404"), "expected_status = '404'"),
        (2, url("/status/500"), "expected_status = '200-299,301'"),
        (3, url("/"), r#"body_match = '"ok":true'"#),
        (4, url("/"), "body_match = 'maintenance'"),
        (
            5,
            url("/"),
            r#"body_match = '"ok":\s*false', body_match_mode = 'not_regex'"#,
        ),
        (6, silent.url("/"), "timeout_ms = 300"),
        (7, tls.clone(), "tls_verify = false"),
        (
            8,
            tls.clone(),
            "tls_verify = false, min_cert_days = 1000000",
        ),
        (9, url("/"), "ip_family = '6'"),
        (10, tls, "tls_verify = NULL"),
        (11, url("/"), "expected_status = '2xx'"),
    ];
    let mut sql = BASE_CONFIG.to_string();
    for (id, url, set) in &monitors {
        sql.push_str(&monitor_sql(*id, &format!("m{id}"), "HTTP", url));
        sql.push_str(&format!("UPDATE api_monitors SET {set} WHERE id = {id};"));
    }
    db.execute(&sql);

    let agent = AgentProcess::run(&db.url, 1, &[]);
    let deadline = Duration::from_secs(20);
    let beat = |id: i32| {
        let db = &db;
        wait_for(deadline, "a heartbeat", move || async move {
            latest(db, id).await
        })
    };
    let up = |b: &Beat, id: i32| {
        assert_eq!(b.0, Some(true), "monitor {id}: {b:?}");
        assert_eq!(b.1.as_deref(), Some("up"), "monitor {id}: {b:?}");
        assert_eq!(b.2, None, "monitor {id}: {b:?}");
    };
    let down = |b: &Beat, id: i32, kind: &str, message: &str| {
        assert_eq!(b.0, Some(false), "monitor {id}: {b:?}");
        assert_eq!(b.1.as_deref(), Some("down"), "monitor {id}: {b:?}");
        assert_eq!(b.2.as_deref(), Some(kind), "monitor {id}: {b:?}");
        let text = b.3.clone().unwrap_or_default();
        assert!(text.contains(message), "monitor {id}: `{text}`");
    };

    up(&beat(1).await, 1);
    down(
        &beat(2).await,
        2,
        "assertion",
        "HTTP status 500, expected 200-299,301",
    );
    up(&beat(3).await, 3);
    down(
        &beat(4).await,
        4,
        "assertion",
        "the body does not contain `maintenance`",
    );
    up(&beat(5).await, 5);
    let timed_out = beat(6).await;
    down(&timed_out, 6, "timeout", "within 0.3s");
    let took = timed_out.4.expect("a response time");
    assert!(
        (300..900).contains(&took),
        "a 300 ms timeout took {took} ms"
    );
    up(&beat(7).await, 7);
    down(
        &beat(8).await,
        8,
        "assertion",
        "fewer than the 1000000 required",
    );
    down(&beat(9).await, 9, "dns", "127.0.0.1 has no IPv6 address");
    down(&beat(10).await, 10, "tls", "");

    // The unparsable row: one warning naming it, no heartbeat.
    let started = Instant::now();
    let warning = agent
        .wait_for_msg(
            "monitor skipped: invalid configuration",
            Duration::from_secs(10),
        )
        .await;
    let text = warning.to_string();
    assert!(text.contains("m11") && text.contains("2xx"), "{text}");
    assert_eq!(latest(&db, 11).await, None);
    assert!(started.elapsed() < Duration::from_secs(10));
}
