//! The DNS check: `dns://[server[:port]]/name?type=A&expect=VALUE`.
//!
//! Queries one record type (default `A`) of a name against the given server, or the system's
//! resolvers when the URL names none (`dns:///name`), over UDP with a fallback to TCP when the
//! answer is truncated. The check fails on an error response code (NXDOMAIN, SERVFAIL, ...), on
//! an empty answer, and, with `expect`, when no answer record equals it. The lookup time is
//! stored as `dns_lookup_ms` and `response_time_ms`; the response code and the answers as
//! `raw_response_body` (`{"rcode": ..., "answers": [...]}`).
//!
//! The query goes to the server as asked, whatever the name: a stub resolver's shortcuts (no
//! hosts file, no cache, none of RFC 6761's local answers for `localhost` or `.invalid`) would
//! report a server up that never answered.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hickory_resolver::config::{NameServerConfigGroup, ResolverOpts};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequestOptions, FirstAnswer};
use hickory_resolver::proto::ProtoErrorKind;
use serde_json::json;

use super::measure::Measurement;
use super::{MonitorSpec, Probe, ProbeConfig, ProbeSetupError};
use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind};

/// Runs DNS monitors.
pub struct DnsProbe {
    /// Asked when the URL names no server: `DNS_SERVER`, else those of /etc/resolv.conf.
    system: NameServerConfigGroup,
}

/// What a `dns://` URL asks for.
#[derive(Debug, Clone, PartialEq)]
struct DnsTarget {
    /// `None`: the system's resolvers.
    server: Option<SocketAddr>,
    name: String,
    record_type: RecordType,
    expect: Option<String>,
}

impl DnsTarget {
    fn parse(text: &str) -> Result<Self, String> {
        let shown = crate::monitor::redacted_url(text);
        let invalid = |why: &str| format!("invalid URL `{shown}`: {why}");
        let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "dns" {
            return Err(invalid("a DNS monitor needs dns://[server]/name"));
        }
        let server = match url.host_str().filter(|h| !h.is_empty()) {
            None => None,
            Some(host) => {
                let ip: IpAddr = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| invalid("the server must be an IP address"))?;
                Some(SocketAddr::new(ip, url.port().unwrap_or(53)))
            }
        };
        let name = url.path().trim_start_matches('/').to_string();
        if name.is_empty() {
            return Err(invalid("no name to query"));
        }
        let mut target = Self {
            server,
            name,
            record_type: RecordType::A,
            expect: None,
        };
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "type" => {
                    target.record_type = RecordType::from_str(&value.to_ascii_uppercase())
                        .map_err(|_| invalid(&format!("unknown record type `{value}`")))?
                }
                "expect" => target.expect = Some(value.into_owned()),
                other => return Err(invalid(&format!("unknown parameter `{other}`"))),
            }
        }
        Ok(target)
    }
}

impl DnsProbe {
    /// Reads the system's resolver configuration (unless `DNS_SERVER` replaces it).
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        let system = match config.dns_server {
            Some(server) => servers(server),
            None => {
                let (system, _) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| ProbeSetupError::Resolver(e.to_string()))?;
                NameServerConfigGroup::from(system.name_servers().to_vec())
            }
        };
        Ok(Self { system })
    }

    /// Runs one check of `spec`.
    pub async fn run(&self, spec: &MonitorSpec) -> CheckResult {
        let mut m = Measurement::begin("dns query");
        let outcome = tokio::time::timeout(spec.timeout, self.query(spec, &mut m)).await;
        m.finish(outcome, spec.timeout)
    }

    async fn query(&self, spec: &MonitorSpec, m: &mut Measurement) -> Result<(), CheckFailure> {
        let target =
            DnsTarget::parse(&spec.url).map_err(|e| CheckFailure::new(ErrorKind::Dns, e))?;
        let servers = match target.server {
            Some(server) => servers(server),
            None => self.system.clone(),
        };
        let name = Name::from_str(&target.name)
            .map(|mut n| {
                n.set_fqdn(true);
                n
            })
            .map_err(|e| CheckFailure::new(ErrorKind::Dns, format!("invalid name: {e}")))?;

        let t = Instant::now();
        let response = pool(servers, spec)
            .lookup(
                Query::query(name, target.record_type),
                DnsRequestOptions::default(),
            )
            .first_answer()
            .await;
        let took = t.elapsed();
        m.result.timings.dns = Some(took);
        m.result.timings.total = Some(m.start.elapsed());

        let (rcode, answers): (ResponseCode, Vec<String>) = match &response {
            Ok(found) => (
                found.response_code(),
                found
                    .answers()
                    .iter()
                    .map(|r| r.data().to_string())
                    .collect(),
            ),
            Err(e) => match e.kind() {
                ProtoErrorKind::NoRecordsFound { response_code, .. } => {
                    (*response_code, Vec::new())
                }
                _ => {
                    return Err(CheckFailure::new(
                        ErrorKind::Dns,
                        format!(
                            "query for {} {} failed: {e}",
                            target.name, target.record_type
                        ),
                    ))
                }
            },
        };
        // The mnemonic as dig prints it: NOERROR, NXDOMAIN, SERVFAIL...
        let mnemonic = format!("{rcode:?}").to_ascii_uppercase();
        m.result.size_bytes = Some(answers.len() as u64);
        m.result.body = Some(json!({ "rcode": mnemonic, "answers": answers }));

        if rcode != ResponseCode::NoError || answers.is_empty() {
            return Err(CheckFailure::new(
                ErrorKind::Dns,
                format!(
                    "{} {}: {mnemonic} ({}), {} answers",
                    target.name,
                    target.record_type,
                    rcode.to_str(),
                    answers.len()
                ),
            ));
        }
        if let Some(expect) = &target.expect {
            if !answers
                .iter()
                .any(|a| a.trim_end_matches('.') == expect.trim_end_matches('.'))
            {
                return Err(CheckFailure::new(
                    ErrorKind::Assertion,
                    format!("expected {expect} among the answers {answers:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// `server`, over UDP and, for a truncated answer, TCP.
fn servers(server: SocketAddr) -> NameServerConfigGroup {
    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true)
}

/// Asks `servers` directly (no resolver in front: no cache, no hosts file, no local answers),
/// one attempt bounded by the monitor's timeout. The pool's own timeout is set past it, so
/// that a server that never answers is always the check's `timeout`, never a race between the
/// two clocks.
fn pool(
    servers: NameServerConfigGroup,
    spec: &MonitorSpec,
) -> NameServerPool<TokioConnectionProvider> {
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = spec.timeout + Duration::from_secs(1);
    NameServerPool::from_config(servers, options, TokioConnectionProvider::default())
}

impl Probe for DnsProbe {
    fn validate(&self, spec: &MonitorSpec) -> Result<(), String> {
        DnsTarget::parse(&spec.url).map(|_| ())
    }

    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult> {
        async move { self.run(&spec).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_urls_parse_server_name_type_and_expectation() {
        let t = DnsTarget::parse("dns://127.0.0.1:5353/svc.test?type=aaaa&expect=::1").unwrap();
        assert_eq!(t.server, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(
            (t.name.as_str(), t.record_type),
            ("svc.test", RecordType::AAAA)
        );
        assert_eq!(t.expect.as_deref(), Some("::1"));
        let t = DnsTarget::parse("dns:///svc.test").unwrap();
        assert_eq!((t.server, t.record_type), (None, RecordType::A));
        assert!(
            DnsTarget::parse("dns://resolver.example/x").is_err(),
            "server must be an IP"
        );
        assert!(DnsTarget::parse("dns://127.0.0.1/").is_err());
        assert!(DnsTarget::parse("dns://127.0.0.1/x?type=BOGUS").is_err());
    }
}
