//! The heartbeat writer actor in process, against real PostgreSQL.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{Days, Utc};
use common::*;
use uptimeo_agent::actors::heartbeat_writer::{Flush, PendingHeartbeat, RecordHeartbeat};
use uptimeo_agent::actors::HeartbeatWriterActor;
use uptimeo_agent::db::heartbeats::NewHeartbeat;
use uptimeo_agent::db::DbTarget;
use uptimeo_agent::spool::{Spool, SpoolConfig};

/// A row of `monitor_id`, executed now plus `days_ahead` days; every row made is distinct
/// (rows with the same key would be stored once).
fn row(monitor_id: i32, days_ahead: u64) -> PendingHeartbeat {
    static DISTINCT: AtomicI64 = AtomicI64::new(0);
    let executed_at = (Utc::now() + Days::new(days_ahead)).naive_utc()
        + chrono::Duration::microseconds(DISTINCT.fetch_add(1, Ordering::SeqCst));
    PendingHeartbeat {
        row: NewHeartbeat {
            monitor_id: Some(monitor_id),
            agent_id: Some(1),
            executed_at,
            success: Some(true),
            response_time_ms: Some(12),
            response_size_bytes: None,
            response_status_code: Some(200),
            response_content_type: None,
            response_server: None,
            response_cache_status: None,
            dns_lookup_ms: None,
            tcp_connect_ms: Some(1),
            tls_handshake_ms: None,
            time_to_first_byte_ms: Some(5),
            warning_threshold_ms: None,
            critical_threshold_ms: None,
            error_type: None,
            error_message: None,
            raw_request_headers: None,
            raw_response_headers: None,
            raw_response_body: None,
            status: Some("up".into()),
            lease_epoch: Some(1),
            scheduled_at: Some(executed_at),
            details: None,
        },
        monitor_name: Arc::from("m"),
    }
}

/// A writer on `url` with a spool in a new temporary directory (removed when dropped).
fn writer(url: &str) -> (Addr<HeartbeatWriterActor>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let log = Messages::default();
    (
        writer_with(url, spool, Duration::from_millis(20), &log),
        dir,
    )
}

/// A writer on `url` using `spool`, logging to `log`.
fn writer_with(
    url: &str,
    spool: Spool<PendingHeartbeat>,
    flush_delay: Duration,
    log: &Messages,
) -> Addr<HeartbeatWriterActor> {
    let pool = DbTarget::parse(url).unwrap().pool(2);
    let log = slog::Logger::root(slog::Fuse(log.clone()), slog::o!());
    HeartbeatWriterActor::new(pool, spool, 100, flush_delay, log).start()
}

async fn count(db_url: &str, sql: &str) -> i64 {
    connect(db_url)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

fn seeded_db() -> TestDb {
    let db = TestDb::migrated();
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(1, "m", "HTTP", "http://127.0.0.1:9/"));
    db
}

/// Today's and tomorrow's partitions exist after start; a row for a day without a partition
/// is still stored (its partition is created on demand).
#[actix_rt::test]
async fn partitions_are_ready_and_created_on_demand() {
    let db = seeded_db();
    let (writer, _spool) = writer(&db.url);
    let today = Utc::now().date_naive();
    let partition = |d: chrono::NaiveDate| format!("api_heartbeats_{}", d.format("%Y_%m_%d"));
    let (p_today, p_tomorrow) = (partition(today), partition(today + Days::new(1)));
    let exists =
        format!("SELECT count(*) FROM pg_class WHERE relname IN ('{p_today}', '{p_tomorrow}')");
    wait_for(
        Duration::from_secs(10),
        "today's and tomorrow's partitions",
        || async { (count(&db.url, &exists).await == 2).then_some(()) },
    )
    .await;

    writer.do_send(RecordHeartbeat(row(1, 0)));
    writer.do_send(RecordHeartbeat(row(1, 5)));
    writer.send(Flush).await.unwrap();
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM api_heartbeats").await,
        2
    );
    let later = partition(today + Days::new(5));
    assert_eq!(
        count(&db.url, &format!("SELECT count(*) FROM {later}")).await,
        1
    );
}

/// A row PostgreSQL can never accept (its monitor was deleted) does not block the others.
#[actix_rt::test]
async fn a_rejected_row_does_not_block_the_batch() {
    let db = seeded_db();
    let (writer, _spool) = writer(&db.url);
    writer.do_send(RecordHeartbeat(row(1, 0)));
    writer.do_send(RecordHeartbeat(row(4242, 0)));
    writer.do_send(RecordHeartbeat(row(1, 0)));
    writer.send(Flush).await.unwrap();
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM api_heartbeats WHERE monitor_id = 1"
        )
        .await,
        2
    );
}

/// While the database cannot be reached, rows wait and are retried; once it is back they are
/// all stored, exactly once.
#[actix_rt::test]
async fn failed_writes_are_retried_until_they_succeed() {
    let mut db = seeded_db();
    let later_name = format!("{}_later", db.name);
    let later_url = with_dbname(&db.url, &later_name);
    let (writer, _spool) = writer(&later_url);
    for _ in 0..5 {
        writer.do_send(RecordHeartbeat(row(1, 0)));
    }
    // Let a few attempts fail against the missing database.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        writer
            .send(uptimeo_agent::actors::heartbeat_writer::PendingCount)
            .await
            .unwrap(),
        5
    );

    db.execute("SELECT 1"); // connections closed by the helper; now rename into place
    let rename = format!("ALTER DATABASE {} RENAME TO {later_name}", db.name);
    let admin = admin_url();
    block_on_own_runtime(
        async move { connect(&admin).await.batch_execute(&rename).await.unwrap() },
    );
    db.name = later_name;
    db.url = later_url.clone();

    tokio::time::timeout(Duration::from_secs(20), writer.send(Flush))
        .await
        .expect("flushed")
        .unwrap();
    assert_eq!(
        count(&later_url, "SELECT count(*) FROM api_heartbeats").await,
        5
    );
}

/// A slog drain that keeps each record's message.
#[derive(Clone, Default)]
struct Messages(Arc<std::sync::Mutex<Vec<String>>>);

impl slog::Drain for Messages {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        self.0.lock().unwrap().push(record.msg().to_string());
        Ok(())
    }
}

impl Messages {
    fn count(&self, msg: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|m| *m == msg).count()
    }
}

/// Rows a killed run left in its spool are written by the next start, and those the killed
/// run had already stored (committed, not yet acknowledged in the spool) are not written again.
#[actix_rt::test]
async fn a_replayed_spool_stores_every_row_exactly_once() {
    let db = seeded_db();
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<PendingHeartbeat> = (0..30).map(|_| row(1, 0)).collect();
    {
        // The killed run: every row spooled, none acknowledged, the first ten stored.
        let (mut spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
        for r in &rows {
            spool.push(r.clone()).1.unwrap();
        }
        let (already, _dir) = writer(&db.url);
        for r in &rows[..10] {
            already.do_send(RecordHeartbeat(r.clone()));
        }
        already.send(Flush).await.unwrap();
    }
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM api_heartbeats").await,
        10
    );

    let (spool, recovered) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    assert_eq!(recovered.items, 30);
    let log = Messages::default();
    let writer = writer_with(&db.url, spool, Duration::from_millis(20), &log);
    writer.send(Flush).await.unwrap();

    assert_eq!(
        count(&db.url, "SELECT count(*) FROM api_heartbeats").await,
        30
    );
    let keys = "SELECT count(DISTINCT (monitor_id, scheduled_at)) FROM api_heartbeats";
    assert_eq!(count(&db.url, keys).await, 30);
    assert_eq!(log.count("heartbeats already stored; skipped"), 1);
    // Replayed once: no segment is left to replay again.
    let left = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("segment-")
        })
        .count();
    assert_eq!(left, 0);
}

/// Past the spool's bound, the oldest rows are dropped, each with a log line; the newest are
/// stored.
#[actix_rt::test]
async fn a_full_spool_drops_the_oldest_with_a_log_line() {
    let db = seeded_db();
    let dir = tempfile::tempdir().unwrap();
    let mut config = SpoolConfig::new(dir.path());
    config.max_items = 4;
    config.memory_items = 2;
    config.segment_items = 3;
    let (spool, _) = Spool::open(config).unwrap();
    let log = Messages::default();
    // Nothing is written before the explicit flush.
    let writer = writer_with(&db.url, spool, Duration::from_secs(600), &log);
    let rows: Vec<PendingHeartbeat> = (0..10).map(|_| row(1, 0)).collect();
    for r in &rows {
        writer.do_send(RecordHeartbeat(r.clone()));
    }
    writer.send(Flush).await.unwrap();

    assert_eq!(log.count("spool full: oldest heartbeat dropped"), 6);
    let stored: Vec<chrono::NaiveDateTime> = first_column(
        &db.url,
        "SELECT executed_at FROM api_heartbeats ORDER BY executed_at",
    )
    .await;
    let newest: Vec<_> = rows[6..].iter().map(|r| r.row.executed_at).collect();
    let truncate = |t: chrono::NaiveDateTime| t.and_utc().timestamp_micros();
    assert_eq!(
        stored.into_iter().map(truncate).collect::<Vec<_>>(),
        newest.into_iter().map(truncate).collect::<Vec<_>>()
    );
}
