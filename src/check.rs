//! The `check` subcommand: one check of a URL, now, without a database, printed as a
//! waterfall of its phases (or, with `--json`, as the heartbeat row the agent would store).
//!
//! The row is the agent's own [`CheckResult::into_row`] of a monitor built from the flags, with
//! the fields only a running agent knows left null: `monitor_id`, `agent_id`, `lease_epoch`,
//! `scheduled_at`, and the thresholds (no schedule).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;

use crate::heartbeat::{CheckResult, RowContext};
use crate::monitor::expect::{BodyMatch, Expectations};
use crate::monitor::http::HttpProbe;
use crate::monitor::net::IpFamily;
use crate::monitor::{HttpOptions, MonitorSpec, Probe, ProbeConfig, Schedule};
use crate::settings::CheckArgs;

/// Columns of the longest bar.
const BAR_WIDTH: usize = 40;

/// Exit status of a check that ran and failed (2 is for invalid input, as clap uses).
const EXIT_CHECK_FAILED: u8 = 1;
const EXIT_INVALID_INPUT: u8 = 2;

/// Runs the check and prints it; the exit status is 0 only when the check succeeded.
pub fn run(args: &CheckArgs) -> ExitCode {
    match try_run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_CHECK_FAILED),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_INVALID_INPUT)
        }
    }
}

fn try_run(args: &CheckArgs) -> Result<bool, String> {
    let spec = spec_from_args(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(async {
        let config = ProbeConfig {
            dns_server: args.dns_server,
            ..ProbeConfig::default()
        };
        let probe = HttpProbe::new(&config).map_err(|e| e.to_string())?;
        probe.validate(&spec)?;
        Ok::<_, String>(probe.run(&spec).await)
    })?;

    if args.json {
        let json = serde_json::to_string(&row(&result, &spec))
            .map_err(|e| format!("cannot print the row: {e}"))?;
        println!("{json}");
    } else {
        print!(
            "{}",
            render(&result, &crate::monitor::redacted_url(&spec.url))
        );
    }
    Ok(result.success())
}

/// The monitor the flags describe: id 0, no thresholds. Fails on a body pattern that is not
/// a valid regular expression.
pub fn spec_from_args(args: &CheckArgs) -> Result<MonitorSpec, String> {
    let https = args
        .url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https:");
    let body = args
        .body_match
        .as_deref()
        .map(|pattern| BodyMatch::new(pattern, args.body_match_mode))
        .transpose()?;
    let ip_family = match (args.ipv4, args.ipv6) {
        (true, _) => IpFamily::V4,
        (_, true) => IpFamily::V6,
        _ => IpFamily::Any,
    };
    Ok(MonitorSpec {
        id: 0,
        name: "check".to_string(),
        kind: if https { "HTTPS" } else { "HTTP" }.to_string(),
        method: args.method.clone(),
        url: args.url.trim().to_string(),
        headers: args.headers.clone(),
        body: args.data.as_ref().map(|data| {
            serde_json::from_str(data).unwrap_or_else(|_| serde_json::Value::String(data.clone()))
        }),
        schedule: Schedule {
            id: 0,
            interval: args.timeout,
            include_response_body: args.include_body,
            warning_ms: None,
            critical_ms: None,
        },
        timeout: args.timeout,
        ip_family,
        http: HttpOptions {
            max_redirects: args.max_redirects,
            verify_tls: !args.insecure,
        },
        expect: Expectations {
            status: args.expect_status.clone(),
            body,
            min_cert_days: args.min_cert_days,
        },
    })
}

/// The row `run` would store, without what only a running agent knows.
pub fn row(result: &CheckResult, spec: &MonitorSpec) -> crate::db::heartbeats::NewHeartbeat {
    let ctx = RowContext {
        agent_id: 0,
        lease_epoch: 0,
        scheduled_at: Utc::now(),
    };
    let mut row = result.clone().into_row(spec, ctx);
    row.monitor_id = None;
    row.agent_id = None;
    row.lease_epoch = None;
    row.scheduled_at = None;
    row
}

/// The waterfall: one line per phase with its duration and a bar placed where it happened,
/// then the answer, the TLS session and the certificate, the redirects, and the verdict.
pub fn render(result: &CheckResult, url: &str) -> String {
    let mut out = String::new();
    let d = &result.details;
    let _ = writeln!(out, "{url}");
    if let Some(addr) = d.remote_addr {
        let mut line = format!("connected to {addr}");
        if let Some(version) = &d.http_version {
            let _ = write!(line, " over {version}");
        }
        if let Some(tls) = &d.tls_version {
            let _ = write!(line, ", {tls}");
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');

    let total = result.timings.total.unwrap_or_default();
    for phase in phases(result) {
        let line = format!(
            "  {:<16} {:>11}  {}",
            phase.name,
            phase.duration.map(format_ms).unwrap_or_else(|| "-".into()),
            phase
                .duration
                .map(|dur| bar(phase.start, dur, total))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out, "  {:<16} {:>11}\n", "total", format_ms(total));

    if let Some(code) = result.status_code {
        let mut line = format!("HTTP {code}");
        if let Some(size) = result.size_bytes {
            let _ = write!(line, ", {size} bytes");
            if let (Some(encoding), Some(decoded)) = (&d.content_encoding, d.decoded_bytes) {
                let _ = write!(line, " ({encoding}, {decoded} decoded)");
            }
            if d.body_truncated {
                line.push_str(" (truncated: the rest was not read)");
            }
        }
        if let Some(kind) = &result.content_type {
            let _ = write!(line, ", {kind}");
        }
        let _ = writeln!(out, "{line}");
    }
    if let (Some(end), Some(days)) = (d.cert_not_after, result.cert_days_left()) {
        let _ = writeln!(
            out,
            "certificate expires {} ({days} days left)",
            end.format("%Y-%m-%d %H:%M UTC")
        );
    }
    if d.redirects > 0 {
        let final_url = d.final_url.as_deref().unwrap_or("?");
        let _ = writeln!(out, "{} redirects, final URL {final_url}", d.redirects);
    }
    match &result.failure {
        None => out.push_str("UP\n"),
        Some(f) => {
            let _ = writeln!(out, "DOWN ({}): {}", f.kind.as_str(), f.message);
        }
    }
    out
}

/// One line of the waterfall.
struct Phase {
    name: &'static str,
    /// Offset from the start of the check.
    start: Duration,
    /// `None` when the phase did not run.
    duration: Option<Duration>,
}

/// The phases in order, each starting where the previous ones ended.
fn phases(result: &CheckResult) -> Vec<Phase> {
    let t = &result.timings;
    let mut list = Vec::new();
    let mut at = Duration::ZERO;
    if t.redirect.is_some() {
        list.push(("redirects", t.redirect));
    }
    list.extend([
        ("DNS lookup", t.dns),
        ("TCP connect", t.connect),
        ("TLS handshake", t.tls),
    ]);
    let mut phases: Vec<Phase> = list
        .into_iter()
        .map(|(name, duration)| {
            let start = at;
            at += duration.unwrap_or_default();
            Phase {
                name,
                start,
                duration,
            }
        })
        .collect();
    let wait = t.first_byte.map(|ttfb| ttfb.saturating_sub(at));
    phases.push(Phase {
        name: "server wait",
        start: at,
        duration: wait,
    });
    let transfer = t
        .first_byte
        .zip(t.total)
        .map(|(ttfb, total)| total.saturating_sub(ttfb));
    phases.push(Phase {
        name: "transfer",
        start: t.first_byte.unwrap_or(at),
        duration: transfer.filter(|_| result.success() || result.size_bytes.is_some()),
    });
    phases
}

/// A bar of `duration` placed at `start`, on a scale where `total` fills [`BAR_WIDTH`].
fn bar(start: Duration, duration: Duration, total: Duration) -> String {
    if total.is_zero() {
        return String::new();
    }
    let col = |d: Duration| {
        let cols = d.as_secs_f64() / total.as_secs_f64() * BAR_WIDTH as f64;
        (cols.round() as usize).min(BAR_WIDTH)
    };
    let from = col(start).min(BAR_WIDTH - 1);
    let len = col(duration).max(1).min(BAR_WIDTH - from);
    format!(
        "|{}{}{}|",
        " ".repeat(from),
        "#".repeat(len),
        " ".repeat(BAR_WIDTH - from - len)
    )
}

/// Milliseconds with two decimals.
fn format_ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::{CheckFailure, ErrorKind, PhaseTimings};

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn bars_are_placed_and_scaled_to_the_total() {
        let total = Duration::from_millis(400);
        let b = bar(
            Duration::from_millis(100),
            Duration::from_millis(200),
            total,
        );
        assert_eq!(b.len(), BAR_WIDTH + 2);
        assert_eq!(b.find('#'), Some(1 + 10));
        assert_eq!(b.matches('#').count(), 20);
        // A phase too short to see still gets one column.
        let tiny = bar(Duration::ZERO, Duration::from_micros(5), total);
        assert_eq!(tiny.matches('#').count(), 1);
    }

    #[test]
    fn the_waterfall_shows_every_phase_and_the_verdict() {
        let result = CheckResult {
            timings: PhaseTimings {
                dns: ms(10),
                connect: ms(20),
                tls: ms(30),
                first_byte: ms(100),
                total: ms(120),
                ..PhaseTimings::default()
            },
            status_code: Some(200),
            size_bytes: Some(11),
            ..CheckResult::default()
        };
        let text = render(&result, "https://a.test/");
        for line in ["DNS lookup", "TCP connect", "TLS handshake", "server wait"] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(
            text.contains("40.00 ms"),
            "server wait is 100 - 60:\n{text}"
        );
        assert!(text.contains("HTTP 200, 11 bytes"));
        assert!(text.trim_end().ends_with("UP"));
        assert!(!text.contains("redirects"));
    }

    #[test]
    fn a_failure_shows_phases_not_reached_as_dashes() {
        let result = CheckResult {
            timings: PhaseTimings {
                connect: ms(1),
                total: ms(800),
                ..PhaseTimings::default()
            },
            failure: Some(CheckFailure::new(ErrorKind::Timeout, "no answer")),
            ..CheckResult::default()
        };
        let text = render(&result, "http://127.0.0.1:9/");
        let wait = text.lines().find(|l| l.contains("server wait")).unwrap();
        assert!(wait.trim_end().ends_with('-'), "{wait}");
        assert!(text.contains("DOWN (timeout): no answer"));
    }
}
