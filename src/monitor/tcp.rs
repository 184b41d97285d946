//! The TCP check: `tcp://host:port`, optionally with TLS and a banner exchange.
//!
//! URL parameters: `tls=true` (handshake after connecting, verified like HTTPS), `send=TEXT`
//! (written after connecting, percent-decoded) and `expect=TEXT` (must appear in what the
//! server sends; reading stops at [`BANNER_CAP`] bytes, when it appears, when the server
//! closes, or when it pauses [`REPLY_PAUSE`] after its first bytes). Without `send` and
//! `expect` the check is the connection alone. `time_to_first_byte_ms` is set when the server
//! sent something.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hickory_resolver::TokioResolver;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::measure::Measurement;
use super::{net, MonitorSpec, Probe, ProbeConfig, ProbeSetupError};
use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind};

/// Most banner bytes read while looking for `expect`.
pub const BANNER_CAP: usize = 64 * 1024;
/// Silence after the server's first bytes that ends its reply.
pub const REPLY_PAUSE: Duration = Duration::from_millis(500);

/// Runs TCP monitors.
pub struct TcpProbe {
    resolver: TokioResolver,
    tls: Arc<rustls::ClientConfig>,
}

/// What a `tcp://` URL asks for.
#[derive(Debug, Clone, PartialEq)]
struct TcpTarget {
    host: String,
    port: u16,
    tls: bool,
    send: Option<Vec<u8>>,
    expect: Option<String>,
}

impl TcpTarget {
    fn parse(text: &str) -> Result<Self, String> {
        let shown = crate::monitor::redacted_url(text);
        let url = url::Url::parse(text).map_err(|e| format!("invalid URL `{shown}`: {e}"))?;
        if url.scheme() != "tcp" {
            return Err(format!(
                "invalid URL `{shown}`: a TCP monitor needs tcp://host:port"
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("invalid URL `{shown}`: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port()
            .ok_or_else(|| format!("invalid URL `{shown}`: no port"))?;
        let mut target = Self {
            host,
            port,
            tls: false,
            send: None,
            expect: None,
        };
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "tls" => target.tls = matches!(value.as_ref(), "true" | "1" | "yes"),
                "send" => target.send = Some(value.as_bytes().to_vec()),
                "expect" => target.expect = Some(value.into_owned()),
                other => {
                    return Err(format!(
                        "invalid URL `{shown}`: unknown parameter `{other}`"
                    ))
                }
            }
        }
        Ok(target)
    }
}

impl TcpProbe {
    /// Reads the system's resolver configuration and CA bundle.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        Ok(Self {
            resolver: net::resolver(config)?,
            tls: net::tls_config(config, Vec::new())?,
        })
    }

    /// Runs one check of `spec`.
    pub async fn run(&self, spec: &MonitorSpec) -> CheckResult {
        let mut m = Measurement::begin("dns lookup");
        let outcome = tokio::time::timeout(spec.timeout, self.exchange(spec, &mut m)).await;
        m.finish(outcome, spec.timeout)
    }

    async fn exchange(&self, spec: &MonitorSpec, m: &mut Measurement) -> Result<(), CheckFailure> {
        let target =
            TcpTarget::parse(&spec.url).map_err(|e| CheckFailure::new(ErrorKind::Connect, e))?;

        let t = Instant::now();
        let (addrs, looked_up) = net::resolve(&self.resolver, &target.host).await?;
        if looked_up {
            m.result.timings.dns = Some(t.elapsed());
        }

        m.phase = "tcp connect";
        let t = Instant::now();
        let addrs = net::connect_order(addrs.into_iter(), spec.ip_family, &target.host)?;
        let failed = &mut m.result.details.failed_connects;
        let stream = net::connect_any(&addrs, target.port, spec.timeout, failed).await?;
        m.result.timings.connect = Some(t.elapsed());
        m.result.details.remote_addr = stream.peer_addr().ok();

        if !target.tls {
            return converse(stream, &target, m).await;
        }
        m.phase = "tls handshake";
        let t = Instant::now();
        let name = ServerName::try_from(target.host.clone()).map_err(|_| {
            CheckFailure::new(
                ErrorKind::Tls,
                format!("`{}` is not a valid TLS name", target.host),
            )
        })?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| net::tls_failure(&target.host, &e))?;
        m.result.timings.tls = Some(t.elapsed());
        converse(tls, &target, m).await
    }
}

/// Sends `send`, then reads until `expect` appears (or, with only `send`, until the first
/// bytes arrive).
async fn converse<S>(
    mut stream: S,
    target: &TcpTarget,
    m: &mut Measurement,
) -> Result<(), CheckFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(send) = &target.send {
        m.phase = "sending";
        stream
            .write_all(send)
            .await
            .map_err(|e| CheckFailure::new(ErrorKind::Connect, format!("sending failed: {e}")))?;
        stream.flush().await.ok();
    }
    if target.send.is_none() && target.expect.is_none() {
        m.result.timings.total = Some(m.start.elapsed());
        return Ok(());
    }

    m.phase = "waiting for the banner";
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk);
        // Once the server has said something, a pause ends its reply: a server that keeps
        // the connection open after a wrong answer fails the expectation, not the timeout.
        let read = if received.is_empty() {
            read.await
        } else {
            tokio::time::timeout(REPLY_PAUSE, read)
                .await
                .unwrap_or(Ok(0))
        };
        let n =
            read.map_err(|e| CheckFailure::new(ErrorKind::Body, format!("reading failed: {e}")))?;
        if n > 0 && m.result.timings.first_byte.is_none() {
            m.result.timings.first_byte = Some(m.start.elapsed());
        }
        received.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&received);
        let done = match &target.expect {
            Some(expect) => text.contains(expect.as_str()),
            None => n > 0,
        };
        if done {
            break;
        }
        if n == 0 || received.len() >= BANNER_CAP {
            let expect = target.expect.as_deref().unwrap_or("a reply");
            let got: String = text.chars().take(200).collect();
            return Err(CheckFailure::new(
                ErrorKind::Assertion,
                format!("expected `{expect}` from the server, got `{got}`"),
            ));
        }
    }
    m.result.size_bytes = Some(received.len() as u64);
    m.result.timings.total = Some(m.start.elapsed());
    Ok(())
}

impl Probe for TcpProbe {
    fn validate(&self, spec: &MonitorSpec) -> Result<(), String> {
        TcpTarget::parse(&spec.url).map(|_| ())
    }

    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult> {
        async move { self.run(&spec).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_urls_parse_with_their_parameters() {
        let t = TcpTarget::parse("tcp://127.0.0.1:6379?send=PING%0D%0A&expect=PONG").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 6379, false));
        assert_eq!(t.send.as_deref(), Some(&b"PING\r\n"[..]));
        assert_eq!(t.expect.as_deref(), Some("PONG"));
        assert!(TcpTarget::parse("tcp://[::1]:443?tls=true").unwrap().tls);
        assert!(
            TcpTarget::parse("tcp://host").is_err(),
            "a port is required"
        );
        assert!(TcpTarget::parse("http://host:80").is_err());
        assert!(TcpTarget::parse("tcp://host:80?sned=x").is_err());
    }
}
