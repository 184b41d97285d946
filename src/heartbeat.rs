//! What a check measured, and how it becomes a stored heartbeat row.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

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
    /// Redirects went on past the monitor's limit (a loop, or too long a chain).
    Redirect,
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
            ErrorKind::Redirect => "redirect",
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
///
/// After redirects, `dns`, `connect` and `tls` are the final hop's own phases, `redirect` is
/// the time spent on the earlier hops, and `first_byte` and `total` count from the start of
/// the whole check, so `redirect + dns + connect + tls <= first_byte <= total`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimings {
    /// From the start of the check to the start of the final hop (curl's time_redirect);
    /// `None` when no redirect was followed.
    pub redirect: Option<Duration>,
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
    /// What else the check found out, stored in `details`.
    pub details: CheckDetails,
}

/// Figures of a check that have no column of their own; stored as the `details` JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckDetails {
    /// `HTTP/1.1` or `HTTP/2` (of the final hop).
    pub http_version: Option<String>,
    /// The address the final hop connected to.
    pub remote_addr: Option<SocketAddr>,
    /// The addresses tried before it (or, when none accepted, all of them) and why they
    /// failed.
    pub failed_connects: Vec<crate::monitor::net::FailedConnect>,
    /// `TLSv1_2` or `TLSv1_3` (of the final hop).
    pub tls_version: Option<String>,
    /// Expiry of the leaf certificate the final hop's server sent.
    pub cert_not_after: Option<DateTime<Utc>>,
    /// Redirects followed.
    pub redirects: u32,
    /// The URL of the last request sent.
    pub final_url: Option<String>,
    /// True when the body was longer than the read cap and reading stopped there.
    pub body_truncated: bool,
    /// The response's `Content-Encoding`, as sent.
    pub content_encoding: Option<String>,
    /// Size of the body after content decoding (gzip, deflate); `None` when not decoded.
    pub decoded_bytes: Option<u64>,
    /// True when decoding stopped at its cap (the body inflated past it).
    pub decoded_truncated: bool,
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
    pub fn into_row(self, spec: &MonitorSpec, ctx: RowContext) -> NewHeartbeat {
        // Derived figures first; then the JSON values move into the row instead of being copied.
        let status = self.status(spec).as_str().to_string();
        let success = self.success();
        let details = self.details_json();
        let t = self.timings;
        let (error_type, error_message) = match self.failure {
            Some(f) => (Some(f.kind.as_str().to_string()), Some(f.message)),
            None => (None, self.degraded),
        };
        NewHeartbeat {
            monitor_id: Some(spec.id),
            agent_id: Some(ctx.agent_id),
            executed_at: self.started_at.naive_utc(),
            success: Some(success),
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
            error_type,
            error_message,
            raw_request_headers: self.request_headers,
            raw_response_headers: self.response_headers,
            raw_response_body: self.body,
            status: Some(status),
            lease_epoch: Some(ctx.lease_epoch),
            scheduled_at: Some(ctx.scheduled_at.naive_utc()),
            details: Some(details),
        }
    }

    /// The `details` column: timings in microseconds (null for a phase that did not run),
    /// versions, address, certificate expiry, redirects and truncation.
    pub fn details_json(&self) -> Value {
        let t = &self.timings;
        let d = &self.details;
        json!({
            "redirect_us": micros(t.redirect),
            "dns_us": micros(t.dns),
            "connect_us": micros(t.connect),
            "tls_us": micros(t.tls),
            "ttfb_us": micros(t.first_byte),
            "total_us": micros(t.total),
            "http_version": d.http_version,
            "remote_addr": d.remote_addr.map(|a| a.to_string()),
            "failed_connects": d.failed_connects.iter().map(|f| json!({
                "addr": f.addr.to_string(),
                "us": micros(Some(f.took)),
                "error": f.error,
            })).collect::<Vec<_>>(),
            "tls_version": d.tls_version,
            "cert_not_after": d.cert_not_after.map(|t| t.to_rfc3339()),
            "cert_days_left": self.cert_days_left(),
            "redirects": d.redirects,
            "final_url": d.final_url,
            "body_truncated": d.body_truncated,
            "wire_bytes": self.size_bytes,
            "content_encoding": d.content_encoding,
            "decoded_bytes": d.decoded_bytes,
            "decoded_truncated": d.decoded_truncated,
        })
    }

    /// Whole days from the start of the check to the certificate's expiry, rounded down
    /// (negative once expired).
    pub fn cert_days_left(&self) -> Option<i64> {
        self.details
            .cert_not_after
            .map(|end| (end - self.started_at).num_seconds().div_euclid(86_400))
    }
}

/// Whole microseconds.
fn micros(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_micros().min(u128::from(u64::MAX)) as u64)
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
    fn details_keep_microseconds_and_null_phases() {
        let started_at = Utc::now();
        let result = CheckResult {
            started_at,
            timings: PhaseTimings {
                connect: Some(Duration::from_micros(1234)),
                total: Some(Duration::from_micros(56_789)),
                ..PhaseTimings::default()
            },
            details: CheckDetails {
                cert_not_after: Some(started_at + chrono::Duration::hours(36)),
                redirects: 2,
                ..CheckDetails::default()
            },
            ..CheckResult::default()
        };
        let d = result.details_json();
        assert_eq!(d["connect_us"], 1234);
        assert_eq!(d["total_us"], 56_789);
        assert!(d["dns_us"].is_null() && d["tls_us"].is_null());
        assert_eq!(d["cert_days_left"], 1);
        assert_eq!(d["redirects"], 2);
    }

    #[test]
    fn expired_certificates_have_negative_days_left() {
        let started_at = Utc::now();
        let result = CheckResult {
            started_at,
            details: CheckDetails {
                cert_not_after: Some(started_at - chrono::Duration::hours(1)),
                ..CheckDetails::default()
            },
            ..CheckResult::default()
        };
        assert_eq!(result.cert_days_left(), Some(-1));
    }

    #[test]
    fn long_header_values_are_cut_to_the_column() {
        let long = Some("x".repeat(80));
        assert_eq!(short(&long).map(|s| s.len()), Some(SHORT_TEXT_MAX));
    }
}
