//! What a check measured, and how it becomes a stored heartbeat row.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::heartbeats::NewHeartbeat;
use crate::monitor::MonitorSpec;

/// Longest text kept in the `varchar(50)` columns; longer values are cut, never rejected.
const SHORT_TEXT_MAX: usize = 50;

/// The outcome class stored in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Succeeded within the warning threshold.
    Up,
    /// Succeeded, slower than the warning threshold.
    Warning,
    /// Succeeded, slower than the critical threshold.
    Critical,
    /// Failed.
    Down,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Down => "down",
        }
    }

    /// Classifies a check from its success and total time against the schedule's thresholds.
    pub fn classify(
        success: bool,
        total: Option<Duration>,
        warning_ms: Option<i32>,
        critical_ms: Option<i32>,
    ) -> Self {
        if !success {
            return Status::Down;
        }
        let total_ms = total.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
        let slower_than = |limit: Option<i32>| limit.is_some_and(|l| total_ms > f64::from(l));
        if slower_than(critical_ms) {
            Status::Critical
        } else if slower_than(warning_ms) {
            Status::Warning
        } else {
            Status::Up
        }
    }
}

/// Which step of a check failed, stored in `error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The name did not resolve.
    Dns,
    /// No address accepted the TCP connection.
    Connect,
    /// The TLS handshake failed (including certificate verification).
    Tls,
    /// The monitor's timeout ran out.
    Timeout,
    /// The HTTP exchange failed, or the status was not 2xx.
    Http,
    /// Reading the body failed.
    Body,
    /// The target answered, but not what the monitor expects.
    Assertion,
    /// The agent itself failed (a bug: the check panicked).
    Internal,
}

impl ErrorKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Body => "body",
            ErrorKind::Assertion => "assertion",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Why a check failed, for a person to read.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckFailure {
    pub kind: ErrorKind,
    pub message: String,
}

impl CheckFailure {
    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Each phase's own duration; `None` when the phase did not happen or was not reached.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimings {
    /// Name resolution (none for an IP literal).
    pub dns: Option<Duration>,
    /// TCP connect, over every address tried.
    pub connect: Option<Duration>,
    /// TLS handshake (none for plain http).
    pub tls: Option<Duration>,
    /// From the start of the check to the first response byte (curl's time_starttransfer).
    pub first_byte: Option<Duration>,
    /// From the start of the check to the end of the body (curl's time_total).
    pub total: Option<Duration>,
}

/// Everything one check measured.
#[derive(Debug, Clone, Default)]
pub struct CheckResult {
    /// Wall-clock start of the check.
    pub started_at: DateTime<Utc>,
    pub timings: PhaseTimings,
    /// `None` when the check succeeded.
    pub failure: Option<CheckFailure>,
    /// Why a successful check counts as `warning` whatever its time (e.g. packet loss).
    pub degraded: Option<String>,
    pub status_code: Option<u16>,
    /// Body bytes received (after transfer decoding).
    pub size_bytes: Option<u64>,
    pub content_type: Option<String>,
    pub server: Option<String>,
    pub cache_status: Option<String>,
    /// The request headers sent, secrets masked.
    pub request_headers: Option<serde_json::Value>,
    pub response_headers: Option<serde_json::Value>,
    /// The body, when the schedule asks for it.
    pub body: Option<serde_json::Value>,
}

/// What the agent adds to a check's measurements to make a row.
#[derive(Debug, Clone, Copy)]
pub struct RowContext {
    pub agent_id: i32,
    pub lease_epoch: i64,
    pub scheduled_at: DateTime<Utc>,
}

impl CheckResult {
    /// True when nothing failed.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }

    /// The status this result is stored with.
    pub fn status(&self, spec: &MonitorSpec) -> Status {
        let status = Status::classify(
            self.success(),
            self.timings.total,
            spec.schedule.warning_ms,
            spec.schedule.critical_ms,
        );
        match (status, &self.degraded) {
            (Status::Up, Some(_)) => Status::Warning,
            _ => status,
        }
    }

    /// The row stored for this result.
    pub fn to_row(&self, spec: &MonitorSpec, ctx: RowContext) -> NewHeartbeat {
        let t = &self.timings;
        NewHeartbeat {
            monitor_id: Some(spec.id),
            agent_id: Some(ctx.agent_id),
            executed_at: self.started_at.naive_utc(),
            success: Some(self.success()),
            response_time_ms: millis(t.total),
            response_size_bytes: self.size_bytes.map(|s| s.min(i32::MAX as u64) as i32),
            response_status_code: self.status_code.map(i32::from),
            response_content_type: short(&self.content_type),
            response_server: short(&self.server),
            response_cache_status: short(&self.cache_status),
            dns_lookup_ms: millis(t.dns),
            tcp_connect_ms: millis(t.connect),
            tls_handshake_ms: millis(t.tls),
            time_to_first_byte_ms: millis(t.first_byte),
            warning_threshold_ms: spec.schedule.warning_ms,
            critical_threshold_ms: spec.schedule.critical_ms,
            error_type: self.failure.as_ref().map(|f| f.kind.as_str().to_string()),
            error_message: self
                .failure
                .as_ref()
                .map(|f| f.message.clone())
                .or_else(|| self.degraded.clone()),
            raw_request_headers: self.request_headers.clone(),
            raw_response_headers: self.response_headers.clone(),
            raw_response_body: self.body.clone(),
            status: Some(self.status(spec).as_str().to_string()),
            lease_epoch: Some(ctx.lease_epoch),
            scheduled_at: Some(ctx.scheduled_at.naive_utc()),
        }
    }
}

/// Whole milliseconds, rounded to nearest.
fn millis(d: Option<Duration>) -> Option<i32> {
    d.map(|d| ((d.as_micros() + 500) / 1000).min(i32::MAX as u128) as i32)
}

fn short(text: &Option<String>) -> Option<String> {
    text.as_ref()
        .map(|t| t.chars().take(SHORT_TEXT_MAX).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_thresholds() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            Status::classify(true, ms(50), Some(100), Some(500)),
            Status::Up
        );
        assert_eq!(
            Status::classify(true, ms(150), Some(100), Some(500)),
            Status::Warning
        );
        assert_eq!(
            Status::classify(true, ms(600), Some(100), Some(500)),
            Status::Critical
        );
        assert_eq!(
            Status::classify(false, ms(5), Some(100), Some(500)),
            Status::Down
        );
        assert_eq!(Status::classify(true, ms(9000), None, None), Status::Up);
    }

    #[test]
    fn millis_round_to_nearest_and_keep_none() {
        assert_eq!(millis(Some(Duration::from_micros(1499))), Some(1));
        assert_eq!(millis(Some(Duration::from_micros(1500))), Some(2));
        assert_eq!(millis(None), None);
    }

    #[test]
    fn long_header_values_are_cut_to_the_column() {
        let long = Some("x".repeat(80));
        assert_eq!(short(&long).map(|s| s.len()), Some(SHORT_TEXT_MAX));
    }
}
