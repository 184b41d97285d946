//! `HeartbeatWriterActor`: batches heartbeats into multi-row INSERTs and keeps the daily
//! partitions ready.
//!
//! Error policy: a failed write keeps its rows at the head of the buffer and is retried with
//! exponential backoff ([`MIN_BACKOFF`] to [`MAX_BACKOFF`]); a row is removed from the buffer
//! only once PostgreSQL has stored it. When an insert fails because no partition covers a row's
//! day, the partition is created and the insert retried at once. The buffer lives in memory:
//! rows still in it when the process is killed are lost.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDate, Utc};
use slog::{debug, error, info, warn, Logger};
use tokio::sync::oneshot;

use crate::db::heartbeats::{self, NewHeartbeat, PartitionOutcome};
use crate::db::{self, DbError, Pool};

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
    writing: bool,
    flush_timer: Option<SpawnHandle>,
    backoff: Duration,
    /// Callers of [`Flush`] waiting for the buffer to empty.
    flush_waiters: Vec<oneshot::Sender<()>>,
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
            writing: false,
            flush_timer: None,
            backoff: MIN_BACKOFF,
            flush_waiters: Vec::new(),
        }
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
        if self.writing {
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
        self.writing = true;
        let pool = self.pool.clone();
        let rows: Vec<NewHeartbeat> = batch.iter().map(|p| p.row.clone()).collect();
        let write =
            async move { tokio::time::timeout(WRITE_TIMEOUT, write_batch(&pool, &rows)).await };

        ctx.spawn(write.into_actor(self).map(move |outcome, act, ctx| {
            act.writing = false;
            let outcome = outcome.unwrap_or(Err(DbError::Timeout(WRITE_TIMEOUT)));
            match outcome {
                Ok(created) => {
                    for day in created {
                        info!(act.log, "partition created";
                            "partition" => heartbeats::partition_name(day));
                    }
                    for p in &batch {
                        info!(act.log, "Heartbeat inserted for monitor {} ({})",
                            p.row.monitor_id.unwrap_or_default(), p.monitor_name;
                            "monitor_id" => p.row.monitor_id, "status" => p.row.status.as_deref());
                    }
                    act.backoff = MIN_BACKOFF;
                    act.flush(ctx);
                }
                Err(e) => {
                    let retry_in = act.backoff;
                    let level_error = !e.is_transient();
                    if level_error {
                        error!(act.log, "Failed to save heartbeat"; "error" => %e,
                            "rows" => batch.len(), "retry_in_ms" => retry_in.as_millis() as u64);
                    } else {
                        warn!(act.log, "Failed to save heartbeat"; "error" => %e,
                            "rows" => batch.len(), "retry_in_ms" => retry_in.as_millis() as u64);
                    }
                    // Back at the head, in their original order.
                    for p in batch.into_iter().rev() {
                        act.buffer.push_front(p);
                    }
                    act.backoff = (act.backoff * 2).min(MAX_BACKOFF);
                    act.schedule_flush(retry_in, ctx);
                }
            }
        }));
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

/// Inserts the rows; when a row's day has no partition, creates it and inserts again. Returns
/// the days whose partitions were created.
async fn write_batch(pool: &Pool, rows: &[NewHeartbeat]) -> Result<Vec<NaiveDate>, DbError> {
    let mut conn = db::checkout(pool).await?;
    match heartbeats::insert_batch(&mut conn, rows).await {
        Ok(_) => Ok(Vec::new()),
        Err(e) if e.is_partition_missing() => {
            let days: BTreeSet<NaiveDate> = rows.iter().map(|r| r.executed_at.date()).collect();
            let mut created = Vec::new();
            for day in days {
                if heartbeats::ensure_partition(&mut conn, day).await? == PartitionOutcome::Created
                {
                    created.push(day);
                }
            }
            heartbeats::insert_batch(&mut conn, rows).await?;
            Ok(created)
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

/// Asks how many heartbeats wait to be written (for health and tests).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PendingCount;

impl Handler<PendingCount> for HeartbeatWriterActor {
    type Result = usize;

    fn handle(&mut self, _msg: PendingCount, _ctx: &mut Self::Context) -> usize {
        self.buffer.len()
    }
}
