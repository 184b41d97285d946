//! The DNS check: `dns://[server[:port]]/name?type=A&expect=VALUE`.
//!
//! Queries one record type (default `A`) of a name against the given server, or the system's
//! resolvers when the URL names none (`dns:///name`), over UDP with a fallback to TCP when the
//! answer is truncated. The check fails on an error response code (NXDOMAIN, SERVFAIL, ...), on
//! an empty answer, and, with `expect`, when no answer record equals it. The lookup time is
//! stored as `dns_lookup_ms` and `response_time_ms`; the response code and the answers as
//! `raw_response_body` (`{"rcode": ..., "answers": [...]}`).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;
use serde_json::json;

use super::measure::Measurement;
use super::{net, MonitorSpec, Probe, ProbeConfig, ProbeSetupError};
use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind};

/// Runs DNS monitors.
pub struct DnsProbe {
    system: TokioResolver,
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
    /// Reads the system's resolver configuration.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        Ok(Self {
            system: net::resolver(config)?,
        })
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
        let own;
        let resolver = match target.server {
            None => &self.system,
            Some(server) => {
                own = resolver_for(server, spec);
                &own
            }
        };

        let t = Instant::now();
        let lookup = resolver
            .lookup(target.name.as_str(), target.record_type)
            .await;
        let took = t.elapsed();
        m.result.timings.dns = Some(took);
        m.result.timings.total = Some(m.start.elapsed());

        let answers: Vec<String> = match &lookup {
            Ok(found) => found.record_iter().map(|r| r.data().to_string()).collect(),
            Err(_) => Vec::new(),
        };
        let rcode = match &lookup {
            Ok(_) => ResponseCode::NoError,
            Err(e) => match e.proto().map(|p| p.kind()) {
                Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => *response_code,
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

/// A resolver asking only `server` (UDP, TCP when truncated), no hosts file, no cache, one
/// attempt bounded by the monitor's timeout.
fn resolver_for(server: SocketAddr, spec: &MonitorSpec) -> TokioResolver {
    let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    let options = builder.options_mut();
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = spec.timeout;
    options.use_hosts_file = ResolveHosts::Never;
    builder.build()
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
