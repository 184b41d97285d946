//! The timed HTTP(S) check.
//!
//! reqwest cannot report connect and handshake times separately, so each phase is driven by
//! the library underneath it and timed on its own: hickory-resolver resolves (no cache between
//! checks, `/etc/hosts` and `/etc/resolv.conf` honoured), tokio connects, tokio-rustls
//! handshakes (webpki roots plus the system's CA bundle, ALPN h2/http1.1), hyper speaks HTTP.
//! Every check uses a fresh connection.
//!
//! Limits: at most [`BODY_READ_CAP`] body bytes are read (the rest is not downloaded and the
//! size is recorded up to the cap); at most [`BODY_STORE_CAP`] are stored. Redirects are not
//! followed. When several addresses resolve, they are tried in order and the connect phase
//! covers all attempts.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hickory_resolver::TokioResolver;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{masked_header_value, MonitorSpec, Probe, ProbeConfig, ProbeSetupError};
use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind};

/// Most body bytes read from one response.
pub const BODY_READ_CAP: u64 = 16 * 1024 * 1024;
/// Most body bytes kept for `raw_response_body`.
pub const BODY_STORE_CAP: usize = 64 * 1024;

const AGENT_NAME: &str = concat!("uptimeo-agent/", env!("CARGO_PKG_VERSION"));

/// Runs HTTP and HTTPS monitors.
pub struct HttpProbe {
    resolver: TokioResolver,
    tls: Arc<rustls::ClientConfig>,
}

impl HttpProbe {
    /// Reads the system's resolver configuration and CA bundle.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        let mut builder =
            TokioResolver::builder_tokio().map_err(|e| ProbeSetupError::Resolver(e.to_string()))?;
        // Every check resolves anew, as curl does.
        builder.options_mut().cache_size = 0;
        let resolver = builder.build();

        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Unreadable system certificates are skipped; the webpki roots remain.
        let (added, _ignored) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let _ = added;
        for cert in &config.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| ProbeSetupError::Tls(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ProbeSetupError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            resolver,
            tls: Arc::new(tls),
        })
    }

    /// Runs one check of `spec` (also used by tests and, later, the `check` subcommand).
    pub async fn run(&self, spec: &MonitorSpec) -> CheckResult {
        let mut m = Measurement {
            start: Instant::now(),
            phase: "dns lookup",
            result: CheckResult {
                started_at: Utc::now(),
                ..CheckResult::default()
            },
        };
        let outcome = tokio::time::timeout(spec.timeout, self.exchange(spec, &mut m)).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(failure)) => Some(failure),
            Err(_) => Some(CheckFailure::new(
                ErrorKind::Timeout,
                format!(
                    "no complete response within {:?} (timed out during {})",
                    spec.timeout, m.phase
                ),
            )),
        };
        let mut result = m.result;
        if result.timings.total.is_none() {
            // A failed check still says how long it took before it failed.
            result.timings.total = Some(m.start.elapsed());
        }
        result.failure = failure.or_else(|| {
            let code = result.status_code?;
            (!(200..300).contains(&code))
                .then(|| CheckFailure::new(ErrorKind::Http, format!("HTTP status {code}")))
        });
        result
    }

    async fn exchange(&self, spec: &MonitorSpec, m: &mut Measurement) -> Result<(), CheckFailure> {
        let target = Target::parse(&spec.url).map_err(|e| CheckFailure::new(ErrorKind::Http, e))?;

        // Resolve, unless the host is an address already.
        let addrs: Vec<IpAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let t = Instant::now();
                let lookup = self
                    .resolver
                    .lookup_ip(target.host.as_str())
                    .await
                    .map_err(|e| {
                        CheckFailure::new(
                            ErrorKind::Dns,
                            format!("cannot resolve {}: {e}", target.host),
                        )
                    })?;
                m.result.timings.dns = Some(t.elapsed());
                lookup.iter().collect()
            }
        };

        // Connect to the first address that accepts.
        m.phase = "tcp connect";
        let t = Instant::now();
        let stream = connect_any(&addrs, target.port).await?;
        m.result.timings.connect = Some(t.elapsed());

        if !target.https {
            m.phase = "waiting for the response";
            return exchange_http1(spec, &target, stream, m).await;
        }

        // TLS, offering h2 and http/1.1.
        m.phase = "tls handshake";
        let t = Instant::now();
        let server_name = ServerName::try_from(target.host.clone()).map_err(|_| {
            CheckFailure::new(
                ErrorKind::Tls,
                format!("`{}` is not a valid TLS name", target.host),
            )
        })?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(server_name, stream)
            .await
            .map_err(|e| {
                CheckFailure::new(
                    ErrorKind::Tls,
                    format!("TLS handshake with {} failed: {}", target.host, chain(&e)),
                )
            })?;
        m.result.timings.tls = Some(t.elapsed());

        m.phase = "waiting for the response";
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            exchange_http2(spec, &target, tls, m).await
        } else {
            exchange_http1(spec, &target, tls, m).await
        }
    }
}

impl Probe for HttpProbe {
    fn validate(&self, spec: &MonitorSpec) -> Result<(), String> {
        Target::parse(&spec.url).map(|_| ())
    }

    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult> {
        async move { self.run(&spec).await }.boxed()
    }
}

/// A check in progress: when it started, which phase it is in, what it found so far.
struct Measurement {
    start: Instant,
    phase: &'static str,
    result: CheckResult,
}

/// The parts of a monitor URL the check needs.
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    https: bool,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(format!("invalid URL `{url}`: scheme must be http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("invalid URL `{url}`: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self {
            uri,
            https,
            host,
            port,
        })
    }

    /// `host[:port]` as written in the URL, for the Host header.
    fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&self.host)
    }

    fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }
}

async fn connect_any(addrs: &[IpAddr], port: u16) -> Result<TcpStream, CheckFailure> {
    let mut errors = Vec::new();
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    let detail = if errors.is_empty() {
        "the name resolved to no address".to_string()
    } else {
        errors.join("; ")
    };
    Err(CheckFailure::new(
        ErrorKind::Connect,
        format!("cannot connect: {detail}"),
    ))
}

/// The request as sent, and its headers for storage (secrets masked).
fn build_request(
    spec: &MonitorSpec,
    target: &Target,
    http2: bool,
) -> Result<(Request<Full<Bytes>>, Value), CheckFailure> {
    let invalid =
        |e: http::Error| CheckFailure::new(ErrorKind::Http, format!("invalid request: {e}"));
    let (body, default_type) = match &spec.body {
        None => (Bytes::new(), None),
        Some(Value::String(text)) => (Bytes::from(text.clone()), None),
        Some(json) => (
            Bytes::from(serde_json::to_vec(json).unwrap_or_default()),
            Some("application/json"),
        ),
    };

    let mut builder = Request::builder().method(spec.method.clone());
    builder = if http2 {
        builder.uri(target.uri.clone())
    } else {
        builder
            .uri(target.path_and_query())
            .header(HOST, target.authority())
    };
    builder = builder.header(USER_AGENT, AGENT_NAME);
    let has_content_type = spec
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if let (Some(ct), false) = (default_type, has_content_type) {
        builder = builder.header(CONTENT_TYPE, ct);
    }
    let mut request = builder.body(Full::new(body)).map_err(invalid)?;

    // The row's headers replace defaults of the same name.
    let headers = request.headers_mut();
    for (name, value) in &spec.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue; // validated when the monitor was loaded
        };
        headers.insert(name, value);
    }
    let stored = headers_json(request.headers(), true);
    Ok((request, stored))
}

async fn exchange_http1<IO>(
    spec: &MonitorSpec,
    target: &Target,
    io: IO,
    m: &mut Measurement,
) -> Result<(), CheckFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (request, stored) = build_request(spec, target, false)?;
    m.result.request_headers = Some(stored);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_failure)?;
    let exchange = async {
        let response = sender.send_request(request).await;
        read_response(response, spec, m).await
    };
    drive(exchange, conn).await
}

async fn exchange_http2<IO>(
    spec: &MonitorSpec,
    target: &Target,
    io: IO,
    m: &mut Measurement,
) -> Result<(), CheckFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (request, stored) = build_request(spec, target, true)?;
    m.result.request_headers = Some(stored);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(http_failure)?;
    let exchange = async {
        let response = sender.send_request(request).await;
        read_response(response, spec, m).await
    };
    drive(exchange, conn).await
}

/// Polls the connection alongside the exchange (no task is spawned for it), until the exchange
/// ends; the connection is then dropped, which closes it.
async fn drive<F, C>(exchange: F, conn: C) -> F::Output
where
    F: Future,
    C: Future,
{
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            out = &mut exchange => return out,
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    }
}

async fn read_response(
    response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
    spec: &MonitorSpec,
    m: &mut Measurement,
) -> Result<(), CheckFailure> {
    let response = response.map_err(http_failure)?;
    m.result.timings.first_byte = Some(m.start.elapsed());
    m.phase = "reading the body";

    let headers = response.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    m.result.status_code = Some(response.status().as_u16());
    m.result.content_type = text("content-type");
    m.result.server = text("server");
    m.result.cache_status = text("cf-cache-status").or_else(|| text("x-cache"));
    m.result.response_headers = Some(headers_json(headers, false));

    let keep_body = spec.schedule.include_response_body;
    let mut kept = Vec::new();
    let mut size: u64 = 0;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            m.result.size_bytes = Some(size);
            CheckFailure::new(
                ErrorKind::Body,
                format!("reading the body failed: {}", chain(&e)),
            )
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        size += data.len() as u64;
        if keep_body && kept.len() < BODY_STORE_CAP {
            let room = BODY_STORE_CAP - kept.len();
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
        if size >= BODY_READ_CAP {
            break;
        }
    }
    m.result.timings.total = Some(m.start.elapsed());
    m.result.size_bytes = Some(size);
    if keep_body {
        m.result.body = Some(body_json(&kept));
    }
    Ok(())
}

/// A JSON body as JSON, any other body as a JSON string (lossy UTF-8).
fn body_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
}

/// Headers as a JSON object; repeated headers are joined with ", ".
fn headers_json(headers: &http::HeaderMap, mask: bool) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = if mask {
            masked_header_value(name.as_str(), &value)
        } else {
            value.into_owned()
        };
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

fn http_failure(e: hyper::Error) -> CheckFailure {
    CheckFailure::new(
        ErrorKind::Http,
        format!("HTTP exchange failed: {}", chain(&e)),
    )
}

/// An error with its sources, "outer: inner: innermost".
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_scheme_host_and_port() {
        let t = Target::parse("https://[::1]:8443/a?b=1").unwrap();
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(t.path_and_query(), "/a?b=1");
        let t = Target::parse("http://example.test").unwrap();
        assert_eq!((t.port, t.path_and_query()), (80, "/"));
        assert!(Target::parse("ftp://example.test/").is_err());
        assert!(Target::parse("/relative").is_err());
    }

    #[test]
    fn bodies_are_stored_as_json_when_they_are_json() {
        assert_eq!(
            body_json(br#"{"ok":true}"#),
            serde_json::json!({"ok": true})
        );
        assert_eq!(body_json(b"plain"), Value::String("plain".into()));
    }
}
