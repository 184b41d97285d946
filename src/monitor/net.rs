//! Network steps shared by the probes: resolving a name and connecting to one of its
//! addresses, each timed by the caller.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;

use super::ProbeSetupError;
use crate::heartbeat::{CheckFailure, ErrorKind};

/// The resolver every probe uses: `/etc/hosts`, then the configured DNS server or else the
/// resolvers of `/etc/resolv.conf`; both address families; no cache, so that every check
/// resolves anew, as curl does.
pub fn resolver(config: &super::ProbeConfig) -> Result<TokioResolver, ProbeSetupError> {
    let mut builder = match config.dns_server {
        None => {
            TokioResolver::builder_tokio().map_err(|e| ProbeSetupError::Resolver(e.to_string()))?
        }
        Some(server) => {
            let servers =
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioConnectionProvider::default(),
            )
        }
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(builder.build())
}

/// The addresses of `host`: the address itself for an IP literal (`None` for the lookup time
/// then), else a lookup.
pub async fn resolve(
    resolver: &TokioResolver,
    host: &str,
) -> Result<(Vec<IpAddr>, bool), CheckFailure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![ip], false));
    }
    let lookup = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| CheckFailure::new(ErrorKind::Dns, format!("cannot resolve {host}: {e}")))?;
    Ok((lookup.iter().collect(), true))
}

/// Which address family a monitor connects over (`api_monitors.ip_family`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4 addresses first, then IPv6.
    #[default]
    Any,
    V4,
    V6,
}

impl IpFamily {
    /// Parses `any`, `4` or `6` (`ipv4`, `ipv6` too); `None` means any.
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "any") => Ok(Self::Any),
            Some("4" | "ipv4" | "v4") => Ok(Self::V4),
            Some("6" | "ipv6" | "v6") => Ok(Self::V6),
            Some(_) => Err(format!(
                "ip family `{}` is not one of any, 4, 6",
                text.unwrap_or_default()
            )),
        }
    }

    fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::V4 => ip.is_ipv4(),
            Self::V6 => ip.is_ipv6(),
        }
    }
}

/// The addresses of `host` to try, in order: IPv4 first, as with the resolver's default (A
/// records only when there are some), then IPv6, each family in the order it was answered;
/// only those of `family`. Fails when none is left.
pub fn connect_order(
    addrs: impl Iterator<Item = IpAddr>,
    family: IpFamily,
    host: &str,
) -> Result<Vec<IpAddr>, CheckFailure> {
    let (mut v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addrs
        .filter(|ip| family.admits(ip))
        .partition(IpAddr::is_ipv4);
    v4.extend(v6);
    if v4.is_empty() {
        let which = match family {
            IpFamily::Any => "",
            IpFamily::V4 => " IPv4",
            IpFamily::V6 => " IPv6",
        };
        return Err(CheckFailure::new(
            ErrorKind::Dns,
            format!("{host} has no{which} address"),
        ));
    }
    Ok(v4)
}

/// An address a check could not connect to, and how long it tried.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedConnect {
    pub addr: SocketAddr,
    pub took: Duration,
    pub error: String,
}

/// Connects to the first address that accepts. Each address but the last may take at most an
/// equal share of `budget`, so that one silent address (a dead AAAA) leaves time for the next;
/// the last may use whatever remains (the check's own timeout stops it).
///
/// Each address that failed is added to `failed`, with the time it took.
pub async fn connect_any(
    addrs: &[IpAddr],
    port: u16,
    budget: Duration,
    failed: &mut Vec<FailedConnect>,
) -> Result<TcpStream, CheckFailure> {
    let share = budget / u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
    for (i, ip) in addrs.iter().enumerate() {
        let addr = SocketAddr::new(*ip, port);
        let started = Instant::now();
        let attempt = TcpStream::connect(addr);
        let outcome = if i + 1 < addrs.len() {
            match tokio::time::timeout(share, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {share:?}"),
                )),
            }
        } else {
            attempt.await
        };
        match outcome {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => failed.push(FailedConnect {
                addr,
                took: started.elapsed(),
                error: e.to_string(),
            }),
        }
    }
    let detail = if failed.is_empty() {
        "the name resolved to no address".to_string()
    } else {
        let errors: Vec<String> = failed
            .iter()
            .map(|f| format!("{}: {}", f.addr, f.error))
            .collect();
        errors.join("; ")
    };
    Err(CheckFailure::new(
        ErrorKind::Connect,
        format!("cannot connect: {detail}"),
    ))
}

/// A TLS client configuration trusting the webpki roots, the system's CA bundle (or
/// `SSL_CERT_FILE`) and the configured extra roots, offering the ALPN protocols given.
pub fn tls_config(
    config: &super::ProbeConfig,
    alpn: Vec<Vec<u8>>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, ProbeSetupError> {
    let roots = root_store(config)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn;
    Ok(std::sync::Arc::new(tls))
}

/// The roots every probe trusts: the webpki roots, the system's CA bundle (or `SSL_CERT_FILE`)
/// and the configured extra roots. Unreadable system certificates are skipped.
pub fn root_store(config: &super::ProbeConfig) -> Result<rustls::RootCertStore, ProbeSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for cert in &config.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| ProbeSetupError::Tls(e.to_string()))?;
    }
    Ok(roots)
}

/// Why a TLS handshake with `host` failed, as a person reads it: rustls names some
/// certificate problems only by a debug name (`Other(OtherError(CaUsedAsEndEntity))`).
pub fn tls_failure(host: &str, e: &std::io::Error) -> CheckFailure {
    use rustls::{CertificateError, Error};
    let why = match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "certificate not trusted: signed by an unknown authority (not in the trusted roots)"
                .to_string()
        }
        Some(Error::InvalidCertificate(CertificateError::BadSignature)) => {
            "certificate not trusted: a trusted certificate has its issuer's name but did not \
             sign it (BadSignature; a self-signed certificate whose name clashes with a trusted \
             one, such as Debian's snakeoil `localhost`, fails so)"
                .to_string()
        }
        Some(Error::InvalidCertificate(CertificateError::Other(other))) => {
            match other.to_string().as_str() {
                "CaUsedAsEndEntity" => "certificate not accepted: the server sent a CA \
                    certificate (basic constraints CA:TRUE) as its own"
                    .to_string(),
                "EndEntityUsedAsCa" => "certificate not accepted: a server certificate signs \
                    another certificate of the chain"
                    .to_string(),
                name => format!("certificate not accepted: {name}"),
            }
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    };
    CheckFailure::new(
        ErrorKind::Tls,
        format!("TLS handshake with {host} failed: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_tried_first() {
        let ips: Vec<IpAddr> = ["::1", "127.0.0.2", "fe80::1", "127.0.0.1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let order: Vec<String> = connect_order(ips.clone().into_iter(), IpFamily::Any, "h")
            .unwrap()
            .iter()
            .map(IpAddr::to_string)
            .collect();
        assert_eq!(order, ["127.0.0.2", "127.0.0.1", "::1", "fe80::1"]);
        let v6 = connect_order(ips.clone().into_iter(), IpFamily::V6, "h").unwrap();
        assert_eq!(v6.len(), 2);
        assert!(v6.iter().all(IpAddr::is_ipv6));
        let none = connect_order(ips.into_iter().filter(IpAddr::is_ipv6), IpFamily::V4, "h");
        assert_eq!(none.unwrap_err().message, "h has no IPv4 address");
    }

    /// A refused first address is skipped for the next, and both attempts are reported when
    /// all fail.
    #[tokio::test]
    async fn every_address_is_tried_in_order() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = live.local_addr().unwrap().port();
        // Nothing listens on ::1 at this port (the listener is IPv4 only).
        let addrs: Vec<IpAddr> = vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let stream = connect_any(&addrs, port, Duration::from_secs(2), &mut Vec::new())
            .await
            .expect("the second address accepts");
        assert_eq!(stream.peer_addr().unwrap().ip(), addrs[1]);
        drop(live);
        let failure = connect_any(&addrs, port, Duration::from_secs(2), &mut Vec::new())
            .await
            .expect_err("both refuse");
        assert_eq!(failure.kind, ErrorKind::Connect);
        assert!(failure.message.contains("[::1]") && failure.message.contains("127.0.0.1"));
    }
}
