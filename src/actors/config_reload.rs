//! `ConfigReloadActor`: reloads the datacenter's monitors and schedules and tells the
//! supervisor when they changed.
//!
//! ```text
//!   LISTEN uptimeo_config (own connection) --ConfigNotified--> reload --ConfigChanged-->
//!   every CONFIG_RELOAD_INTERVAL ----------------------------> reload     supervisor
//! ```
//!
//! A listener task keeps a connection of its own LISTENing on
//! [`config::CONFIG_CHANNEL`], which triggers on the configuration tables notify at each
//! commit, so a change is applied within moments. The periodic poll stays as the fallback:
//! notifications sent while the listener was disconnected are lost, so every (re)connection
//! also triggers a reload, and the poll catches anything else. Notifications arriving while a
//! reload runs are folded into one more reload after it.
//!
//! It compares the rows as stored, so a reload that finds nothing new sends nothing. Rows that
//! cannot run are reported once per change, with the monitor and the reason, and left out; the
//! other monitors are unaffected. Thresholds out of order are reported the same way, and the
//! monitor runs without them.
//!
//! Each reload also checks that the datacenter and this agent's row still exist (and that the
//! agent still belongs to the datacenter): when not, the checks stop and the process is told
//! to exit ([`ConfigReloadActor::with_identity`]); `agents` notifies like the configuration
//! tables. And each reload compares the applied migrations with the ones
//! this binary embeds, warning once per new set of unknown versions (a newer agent migrated
//! the schema).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, error, info, warn, Logger};

use crate::db::config::{self, ConfigListener, IdentityError, MonitorWithSchedule};
use crate::db::{self, migrations, DbError, DbTarget, Pool};
use crate::metrics::{Metrics, ReloadOutcome};
use crate::monitor::{self, MonitorSpec, ProbeSet};

/// Polls the configuration of one datacenter.
pub struct ConfigReloadActor {
    pool: Pool,
    /// Where the listener connects; `None`: poll only.
    listen: Option<DbTarget>,
    datacenter_id: i32,
    interval: Duration,
    probes: Arc<ProbeSet>,
    supervisor: Recipient<ConfigChanged>,
    /// Fingerprint of the rows last sent; `None` before the first successful load.
    last_fingerprint: Option<u64>,
    loading: bool,
    metrics: Arc<Metrics>,
    /// A change was notified while loading: load again when done.
    reload_again: bool,
    /// This agent's id, and where to say that it may no longer run (once).
    identity: Option<(i32, Option<tokio::sync::oneshot::Sender<IdentityError>>)>,
    /// The unknown migration versions last warned about.
    unknown_migrations: Vec<String>,
    log: Logger,
}

/// What one reload read.
enum Loaded {
    /// The datacenter's monitors, and the applied migrations this binary does not embed.
    Config {
        rows: Vec<MonitorWithSchedule>,
        unknown_migrations: Vec<String>,
    },
    /// The datacenter or this agent may no longer run.
    Gone(IdentityError),
}

/// First wait before the listener reconnects.
pub const LISTEN_MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait before the listener reconnects: after a long outage, changes are applied at
/// once again at most this long after the database is back (one connection attempt each).
pub const LISTEN_MAX_BACKOFF: Duration = Duration::from_secs(4);

impl ConfigReloadActor {
    /// A reload actor polling every `interval`, and listening for notifications through a
    /// connection to `listen` when given.
    pub fn new(
        pool: Pool,
        listen: Option<DbTarget>,
        datacenter_id: i32,
        interval: Duration,
        probes: Arc<ProbeSet>,
        supervisor: Recipient<ConfigChanged>,
        log: Logger,
    ) -> Self {
        Self {
            pool,
            listen,
            datacenter_id,
            interval,
            probes,
            supervisor,
            last_fingerprint: None,
            loading: false,
            metrics: Arc::new(Metrics::new()),
            reload_again: false,
            identity: None,
            unknown_migrations: Vec::new(),
            log,
        }
    }

    /// Counts polls by outcome in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks at each reload that agent `agent_id` may still run the datacenter; when it may
    /// not (the datacenter or the agent was deleted, or the agent moved to another
    /// datacenter), stops the checks and sends why on `gone`, once.
    pub fn with_identity(
        mut self,
        agent_id: i32,
        gone: tokio::sync::oneshot::Sender<IdentityError>,
    ) -> Self {
        self.identity = Some((agent_id, Some(gone)));
        self
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        if self.loading {
            self.reload_again = true;
            return;
        }
        self.loading = true;
        let pool = self.pool.clone();
        let datacenter_id = self.datacenter_id;
        let agent_id = self.identity.as_ref().map(|(id, _)| *id);
        let load = async move {
            let mut conn = db::checkout(&pool).await?;
            if config::datacenter_code(&mut conn, datacenter_id)
                .await?
                .is_none()
            {
                return Ok(Loaded::Gone(IdentityError::NoDatacenter(datacenter_id)));
            }
            if let Some(agent_id) = agent_id {
                if let Some(problem) =
                    config::agent_problem(&mut conn, datacenter_id, agent_id).await?
                {
                    return Ok(Loaded::Gone(problem));
                }
            }
            Ok(Loaded::Config {
                rows: config::monitors_of_datacenter(&mut conn, datacenter_id).await?,
                unknown_migrations: migrations::unknown_versions(&mut conn).await?,
            })
        };
        ctx.spawn(
            load.into_actor(self)
                .map(|outcome: Result<_, DbError>, act, ctx| {
                    act.loading = false;
                    match outcome {
                        Ok(Loaded::Config {
                            rows,
                            unknown_migrations,
                        }) => {
                            act.check_schema(unknown_migrations);
                            act.apply(rows)
                        }
                        Ok(Loaded::Gone(problem)) => act.gone(problem),
                        Err(e) => {
                            act.metrics.record_reload(ReloadOutcome::Failed);
                            warn!(act.log, "config reload failed; retried at the next poll";
                                "error" => %e)
                        }
                    }
                    if std::mem::take(&mut act.reload_again) {
                        act.reload(ctx);
                    }
                }),
        );
    }

    fn apply(&mut self, rows: Vec<MonitorWithSchedule>) {
        let fingerprint = fingerprint(&rows);
        if self.last_fingerprint == Some(fingerprint) {
            self.metrics.record_reload(ReloadOutcome::Unchanged);
            debug!(self.log, "config unchanged"; "monitors" => rows.len());
            return;
        }
        self.last_fingerprint = Some(fingerprint);
        self.metrics.record_reload(ReloadOutcome::Changed);

        let mut specs = Vec::with_capacity(rows.len());
        let mut skipped = 0;
        for (monitor, schedule) in &rows {
            match self.probes.spec_from_rows(monitor, schedule.as_ref()) {
                Ok(spec) => {
                    if let Some(reason) = schedule.as_ref().and_then(monitor::ignored_thresholds) {
                        warn!(self.log, "monitor thresholds ignored: invalid configuration";
                            "monitor_id" => monitor.id, "monitor_name" => &monitor.name,
                            "reason" => reason);
                    }
                    if let Some(reason) = monitor::plain_https(&spec) {
                        warn!(self.log, "monitor runs without TLS"; "monitor_id" => monitor.id,
                            "monitor_name" => &monitor.name, "reason" => reason);
                    }
                    specs.push(Arc::new(spec))
                }
                Err(invalid) => {
                    skipped += 1;
                    warn!(self.log, "monitor skipped: invalid configuration";
                        "monitor_id" => invalid.monitor_id, "monitor_name" => &invalid.name,
                        "reason" => &invalid.reason);
                }
            }
        }
        info!(self.log, "config loaded"; "monitors" => specs.len(), "skipped" => skipped);
        self.supervisor.do_send(ConfigChanged { specs });
    }

    /// The datacenter or this agent may no longer run: stops the checks and, when the process
    /// asked to know, tells it (once), so that it exits.
    fn gone(&mut self, problem: IdentityError) {
        if self.last_fingerprint != Some(0) {
            error!(self.log, "datacenter or agent removed; stopping checks";
                "reason" => %problem);
            self.last_fingerprint = Some(0);
            self.supervisor.do_send(ConfigChanged { specs: Vec::new() });
        }
        if let Some(gone) = self.identity.as_mut().and_then(|(_, gone)| gone.take()) {
            let _ = gone.send(problem);
        }
    }

    /// Warns when the schema holds migrations this binary does not embed, once for each new
    /// set of them: the agent runs on, but columns or tables it does not know may be in use.
    fn check_schema(&mut self, unknown: Vec<String>) {
        if unknown != self.unknown_migrations && !unknown.is_empty() {
            warn!(self.log, "database schema is newer than this agent";
                "unknown_versions" => unknown.join(","), "known_versions" =>
                migrations::embedded_versions().join(","));
        }
        self.unknown_migrations = unknown;
    }
}

/// A hash of the rows as loaded; any change of any column changes it.
fn fingerprint(rows: &[MonitorWithSchedule]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for row in rows {
        serde_json::to_string(row)
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish() | 1 // never 0, which stands for "datacenter or agent gone"
}

impl Actor for ConfigReloadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.log, "config reload started"; "interval_s" => self.interval.as_secs_f64());
        self.reload(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.reload(ctx));
        if let Some(target) = self.listen.clone() {
            actix_rt::spawn(listen(target, ctx.address(), self.log.clone()));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        info!(self.log, "config reload stopped");
    }
}

/// Sent to the supervisor with every runnable monitor of the datacenter, whenever the stored
/// configuration changed (and once at start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigChanged {
    pub specs: Vec<Arc<MonitorSpec>>,
}

/// Sent by the listener task when a configuration table changed (`table`), or when it has
/// just (re)connected (`None`), since changes made meanwhile were not notified.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConfigNotified {
    pub table: Option<String>,
}

impl Handler<ConfigNotified> for ConfigReloadActor {
    type Result = ();

    fn handle(&mut self, msg: ConfigNotified, ctx: &mut Self::Context) {
        debug!(self.log, "config change notified"; "table" => msg.table);
        self.reload(ctx);
    }
}

/// The listener task: listens, forwards each notification, reconnects with a backoff when the
/// connection is lost; ends when the actor is gone.
async fn listen(target: DbTarget, reload: Addr<ConfigReloadActor>, log: Logger) {
    let mut backoff = LISTEN_MIN_BACKOFF;
    while reload.connected() {
        match ConfigListener::start(&target).await {
            Ok(mut listener) => {
                info!(log, "config listen started"; "channel" => config::CONFIG_CHANNEL);
                backoff = LISTEN_MIN_BACKOFF;
                let mut notified = Some(ConfigNotified { table: None });
                while let Some(msg) = notified.take() {
                    if reload.send(msg).await.is_err() {
                        return;
                    }
                    match listener.next_change().await {
                        Ok(table) => notified = Some(ConfigNotified { table: Some(table) }),
                        Err(e) => warn!(log, "config listen lost; polling until it is back";
                            "error" => %e),
                    }
                }
            }
            Err(e) => warn!(log, "config listen failed; polling until it is back";
                "error" => %e, "retry_in_ms" => backoff.as_millis() as u64),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_MAX_BACKOFF);
    }
}
