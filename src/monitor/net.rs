//! Network steps shared by the probes: resolving a name and connecting to one of its
//! addresses, each timed by the caller.

use std::net::{IpAddr, SocketAddr};

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

/// Connects to the first address that accepts, trying them in order.
pub async fn connect_any(addrs: &[IpAddr], port: u16) -> Result<TcpStream, CheckFailure> {
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

/// A TLS client configuration trusting the webpki roots, the system's CA bundle (or
/// `SSL_CERT_FILE`) and the configured extra roots, offering the ALPN protocols given.
pub fn tls_config(
    config: &super::ProbeConfig,
    alpn: Vec<Vec<u8>>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, ProbeSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable system certificates are skipped; the webpki roots remain.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for cert in &config.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| ProbeSetupError::Tls(e.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn;
    Ok(std::sync::Arc::new(tls))
}
