//! Monitor definitions and the probes that check them.
//!
//! A monitor row's `type` selects a [`Probe`]; each probe lives in its own file here. Adding a
//! monitor type means writing one file that implements [`Probe`] and adding one line to
//! [`ProbeSet::for_type`].

pub mod dns;
pub mod http;
pub mod measure;
pub mod net;
pub mod ping;
pub mod tcp;
#[cfg(debug_assertions)]
pub mod test_panic;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rustls::pki_types::CertificateDer;

use crate::db::config::{MonitorRow, ScheduleRow};
use crate::heartbeat::CheckResult;

/// Longest accepted schedule interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
/// Redirects an HTTP check follows unless told otherwise.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// A schedule as the agent uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: i32,
    pub interval: Duration,
    pub include_response_body: bool,
    pub warning_ms: Option<i32>,
    pub critical_ms: Option<i32>,
}

/// A validated monitor: everything needed to run its checks. Two specs that compare equal run
/// identically, which is how a configuration reload decides what to restart.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    pub id: i32,
    pub name: String,
    /// `api_monitors.type`, upper-cased.
    pub kind: String,
    pub method: ::http::Method,
    pub url: String,
    /// Request headers in the row's order.
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    pub schedule: Schedule,
    /// How long one check may take; the schedule's interval.
    pub timeout: Duration,
    /// How HTTP checks treat redirects and certificates.
    pub http: HttpOptions,
}

/// Options of HTTP checks. Monitor rows cannot set them yet, so every monitor the agent runs
/// uses the defaults; the `check` subcommand sets them from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Most redirects followed, each on a fresh connection; 0 makes a redirect answer final
    /// (and, not being 2xx, a failure).
    pub max_redirects: u32,
    /// Verify the server's certificate chain and name (true unless asked otherwise; the
    /// certificate is still recorded when false).
    pub verify_tls: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_redirects: DEFAULT_MAX_REDIRECTS,
            verify_tls: true,
        }
    }
}

/// Why a monitor row cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("monitor {monitor_id} ({name}) skipped: {reason}")]
pub struct InvalidMonitor {
    pub monitor_id: i32,
    pub name: String,
    pub reason: String,
}

/// Runs checks of one monitor type.
pub trait Probe: Send + Sync {
    /// Rejects a definition this probe cannot run (its URL, method, ...), with the reason.
    fn validate(&self, spec: &MonitorSpec) -> Result<(), String>;

    /// Whether checks of this type send the monitor's `body`; a monitor with a body of a type
    /// that sends none is rejected rather than checked without it.
    fn sends_body(&self) -> bool {
        false
    }

    /// Runs one check. Never fails: every failure is described in the result.
    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult>;
}

/// Settings shared by all probes.
#[derive(Debug, Clone, Default)]
pub struct ProbeConfig {
    /// Certificates trusted besides the webpki roots and the system's CA bundle
    /// (`SSL_CERT_FILE` also adds to the system bundle).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The one DNS server names are resolved with (UDP, TCP when truncated), instead of the
    /// resolvers of `/etc/resolv.conf`; `/etc/hosts` is still read first.
    pub dns_server: Option<std::net::SocketAddr>,
}

/// Failure to set probes up (reading the system's resolver or CA configuration).
#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    #[error("cannot read the system's DNS configuration: {0}")]
    Resolver(String),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(String),
}

/// One probe per monitor type, shared by every monitor of that type.
pub struct ProbeSet {
    http: Arc<http::HttpProbe>,
    tcp: Arc<tcp::TcpProbe>,
    dns: Arc<dns::DnsProbe>,
    ping: Arc<ping::PingProbe>,
}

impl ProbeSet {
    /// Builds every probe.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        Ok(Self {
            http: Arc::new(http::HttpProbe::new(config)?),
            tcp: Arc::new(tcp::TcpProbe::new(config)?),
            dns: Arc::new(dns::DnsProbe::new(config)?),
            ping: Arc::new(ping::PingProbe::new(config)?),
        })
    }

    /// The probe for an `api_monitors.type`, case-insensitively.
    pub fn for_type(&self, kind: &str) -> Option<Arc<dyn Probe>> {
        match kind.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTPS" => Some(self.http.clone()),
            "TCP" => Some(self.tcp.clone()),
            "DNS" => Some(self.dns.clone()),
            "ICMP" | "PING" => Some(self.ping.clone()),
            #[cfg(debug_assertions)]
            test_panic::TYPE => Some(Arc::new(test_panic::PanicProbe)),
            _ => None,
        }
    }

    /// Validates a row and its schedule into a spec.
    pub fn spec_from_rows(
        &self,
        row: &MonitorRow,
        schedule: Option<&ScheduleRow>,
    ) -> Result<MonitorSpec, InvalidMonitor> {
        let invalid = |reason: String| InvalidMonitor {
            monitor_id: row.id,
            name: row.name.clone(),
            reason,
        };
        let probe = self
            .for_type(&row.monitor_type)
            .ok_or_else(|| invalid(format!("unknown monitor type `{}`", row.monitor_type)))?;
        let schedule = schedule_from_row(row, schedule).map_err(invalid)?;
        let method = ::http::Method::from_bytes(row.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid(format!("invalid method `{}`", row.method)))?;
        let headers = headers_from_json(row.headers.as_ref()).map_err(invalid)?;

        let spec = MonitorSpec {
            id: row.id,
            name: row.name.clone(),
            kind: row.monitor_type.trim().to_ascii_uppercase(),
            method,
            url: row.url.trim().to_string(),
            headers,
            body: row.body.clone().filter(|b| !b.is_null()),
            timeout: schedule.interval,
            schedule,
            http: HttpOptions::default(),
        };
        if spec.body.is_some() && !probe.sends_body() {
            return Err(invalid(format!(
                "a body is set, but {} checks send no request body",
                spec.kind
            )));
        }
        probe.validate(&spec).map_err(invalid)?;
        Ok(spec)
    }
}

fn schedule_from_row(row: &MonitorRow, schedule: Option<&ScheduleRow>) -> Result<Schedule, String> {
    let s = schedule.ok_or_else(|| match row.schedule_id {
        Some(id) => format!("schedule {id} does not exist"),
        None => "no schedule_id".to_string(),
    })?;
    let secs = u64::try_from(s.interval).unwrap_or(0);
    if secs == 0 || Duration::from_secs(secs) > MAX_INTERVAL {
        return Err(format!(
            "schedule {} has interval {} s; it must be between 1 and {}",
            s.id,
            s.interval,
            MAX_INTERVAL.as_secs()
        ));
    }
    let thresholds_valid = ignored_thresholds(s).is_none();
    Ok(Schedule {
        id: s.id,
        interval: Duration::from_secs(secs),
        include_response_body: s.include_response_body.unwrap_or(false),
        warning_ms: s.thresholds_warning.filter(|_| thresholds_valid),
        critical_ms: s.thresholds_critical.filter(|_| thresholds_valid),
    })
}

/// Why a schedule's thresholds are ignored, if they are: a warning threshold above the
/// critical one cannot be meant. Its monitors still run, without thresholds (every answered
/// check is `up`), and the reason is logged.
pub fn ignored_thresholds(s: &ScheduleRow) -> Option<String> {
    match (s.thresholds_warning, s.thresholds_critical) {
        (Some(warning), Some(critical)) if warning > critical => Some(format!(
            "schedule {} has thresholds_warning {warning} ms above thresholds_critical \
             {critical} ms; both ignored",
            s.id
        )),
        _ => None,
    }
}

/// Headers must be a JSON object whose values are strings (numbers and booleans are accepted
/// and sent as their text); each name and value must be valid in HTTP.
fn headers_from_json(value: Option<&serde_json::Value>) -> Result<Vec<(String, String)>, String> {
    let map = match value {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Object(map)) => map,
        Some(other) => return Err(format!("headers must be a JSON object, not {other}")),
    };
    let mut headers = Vec::with_capacity(map.len());
    for (name, value) in map {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(format!("header `{name}` must be a string")),
        };
        ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        ::http::HeaderValue::from_str(&value)
            .map_err(|_| format!("header `{name}` has a value that is not valid in HTTP"))?;
        headers.push((name.clone(), value));
    }
    Ok(headers)
}

/// True for headers whose values are secrets: never stored or logged as sent.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "cookie" | "proxy-authorization" | "set-cookie"
    ) || ["key", "token", "secret"].iter().any(|w| name.contains(w))
}

/// The value to store or log for a header.
pub fn masked_header_value(name: &str, value: &str) -> String {
    if is_secret_header(name) {
        "***".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(kind: &str, url: &str, headers: Option<serde_json::Value>) -> MonitorRow {
        MonitorRow {
            id: 7,
            name: "api".into(),
            method: "get".into(),
            monitor_type: kind.into(),
            url: url.into(),
            schedule_id: Some(1),
            headers,
            body: None,
        }
    }

    fn schedule(interval: i32) -> ScheduleRow {
        ScheduleRow {
            id: 1,
            name: "s".into(),
            interval,
            include_response_body: None,
            thresholds_warning: Some(100),
            thresholds_critical: Some(500),
        }
    }

    fn probes() -> ProbeSet {
        ProbeSet::new(&ProbeConfig::default()).expect("probes")
    }

    #[test]
    fn a_valid_row_becomes_a_spec() {
        let spec = probes()
            .spec_from_rows(
                &row("https", "https://example.test/x", None),
                Some(&schedule(30)),
            )
            .expect("valid");
        assert_eq!(spec.kind, "HTTPS");
        assert_eq!(spec.method, ::http::Method::GET);
        assert_eq!(spec.timeout, Duration::from_secs(30));
    }

    #[test]
    fn broken_rows_name_their_reason() {
        let p = probes();
        let s = schedule(30);
        let reason =
            |r: MonitorRow, s: Option<&ScheduleRow>| p.spec_from_rows(&r, s).unwrap_err().reason;
        assert!(reason(row("SMTP", "smtp://x", None), Some(&s)).contains("unknown monitor type"));
        assert!(reason(row("HTTP", "not a url", None), Some(&s)).contains("URL"));
        assert!(reason(row("HTTP", "http://x/", None), None).contains("schedule"));
        assert!(reason(row("HTTP", "http://x/", None), Some(&schedule(0))).contains("interval"));
        assert!(reason(row("HTTP", "http://x/", Some(json!(["a"]))), Some(&s)).contains("object"));
        assert!(
            reason(row("HTTP", "http://x/", Some(json!({"a": {}}))), Some(&s)).contains("string")
        );
    }

    #[test]
    fn odd_methods_unsent_bodies_and_reversed_thresholds() {
        let p = probes();
        let mut fetch = row("HTTP", "http://x/", None);
        fetch.method = "FETCH".into();
        let reason = p
            .spec_from_rows(&fetch, Some(&schedule(30)))
            .unwrap_err()
            .reason;
        assert!(reason.contains("unsupported method `FETCH`"), "{reason}");

        let mut tcp_body = row("TCP", "tcp://x:1", None);
        tcp_body.body = Some(json!({"a": 1}));
        let reason = p
            .spec_from_rows(&tcp_body, Some(&schedule(30)))
            .unwrap_err()
            .reason;
        assert!(
            reason.contains("TCP checks send no request body"),
            "{reason}"
        );

        let mut reversed = schedule(30);
        (reversed.thresholds_warning, reversed.thresholds_critical) = (Some(900), Some(100));
        let spec = p
            .spec_from_rows(&row("HTTP", "http://x/", None), Some(&reversed))
            .expect("runs without thresholds");
        assert_eq!(
            (spec.schedule.warning_ms, spec.schedule.critical_ms),
            (None, None)
        );
        assert!(ignored_thresholds(&reversed).is_some());
        assert!(ignored_thresholds(&schedule(30)).is_none());
    }

    #[test]
    fn secret_headers_are_masked() {
        assert_eq!(masked_header_value("Authorization", "Bearer x"), "***");
        assert_eq!(masked_header_value("X-Api-Key", "k"), "***");
        assert_eq!(masked_header_value("x-auth-token", "t"), "***");
        assert_eq!(masked_header_value("Accept", "text/plain"), "text/plain");
    }
}
