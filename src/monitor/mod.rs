//! Monitor definitions and the probes that check them.
//!
//! A monitor row's `type` selects a [`Probe`]; each probe lives in its own file here. Adding a
//! monitor type means writing one file that implements [`Probe`] and adding one line to
//! [`ProbeSet::for_type`].

pub mod dns;
pub mod expect;
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
/// Most redirects a monitor may ask to follow.
pub const MAX_REDIRECTS_LIMIT: u32 = 50;

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
    /// How long one check may take: `timeout_ms`, else the schedule's interval.
    pub timeout: Duration,
    /// The address family connected over (HTTP, TCP and ping checks).
    pub ip_family: net::IpFamily,
    /// How HTTP checks treat redirects and certificates.
    pub http: HttpOptions,
    /// What an HTTP check expects of the answer.
    pub expect: expect::Expectations,
}

/// Options of HTTP checks, from a monitor's `max_redirects` and `tls_verify` columns (or the
/// `check` subcommand's flags).
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
        let kind = row.monitor_type.trim().to_ascii_uppercase();
        let timeout = timeout_from_row(row, &schedule).map_err(invalid)?;
        let ip_family = net::IpFamily::parse(row.ip_family.as_deref()).map_err(invalid)?;
        let (http, expect) = http_options_from_row(row, &kind).map_err(invalid)?;

        let spec = MonitorSpec {
            id: row.id,
            name: row.name.clone(),
            kind,
            method,
            url: row.url.trim().to_string(),
            headers,
            body: row.body.clone().filter(|b| !b.is_null()),
            timeout,
            schedule,
            ip_family,
            http,
            expect,
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

/// `timeout_ms`, between 1 ms and the interval; the interval when NULL.
fn timeout_from_row(row: &MonitorRow, schedule: &Schedule) -> Result<Duration, String> {
    let Some(ms) = row.timeout_ms else {
        return Ok(schedule.interval);
    };
    let timeout = u64::try_from(ms).ok().map(Duration::from_millis);
    match timeout {
        Some(t) if !t.is_zero() && t <= schedule.interval => Ok(t),
        _ => Err(format!(
            "timeout_ms {ms} must be between 1 and the interval ({} ms)",
            schedule.interval.as_millis()
        )),
    }
}

/// The HTTP-only columns: redirects, verification and expectations. Set on a monitor of
/// another type they are an error rather than silently ignored.
fn http_options_from_row(
    row: &MonitorRow,
    kind: &str,
) -> Result<(HttpOptions, expect::Expectations), String> {
    let set: Vec<&str> = [
        ("expected_status", row.expected_status.is_some()),
        ("body_match", row.body_match.is_some()),
        ("body_match_mode", row.body_match_mode.is_some()),
        ("max_redirects", row.max_redirects.is_some()),
        ("tls_verify", row.tls_verify.is_some()),
        ("min_cert_days", row.min_cert_days.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    if !matches!(kind, "HTTP" | "HTTPS") && !set.is_empty() {
        return Err(format!(
            "HTTP-only settings on a {kind} monitor: {} (clear them or change the type)",
            set.join(", ")
        ));
    }
    let max_redirects = match row.max_redirects {
        None => DEFAULT_MAX_REDIRECTS,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_REDIRECTS_LIMIT)
            .ok_or_else(|| {
                format!("max_redirects {n} must be between 0 and {MAX_REDIRECTS_LIMIT}")
            })?,
    };
    let http = HttpOptions {
        max_redirects,
        verify_tls: row.tls_verify.unwrap_or(true),
    };
    let mode = expect::BodyMatchMode::parse(row.body_match_mode.as_deref())?;
    let body = match row.body_match.as_deref() {
        Some(pattern) => Some(expect::BodyMatch::new(pattern, mode)?),
        None if row.body_match_mode.is_some() => {
            return Err("body_match_mode is set but body_match is not".into())
        }
        None => None,
    };
    let min_cert_days = match row.min_cert_days {
        None => None,
        Some(days) => Some(
            u32::try_from(days)
                .map_err(|_| format!("min_cert_days {days} must not be negative"))?,
        ),
    };
    let expectations = expect::Expectations {
        status: row
            .expected_status
            .as_deref()
            .map(expect::StatusSet::parse)
            .transpose()?,
        body,
        min_cert_days,
    };
    Ok((http, expectations))
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

/// A monitor of type `HTTPS` whose URL is `http://` runs, as the original agent ran it, but
/// without TLS: said once per configuration load, since a mistyped URL silently drops TLS.
pub fn plain_https(spec: &MonitorSpec) -> Option<String> {
    let plain = spec.kind == "HTTPS"
        && spec
            .url
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    plain.then(|| "type HTTPS with an http:// URL: checked without TLS".to_string())
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

/// `url` with the password of its `user:password@` part replaced by `***`, for logs and
/// messages.
pub fn redacted_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else {
        return url.into();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]).into(),
        None => url.into(),
    }
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
            expected_status: None,
            body_match: None,
            body_match_mode: None,
            timeout_ms: None,
            max_redirects: None,
            ip_family: None,
            tls_verify: None,
            min_cert_days: None,
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
    fn assertion_columns_become_options_or_reasons() {
        let p = probes();
        let s = schedule(30);
        let mut r = row("HTTP", "http://x/", None);
        r.expected_status = Some("200-299,301".into());
        r.body_match = Some("ok".into());
        r.timeout_ms = Some(2500);
        r.max_redirects = Some(0);
        r.ip_family = Some("6".into());
        r.tls_verify = Some(false);
        r.min_cert_days = Some(14);
        let spec = p.spec_from_rows(&r, Some(&s)).expect("valid");
        assert_eq!(spec.timeout, Duration::from_millis(2500));
        assert_eq!(spec.ip_family, net::IpFamily::V6);
        assert_eq!(spec.http.max_redirects, 0);
        assert!(!spec.http.verify_tls);
        assert_eq!(spec.expect.min_cert_days, Some(14));
        assert!(spec.expect.check_status(301).is_none());

        let reason = |edit: &dyn Fn(&mut MonitorRow)| {
            let mut r = row("HTTP", "http://x/", None);
            edit(&mut r);
            p.spec_from_rows(&r, Some(&s)).unwrap_err().reason
        };
        assert!(reason(&|r| r.expected_status = Some("2xx".into())).contains("expected status"));
        assert!(reason(&|r| {
            r.body_match = Some("(".into());
            r.body_match_mode = Some("regex".into());
        })
        .contains("regular expression"));
        assert!(reason(&|r| r.body_match_mode = Some("regex".into())).contains("body_match"));
        assert!(reason(&|r| r.timeout_ms = Some(0)).contains("timeout_ms"));
        assert!(reason(&|r| r.timeout_ms = Some(31_000)).contains("timeout_ms"));
        assert!(reason(&|r| r.max_redirects = Some(-1)).contains("max_redirects"));
        assert!(reason(&|r| r.ip_family = Some("5".into())).contains("ip family"));
        assert!(reason(&|r| r.min_cert_days = Some(-3)).contains("min_cert_days"));
        let mut tcp = row("TCP", "tcp://x:1", None);
        tcp.expected_status = Some("200".into());
        let reason = p.spec_from_rows(&tcp, Some(&s)).unwrap_err().reason;
        assert_eq!(
            reason,
            "HTTP-only settings on a TCP monitor: expected_status (clear them or change the type)"
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
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redacted_url("http://bob:hunter2@h.test:81/p?q=a@b"),
            "http://bob:***@h.test:81/p?q=a@b"
        );
        assert_eq!(redacted_url("http://h.test/a@b"), "http://h.test/a@b");
        assert_eq!(redacted_url("tcp://bob@h.test:1"), "tcp://bob@h.test:1");
        assert_eq!(redacted_url("not a url"), "not a url");
    }

    #[test]
    fn secret_headers_are_masked() {
        assert_eq!(masked_header_value("Authorization", "Bearer x"), "***");
        assert_eq!(masked_header_value("X-Api-Key", "k"), "***");
        assert_eq!(masked_header_value("x-auth-token", "t"), "***");
        assert_eq!(masked_header_value("Accept", "text/plain"), "text/plain");
    }
}
