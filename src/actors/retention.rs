//! `RetentionActor`: drops whole daily heartbeat partitions older than `RETENTION_DAYS`.
//!
//! A small actor of its own rather than a duty of the writer: it works on whole tables, at a
//! slow pace, and must never hold up heartbeat inserts. It needs no word from the supervisor
//! either: every drop runs in a transaction that first checks, in the database, that this
//! process holds an unexpired lease of its datacenter, so standbys sweep but never drop.
//! Started only when `RETENTION_DAYS` is set.
//!
//! Error policy: a failed sweep is logged at warn and retried at the next interval; the
//! partition it stopped at is tried again then. Nothing is retried sooner: old partitions
//! cost disk space, not correctness.

use std::time::Duration;

use actix::prelude::*;
use chrono::{NaiveDateTime, Utc};
use slog::{debug, info, warn, Logger};
use std::sync::Arc;

use crate::db::lease::Claimant;
use crate::db::retention::{self, DropOutcome};
use crate::db::{self, DbError, Pool};
use crate::metrics::Metrics;

/// Sweeps partitions for one agent.
pub struct RetentionActor {
    pool: Pool,
    claimant: Claimant,
    retention: chrono::Duration,
    interval: Duration,
    sweeping: bool,
    metrics: Arc<Metrics>,
    log: Logger,
}

/// What one sweep did.
#[derive(Debug, Default)]
struct SweepReport {
    dropped: Vec<String>,
    not_holder: bool,
}

impl RetentionActor {
    /// Keeps `days` days of heartbeats, sweeping every `interval` (the first sweep at start).
    pub fn new(pool: Pool, claimant: Claimant, days: u32, interval: Duration, log: Logger) -> Self {
        Self {
            pool,
            claimant,
            retention: chrono::Duration::days(i64::from(days)),
            interval,
            sweeping: false,
            metrics: Arc::new(Metrics::new()),
            log,
        }
    }

    /// Records dropped partitions into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            return;
        }
        self.sweeping = true;
        let cutoff = Utc::now().naive_utc() - self.retention;
        let (pool, claimant) = (self.pool.clone(), self.claimant.clone());
        ctx.spawn(
            sweep(pool, claimant, cutoff)
                .into_actor(self)
                .map(move |outcome, act, _| {
                    act.sweeping = false;
                    act.report(outcome, cutoff);
                }),
        );
    }

    fn report(&mut self, outcome: (SweepReport, Option<DbError>), cutoff: NaiveDateTime) {
        let (report, failure) = outcome;
        for partition in &report.dropped {
            self.metrics.record_partition_dropped();
            info!(self.log, "partition dropped"; "partition" => partition,
                "cutoff" => cutoff.to_string());
        }
        if let Some(e) = failure {
            warn!(self.log, "retention sweep failed; retried later"; "error" => %e);
        } else if report.not_holder {
            debug!(self.log, "retention sweep skipped: not the lease holder");
        } else {
            debug!(self.log, "retention sweep finished"; "dropped" => report.dropped.len(),
                "cutoff" => cutoff.to_string());
        }
    }
}

/// Drops every expired partition, oldest first; stops at the first failure or as soon as the
/// lease turns out not to be held.
async fn sweep(
    pool: Pool,
    claimant: Claimant,
    cutoff: NaiveDateTime,
) -> (SweepReport, Option<DbError>) {
    let mut report = SweepReport::default();
    let work = async {
        let mut conn = db::checkout(&pool).await?;
        let partitions = retention::list_partitions(&mut conn).await?;
        for partition in partitions.iter().filter(|p| p.expired(cutoff)) {
            match retention::drop_partition(&mut conn, &claimant, partition).await? {
                DropOutcome::Dropped => report.dropped.push(partition.name.clone()),
                DropOutcome::Gone => {}
                DropOutcome::NotLeaseHolder => {
                    report.not_holder = true;
                    break;
                }
            }
        }
        Ok::<_, DbError>(())
    };
    let failure = work.await.err();
    (report, failure)
}

impl Actor for RetentionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.log, "retention started"; "retention_days" => self.retention.num_days(),
            "interval_s" => self.interval.as_secs_f64());
        self.sweep(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.sweep(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        info!(self.log, "retention stopped");
    }
}
