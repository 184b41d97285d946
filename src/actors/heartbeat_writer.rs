//! `HeartbeatWriterActor`: batches heartbeats into one INSERT a batch and keeps the daily
//! partitions ready.
//!
//! Never lost: every heartbeat received is first appended to the [`Spool`] (a bounded memory
//! queue whose items are also written, one JSON line each, to segment files under
//! `SPOOL_DIR`), and acknowledged there only once PostgreSQL has stored it; a segment is
//! deleted when all its rows are acknowledged. At start, the segments a killed process left
//! behind are replayed before anything new. When the spool's bound is reached, the oldest rows
//! are dropped, each logged (`spool full: oldest heartbeat dropped`) and counted.
//!
//! Never twice: a replay may write rows that were in fact stored just before the kill (the
//! commit came, the acknowledgement did not), and a retry after a timeout may write rows whose
//! commit succeeded. Both are harmless because each row is identified by
//! `(monitor_id, scheduled_at, executed_at)`, a unique index, and the insert skips rows
//! already stored (`ON CONFLICT DO NOTHING`, see [`heartbeats::insert_batch`]).
//!
//! Up to `writes_in_flight` batches are written at once, each on its own pooled connection,
//! so that PostgreSQL works on two batches with two backends (its time, not the agent's, bounds
//! a single connection: foreign-key checks, index insertions, JSON parsing). Rows carry no
//! order that the table needs: a batch finishing before an older one changes nothing.
//!
//! Error policy: a failed write puts its rows back at the head of the queue and is retried with
//! exponential backoff ([`MIN_BACKOFF`] to [`MAX_BACKOFF`]); no new batch starts meanwhile.
//! When an insert fails because no partition covers a row's day, the partition is created and
//! the insert retried at once. When
//! it fails because of a row's content (a constraint violation, such as a monitor deleted since
//! its check ran), the batch is written row by row and each row PostgreSQL rejects is logged at
//! error level with its full content, then dropped: retrying it could never succeed and would
//! block every later row. A failed append to the spool file (a full disk) keeps the row in
//! memory only and logs an error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDate, Utc};
use slog::{debug, error, info, warn, Logger};
use tokio::sync::oneshot;

use crate::db::heartbeats::{self, NewHeartbeat, PartitionOutcome};
use crate::db::{self, DbError, Pool};
use crate::metrics::Metrics;
use crate::spool::{Dropped, Spool, Spooled};

/// Shortest wait before retrying a failed write.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait before retrying a failed write.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often today's and tomorrow's partitions are checked.
pub const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// Longest time one batch write may take before it counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most batches written at once (each on its own connection).
pub const DEFAULT_WRITES_IN_FLIGHT: usize = 2;

/// A heartbeat waiting to be written; one line of the spool.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingHeartbeat {
    pub row: NewHeartbeat,
    #[serde(with = "arc_str")]
    pub monitor_name: Arc<str>,
}

/// Serde for `Arc<str>` as a plain string.
mod arc_str {
    use std::sync::Arc;

    pub fn serialize<S: serde::Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(Arc::from)
    }
}

/// Writes heartbeats.
pub struct HeartbeatWriterActor {
    pool: Pool,
    log: Logger,
    batch_size: usize,
    flush_delay: Duration,
    spool: Spool<PendingHeartbeat>,
    /// Batches being written now.
    in_flight: usize,
    /// Most batches written at once.
    max_in_flight: usize,
    /// A write failed and its retry is scheduled: no batch starts until then.
    backing_off: bool,
    /// Rows dropped because the spool was full, since start.
    dropped_total: u64,
    flush_timer: Option<SpawnHandle>,
    backoff: Duration,
    /// Callers of [`Flush`] waiting for the buffer to empty.
    flush_waiters: Vec<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
    /// Time between two `fsync`s of the spool; `None` leaves it to the system.
    spool_sync: Option<Duration>,
}

impl HeartbeatWriterActor {
    /// A writer using `pool`, queueing rows in `spool` (rows an earlier run left in it are
    /// written first), writing at most `batch_size` rows per statement and waiting at most
    /// `flush_delay` before writing a partial batch.
    pub fn new(
        pool: Pool,
        spool: Spool<PendingHeartbeat>,
        batch_size: usize,
        flush_delay: Duration,
        log: Logger,
    ) -> Self {
        Self {
            pool,
            log,
            batch_size: batch_size.max(1),
            flush_delay,
            spool,
            in_flight: 0,
            max_in_flight: DEFAULT_WRITES_IN_FLIGHT,
            backing_off: false,
            dropped_total: 0,
            flush_timer: None,
            backoff: MIN_BACKOFF,
            flush_waiters: Vec::new(),
            metrics: Arc::new(Metrics::new()),
            spool_sync: None,
        }
    }

    /// Syncs the spool to disk every `every` (a zero duration never does), so that a crash of
    /// the machine loses at most the rows of the last `every`.
    pub fn with_spool_sync(mut self, every: Duration) -> Self {
        self.spool_sync = (!every.is_zero()).then_some(every);
        self
    }

    fn sync_spool(&mut self) {
        if let Err(e) = self.spool.sync() {
            error!(self.log, "cannot sync the spool to disk"; "error" => %e);
        }
    }

    /// Writes at most `n` batches at once (at least one); the pool needs `n` connections for
    /// them, plus one for partition maintenance.
    pub fn with_writes_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Records queue depth, batch sizes, rows written and write errors into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn schedule_flush(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if self.flush_timer.is_none() {
            self.flush_timer = Some(ctx.run_later(delay, |act, ctx| {
                act.flush_timer = None;
                act.flush(ctx);
            }));
        }
    }

    /// Starts writing batches until `max_in_flight` are under way or nothing is waiting;
    /// nothing starts while a failed write waits for its retry.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while !self.backing_off && self.in_flight < self.max_in_flight {
            let batch = match self.spool.take(self.batch_size) {
                Ok(batch) => batch,
                Err(e) => {
                    // The next segment could not be read back; try again later.
                    error!(self.log, "spool read failed"; "error" => %e);
                    self.schedule_flush(MAX_BACKOFF, ctx);
                    return;
                }
            };
            if batch.is_empty() {
                if self.in_flight == 0 {
                    for waiter in self.flush_waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
                return;
            }
            if let Some(timer) = self.flush_timer.take() {
                ctx.cancel_future(timer);
            }
            self.write(batch, ctx);
        }
    }

    /// Writes one batch on a connection of its own.
    fn write(&mut self, batch: Vec<Spooled<PendingHeartbeat>>, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        let pool = self.pool.clone();
        let rows: Vec<NewHeartbeat> = batch.iter().map(|p| p.item.row.clone()).collect();
        let write = async move {
            tokio::time::timeout(WRITE_TIMEOUT, write_batch(&pool, &rows))
                .await
                .unwrap_or_else(|_| Err(pool.timed_out(WRITE_TIMEOUT)))
        };

        ctx.spawn(write.into_actor(self).map(move |outcome, act, ctx| {
            act.in_flight -= 1;
            act.finish_write(batch, outcome, ctx);
        }));
    }

    /// Logs what a batch write did and decides what comes next: the next batch at once, or a
    /// retry of the unwritten rows after a backoff.
    fn finish_write(
        &mut self,
        mut batch: Vec<Spooled<PendingHeartbeat>>,
        outcome: Result<WriteReport, DbError>,
        ctx: &mut Context<Self>,
    ) {
        let (report, unwritten, failure) = match outcome {
            Ok(mut report) => match report.interrupted.take() {
                Some((index, e)) => {
                    let unwritten = batch.split_off(index);
                    (report, unwritten, Some(e))
                }
                None => (report, Vec::new(), None),
            },
            Err(e) => (WriteReport::default(), std::mem::take(&mut batch), Some(e)),
        };

        let stored = batch.len() - report.rejected.len();
        let attempted = stored + report.rejected.len() + unwritten.len();
        self.metrics
            .record_write(attempted, stored, report.rejected.len(), failure.is_some());
        for day in report.created {
            info!(self.log, "partition created"; "partition" => heartbeats::partition_name(day));
        }
        if report.skipped > 0 {
            info!(self.log, "heartbeats already stored; skipped"; "rows" => report.skipped);
        }
        let mut rejected = report.rejected.into_iter().peekable();
        for (index, p) in batch.iter().map(|s| &s.item).enumerate() {
            if let Some((_, reason)) = rejected.next_if(|(i, _)| *i == index) {
                error!(self.log, "Failed to save heartbeat"; "error" => reason,
                    "dropped" => true, "monitor_id" => p.row.monitor_id,
                    "row" => serde_json::to_string(&p.row).unwrap_or_default());
                continue;
            }
            info!(self.log, "Heartbeat inserted for monitor {} ({})",
                p.row.monitor_id.unwrap_or_default(), p.monitor_name;
                "monitor_id" => p.row.monitor_id, "status" => p.row.status.as_deref());
        }

        if let Err(e) = self.spool.ack(batch) {
            // The rows are stored; a segment left behind is replayed and skipped next start.
            warn!(self.log, "spool cleanup failed"; "error" => %e);
        }
        self.metrics.record_writer_queue(self.spool.len());

        let Some(e) = failure else {
            self.backoff = MIN_BACKOFF;
            self.flush(ctx);
            return;
        };
        let retry_in = self.backoff;
        warn!(self.log, "Failed to save heartbeat"; "error" => %e, "rows" => unwritten.len(),
            "retry_in_ms" => retry_in.as_millis() as u64);
        self.spool.requeue(unwritten);
        if self.backing_off {
            // Another batch in flight failed first; its retry is already scheduled.
            return;
        }
        self.backing_off = true;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        ctx.run_later(retry_in, |act, ctx| {
            act.backing_off = false;
            act.flush(ctx);
        });
    }

    /// Logs and counts each row the spool dropped to stay within its bound.
    fn log_dropped(&mut self, dropped: Dropped<PendingHeartbeat>) {
        if dropped.count() == 0 {
            return;
        }
        for p in &dropped.items {
            self.dropped_total += 1;
            warn!(self.log, "spool full: oldest heartbeat dropped";
                "monitor_id" => p.row.monitor_id, "dropped_total" => self.dropped_total,
                "scheduled_at" => p.row.scheduled_at.map(|t| t.to_string()));
        }
        if dropped.unread > 0 {
            self.dropped_total += dropped.unread as u64;
            warn!(self.log, "spool full: oldest heartbeat dropped"; "rows" => dropped.unread,
                "dropped_total" => self.dropped_total);
        }
    }

    fn ensure_upcoming_partitions(&mut self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let today = Utc::now().date_naive();
        let days = [today, today.succ_opt().unwrap_or(today)];
        let work = async move {
            let mut conn = db::checkout(&pool).await?;
            let mut outcomes = Vec::new();
            for day in days {
                outcomes.push((day, heartbeats::ensure_partition(&mut conn, day).await?));
            }
            Ok::<_, DbError>(outcomes)
        };
        ctx.spawn(work.into_actor(self).map(|outcome, act, _| match outcome {
            Ok(outcomes) => {
                for (day, outcome) in outcomes {
                    let name = heartbeats::partition_name(day);
                    match outcome {
                        PartitionOutcome::Created => {
                            info!(act.log, "partition created"; "partition" => name)
                        }
                        PartitionOutcome::Exists => {
                            debug!(act.log, "partition exists"; "partition" => name)
                        }
                        PartitionOutcome::Covered => {
                            info!(act.log, "day covered by another partition";
                            "day" => day.to_string())
                        }
                    }
                }
            }
            Err(e) => warn!(act.log, "partition maintenance failed; retried later"; "error" => %e),
        }));
    }
}

/// What a batch write did besides storing rows.
#[derive(Debug, Default)]
struct WriteReport {
    /// Days whose partitions were created.
    created: Vec<NaiveDate>,
    /// Rows already stored (by an earlier attempt or run), skipped.
    skipped: usize,
    /// Rows PostgreSQL rejected for their content, by index in the batch, with the reason.
    rejected: Vec<(usize, String)>,
    /// When a row-by-row write was interrupted: the index of the first row not yet written,
    /// and why. Those rows go back to the buffer; the ones before it are stored or rejected.
    interrupted: Option<(usize, DbError)>,
}

/// Inserts the rows; when a row's day has no partition, creates it and inserts again; when a
/// row breaks a constraint, writes the rows one by one and reports the rejected ones.
async fn write_batch(pool: &Pool, rows: &[NewHeartbeat]) -> Result<WriteReport, DbError> {
    let mut conn = db::checkout(pool).await?;
    let mut report = WriteReport::default();
    let mut outcome = heartbeats::insert_batch(&mut conn, rows).await;
    if matches!(&outcome, Err(e) if e.is_partition_missing()) {
        let days: BTreeSet<NaiveDate> = rows.iter().map(|r| r.executed_at.date()).collect();
        for day in days {
            if heartbeats::ensure_partition(&mut conn, day).await? == PartitionOutcome::Created {
                report.created.push(day);
            }
        }
        outcome = heartbeats::insert_batch(&mut conn, rows).await;
    }
    match outcome {
        Ok(inserted) => {
            report.skipped = rows.len().saturating_sub(inserted);
            Ok(report)
        }
        Err(e) if e.is_row_rejected() => {
            for (index, row) in rows.iter().enumerate() {
                match heartbeats::insert_batch(&mut conn, std::slice::from_ref(row)).await {
                    Ok(0) => report.skipped += 1,
                    Ok(_) => {}
                    Err(e) if e.is_row_rejected() => report.rejected.push((index, e.to_string())),
                    Err(e) => {
                        report.interrupted = Some((index, e));
                        break;
                    }
                }
            }
            Ok(report)
        }
        Err(e) => Err(e),
    }
}

impl Actor for HeartbeatWriterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.log, "heartbeat writer started"; "batch_size" => self.batch_size,
            "flush_delay_ms" => self.flush_delay.as_millis() as u64,
            "spooled" => self.spool.len());
        self.ensure_upcoming_partitions(ctx);
        // Rows an earlier run left in the spool.
        self.flush(ctx);
        ctx.run_interval(PARTITION_CHECK_INTERVAL, |act, ctx| {
            act.ensure_upcoming_partitions(ctx)
        });
        if let Some(every) = self.spool_sync {
            ctx.run_interval(every, |act, _| act.sync_spool());
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sync_spool();
        if self.spool.is_empty() {
            info!(self.log, "heartbeat writer stopped");
        } else {
            warn!(self.log, "heartbeat writer stopped with unwritten heartbeats; kept in spool";
                "rows" => self.spool.len());
        }
    }
}

/// Sent by monitor actors with each check's result.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordHeartbeat(pub PendingHeartbeat);

impl Handler<RecordHeartbeat> for HeartbeatWriterActor {
    type Result = ();

    fn handle(&mut self, msg: RecordHeartbeat, ctx: &mut Self::Context) {
        let monitor_id = msg.0.row.monitor_id;
        let (dropped, written) = self.spool.push(msg.0);
        match written {
            Ok(()) => debug!(self.log, "heartbeat spooled"; "monitor_id" => monitor_id,
                "spooled" => self.spool.len()),
            Err(e) => error!(self.log, "spool write failed; heartbeat kept in memory only";
                "error" => %e, "monitor_id" => monitor_id),
        }
        self.log_dropped(dropped);
        self.metrics.record_writer_queue(self.spool.len());
        if self.spool.waiting() >= self.batch_size {
            self.flush(ctx);
        } else {
            self.schedule_flush(self.flush_delay, ctx);
        }
    }
}

/// Sent at shutdown: answers once every heartbeat received before it is stored (the caller
/// bounds the wait).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for HeartbeatWriterActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push(tx);
        self.flush(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Asks how many heartbeats are not stored yet, including a batch being written.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PendingCount;

impl Handler<PendingCount> for HeartbeatWriterActor {
    type Result = usize;

    fn handle(&mut self, _msg: PendingCount, _ctx: &mut Self::Context) -> usize {
        self.spool.len()
    }
}
