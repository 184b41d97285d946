//! Configuration rows an agent cannot run, and rows that look hostile: one running agent, real
//! PostgreSQL, its JSON log parsed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// SQL inserting monitor `id` of datacenter 1; every argument but `id` is an SQL expression.
fn monitor(id: i32, name: &str, method: &str, kind: &str, url: &str, rest: &str) -> String {
    format!(
        "INSERT INTO api_monitors (id, name, method, type, url, schedule_id, headers, body) \
         VALUES ({id}, '{name}', '{method}', '{kind}', '{url}', {rest}); \
         INSERT INTO datacenter_monitors (datacenter_id, monitor_id) VALUES (1, {id});"
    )
}

/// Heartbeats stored per monitor.
async fn heartbeat_counts(db: &TestDb) -> HashMap<i32, i64> {
    db.client()
        .await
        .query(
            "SELECT monitor_id, count(*) FROM api_heartbeats GROUP BY monitor_id",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// One agent, one good monitor among every kind of bad row: each bad monitor is named once in
/// a warning with its reason and never checked; reversed thresholds are ignored (with one
/// warning) but the monitor runs; a monitor of another datacenter is neither run nor logged;
/// two identical definitions are two monitors; a monitor linked twice (a `datacenter_monitors`
/// without its primary key) runs once per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_monitors_are_skipped_once_each_and_the_good_one_runs() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    let good_url = http.url("http", "127.0.0.1", "/good");
    let url = good_url.as_str();
    let tcp_url = format!("tcp://127.0.0.1:{}", http.addr.port());
    let tcp = tcp_url.as_str();
    let mut sql = BASE_CONFIG.to_string();
    sql.push_str(
        "INSERT INTO schedules (id, name, interval, thresholds_warning, thresholds_critical) \
         VALUES (2, 'zero', 0, NULL, NULL), (3, 'negative', -5, NULL, NULL), \
                (4, 'absurd', 2147483647, NULL, NULL), (5, 'reversed', 1, 1000, 200), \
                (6, 'deleted', 1, NULL, NULL);",
    );
    let ok = "1, NULL, NULL";
    // (id, name, method, type, url, schedule_id/headers/body, expected reason)
    let bad: Vec<(i32, &str, &str, &str, &str, &str, &str)> = vec![
        (
            2,
            "bad url",
            "GET",
            "HTTP",
            "http://exa mple.test/",
            ok,
            "invalid URL",
        ),
        (
            3,
            "unknown type",
            "GET",
            "SMTP",
            url,
            ok,
            "unknown monitor type `SMTP`",
        ),
        (
            4,
            "fetch",
            "FETCH",
            "HTTP",
            url,
            ok,
            "unsupported method `FETCH`",
        ),
        (
            5,
            "spaced method",
            "GE T",
            "HTTP",
            url,
            ok,
            "invalid method `GE T`",
        ),
        (
            6,
            "zero",
            "GET",
            "HTTP",
            url,
            "2, NULL, NULL",
            "interval 0 s",
        ),
        (
            7,
            "negative",
            "GET",
            "HTTP",
            url,
            "3, NULL, NULL",
            "interval -5 s",
        ),
        (
            8,
            "absurd",
            "GET",
            "HTTP",
            url,
            "4, NULL, NULL",
            "interval 2147483647 s",
        ),
        (
            9,
            "no schedule",
            "GET",
            "HTTP",
            url,
            "NULL, NULL, NULL",
            "no schedule_id",
        ),
        (
            10,
            "deleted schedule",
            "GET",
            "HTTP",
            url,
            "6, NULL, NULL",
            "schedule 6 does not exist",
        ),
        (
            11,
            "header list",
            "GET",
            "HTTP",
            url,
            "1, '[\"a\"]', NULL",
            "must be a JSON object",
        ),
        (
            12,
            "header object",
            "GET",
            "HTTP",
            url,
            "1, '{\"X-N\": {\"a\": 1}}', NULL",
            "header `X-N` must be a string",
        ),
        (
            13,
            "header newline",
            "GET",
            "HTTP",
            url,
            "1, '{\"X-N\": \"a\\nb\"}', NULL",
            "header `X-N` has a value that is not valid in HTTP",
        ),
        (
            14,
            "tcp body",
            "GET",
            "TCP",
            tcp,
            "1, NULL, '\"PING\"'",
            "no request body",
        ),
        (
            15,
            "port out of range",
            "GET",
            "HTTP",
            "http://127.0.0.1:99999/",
            ok,
            "port `99999` is not a number from 1 to 65535",
        ),
        (
            16,
            "port mistyped",
            "GET",
            "HTTP",
            "https://127.0.0.1:8o99/",
            ok,
            "port `8o99` is not a number from 1 to 65535",
        ),
    ];
    sql.push_str(&monitor(1, "good", "GET", "HTTP", url, ok));
    for (id, name, method, kind, url, rest, _) in &bad {
        sql.push_str(&monitor(*id, name, method, kind, url, rest));
    }
    sql.push_str(&monitor(
        20,
        "reversed",
        "GET",
        "HTTP",
        url,
        "5, NULL, NULL",
    ));
    sql.push_str(&monitor(23, "plain https", "GET", "HTTPS", url, ok));
    sql.push_str(&monitor(21, "twin", "GET", "HTTP", url, ok));
    sql.push_str(&monitor(22, "twin", "GET", "HTTP", url, ok));
    // Datacenter 2's monitor.
    sql.push_str(&format!(
        "INSERT INTO api_monitors (id, name, method, type, url, schedule_id) \
         VALUES (30, 'ny only', 'GET', 'HTTP', '{url}', 1); \
         INSERT INTO datacenter_monitors (datacenter_id, monitor_id) VALUES (2, 30), (2, 1);"
    ));
    // What an old or hand-made database may lack: the schedule's foreign key (so a schedule
    // can be deleted under its monitor) and the primary key of the links (so a monitor can
    // be linked twice).
    sql.push_str(
        "ALTER TABLE api_monitors DROP CONSTRAINT api_monitors_schedule_id_fkey; \
         DELETE FROM schedules WHERE id = 6; \
         ALTER TABLE datacenter_monitors DROP CONSTRAINT datacenter_monitors_pkey; \
         INSERT INTO datacenter_monitors (datacenter_id, monitor_id) VALUES (1, 1), (1, 2);",
    );
    db.execute(&sql);

    let agent = AgentProcess::run(&db.url, 1, &[]);
    let counts = wait_for(
        Duration::from_secs(30),
        "heartbeats of the runnable",
        || {
            let db = &db;
            async move {
                let counts = heartbeat_counts(db).await;
                let n = |id| counts.get(&id).copied().unwrap_or(0);
                (n(1) >= 3 && n(20) >= 3 && n(21) >= 1 && n(22) >= 1).then_some(counts)
            }
        },
    )
    .await;

    // Never checked: no heartbeat, no start.
    for (id, ..) in &bad {
        assert!(!counts.contains_key(id), "bad monitor {id} has heartbeats");
    }
    assert!(!counts.contains_key(&30), "datacenter 2's monitor ran");
    let started: Vec<i64> = agent
        .records_with("monitor started")
        .iter()
        .filter_map(|r| r["monitor_id"].as_i64())
        .collect();
    let mut runnable = started.clone();
    runnable.sort_unstable();
    runnable.dedup();
    assert_eq!(runnable, vec![1, 20, 21, 22, 23], "started: {started:?}");
    assert_eq!(started.len(), 5, "each started once: {started:?}");
    let plain = agent.records_with("monitor runs without TLS");
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain[0]["monitor_id"], 23);

    // Exactly one warning per bad monitor, naming it and the reason.
    let skipped = agent.records_with("monitor skipped: invalid configuration");
    for (id, name, .., reason) in &bad {
        let lines: Vec<_> = skipped.iter().filter(|r| r["monitor_id"] == *id).collect();
        assert_eq!(lines.len(), 1, "monitor {id}: {lines:?}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["monitor_name"], *name);
        let logged = lines[0]["reason"].as_str().unwrap_or_default();
        assert!(logged.contains(reason), "monitor {id}: {logged}");
    }
    assert_eq!(skipped.len(), bad.len(), "{skipped:?}");
    let reversed = agent.records_with("monitor thresholds ignored: invalid configuration");
    assert_eq!(reversed.len(), 1, "{reversed:?}");
    assert_eq!(reversed[0]["monitor_id"], 20);
    assert!(reversed[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("thresholds_warning 1000 ms above thresholds_critical 200")));
    let loaded = agent.records_with("config loaded");
    assert_eq!(loaded.len(), 1, "one load; later reloads found no change");
    assert_eq!(
        (&loaded[0]["monitors"], &loaded[0]["skipped"]),
        (&5.into(), &15.into())
    );
    assert!(
        agent.lines().iter().all(|l| !l.contains("ny only")),
        "datacenter 2's monitor is none of this agent's business"
    );

    // The reversed thresholds are not applied, nor stored.
    let thresholds: Vec<Option<i32>> = first_column(
        &db.url,
        "SELECT coalesce(warning_threshold_ms, critical_threshold_ms) FROM api_heartbeats \
         WHERE monitor_id = 20",
    )
    .await;
    assert!(thresholds.iter().all(Option::is_none), "{thresholds:?}");

    // Linked twice, checked once per slot.
    let duplicates: Vec<i64> = first_column(
        &db.url,
        "SELECT count(*) - count(DISTINCT (monitor_id, scheduled_at)) FROM api_heartbeats",
    )
    .await;
    assert_eq!(duplicates, vec![0]);
}

/// A name and a URL made of quotes, SQL, unicode and an emoji reach the target, the stored
/// heartbeat and the log exactly as written, and the SQL in them runs nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_urls_are_kept_as_written() {
    let db = TestDb::migrated();
    let (server, heads) =
        ScriptedServer::recording(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let name = "O'Brien \"x\"; DROP TABLE api_heartbeats;-- ünï 🚀";
    let path = "/o'brien/\"x\"/ünï/🚀?q=x';DROP%20TABLE%20api_heartbeats;--";
    let url = server.url(path);
    db.execute(BASE_CONFIG);
    // The test's own SQL escapes quotes the standard way; the agent never builds SQL.
    db.execute(&monitor(
        1,
        &name.replace('\'', "''"),
        "GET",
        "HTTP",
        &url.replace('\'', "''"),
        "1, NULL, NULL",
    ));

    let agent = AgentProcess::run(&db.url, 1, &[]);
    let stored: serde_json::Value = wait_for(Duration::from_secs(20), "a heartbeat", || {
        let db = &db;
        async move {
            first_column::<serde_json::Value>(
                &db.url,
                "SELECT to_jsonb(h) FROM api_heartbeats h WHERE monitor_id = 1",
            )
            .await
            .into_iter()
            .next()
        }
    })
    .await;
    assert_eq!(stored["success"], true, "{stored}");
    assert_eq!(stored["details"]["final_url"], url.as_str());
    let head = heads.lock().expect("heads")[0].clone();
    assert_eq!(
        head.lines().next(),
        Some(format!("GET {path} HTTP/1.1").as_str())
    );

    let started = agent
        .wait_for_msg("monitor started", Duration::from_secs(5))
        .await;
    assert_eq!(started["monitor_name"], name);
    assert_eq!(started["url"], url.as_str());
    let inserted = format!("Heartbeat inserted for monitor 1 ({name})");
    agent.wait_for_msg(&inserted, Duration::from_secs(5)).await;
    let kept: Vec<String> =
        first_column(&db.url, "SELECT name || ' ' || url FROM api_monitors").await;
    assert_eq!(kept, vec![format!("{name} {url}")]);
}
