//! The timed HTTP(S) check.
//!
//! reqwest cannot report connect and handshake times separately, so each phase is driven by
//! the library underneath it and timed on its own: hickory-resolver resolves (no cache between
//! checks, `/etc/hosts` and `/etc/resolv.conf` honoured), tokio connects, tokio-rustls
//! handshakes (webpki roots plus the system's CA bundle, ALPN h2/http1.1), hyper speaks HTTP.
//! Every hop uses a fresh connection: a redirect is followed on a new one.
//!
//! Limits: at most [`BODY_READ_CAP`] body bytes are read (the rest is not downloaded, the size
//! is recorded up to the cap and the result says the body was truncated); at most
//! [`BODY_STORE_CAP`] are stored; a response head over [`MAX_HEAD_BYTES`] fails the check.
//! Names resolve to both families; the addresses are tried IPv4 first, then IPv6, each but the
//! last for at most its share of the time left, and the connect phase covers all attempts.

mod decode;
mod message;
mod redirect;
mod target;
mod tls;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ::http::Method;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hickory_resolver::TokioResolver;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::measure::Measurement;
use super::{net, MonitorSpec, Probe, ProbeConfig, ProbeSetupError};
use crate::heartbeat::{CheckDetails, CheckFailure, CheckResult, ErrorKind, PhaseTimings};
use message::{build_request, http_failure, read_response, HopOutcome};
use net::{connect_any, connect_order};
use redirect::Hop;
use target::Target;

/// Most body bytes read from one response.
pub const BODY_READ_CAP: u64 = 16 * 1024 * 1024;
/// Most body bytes kept for `raw_response_body`.
pub const BODY_STORE_CAP: usize = 64 * 1024;
/// Largest response head (status line and headers) accepted, HTTP/1 and HTTP/2 alike.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
pub use decode::DECODED_CAP;

/// The methods HTTP monitors send. Others (CONNECT, TRACE, extension methods such as a
/// mistyped `FETCH`) are refused when the monitor is loaded rather than sent to the target.
pub const SENT_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Runs HTTP and HTTPS monitors.
pub struct HttpProbe {
    resolver: TokioResolver,
    tls: tls::TlsConfigs,
}

impl HttpProbe {
    /// Reads the system's resolver configuration and CA bundle.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        Ok(Self {
            resolver: net::resolver(config)?,
            tls: tls::TlsConfigs::new(config)?,
        })
    }

    /// Runs one check of `spec` (also used by tests and the `check` subcommand).
    pub async fn run(&self, spec: &MonitorSpec) -> CheckResult {
        let mut m = Measurement::begin("dns lookup");
        let outcome = tokio::time::timeout(spec.timeout, self.follow(spec, &mut m)).await;
        let mut result = m.finish(outcome, spec.timeout);
        if result.failure.is_none() {
            let details = &result.details;
            result.failure = spec.expect.check_certificate(
                details.tls_version.is_some(),
                details.cert_not_after,
                chrono::Utc::now(),
            );
        }
        result
    }

    /// Runs the hops of a check: the monitor's request, then each redirect up to the limit.
    async fn follow(&self, spec: &MonitorSpec, m: &mut Measurement) -> Result<(), CheckFailure> {
        let mut hop = Hop::first(&spec.url, &spec.method)
            .map_err(|e| CheckFailure::new(ErrorKind::Http, e))?;
        loop {
            m.start_hop(&hop);
            let HopOutcome::Redirect { status, location } = self.exchange(spec, &hop, m).await?
            else {
                return Ok(());
            };
            let limit = spec.http.max_redirects;
            if m.result.details.redirects >= limit {
                return Err(CheckFailure::new(
                    ErrorKind::Redirect,
                    format!(
                        "gave up after {limit} redirect{}: {} answered {status} again, \
                         pointing to `{location}`",
                        if limit == 1 { "" } else { "s" },
                        hop.target.uri
                    ),
                ));
            }
            hop = hop
                .follow(status, &location)
                .map_err(|e| CheckFailure::new(ErrorKind::Redirect, e))?;
            m.result.details.redirects += 1;
        }
    }

    /// One hop on a fresh connection: resolve, connect, handshake, exchange.
    async fn exchange(
        &self,
        spec: &MonitorSpec,
        hop: &Hop,
        m: &mut Measurement,
    ) -> Result<HopOutcome, CheckFailure> {
        let target = &hop.target;

        // Resolve, unless the host is an address already.
        let family = spec.ip_family;
        let addrs: Vec<IpAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => connect_order(std::iter::once(ip), family, &target.host)?,
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
                connect_order(lookup.iter(), family, &target.host)?
            }
        };

        // Connect to the first address that accepts.
        m.phase = "tcp connect";
        let t = Instant::now();
        let budget = spec.timeout.saturating_sub(m.start.elapsed());
        let failed = &mut m.result.details.failed_connects;
        let stream = connect_any(&addrs, target.port, budget, failed).await?;
        m.result.timings.connect = Some(t.elapsed());
        m.result.details.remote_addr = stream.peer_addr().ok();

        if !target.https {
            m.phase = "waiting for the response";
            return exchange_http1(spec, hop, stream, m).await;
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
        let (config, seen_leaf) = self.tls.for_check(spec.http.verify_tls);
        let stream = TlsConnector::from(config)
            .connect(server_name, stream)
            .await
            .map_err(|e| {
                // The certificate that failed verification still tells its expiry.
                m.result.details.cert_not_after = seen_leaf
                    .lock()
                    .ok()
                    .and_then(|leaf| leaf.as_ref().and_then(tls::not_after));
                net::tls_failure(&target.host, &e)
            })?;
        m.result.timings.tls = Some(t.elapsed());
        let session = stream.get_ref().1;
        let details = &mut m.result.details;
        details.tls_version = session.protocol_version().map(tls::version_name);
        details.cert_not_after = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(tls::not_after);

        m.phase = "waiting for the response";
        if session.alpn_protocol() == Some(b"h2") {
            exchange_http2(spec, hop, stream, m).await
        } else {
            exchange_http1(spec, hop, stream, m).await
        }
    }
}

impl Probe for HttpProbe {
    fn validate(&self, spec: &MonitorSpec) -> Result<(), String> {
        if !SENT_METHODS.contains(&spec.method) {
            return Err(format!(
                "unsupported method `{}`: HTTP monitors send GET, HEAD, POST, PUT, PATCH, \
                 DELETE or OPTIONS",
                spec.method
            ));
        }
        Target::parse(&spec.url).map(|_| ())
    }

    fn sends_body(&self) -> bool {
        true
    }

    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult> {
        async move { self.run(&spec).await }.boxed()
    }
}

impl Measurement {
    /// Forgets what the previous hop found (phases, versions, address, certificate, status,
    /// headers): everything stored is the final hop's, but for the redirect count and time.
    fn start_hop(&mut self, hop: &Hop) {
        let redirects = self.result.details.redirects;
        self.phase = "dns lookup";
        self.result = CheckResult {
            started_at: self.result.started_at,
            timings: PhaseTimings {
                redirect: (redirects > 0).then(|| self.start.elapsed()),
                ..PhaseTimings::default()
            },
            details: CheckDetails {
                redirects,
                final_url: Some(hop.target.uri.to_string()),
                ..CheckDetails::default()
            },
            ..CheckResult::default()
        };
    }
}

async fn exchange_http1<IO>(
    spec: &MonitorSpec,
    hop: &Hop,
    io: IO,
    m: &mut Measurement,
) -> Result<HopOutcome, CheckFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (request, stored) = build_request(spec, hop, false)?;
    m.result.request_headers = Some(stored);
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .handshake(TokioIo::new(io))
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
    hop: &Hop,
    io: IO,
    m: &mut Measurement,
) -> Result<HopOutcome, CheckFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (request, stored) = build_request(spec, hop, true)?;
    m.result.request_headers = Some(stored);
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .handshake(TokioIo::new(io))
        .await
        .map_err(http_failure)?;
    let exchange = async {
        let response = sender.send_request(request).await;
        read_response(response, spec, m).await
    };
    drive(exchange, conn).await
}

/// Polls the connection alongside the exchange (no task is spawned for it), until the exchange
/// ends; the connection is then dropped, which closes it. When the exchange failed because
/// the connection did, the connection's own error (the real cause) is reported instead.
async fn drive<F, T, C>(exchange: F, conn: C) -> Result<T, CheckFailure>
where
    F: Future<Output = Result<T, CheckFailure>>,
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_outcome = None;
    let outcome = loop {
        tokio::select! {
            out = &mut exchange => break out,
            done = &mut conn, if conn_outcome.is_none() => conn_outcome = Some(done),
        }
    };
    match (outcome, conn_outcome) {
        (Err(failure), Some(Err(cause))) if failure.kind == ErrorKind::Http => {
            Err(http_failure(cause))
        }
        (outcome, _) => outcome,
    }
}
