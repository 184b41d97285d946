//! The ping check: `icmp://host[?count=3][&interval_ms=200][&max_loss_pct=0]`.
//!
//! Sends `count` ICMP echo requests `interval_ms` apart and waits for their replies until the
//! monitor's timeout. Unprivileged ICMP sockets are used where the system allows them
//! (`net.ipv4.ping_group_range`), raw sockets otherwise (root or CAP_NET_RAW), through the
//! surge-ping library. The check is down only when every packet is lost; a loss above
//! `max_loss_pct` makes it `warning`. Stored: `response_time_ms` is the average round trip,
//! `dns_lookup_ms` the lookup of a name, and `raw_response_body` holds
//! `{"sent", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms"}`.
//!
//! Replies are matched to their own request by (address, identifier, sequence): identifiers
//! are unique within the process, and start at a random value per process with a random first
//! sequence, so that on raw sockets (which see every reply on the host) another process's
//! replies are taken for ours only if both 16-bit values collide at once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hickory_resolver::TokioResolver;
use serde_json::json;
use surge_ping::{Client, Config, PingIdentifier, PingSequence, ICMP};
use tokio::sync::OnceCell;

use super::measure::Measurement;
use super::{net, MonitorSpec, Probe, ProbeConfig, ProbeSetupError};
use crate::heartbeat::{CheckFailure, CheckResult, ErrorKind};

/// Default number of echo requests per check.
pub const DEFAULT_COUNT: u32 = 3;
/// How long before the monitor's timeout the waiting for replies stops, to report them.
const REPORT_MARGIN: Duration = Duration::from_millis(50);
/// Default time between two echo requests.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);

/// Runs ping monitors.
pub struct PingProbe {
    resolver: TokioResolver,
    v4: OnceCell<Client>,
    v6: OnceCell<Client>,
    next_ident: AtomicU16,
}

#[derive(Debug, Clone, PartialEq)]
struct PingTarget {
    host: String,
    count: u32,
    interval: Duration,
    max_loss_pct: f64,
}

impl PingTarget {
    fn parse(text: &str) -> Result<Self, String> {
        let shown = crate::monitor::redacted_url(text);
        let invalid = |why: String| format!("invalid URL `{shown}`: {why}");
        let url = url::Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "icmp" {
            return Err(invalid("a ping monitor needs icmp://host".into()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut target = Self {
            host,
            count: DEFAULT_COUNT,
            interval: DEFAULT_INTERVAL,
            max_loss_pct: 0.0,
        };
        for (key, value) in url.query_pairs() {
            let number = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| invalid(format!("{key} must be a number")))
            };
            match key.as_ref() {
                "count" => target.count = number(&value)?.clamp(1.0, 100.0) as u32,
                "interval_ms" => {
                    target.interval =
                        Duration::from_millis(number(&value)?.clamp(1.0, 60_000.0) as u64)
                }
                "max_loss_pct" => target.max_loss_pct = number(&value)?.clamp(0.0, 100.0),
                other => return Err(invalid(format!("unknown parameter `{other}`"))),
            }
        }
        Ok(target)
    }
}

impl PingProbe {
    /// Reads the system's resolver configuration; sockets are opened at the first check.
    pub fn new(config: &ProbeConfig) -> Result<Self, ProbeSetupError> {
        let seed =
            (std::process::id() as u16) ^ (chrono::Utc::now().timestamp_subsec_nanos() as u16);
        Ok(Self {
            resolver: net::resolver(config)?,
            v4: OnceCell::new(),
            v6: OnceCell::new(),
            next_ident: AtomicU16::new(seed),
        })
    }

    async fn client(&self, ip: IpAddr) -> Result<&Client, CheckFailure> {
        let (cell, kind) = match ip {
            IpAddr::V4(_) => (&self.v4, ICMP::V4),
            IpAddr::V6(_) => (&self.v6, ICMP::V6),
        };
        cell.get_or_try_init(|| async {
            Client::new(&Config::builder().kind(kind).build()).map_err(|e| {
                CheckFailure::new(
                    ErrorKind::Internal,
                    format!("cannot open an ICMP socket: {e}"),
                )
            })
        })
        .await
    }

    /// Runs one check of `spec`.
    pub async fn run(&self, spec: &MonitorSpec) -> CheckResult {
        let mut m = Measurement::begin("dns lookup");
        let outcome = tokio::time::timeout(spec.timeout, self.ping(spec, &mut m)).await;
        m.finish(outcome, spec.timeout)
    }

    async fn ping(&self, spec: &MonitorSpec, m: &mut Measurement) -> Result<(), CheckFailure> {
        let target =
            PingTarget::parse(&spec.url).map_err(|e| CheckFailure::new(ErrorKind::Connect, e))?;
        let t = Instant::now();
        let (addrs, looked_up) = net::resolve(&self.resolver, &target.host).await?;
        if looked_up {
            m.result.timings.dns = Some(t.elapsed());
        }
        let ip = net::connect_order(addrs.into_iter(), spec.ip_family, &target.host)?[0];
        let client = self.client(ip).await?;

        // Every request in flight at once, `interval` apart; each waits until the deadline.
        m.phase = "waiting for echo replies";
        let ident = PingIdentifier(self.next_ident.fetch_add(1, Ordering::Relaxed));
        let first_seq = ident.0.wrapping_mul(31);
        // Replies are awaited until just before the monitor's timeout, so that the check ends
        // with its own count of lost packets rather than racing the outer timeout.
        let deadline = m.start + spec.timeout - (spec.timeout / 20).min(REPORT_MARGIN);
        let payload = [0u8; 16];
        let requests = (0..target.count).map(|i| async move {
            tokio::time::sleep(target.interval * i).await;
            let mut pinger = client.pinger(ip, ident).await;
            pinger.timeout(deadline.saturating_duration_since(Instant::now()));
            let seq = PingSequence(first_seq.wrapping_add(i as u16));
            pinger.ping(seq, &payload).await.ok().map(|(_, rtt)| rtt)
        });
        let rtts: Vec<Duration> = futures_util::future::join_all(requests)
            .await
            .into_iter()
            .flatten()
            .collect();

        let sent = target.count;
        let received = rtts.len() as u32;
        let loss_pct = f64::from(sent - received) * 100.0 / f64::from(sent);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let avg = rtts
            .iter()
            .sum::<Duration>()
            .checked_div(received.max(1))
            .unwrap_or_default();
        m.result.timings.total = (received > 0).then_some(avg);
        m.result.body = Some(json!({
            "address": ip.to_string(),
            "sent": sent,
            "received": received,
            "loss_pct": loss_pct,
            "rtt_min_ms": rtts.iter().min().map(|d| ms(*d)),
            "rtt_avg_ms": (received > 0).then(|| ms(avg)),
            "rtt_max_ms": rtts.iter().max().map(|d| ms(*d)),
        }));
        if received == 0 {
            return Err(CheckFailure::new(
                ErrorKind::Timeout,
                format!("no echo reply from {ip}: {sent} sent, all lost"),
            ));
        }
        if loss_pct > target.max_loss_pct {
            m.result.degraded = Some(format!(
                "{loss_pct:.0}% packet loss ({received}/{sent} replies)"
            ));
        }
        Ok(())
    }
}

impl Probe for PingProbe {
    fn validate(&self, spec: &MonitorSpec) -> Result<(), String> {
        PingTarget::parse(&spec.url).map(|_| ())
    }

    fn check(self: Arc<Self>, spec: Arc<MonitorSpec>) -> BoxFuture<'static, CheckResult> {
        async move { self.run(&spec).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_urls_parse_with_defaults() {
        let t = PingTarget::parse("icmp://127.0.0.1").unwrap();
        assert_eq!(
            (t.count, t.interval, t.max_loss_pct),
            (3, DEFAULT_INTERVAL, 0.0)
        );
        let t = PingTarget::parse("icmp://[::1]?count=5&interval_ms=50&max_loss_pct=20").unwrap();
        assert_eq!((t.host.as_str(), t.count), ("::1", 5));
        assert_eq!(
            (t.interval, t.max_loss_pct),
            (Duration::from_millis(50), 20.0)
        );
        assert!(PingTarget::parse("icmp://").is_err());
        assert!(PingTarget::parse("icmp://h?count=x").is_err());
    }
}
