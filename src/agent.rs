//! Starting and stopping the agent: bootstrap, the actor tree, signals.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{bail, Context as _};
use slog::{info, warn, Logger};

use crate::actors::heartbeat_writer::Flush;
use crate::actors::supervisor::{LeaseTiming, Shutdown};
use crate::actors::{ConfigReloadActor, HeartbeatWriterActor, RetentionActor, SupervisorActor};
use crate::db::config::{self, IdentityError};
use crate::db::lease::Claimant;
use crate::db::{self, migrations, DbTarget};
use crate::health::{self, HealthState};
use crate::metrics::Metrics;
use crate::monitor::{ProbeConfig, ProbeSet};
use crate::settings::{MigrateArgs, RunArgs};
use crate::spool::{Spool, SpoolConfig};

/// Everything a shutdown may take, from the signal to the exit.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4500);
/// Connections used by the lease and the configuration reload.
const CONTROL_POOL_SIZE: u32 = 2;
/// Connections used by `/readyz` and by retention (one each at most).
const HEALTH_POOL_SIZE: u32 = 1;
const RETENTION_POOL_SIZE: u32 = 1;

/// `uptimeo-agent migrate`.
pub fn migrate(args: &MigrateArgs, log: &Logger) -> anyhow::Result<()> {
    let target = DbTarget::parse(&args.db.db_conn_string)?;
    bootstrap_runtime()?.block_on(async {
        if args.create_database && migrations::create_database_if_missing(&target).await? {
            info!(log, "database created"; "database" => %target);
        }
        let applied = migrations::run_pending(&target).await?;
        info!(log, "migrations applied"; "database" => %target, "applied" => applied.join(","),
            "count" => applied.len());
        if args.sample {
            let mut conn = target.connect().await?;
            db::sample::insert_sample(&mut conn).await?;
            info!(log, "sample configuration inserted where its rows were absent"; "database" => %target);
        }
        Ok(())
    })
}

/// `uptimeo-agent run`: returns when a signal asked the agent to stop, or with an error once
/// the datacenter or this agent's row was deleted (or the agent moved to another datacenter),
/// after the same orderly stop.
pub fn run(args: &RunArgs, log: &Logger) -> anyhow::Result<()> {
    let target = DbTarget::parse(&args.db.db_conn_string)?;
    let agent_id = bootstrap_runtime()?.block_on(bootstrap(args, &target, log))?;
    let log = log.new(slog::o!("datacenter_id" => args.datacenter_id, "agent_id" => agent_id));
    let probes = Arc::new(ProbeSet::new(&ProbeConfig {
        dns_server: args.dns_server,
        ..ProbeConfig::default()
    })?);
    let metrics = Arc::new(Metrics::new());
    let spool = open_spool(args, agent_id, &log)?;

    let system = actix_rt::System::new();
    system.block_on(async move {
        let health = if args.health_port == 0 {
            None
        } else {
            let listener = health::bind(args.health_port)
                .await
                .with_context(|| format!("cannot listen on HEALTH_PORT {}", args.health_port))?;
            let state = HealthState {
                metrics: metrics.clone(),
                pool: target.pool(HEALTH_POOL_SIZE),
            };
            Some(actix_rt::spawn(health::serve(listener, state, log.clone())))
        };

        // One connection per batch in flight, and one for partition maintenance.
        let writer = HeartbeatWriterActor::new(
            target.pool(u32::from(args.write_connections) + 1),
            spool,
            usize::from(args.write_batch_size),
            args.write_flush_delay,
            log.clone(),
        )
        .with_writes_in_flight(usize::from(args.write_connections))
        .with_spool_sync(args.spool_sync)
        .with_metrics(metrics.clone())
        .start();
        let control_pool = target.pool(CONTROL_POOL_SIZE);
        let claimant = Claimant {
            datacenter_id: args.datacenter_id,
            agent_id,
            instance: instance_id(),
        };
        let timing = LeaseTiming {
            ttl: args.lease_ttl,
            standby_retry: args.standby_retry_interval,
        };
        let _retention = args.retention_days.map(|days| {
            RetentionActor::new(
                target.pool(RETENTION_POOL_SIZE),
                claimant.clone(),
                days,
                args.retention_check_interval,
                log.clone(),
            )
            .with_metrics(metrics.clone())
            .start()
        });
        let supervisor = SupervisorActor::new(
            claimant,
            timing,
            control_pool.clone(),
            probes.clone(),
            writer.clone(),
            log.clone(),
        )
        .with_metrics(metrics.clone())
        .start();
        let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
        let _reload = ConfigReloadActor::new(
            control_pool,
            Some(target.clone()),
            args.datacenter_id,
            args.config_reload_interval,
            probes,
            supervisor.clone().recipient(),
            log.clone(),
        )
        .with_metrics(metrics)
        .with_identity(agent_id, gone_tx)
        .start();

        // A signal, or the datacenter or this agent removed from the database: the same
        // orderly stop, but the latter ends in an error (exit status 1).
        let gone = tokio::select! {
            signal = wait_for_signal() => {
                info!(log, "shutting down"; "signal" => signal?);
                None
            }
            Ok(problem) = gone_rx => {
                info!(log, "shutting down"; "reason" => %problem);
                Some(problem)
            }
        };
        let stop = async {
            let _ = supervisor.send(Shutdown).await;
            let _ = writer.send(Flush).await;
        };
        if tokio::time::timeout(SHUTDOWN_BUDGET, stop).await.is_err() {
            warn!(log, "shutdown budget exceeded; exiting with work left");
        }
        if let Some(health) = health {
            health.abort();
        }
        info!(log, "stopped");
        match gone {
            Some(problem) => Err(problem.into()),
            None => Ok(()),
        }
    })
}

/// Applies migrations and finds out who this agent is.
async fn bootstrap(args: &RunArgs, target: &DbTarget, log: &Logger) -> anyhow::Result<i32> {
    let applied = migrations::run_pending(target).await?;
    if !applied.is_empty() {
        info!(log, "migrations applied"; "applied" => applied.join(","));
    }
    let mut conn = target.connect().await?;
    let dc = args.datacenter_id;
    let Some(code) = config::datacenter_code(&mut conn, dc).await? else {
        bail!(IdentityError::NoDatacenter(dc));
    };
    let agent_id = match args.agent_id {
        Some(id) => match config::agent_problem(&mut conn, dc, id).await? {
            Some(problem) => bail!(problem),
            None => id,
        },
        None => config::lowest_agent_id(&mut conn, dc)
            .await?
            .with_context(|| {
                format!("datacenter {dc} has no agents: add a row to agents or set AGENT_ID")
            })?,
    };
    info!(log, "agent starting"; "database" => %target, "datacenter_id" => dc,
        "datacenter_code" => code, "agent_id" => agent_id);
    Ok(agent_id)
}

/// Opens this agent's spool directory; heartbeats a killed run left there are replayed.
fn open_spool(
    args: &RunArgs,
    agent_id: i32,
    log: &Logger,
) -> anyhow::Result<Spool<crate::actors::heartbeat_writer::PendingHeartbeat>> {
    let dir = args
        .spool_dir
        .join(format!("dc{}-agent{agent_id}", args.datacenter_id));
    let mut config = SpoolConfig::new(&dir);
    config.max_items = usize::try_from(args.spool_max_rows).unwrap_or(usize::MAX);
    config.memory_items = config.memory_items.min(config.max_items);
    let (spool, recovered) = Spool::open(config)
        .with_context(|| format!("cannot use SPOOL_DIR {}", args.spool_dir.display()))?;
    if recovered.items > 0 {
        info!(log, "spool replay"; "rows" => recovered.items, "segments" => recovered.segments,
            "spool_dir" => %dir.display());
    }
    Ok(spool)
}

/// A small multi-threaded runtime for start-up work: diesel's migration harness blocks in
/// place, which needs one.
fn bootstrap_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// Unique per process: host name, process id and start time.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!(
        "{}:{}:{}",
        host.trim(),
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
