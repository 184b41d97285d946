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

/// The same check received twice before a write (one batch) is stored once, beside the other
/// rows of the batch; the repeat is reported as already stored.
#[actix_rt::test]
async fn a_check_repeated_within_a_batch_is_stored_once() {
    let db = seeded_db();
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let log = Messages::default();
    // Nothing is written before the explicit flush: the four rows form one batch.
    let writer = writer_with(&db.url, spool, Duration::from_secs(600), &log);
    let twice = row(1, 0);
    writer.do_send(RecordHeartbeat(row(1, 0)));
    writer.do_send(RecordHeartbeat(twice.clone()));
    writer.do_send(RecordHeartbeat(twice));
    writer.do_send(RecordHeartbeat(row(1, 0)));
    writer.send(Flush).await.unwrap();

    assert_eq!(
        count(&db.url, "SELECT count(*) FROM api_heartbeats").await,
        3
    );
    assert_eq!(log.count("heartbeats already stored; skipped"), 1);
}

/// With several batches written at once, each on its own connection, every row is stored
/// exactly once and a flush waits for the last of them.
#[actix_rt::test]
async fn batches_written_at_once_store_every_row_once() {
    let db = seeded_db();
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig::new(dir.path())).unwrap();
    let pool = DbTarget::parse(&db.url).unwrap().pool(5);
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let writer = HeartbeatWriterActor::new(pool, spool, 50, Duration::from_millis(5), log)
        .with_writes_in_flight(4)
        .start();
    for _ in 0..2_000 {
        writer.do_send(RecordHeartbeat(row(1, 0)));
    }
    writer.send(Flush).await.unwrap();
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM api_heartbeats").await,
        2_000
    );
    assert_eq!(
        writer
            .send(uptimeo_agent::actors::heartbeat_writer::PendingCount)
            .await
            .unwrap(),
        0
    );
}

/// Every field of a row reaches its column unchanged: strings, JSON, NULLs, timestamps to the
/// microsecond.
#[actix_rt::test]
async fn every_field_is_stored_as_sent() {
    let db = seeded_db();
    let (writer, _spool) = writer(&db.url);
    let executed_at = Utc::now()
        .date_naive()
        .and_hms_micro_opt(12, 0, 0, 123_457)
        .unwrap();
    let mut full = row(1, 0);
    full.row = NewHeartbeat {
        executed_at,
        scheduled_at: Some(executed_at - chrono::Duration::microseconds(1_001)),
        success: Some(false),
        response_size_bytes: Some(15),
        response_content_type: Some("application/json".into()),
        response_server: Some("test \"server\"".into()),
        response_cache_status: Some("HIT".into()),
        dns_lookup_ms: Some(2),
        tls_handshake_ms: Some(3),
        warning_threshold_ms: Some(500),
        critical_threshold_ms: Some(2000),
        error_type: Some("http_status".into()),
        error_message: Some("HTTP 503, {not json}".into()),
        raw_request_headers: Some(serde_json::json!({"Accept": "*/*", "X-Quote": "a\"b"})),
        raw_response_headers: Some(serde_json::json!({"content-length": "15"})),
        raw_response_body: Some(serde_json::json!({"ok": false, "items": [1, 2.5, null]})),
        status: Some("down".into()),
        lease_epoch: Some(i64::from(i32::MAX) + 7),
        details: Some(serde_json::json!({"ttfb_us": 4321, "http_version": "HTTP/1.1"})),
        ..full.row
    };
    let mut sparse = row(1, 0);
    sparse.row.executed_at = executed_at + chrono::Duration::seconds(1);
    sparse.row.scheduled_at = Some(sparse.row.executed_at);
    sparse.row.success = None;
    sparse.row.status = None;
    sparse.row.response_time_ms = None;
    writer.do_send(RecordHeartbeat(full.clone()));
    writer.do_send(RecordHeartbeat(sparse.clone()));
    writer.send(Flush).await.unwrap();

    let client = connect(&db.url).await;
    for sent in [&full.row, &sparse.row] {
        let stored: serde_json::Value = client
            .query_one(
                "SELECT to_jsonb(h) FROM api_heartbeats h WHERE executed_at = $1",
                &[&sent.executed_at],
            )
            .await
            .unwrap()
            .get(0);
        let serde_json::Value::Object(expected) = serde_json::to_value(sent).unwrap() else {
            panic!("a row serializes to an object");
        };
        for (column, value) in expected {
            assert_eq!(stored[&column], value, "column {column}");
        }
    }
}

/// While the database cannot be reached, rows wait and are retried; once it is back they are
/// all stored, exactly once.
#[actix_rt::test]
async fn failed_writes_are_retried_until_they_succeed() {
    let mut db = seeded_db();
    let later_name = format!("{}_later", db.name);
    let later_url = with_dbname(&db.url, &later_name);
    let (writer, _spool) = writer(&later_url);
    // Three batches of at most 100: two are written at once, and both fail.
    for _ in 0..250 {
        writer.do_send(RecordHeartbeat(row(1, 0)));
    }
    // Let a few attempts fail against the missing database.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        writer
            .send(uptimeo_agent::actors::heartbeat_writer::PendingCount)
            .await
            .unwrap(),
        250
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
        250
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
