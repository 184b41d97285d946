//! The agent's Prometheus metrics, served as text on `GET /metrics` of the health port.
//!
//! One [`Metrics`] per process, shared as an `Arc` by the actors that produce the figures
//! (each actor has a `with_metrics` setter; without it, it records into a private registry
//! nobody reads). Recording is cheap on the per-check path: counters and gauges are atomics,
//! the phase histograms are resolved once at start, and the only map lookup is the
//! `checks_total` family keyed by monitor type and status.
//!
//! The lease role kept here is also what `/readyz` reads (see [`crate::health`]).

use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::heartbeat::CheckResult;

/// The phases whose durations are histograms, in the order of [`PhaseHistograms`].
const PHASES: [&str; 5] = ["dns", "connect", "tls", "first_byte", "total"];

/// Labels of `uptimeo_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    monitor_type: String,
    status: &'static str,
}

/// Labels of the phase histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Labels of `uptimeo_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

type PhaseHistograms = [Histogram; 5];

/// What the supervisor last learnt about the lease; `/readyz` needs a known role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LeaseRole {
    /// No lease statement has answered yet, or the last one a standby sent failed.
    Unknown = 0,
    /// Another agent holds the lease; this one is ready to take over.
    Standby = 1,
    /// This agent holds the lease and runs the checks.
    Active = 2,
}

/// How a configuration poll ended, for `uptimeo_config_reloads_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The rows changed (or were loaded for the first time) and were sent to the supervisor.
    Changed,
    /// Nothing changed.
    Unchanged,
    /// The poll failed.
    Failed,
}

/// Every metric of the agent, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    phases: PhaseHistograms,
    lateness: Histogram,
    slots_skipped: Counter,
    writer_queue: Gauge,
    writer_batch: Histogram,
    rows_written: Counter,
    rows_rejected: Counter,
    write_errors: Counter,
    lease_active: Gauge,
    lease_epoch: Gauge,
    role: AtomicU8,
    reloads: Family<ReloadLabels, Counter>,
    partitions_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("uptimeo");
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let phase_family =
            Family::<PhaseLabels, Histogram, _>::new_with_constructor(seconds as fn() -> _);
        let phases = PHASES.map(|phase| phase_family.get_or_create(&PhaseLabels { phase }).clone());
        let metrics = Self {
            checks: Family::default(),
            phases,
            lateness: seconds(),
            slots_skipped: Counter::default(),
            writer_queue: Gauge::default(),
            writer_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            rows_written: Counter::default(),
            rows_rejected: Counter::default(),
            write_errors: Counter::default(),
            lease_active: Gauge::default(),
            lease_epoch: Gauge::default(),
            role: AtomicU8::new(LeaseRole::Unknown as u8),
            reloads: Family::default(),
            partitions_dropped: Counter::default(),
            registry: Registry::default(),
        };

        let m = &metrics;
        registry.register(
            "checks",
            "Checks finished, by monitor type and status",
            m.checks.clone(),
        );
        registry.register(
            "check_phase_seconds",
            "Duration of each phase of a check",
            phase_family,
        );
        registry.register(
            "schedule_lateness_seconds",
            "How long after its schedule slot a check started",
            m.lateness.clone(),
        );
        registry.register(
            "slots_skipped",
            "Schedule slots not run (previous check still running, or the agent fell behind)",
            m.slots_skipped.clone(),
        );
        registry.register(
            "writer_queue_rows",
            "Heartbeats received by the writer and not stored yet",
            m.writer_queue.clone(),
        );
        registry.register(
            "writer_batch_rows",
            "Rows per batch write attempt",
            m.writer_batch.clone(),
        );
        registry.register(
            "heartbeats_written",
            "Heartbeats stored",
            m.rows_written.clone(),
        );
        registry.register(
            "heartbeats_rejected",
            "Heartbeats PostgreSQL rejected for their content and that were dropped",
            m.rows_rejected.clone(),
        );
        registry.register(
            "write_errors",
            "Batch writes that failed and will be retried",
            m.write_errors.clone(),
        );
        registry.register(
            "lease_active",
            "1 while this agent holds its datacenter's lease, else 0",
            m.lease_active.clone(),
        );
        registry.register(
            "lease_epoch",
            "Epoch of the lease last held by this agent (0 before any)",
            m.lease_epoch.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration polls, by outcome",
            m.reloads.clone(),
        );
        registry.register(
            "partitions_dropped",
            "Daily heartbeat partitions dropped by retention",
            m.partitions_dropped.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The exposition in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Called by a monitor actor once per finished check.
    pub fn record_check(
        &self,
        monitor_type: &str,
        status: Option<&str>,
        result: &CheckResult,
        slot: DateTime<Utc>,
    ) {
        let status = match status {
            Some("up") => "up",
            Some("warning") => "warning",
            Some("critical") => "critical",
            _ => "down",
        };
        self.checks
            .get_or_create(&CheckLabels {
                monitor_type: monitor_type.to_string(),
                status,
            })
            .inc();
        let t = &result.timings;
        for (histogram, took) in
            self.phases
                .iter()
                .zip([t.dns, t.connect, t.tls, t.first_byte, t.total])
        {
            if let Some(took) = took {
                histogram.observe(took.as_secs_f64());
            }
        }
        let late = (result.started_at - slot)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        self.lateness.observe(late as f64 / 1e6);
    }

    /// Called by a monitor actor for slots it did not run.
    pub fn record_skipped_slots(&self, count: u64) {
        self.slots_skipped.inc_by(count);
    }

    /// Called by the writer whenever its buffer changes size.
    pub fn record_writer_queue(&self, rows: usize) {
        self.writer_queue.set(rows as i64);
    }

    /// Called by the writer after each batch write: rows stored, rows rejected and dropped,
    /// and whether the write failed (its unwritten rows go back to the buffer).
    pub fn record_write(&self, attempted: usize, stored: usize, rejected: usize, failed: bool) {
        self.writer_batch.observe(attempted as f64);
        self.rows_written.inc_by(stored as u64);
        self.rows_rejected.inc_by(rejected as u64);
        if failed {
            self.write_errors.inc();
        }
    }

    /// Called by the supervisor whenever it learns its lease role.
    pub fn record_lease(&self, role: LeaseRole, epoch: Option<i64>) {
        self.role.store(role as u8, Ordering::Relaxed);
        self.lease_active.set(i64::from(role == LeaseRole::Active));
        if let Some(epoch) = epoch {
            self.lease_epoch.set(epoch);
        }
    }

    /// The lease role last recorded.
    pub fn lease_role(&self) -> LeaseRole {
        match self.role.load(Ordering::Relaxed) {
            2 => LeaseRole::Active,
            1 => LeaseRole::Standby,
            _ => LeaseRole::Unknown,
        }
    }

    /// Called by the configuration reload actor after each poll.
    pub fn record_reload(&self, outcome: ReloadOutcome) {
        let outcome = match outcome {
            ReloadOutcome::Changed => "changed",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Failed => "failed",
        };
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
    }

    /// Called by the retention actor for each partition it dropped.
    pub fn record_partition_dropped(&self) {
        self.partitions_dropped.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_recorded_check_shows_in_the_exposition() {
        let metrics = Metrics::new();
        let slot = Utc::now();
        let result = CheckResult {
            started_at: slot + chrono::Duration::milliseconds(3),
            timings: crate::heartbeat::PhaseTimings {
                connect: Some(Duration::from_millis(2)),
                total: Some(Duration::from_millis(5)),
                ..Default::default()
            },
            ..Default::default()
        };
        metrics.record_check("HTTP", Some("up"), &result, slot);
        metrics.record_check("HTTP", None, &result, slot);
        metrics.record_lease(LeaseRole::Active, Some(7));
        metrics.record_write(3, 2, 1, false);

        let text = metrics.encode();
        assert!(text.contains(r#"uptimeo_checks_total{monitor_type="HTTP",status="up"} 1"#));
        assert!(text.contains(r#"uptimeo_checks_total{monitor_type="HTTP",status="down"} 1"#));
        assert!(text.contains(r#"uptimeo_check_phase_seconds_count{phase="connect"} 2"#));
        assert!(text.contains(r#"uptimeo_check_phase_seconds_count{phase="dns"} 0"#));
        assert!(text.contains("uptimeo_schedule_lateness_seconds_count 2"));
        assert!(text.contains("uptimeo_lease_epoch 7"), "{text}");
        assert!(text.contains("uptimeo_heartbeats_written_total 2"));
        assert!(text.contains("uptimeo_heartbeats_rejected_total 1"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(metrics.lease_role(), LeaseRole::Active);
    }
}
