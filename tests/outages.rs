//! Database outages and crashes lose nothing: real agent processes, real PostgreSQL, and a TCP
//! proxy that cuts the agent off from it.

mod common;

use std::time::Duration;

use common::*;

async fn count(db: &TestDb, sql: &str, epoch: i64) -> i64 {
    db.client()
        .await
        .query_one(sql, &[&epoch])
        .await
        .expect(sql)
        .get(0)
}

/// The agent loses the database, keeps checking while its lease is valid, and is killed with
/// SIGKILL holding unwritten results. Started again (same spool) with the database back, it
/// replays them: every check the killed run spooled is stored, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_spooled_before_a_sigkill_are_stored_once_by_the_next_start() {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(BASE_CONFIG);
    for id in 1..=3 {
        let url = http.url("http", "127.0.0.1", &format!("/m{id}"));
        db.execute(&monitor_sql(id, &format!("m{id}"), "HTTP", &url));
    }
    let proxy = TcpProxy::start(url_host_port(&db.url)).await;
    let spool = tempfile::tempdir().unwrap();
    let settings = [
        ("SPOOL_DIR", spool.path().display().to_string()),
        // A long lease: the cut-off agent goes on checking for seconds.
        ("LEASE_TTL", "10".to_string()),
    ];

    // First run, through the proxy, until some heartbeats are stored.
    let mut killed = AgentProcess::run(&proxy.url(&db.url), 1, &settings);
    let acquired = killed
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await;
    let epoch = acquired["epoch"].as_i64().expect("epoch");
    const STORED: &str = "SELECT count(*) FROM api_heartbeats WHERE lease_epoch = $1";
    wait_for(Duration::from_secs(15), "heartbeats stored", || async {
        (count(&db, STORED, epoch).await >= 3).then_some(())
    })
    .await;

    // Cut off: results pile up in the spool; then SIGKILL.
    proxy.cut();
    let spooled_at_cut = killed.records_with("heartbeat spooled").len();
    wait_for(
        Duration::from_secs(15),
        "results spooled while cut off",
        || {
            let n = killed.records_with("heartbeat spooled").len();
            let failed = !killed.records_with("Failed to save heartbeat").is_empty();
            async move { (failed && n >= spooled_at_cut + 6).then_some(()) }
        },
    )
    .await;
    killed.child.kill().expect("SIGKILL");
    killed
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("killed");
    let stored_before = count(&db, STORED, epoch).await;
    let spooled = killed.records_with("heartbeat spooled").len() as i64;
    let executed = (killed.records_with("check finished").len()
        + killed.records_with("Monitor execution failed").len()) as i64;
    assert!(
        spooled > stored_before,
        "results were left unwritten at the kill"
    );

    // Second run, straight to the database, same spool.
    let replaying = AgentProcess::run(&db.url, 1, &settings);
    let replay = replaying
        .wait_for_msg("spool replay", Duration::from_secs(15))
        .await;
    let replayed = replay["rows"].as_i64().expect("rows");
    wait_for(
        Duration::from_secs(20),
        "every spooled result stored",
        || async { (count(&db, STORED, epoch).await >= spooled).then_some(()) },
    )
    .await;
    let left = spool_segments(spool.path());

    eprintln!(
        "killed run: executed {executed}, spooled {spooled}, stored before the kill \
         {stored_before}; replayed {replayed} rows; stored after {}; segments left {left}",
        count(&db, STORED, epoch).await
    );
    assert_eq!(
        count(&db, STORED, epoch).await,
        spooled,
        "stored exactly once"
    );
    const DUPLICATES: &str = "SELECT count(*) - count(DISTINCT (monitor_id, scheduled_at)) \
         FROM api_heartbeats WHERE lease_epoch = $1";
    assert_eq!(count(&db, DUPLICATES, epoch).await, 0);
    // A check whose result was still on its way to the writer at the kill is the only loss
    // the spool cannot prevent (it lives in the process's mailbox for microseconds).
    assert!(
        executed - spooled <= 1,
        "executed {executed}, spooled {spooled}"
    );
    assert!(replayed >= spooled - stored_before);
}

/// Segment files left in a spool directory (any agent subdirectory).
fn spool_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|sub| std::fs::read_dir(sub.path()).unwrap().flatten())
        .filter(|f| f.file_name().to_string_lossy().starts_with("segment-"))
        .count()
}
