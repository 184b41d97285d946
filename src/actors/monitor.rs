//! `MonitorActor`: runs one monitor's checks on its schedule.
//!
//! Fixed rate: slots come from [`crate::schedule`], so a slow check never shifts later slots.
//! A slot that falls while the previous check still runs waits for it: a check may take up to
//! the interval, so one that times out ends just after the next slot, which then starts at
//! once, its timeout still counted from its own slot (so a target that always times out never
//! makes each check start later than the one before). A slot still waiting when the one after
//! it falls, or more than half an interval late, is skipped, counted and logged. A panic inside
//! a check is caught and stored as a failed heartbeat (`error_type = internal`); then the actor
//! stops, and the supervisor restarts it after a backoff, so that a check that keeps panicking
//! runs ever less often.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use slog::{debug, error, info, o, warn, Logger};

use super::heartbeat_writer::{PendingHeartbeat, RecordHeartbeat};
use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind, RowContext};
use crate::metrics::Metrics;
use crate::monitor::{MonitorSpec, Probe};
use crate::schedule;

/// Runs one monitor.
pub struct MonitorActor {
    spec: Arc<MonitorSpec>,
    name: Arc<str>,
    probe: Arc<dyn Probe>,
    writer: Recipient<RecordHeartbeat>,
    supervisor: Recipient<MonitorStopped>,
    agent_id: i32,
    lease_epoch: i64,
    /// Tells this run of the monitor apart from earlier and later ones.
    generation: u64,
    check_running: bool,
    /// A slot that fell while a check was running; started when that check ends.
    deferred_slot: Option<DateTime<Utc>>,
    skipped_slots: u64,
    metrics: Arc<Metrics>,
    log: Logger,
}

/// How a monitor actor is started.
pub struct MonitorSetup {
    pub spec: Arc<MonitorSpec>,
    pub probe: Arc<dyn Probe>,
    pub writer: Recipient<RecordHeartbeat>,
    pub supervisor: Recipient<MonitorStopped>,
    pub agent_id: i32,
    pub lease_epoch: i64,
    pub generation: u64,
    pub metrics: Arc<Metrics>,
    pub log: Logger,
}

impl MonitorActor {
    /// A monitor actor, not yet started.
    pub fn new(setup: MonitorSetup) -> Self {
        let log = setup.log.new(o!("monitor_id" => setup.spec.id));
        Self {
            name: Arc::from(setup.spec.name.as_str()),
            spec: setup.spec,
            probe: setup.probe,
            writer: setup.writer,
            supervisor: setup.supervisor,
            agent_id: setup.agent_id,
            lease_epoch: setup.lease_epoch,
            generation: setup.generation,
            check_running: false,
            deferred_slot: None,
            skipped_slots: 0,
            metrics: setup.metrics,
            log,
        }
    }

    fn schedule_slot(&mut self, slot: DateTime<Utc>, ctx: &mut Context<Self>) {
        let delay = schedule::until(slot, Utc::now());
        ctx.run_later(delay, move |act, ctx| act.on_slot(slot, ctx));
    }

    fn on_slot(&mut self, slot: DateTime<Utc>, ctx: &mut Context<Self>) {
        if self.check_running {
            if let Some(older) = self.deferred_slot.replace(slot) {
                self.skip(older, "the check before it was still running");
            }
        } else {
            self.start_check(slot, self.spec.clone(), ctx);
        }

        // The next slot on the grid; slots already past (the process was stalled) are skipped.
        let interval = self.spec.schedule.interval;
        let mut next = schedule::following(slot, interval);
        let now = Utc::now();
        if next <= now {
            let resumed = schedule::next_slot_after(now, self.spec.id, interval);
            let missed = (resumed - next).num_milliseconds() as u64 / interval.as_millis() as u64;
            self.skipped_slots += missed;
            self.metrics.record_skipped_slots(missed);
            warn!(self.log, "slots skipped: agent fell behind"; "missed" => missed);
            next = resumed;
        }
        self.schedule_slot(next, ctx);
    }

    fn skip(&mut self, slot: DateTime<Utc>, reason: &str) {
        self.skipped_slots += 1;
        self.metrics.record_skipped_slots(1);
        warn!(self.log, "slot skipped"; "monitor_name" => %self.name, "reason" => reason,
            "slot" => slot.to_rfc3339(), "skipped_slots" => self.skipped_slots);
    }

    /// Starts the slot that waited for the check just ended, with what is left of its
    /// timeout counted from the slot; skips it when too late for that.
    fn start_deferred(&mut self, ctx: &mut Context<Self>) {
        let Some(slot) = self.deferred_slot.take() else {
            return;
        };
        let late = (Utc::now() - slot).to_std().unwrap_or_default();
        let left = self.spec.timeout.saturating_sub(late);
        if late > self.spec.schedule.interval / 2 || left.is_zero() {
            return self.skip(slot, "the check before it ended too late");
        }
        let mut spec = MonitorSpec::clone(&self.spec);
        spec.timeout = left;
        self.start_check(slot, Arc::new(spec), ctx);
    }

    fn start_check(
        &mut self,
        slot: DateTime<Utc>,
        spec: Arc<MonitorSpec>,
        ctx: &mut Context<Self>,
    ) {
        self.check_running = true;
        let check = AssertUnwindSafe(self.probe.clone().check(spec)).catch_unwind();
        let started_at = Utc::now();
        ctx.spawn(check.into_actor(self).map(move |outcome, act, ctx| {
            act.check_running = false;
            let panic = match outcome {
                Ok(result) => {
                    act.record(result, slot);
                    return act.start_deferred(ctx);
                }
                Err(panic) => panic,
            };
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let result = CheckResult {
                started_at,
                failure: Some(CheckFailure::new(
                    ErrorKind::Internal,
                    format!("the check panicked: {message}"),
                )),
                ..CheckResult::default()
            };
            act.record(result, slot);
            error!(act.log, "check panicked; stopping the monitor";
                "monitor_name" => %act.name, "error" => message);
            ctx.stop();
        }));
    }

    fn record(&mut self, result: CheckResult, slot: DateTime<Utc>) {
        let status = result.status(&self.spec).as_str();
        self.metrics
            .record_check(&self.spec.kind, Some(status), &result, slot);
        match &result.failure {
            Some(failure) => warn!(self.log, "Monitor execution failed";
                "monitor_name" => %self.name, "error_type" => failure.kind.as_str(),
                "error" => %failure.message, "status_code" => result.status_code),
            None => debug!(self.log, "check finished"; "status" => status,
                "response_time_ms" => result.timings.total.map(|d| d.as_millis() as u64)),
        }
        let row = result.into_row(
            &self.spec,
            RowContext {
                agent_id: self.agent_id,
                lease_epoch: self.lease_epoch,
                scheduled_at: slot,
            },
        );
        self.writer.do_send(RecordHeartbeat(PendingHeartbeat {
            row,
            monitor_name: self.name.clone(),
        }));
    }
}

impl Actor for MonitorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let first =
            schedule::next_slot_after(Utc::now(), self.spec.id, self.spec.schedule.interval);
        info!(self.log, "monitor started"; "monitor_name" => %self.name,
            "url" => %crate::monitor::redacted_url(&self.spec.url), "interval_s" => self.spec.schedule.interval.as_secs(),
            "first_slot" => first.to_rfc3339(), "lease_epoch" => self.lease_epoch);
        self.schedule_slot(first, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        info!(self.log, "monitor stopped"; "skipped_slots" => self.skipped_slots);
        self.supervisor.do_send(MonitorStopped {
            monitor_id: self.spec.id,
            generation: self.generation,
        });
    }
}

/// Sent by the supervisor to stop the monitor; a check in progress is abandoned.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopMonitor;

impl Handler<StopMonitor> for MonitorActor {
    type Result = ();

    fn handle(&mut self, _msg: StopMonitor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Sent by a monitor actor to the supervisor when it stops, for whatever reason, so that the
/// supervisor can restart it if it should still run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MonitorStopped {
    pub monitor_id: i32,
    pub generation: u64,
}
