//! `HeartbeatWriterActor`: batches heartbeats into multi-row INSERTs and keeps the daily
//! partitions ready.
//!
//! Error policy: a failed write keeps its rows at the head of the buffer and is retried with
//! exponential backoff ([`MIN_BACKOFF`] to [`MAX_BACKOFF`]); a row is removed from the buffer
//! only once PostgreSQL has stored it. When an insert fails because no partition covers a row's
//! day, the partition is created and the insert retried at once. When it fails because of a
//! row's content (a constraint violation, such as a monitor deleted since its check ran), the
//! batch is written row by row and each row PostgreSQL rejects is logged at error level with
//! its full content, then dropped: retrying it could never succeed and would block every later
//! row. The buffer lives in memory: rows still in it when the process is killed are lost.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDate, Utc};
use slog::{debug, error, info, warn, Logger};
use tokio::sync::oneshot;

use crate::db::heartbeats::{self, NewHeartbeat, PartitionOutcome};
use crate::db::{self, DbError, Pool};
use crate::metrics::Metrics;

/// Shortest wait before retrying a failed write.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait before retrying a failed write.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often today's and tomorrow's partitions are checked.
pub const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// Longest time one batch write may take before it counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A heartbeat waiting to be written.
#[derive(Debug, Clone)]
pub struct PendingHeartbeat {
    pub row: NewHeartbeat,
    pub monitor_name: Arc<str>,
}

/// Writes heartbeats.
pub struct HeartbeatWriterActor {
    pool: Pool,
    log: Logger,
    batch_size: usize,
    flush_delay: Duration,
    buffer: VecDeque<PendingHeartbeat>,
    /// Rows of the batch being written; zero when no write is under way.
    writing: usize,
    flush_timer: Option<SpawnHandle>,
    backoff: Duration,
    /// Callers of [`Flush`] waiting for the buffer to empty.
    flush_waiters: Vec<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl HeartbeatWriterActor {
    /// A writer using `pool`, writing at most `batch_size` rows per statement and waiting at
    /// most `flush_delay` before writing a partial batch.
    pub fn new(pool: Pool, batch_size: usize, flush_delay: Duration, log: Logger) -> Self {
        Self {
            pool,
            log,
            batch_size: batch_size.max(1),
            flush_delay,
            buffer: VecDeque::new(),
            writing: 0,
            flush_timer: None,
            backoff: MIN_BACKOFF,
            flush_waiters: Vec::new(),
            metrics: Arc::new(Metrics::new()),
        }
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

    /// Writes the next batch unless a write is already under way.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.writing > 0 {
            return;
        }
        if self.buffer.is_empty() {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
            return;
        }
        if let Some(timer) = self.flush_timer.take() {
            ctx.cancel_future(timer);
        }

        let take = self.buffer.len().min(self.batch_size);
        let batch: Vec<PendingHeartbeat> = self.buffer.drain(..take).collect();
        self.writing = batch.len();
        let pool = self.pool.clone();
        let rows: Vec<NewHeartbeat> = batch.iter().map(|p| p.row.clone()).collect();
        let write =
            async move { tokio::time::timeout(WRITE_TIMEOUT, write_batch(&pool, &rows)).await };

        ctx.spawn(write.into_actor(self).map(move |outcome, act, ctx| {
            act.writing = 0;
            let outcome = outcome.unwrap_or(Err(DbError::Timeout(WRITE_TIMEOUT)));
            act.finish_write(batch, outcome, ctx);
        }));
    }

    /// Logs what a batch write did and decides what comes next: the next batch at once, or a
    /// retry of the unwritten rows after a backoff.
    fn finish_write(
        &mut self,
        mut batch: Vec<PendingHeartbeat>,
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
        self.metrics
            .record_writer_queue(self.buffer.len() + unwritten.len());
        for day in report.created {
            info!(self.log, "partition created"; "partition" => heartbeats::partition_name(day));
        }
        let mut rejected = report.rejected.into_iter().peekable();
        for (index, p) in batch.iter().enumerate() {
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

        let Some(e) = failure else {
            self.backoff = MIN_BACKOFF;
            self.flush(ctx);
            return;
        };
        let retry_in = self.backoff;
        warn!(self.log, "Failed to save heartbeat"; "error" => %e, "rows" => unwritten.len(),
            "retry_in_ms" => retry_in.as_millis() as u64);
        // Back at the head, in their original order.
        for p in unwritten.into_iter().rev() {
            self.buffer.push_front(p);
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.schedule_flush(retry_in, ctx);
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
        Ok(_) => Ok(report),
        Err(e) if e.is_row_rejected() => {
            for (index, row) in rows.iter().enumerate() {
                match heartbeats::insert_batch(&mut conn, std::slice::from_ref(row)).await {
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
            "flush_delay_ms" => self.flush_delay.as_millis() as u64);
        self.ensure_upcoming_partitions(ctx);
        ctx.run_interval(PARTITION_CHECK_INTERVAL, |act, ctx| {
            act.ensure_upcoming_partitions(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.buffer.is_empty() {
            info!(self.log, "heartbeat writer stopped");
        } else {
            error!(self.log, "heartbeat writer stopped with unwritten heartbeats";
                "rows" => self.buffer.len());
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
        self.buffer.push_back(msg.0);
        self.metrics
            .record_writer_queue(self.buffer.len() + self.writing);
        if self.buffer.len() >= self.batch_size {
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
        self.buffer.len() + self.writing
    }
}
