//! `SupervisorActor`: holds the datacenter's lease and runs one `MonitorActor` per monitor
//! while it does.
//!
//! Lease policy: a standby tries to take the lease every `standby_retry_interval`, or sooner:
//! at the moment the holder's lease expires, as the last attempt read it from the database, so
//! that a killed holder is replaced as soon as its lease allows. The holder renews it four
//! times per TTL. Each successful renewal sets a local deadline, measured on the
//! monotonic clock from the moment the renewal was *sent*, a safety margin before the lease can
//! expire in the database; when the deadline passes without a renewal, every monitor is stopped.
//! A renewal that finds the lease taken (epoch superseded) stops them at once.
//!
//! Supervision policy: a monitor actor that stops without being asked to (its check panicked)
//! is restarted after a backoff that doubles with each failure in a row (1 s up to 60 s); a
//! monitor that then runs for [`BACKOFF_RESET_AFTER`] without failing starts over at 1 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{error, info, warn, Logger};

use super::config_reload::ConfigChanged;
use super::heartbeat_writer::{HeartbeatWriterActor, RecordHeartbeat};
use super::monitor::{MonitorActor, MonitorSetup, MonitorStopped, StopMonitor};
use crate::db::lease::{self, Claimant, LeaseAttempt};
use crate::db::{self, DbError, Pool};
use crate::metrics::{LeaseRole, Metrics};
use crate::monitor::{MonitorSpec, ProbeSet};

/// How long after the holder's known expiry a standby tries again: the expiry is by the
/// database's clock, read a moment ago.
pub const EXPIRY_SLACK: Duration = Duration::from_millis(25);

/// Longest wait before restarting a monitor that keeps stopping.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// How long a restarted monitor must run without stopping for its backoff to start over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(300);

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long the lease lasts unless renewed.
    pub ttl: Duration,
    /// Longest wait between two attempts of a standby to take the lease (it also tries at the
    /// holder's expiry, when that comes sooner).
    pub standby_retry: Duration,
}

impl LeaseTiming {
    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    /// How long before the database's expiry the holder stops on its own.
    pub fn safety_margin(&self) -> Duration {
        (self.ttl / 5)
            .max(Duration::from_millis(300))
            .min(self.ttl / 2)
    }

    /// Longest time one lease statement may take.
    pub fn op_timeout(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(200))
    }
}

enum LeaseState {
    Standby { announced: bool },
    Active { epoch: i64, deadline: Instant },
}

struct RunningMonitor {
    addr: Addr<MonitorActor>,
    spec: Arc<MonitorSpec>,
    generation: u64,
}

/// Supervises the monitors of one datacenter.
pub struct SupervisorActor {
    claimant: Claimant,
    timing: LeaseTiming,
    pool: Pool,
    probes: Arc<ProbeSet>,
    writer: Addr<HeartbeatWriterActor>,
    lease: LeaseState,
    /// The monitors that should run while active; `None` until the configuration is loaded.
    desired: Option<HashMap<i32, Arc<MonitorSpec>>>,
    running: HashMap<i32, RunningMonitor>,
    /// Monitors that stopped unexpectedly: failures in a row, and when they may start again.
    restart_backoff: HashMap<i32, (u32, Instant)>,
    next_generation: u64,
    shutting_down: bool,
    metrics: Arc<Metrics>,
    log: Logger,
}

impl SupervisorActor {
    /// A supervisor for `claimant`'s datacenter.
    pub fn new(
        claimant: Claimant,
        timing: LeaseTiming,
        pool: Pool,
        probes: Arc<ProbeSet>,
        writer: Addr<HeartbeatWriterActor>,
        log: Logger,
    ) -> Self {
        Self {
            claimant,
            timing,
            pool,
            probes,
            writer,
            lease: LeaseState::Standby { announced: false },
            desired: None,
            running: HashMap::new(),
            restart_backoff: HashMap::new(),
            next_generation: 0,
            shutting_down: false,
            metrics: Arc::new(Metrics::new()),
            log,
        }
    }

    /// Records the lease role and epoch into `metrics` (which `/readyz` reads) and hands it to
    /// every monitor actor started.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn lease_tick(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        match self.lease {
            LeaseState::Standby { .. } => self.try_acquire(ctx),
            LeaseState::Active { epoch, .. } => self.renew(epoch, ctx),
        }
    }

    fn schedule_tick(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(delay, |act, ctx| act.lease_tick(ctx));
    }

    fn try_acquire(&mut self, ctx: &mut Context<Self>) {
        let (pool, claimant, ttl) = (self.pool.clone(), self.claimant.clone(), self.timing.ttl);
        let sent = Instant::now();
        let attempt = with_timeout(pool, self.timing.op_timeout(), move |pool| async move {
            let mut conn = db::checkout(&pool).await?;
            lease::try_acquire(&mut conn, &claimant, ttl).await
        });
        ctx.spawn(attempt.into_actor(self).map(move |outcome, act, ctx| {
            if act.shutting_down {
                return;
            }
            let mut retry = act.timing.standby_retry;
            match outcome {
                Ok(LeaseAttempt::Acquired(epoch)) => act.become_active(epoch, sent, ctx),
                Ok(LeaseAttempt::Held { expires_in, holder }) => {
                    retry = retry.min(expires_in + EXPIRY_SLACK);
                    act.metrics.record_lease(LeaseRole::Standby, None);
                    if let LeaseState::Standby {
                        announced: announced @ false,
                    } = &mut act.lease
                    {
                        *announced = true;
                        if holder == Some(act.claimant.agent_id) {
                            warn!(act.log, "waiting as standby: another process with this \
                                AGENT_ID holds the lease (give each agent its own id)";
                                "holder_agent_id" => holder);
                        } else {
                            info!(act.log, "waiting as standby: another agent holds the lock";
                                "holder_agent_id" => holder);
                        }
                    }
                }
                Err(e) => {
                    act.metrics.record_lease(LeaseRole::Unknown, None);
                    warn!(act.log, "lease acquisition failed"; "error" => %e)
                }
            }
            if matches!(act.lease, LeaseState::Standby { .. }) {
                act.schedule_tick(retry, ctx);
            }
        }));
    }

    fn become_active(&mut self, epoch: i64, sent: Instant, ctx: &mut Context<Self>) {
        info!(self.log, "Acquired lock for datacenter:{}", self.claimant.datacenter_id;
            "epoch" => epoch);
        self.metrics.record_lease(LeaseRole::Active, Some(epoch));
        self.lease = LeaseState::Active {
            epoch,
            deadline: sent + self.timing.ttl - self.timing.safety_margin(),
        };
        self.arm_deadline(ctx);
        self.reconcile(ctx);
        self.schedule_tick(self.timing.renew_every(), ctx);
    }

    fn renew(&mut self, epoch: i64, ctx: &mut Context<Self>) {
        let (pool, claimant, ttl) = (self.pool.clone(), self.claimant.clone(), self.timing.ttl);
        let sent = Instant::now();
        let attempt = with_timeout(pool, self.timing.op_timeout(), move |pool| async move {
            let mut conn = db::checkout(&pool).await?;
            lease::renew(&mut conn, &claimant, epoch, ttl).await
        });
        ctx.spawn(attempt.into_actor(self).map(move |outcome, act, ctx| {
            if act.shutting_down {
                return;
            }
            // The lease may have been given up while the renewal was under way.
            if !matches!(act.lease, LeaseState::Active { epoch: e, .. } if e == epoch) {
                act.schedule_tick(act.timing.standby_retry, ctx);
                return;
            }
            match outcome {
                Ok(true) => {
                    act.lease = LeaseState::Active {
                        epoch,
                        deadline: sent + act.timing.ttl - act.timing.safety_margin(),
                    };
                    act.arm_deadline(ctx);
                    act.schedule_tick(act.timing.renew_every(), ctx);
                }
                Ok(false) => {
                    error!(act.log, "lease lost: superseded or removed; stopping checks";
                        "epoch" => epoch);
                    act.step_down(ctx);
                    act.schedule_tick(act.timing.standby_retry, ctx);
                }
                Err(e) => {
                    warn!(act.log, "lease renewal failed"; "error" => %e, "epoch" => epoch);
                    act.schedule_tick(act.timing.renew_every().min(act.timing.standby_retry), ctx);
                }
            }
        }));
    }

    /// Stops the monitors when the local deadline passes without a renewal.
    fn arm_deadline(&mut self, ctx: &mut Context<Self>) {
        let LeaseState::Active { deadline, .. } = self.lease else {
            return;
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        ctx.run_later(wait, |act, ctx| {
            if let LeaseState::Active { deadline, epoch } = act.lease {
                if Instant::now() >= deadline {
                    error!(act.log, "lease not renewed in time; stopping checks";
                        "epoch" => epoch);
                    act.step_down(ctx);
                }
            }
        });
    }

    fn step_down(&mut self, ctx: &mut Context<Self>) {
        self.lease = LeaseState::Standby { announced: false };
        self.metrics.record_lease(LeaseRole::Standby, None);
        let stopped = self.stop_all();
        info!(self.log, "reconciled monitors"; "running" => 0, "started" => 0,
            "stopped" => stopped, "restarted" => 0, "active" => false);
        let _ = ctx;
    }

    fn stop_all(&mut self) -> usize {
        let count = self.running.len();
        for (_, monitor) in self.running.drain() {
            monitor.addr.do_send(StopMonitor);
        }
        count
    }

    /// Starts what is missing, stops what was removed, restarts what changed.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let LeaseState::Active { epoch, .. } = self.lease else {
            return;
        };
        let Some(desired) = self.desired.clone() else {
            return;
        };
        let (mut started, mut stopped, mut restarted, mut delayed) = (0, 0, 0, 0);

        let removed: Vec<i32> = self
            .running
            .keys()
            .filter(|id| !desired.contains_key(id))
            .copied()
            .collect();
        for id in removed {
            if let Some(monitor) = self.running.remove(&id) {
                monitor.addr.do_send(StopMonitor);
                stopped += 1;
            }
        }

        let now = Instant::now();
        for (id, spec) in &desired {
            match self.running.get(id) {
                Some(running) if running.spec == *spec => continue,
                Some(_) => {
                    if let Some(old) = self.running.remove(id) {
                        old.addr.do_send(StopMonitor);
                    }
                    restarted += 1;
                }
                None => {
                    if self
                        .restart_backoff
                        .get(id)
                        .is_some_and(|(_, until)| *until > now)
                    {
                        delayed += 1;
                        continue;
                    }
                    started += 1;
                }
            }
            self.start_monitor(spec.clone(), epoch, ctx);
        }
        info!(self.log, "reconciled monitors"; "running" => self.running.len(),
            "started" => started, "stopped" => stopped, "restarted" => restarted,
            "delayed" => delayed, "active" => true, "epoch" => epoch);
    }

    fn start_monitor(&mut self, spec: Arc<MonitorSpec>, epoch: i64, ctx: &mut Context<Self>) {
        let Some(probe) = self.probes.for_type(&spec.kind) else {
            return; // validated when loaded
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let writer: Recipient<RecordHeartbeat> = self.writer.clone().recipient();
        let addr = MonitorActor::new(MonitorSetup {
            spec: spec.clone(),
            probe,
            writer,
            supervisor: ctx.address().recipient(),
            agent_id: self.claimant.agent_id,
            lease_epoch: epoch,
            generation,
            metrics: self.metrics.clone(),
            log: self.log.clone(),
        })
        .start();
        self.running.insert(
            spec.id,
            RunningMonitor {
                addr,
                spec,
                generation,
            },
        );
    }

    fn release_lease(&mut self) -> impl std::future::Future<Output = ()> + 'static {
        let epoch = match self.lease {
            LeaseState::Active { epoch, .. } => Some(epoch),
            LeaseState::Standby { .. } => None,
        };
        self.lease = LeaseState::Standby { announced: true };
        self.metrics.record_lease(LeaseRole::Unknown, None);
        let (pool, claimant, timeout, log) = (
            self.pool.clone(),
            self.claimant.clone(),
            self.timing.op_timeout().max(Duration::from_secs(1)),
            self.log.clone(),
        );
        async move {
            let Some(epoch) = epoch else { return };
            let released = with_timeout(pool, timeout, move |pool| async move {
                let mut conn = db::checkout(&pool).await?;
                lease::release(&mut conn, &claimant, epoch).await
            })
            .await;
            match released {
                Ok(_) => info!(log, "lease released"; "epoch" => epoch),
                Err(e) => warn!(log, "lease release failed; it expires by itself"; "error" => %e),
            }
        }
    }
}

/// Runs `work` on `pool` for at most `limit`; a timeout says why connections failed, if they
/// did meanwhile.
async fn with_timeout<T, F, Fut>(pool: Pool, limit: Duration, work: F) -> Result<T, DbError>
where
    F: FnOnce(Pool) -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    match tokio::time::timeout(limit, work(pool.clone())).await {
        Ok(outcome) => outcome,
        Err(_) => Err(pool.timed_out(limit)),
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.log, "supervisor started"; "lease_ttl_s" => self.timing.ttl.as_secs_f64());
        self.lease_tick(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        info!(self.log, "supervisor stopped");
    }
}

impl Handler<ConfigChanged> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: ConfigChanged, ctx: &mut Self::Context) {
        self.desired = Some(msg.specs.into_iter().map(|s| (s.id, s)).collect());
        self.reconcile(ctx);
    }
}

impl Handler<MonitorStopped> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: MonitorStopped, ctx: &mut Self::Context) {
        let unexpected = self
            .running
            .get(&msg.monitor_id)
            .is_some_and(|m| m.generation == msg.generation);
        if !unexpected || self.shutting_down {
            return;
        }
        let Some(stopped) = self.running.remove(&msg.monitor_id) else {
            return;
        };
        let now = Instant::now();
        let entry = self
            .restart_backoff
            .entry(msg.monitor_id)
            .or_insert((0, now));
        // `entry.1` is when it was last restarted: long enough ago, the failures are forgiven.
        if now.saturating_duration_since(entry.1) >= BACKOFF_RESET_AFTER {
            entry.0 = 0;
        }
        entry.0 += 1;
        let delay = Duration::from_secs(1 << (entry.0 - 1).min(6)).min(MAX_RESTART_BACKOFF);
        entry.1 = now + delay;
        warn!(self.log, "monitor stopped unexpectedly; restarting";
            "monitor_id" => msg.monitor_id, "monitor_name" => &stopped.spec.name,
            "failures" => entry.0, "restart_in_s" => delay.as_secs());
        ctx.run_later(delay, |act, ctx| act.reconcile(ctx));
    }
}

/// Sent at shutdown: stops every monitor and releases the lease.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for SupervisorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let stopped = self.stop_all();
        info!(self.log, "stopping"; "monitors_stopped" => stopped);
        Box::pin(self.release_lease())
    }
}
