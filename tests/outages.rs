//! Database outages and crashes lose nothing: real agent processes, real PostgreSQL (the shared
//! server behind a TCP proxy the test cuts, or a cluster of the test's own that it stops).

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

/// A database with three monitors of a loopback server, and a proxy to it.
async fn three_monitors_behind_a_proxy() -> (TestDb, TestServer, TcpProxy) {
    let db = TestDb::migrated();
    let http = TestServer::http().await;
    db.execute(&config_with_monitors(&http, 3));
    let proxy = TcpProxy::start(url_host_port(&db.url)).await;
    (db, http, proxy)
}

/// The agent loses the database, keeps checking while its lease is valid, and is killed with
/// SIGKILL holding unwritten results. Started again (same spool) with the database back, it
/// replays them: every check the killed run spooled is stored, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_spooled_before_a_sigkill_are_stored_once_by_the_next_start() {
    let (db, _http, proxy) = three_monitors_behind_a_proxy().await;
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
    let executed = executed_checks(&killed) as i64;
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

/// How long PostgreSQL stays down in the restart test: a minute, or `OUTAGE_SECS` (the
/// five-minute run: `OUTAGE_SECS=300 cargo test --test outages restart -- --nocapture`).
fn outage() -> Duration {
    let secs = std::env::var("OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// PostgreSQL (a cluster of the test's own) is stopped for a minute ([`outage`]) under load
/// and started again: the agent keeps checking on its still valid lease, reconnects by itself, and stores
/// every check it executed, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing() {
    let outage = outage();
    let cluster = PgCluster::start_plain();
    let url = cluster.url("127.0.0.1", "");
    let target = uptimeo_agent::db::DbTarget::parse(&url).unwrap();
    block_on_own_runtime(async move {
        uptimeo_agent::db::migrations::run_pending(&target)
            .await
            .expect("migrate")
    });
    let http = TestServer::http().await;
    let config = config_with_monitors(&http, 6);
    connect(&url).await.batch_execute(&config).await.unwrap();
    let rows = |sql: &'static str| {
        let url = url.clone();
        async move {
            connect(&url)
                .await
                .query_one(sql, &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };

    // The lease outlives the outage: checks go on throughout.
    let ttl = (outage.as_secs() + 30).to_string();
    let mut agent = AgentProcess::run(&url, 1, &[("LEASE_TTL", ttl)]);
    wait_for(Duration::from_secs(20), "heartbeats stored", || async {
        (rows("SELECT count(*) FROM api_heartbeats").await >= 12).then_some(())
    })
    .await;

    cluster.stop();
    let before_outage = executed_checks(&agent);
    tokio::time::sleep(outage).await; // the outage itself
    let during_outage = executed_checks(&agent) - before_outage;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent still runs"
    );
    assert!(!agent.records_with("Failed to save heartbeat").is_empty());
    cluster.start();

    // Back: the agent writes what it held; SIGTERM then stores the last results.
    let inserted = |agent: &AgentProcess| {
        let records = agent.records();
        let is_insert = |r: &&serde_json::Value| {
            r["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("Heartbeat inserted"))
        };
        records.iter().filter(is_insert).count()
    };
    let inserted_before = inserted(&agent);
    wait_for(Duration::from_secs(30), "writes resumed", || {
        let n = inserted(&agent);
        async move { (n > inserted_before + during_outage).then_some(()) }
    })
    .await;
    terminate(&mut agent).await;
    let stored = rows("SELECT count(*) FROM api_heartbeats").await;
    let duplicates =
        rows("SELECT count(*) - count(DISTINCT (monitor_id, scheduled_at)) FROM api_heartbeats")
            .await;
    let total = executed_checks(&agent) as i64;
    eprintln!(
        "outage {outage:?}: executed before {before_outage}, during {during_outage}, \
         total {total}; stored {stored}; duplicates {duplicates}"
    );
    assert!(
        during_outage >= 6 * (outage.as_secs() as usize) / 2,
        "checks went on"
    );
    assert_eq!(stored, total, "every executed check stored");
    assert_eq!(duplicates, 0);
}

/// Cut off for longer than its lease, the agent stops its checks by its deadline and waits
/// as a standby; when the database is back it takes the lease again, writes everything it
/// held and resumes its checks, all without a restart: every executed check stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_lease_ends_in_standby_then_resumes() {
    let (db, _http, proxy) = three_monitors_behind_a_proxy().await;
    let mut agent = AgentProcess::run(&proxy.url(&db.url), 1, &[("LEASE_TTL", "3".into())]);
    let first_epoch = agent
        .wait_for_msg("Acquired lock for datacenter:1", Duration::from_secs(15))
        .await["epoch"]
        .as_i64()
        .expect("epoch");
    wait_for(Duration::from_secs(15), "heartbeats stored", || async {
        (count(
            &db,
            "SELECT count(*) FROM api_heartbeats WHERE lease_epoch = $1",
            first_epoch,
        )
        .await
            >= 3)
            .then_some(())
    })
    .await;

    proxy.cut();
    agent
        .wait_for_msg(
            "lease not renewed in time; stopping checks",
            Duration::from_secs(10),
        )
        .await;
    // Cut off well past the lease's expiry.
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();

    wait_for(Duration::from_secs(30), "the lease taken again", || {
        let n = agent.records_with("Acquired lock for datacenter:1").len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let resumed_epoch = agent.records_with("Acquired lock for datacenter:1")[1]["epoch"]
        .as_i64()
        .expect("epoch");
    const STORED: &str = "SELECT count(*) FROM api_heartbeats WHERE lease_epoch = $1";
    wait_for(Duration::from_secs(15), "checks resumed", || async {
        (count(&db, STORED, resumed_epoch).await >= 3).then_some(())
    })
    .await;
    terminate(&mut agent).await;

    let executed = executed_checks(&agent) as i64;
    let all = "SELECT count(*) FROM api_heartbeats WHERE lease_epoch >= $1";
    let duplicates = "SELECT count(*) - count(DISTINCT (monitor_id, scheduled_at)) \
         FROM api_heartbeats WHERE lease_epoch >= $1";
    let stored = count(&db, all, first_epoch).await;
    eprintln!(
        "outage past the lease: executed {executed}, stored {stored}, epochs {first_epoch} \
         then {resumed_epoch}"
    );
    assert!(resumed_epoch > first_epoch);
    assert_eq!(
        stored, executed,
        "every executed check stored, without a restart"
    );
    assert_eq!(count(&db, duplicates, first_epoch).await, 0);
}
