//! Where a hop goes: the target parsed from its URL, and the TCP connection to the first of
//! its addresses that accepts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Uri;
use tokio::net::TcpStream;

use crate::heartbeat::{CheckFailure, ErrorKind};

/// The parts of a monitor URL the check needs.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub uri: Uri,
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
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
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&self.host)
    }

    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }
}

/// The order addresses are tried in: IPv4 first, as with the resolver's default (A records
/// only when there are some), then IPv6, each family in the order it was answered.
pub(super) fn connect_order(addrs: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let (mut v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addrs.partition(IpAddr::is_ipv4);
    v4.extend(v6);
    v4
}

/// Connects to the first address that accepts. Each address but the last may take at most an
/// equal share of `budget`, so that one silent address (a dead AAAA) leaves time for the next;
/// the last may use whatever remains (the check's own timeout stops it).
pub(super) async fn connect_any(
    addrs: &[IpAddr],
    port: u16,
    budget: Duration,
) -> Result<TcpStream, CheckFailure> {
    let share = budget / u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
    let mut errors = Vec::new();
    for (i, ip) in addrs.iter().enumerate() {
        let addr = SocketAddr::new(*ip, port);
        let attempt = TcpStream::connect(addr);
        let outcome = if i + 1 < addrs.len() {
            match tokio::time::timeout(share, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    errors.push(format!("{addr}: no answer within {share:?}"));
                    continue;
                }
            }
        } else {
            attempt.await
        };
        match outcome {
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
    fn ipv4_addresses_are_tried_first() {
        let ips: Vec<IpAddr> = ["::1", "127.0.0.2", "fe80::1", "127.0.0.1"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let order: Vec<String> = connect_order(ips.into_iter())
            .iter()
            .map(IpAddr::to_string)
            .collect();
        assert_eq!(order, ["127.0.0.2", "127.0.0.1", "::1", "fe80::1"]);
    }

    /// A refused first address is skipped for the next, and both attempts are reported when
    /// all fail.
    #[tokio::test]
    async fn every_address_is_tried_in_order() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = live.local_addr().unwrap().port();
        // Nothing listens on ::1 at this port (the listener is IPv4 only).
        let addrs: Vec<IpAddr> = vec!["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let stream = connect_any(&addrs, port, Duration::from_secs(2))
            .await
            .expect("the second address accepts");
        assert_eq!(stream.peer_addr().unwrap().ip(), addrs[1]);
        drop(live);
        let failure = connect_any(&addrs, port, Duration::from_secs(2))
            .await
            .expect_err("both refuse");
        assert_eq!(failure.kind, ErrorKind::Connect);
        assert!(failure.message.contains("[::1]") && failure.message.contains("127.0.0.1"));
    }
}
