//! TCP, DNS and ping monitors, in process and through the agent, against loopback servers
//! and (for lost pings) an address inside a network namespace the test makes itself.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uptimeo_agent::heartbeat::ErrorKind;
use uptimeo_agent::monitor::dns::DnsProbe;
use uptimeo_agent::monitor::ping::PingProbe;
use uptimeo_agent::monitor::tcp::TcpProbe;
use uptimeo_agent::monitor::{MonitorSpec, ProbeConfig};

fn spec(kind: &str, url: &str) -> MonitorSpec {
    MonitorSpec {
        kind: kind.into(),
        ..probe_spec(url, Duration::from_secs(2))
    }
}

/// A line server: answers `+PONG\r\n` to `PING`, `-ERR\r\n` to anything else.
async fn pong_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let reply: &[u8] = if buf[..n].starts_with(b"PING") {
                    b"+PONG\r\n"
                } else {
                    b"-ERR\r\n"
                };
                let _ = s.write_all(reply).await;
            });
        }
    });
    addr
}

/// A UDP DNS server on loopback answering A queries for `svc.test.` with 127.0.0.7 after
/// `delay`, and NXDOMAIN for any other name.
async fn dns_server(delay: Duration) -> SocketAddr {
    let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response);
                reply
                    .set_recursion_desired(true)
                    .set_recursion_available(true);
                for q in query.queries() {
                    reply.add_query(q.clone());
                    if q.name().to_ascii() == "svc.test." {
                        let a = RData::A(A(Ipv4Addr::new(127, 0, 0, 7)));
                        reply.add_answer(Record::from_rdata(q.name().clone(), 60, a));
                    } else {
                        reply.set_response_code(ResponseCode::NXDomain);
                    }
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
            });
        }
    });
    addr
}

fn tcp_probe() -> TcpProbe {
    TcpProbe::new(&ProbeConfig::default()).unwrap()
}

/// Connect plus banner exchange: connect and first-byte times, success.
#[tokio::test]
async fn tcp_banner_exchange_succeeds_when_the_reply_matches() {
    let addr = pong_server().await;
    let url = format!("tcp://{addr}?send=PING%0D%0A&expect=PONG");
    let result = tcp_probe().run(&spec("TCP", &url)).await;
    assert!(result.success(), "{:?}", result.failure);
    assert!(result.timings.connect.is_some() && result.timings.first_byte.is_some());
    assert!(
        result.timings.dns.is_none(),
        "an IP literal needs no lookup"
    );
    assert_eq!(result.details.remote_addr, Some(addr));
}

/// A wrong reply from a server that keeps the connection open fails the expectation once the
/// server pauses, well before the timeout.
#[tokio::test]
async fn tcp_wrong_reply_on_an_open_connection_is_an_assertion_failure() {
    use tokio::io::AsyncWriteExt;
    let server = ScriptedServer::start(|mut stream, _| async move {
        let _ = stream.write_all(b"+PONG\r\n").await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let url = format!("tcp://{}?expect=NOPE", server.addr);
    let started = std::time::Instant::now();
    let mut spec = spec("TCP", &url);
    spec.timeout = Duration::from_secs(10);
    let failure = tcp_probe().run(&spec).await.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Assertion, "{}", failure.message);
    assert!(failure.message.contains("+PONG"), "{}", failure.message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A reply other than the expected one is an assertion failure naming what came back.
#[tokio::test]
async fn tcp_unexpected_banner_is_an_assertion_failure() {
    let addr = pong_server().await;
    let url = format!("tcp://{addr}?send=HELLO%0D%0A&expect=PONG");
    let failure = tcp_probe()
        .run(&spec("TCP", &url))
        .await
        .failure
        .expect("fails");
    assert_eq!(failure.kind, ErrorKind::Assertion);
    assert!(failure.message.contains("-ERR"), "{}", failure.message);
}

/// A refused port is a connect failure.
#[tokio::test]
async fn tcp_refused_port_is_a_connect_failure() {
    let url = format!("tcp://127.0.0.1:{}", refused_port());
    let result = tcp_probe().run(&spec("TCP", &url)).await;
    assert_eq!(result.failure.expect("fails").kind, ErrorKind::Connect);
    assert!(result.timings.connect.is_none());
}

/// TLS over TCP against the test CA: the handshake is timed.
#[tokio::test]
async fn tcp_with_tls_times_the_handshake() {
    let pki = TestPki::new();
    let server = TestServer::https(&pki).await;
    let probe = TcpProbe::new(&ProbeConfig {
        extra_roots: vec![pki.ca_der.clone()],
        ..ProbeConfig::default()
    })
    .unwrap();
    let url = format!("tcp://localhost:{}?tls=true", server.addr.port());
    let result = probe.run(&spec("TCP", &url)).await;
    assert!(result.success(), "{:?}", result.failure);
    assert!(result.timings.dns.is_some() && result.timings.tls.is_some());
}

/// A DNS answer after an injected delay: success, the expected address, the delay measured.
#[tokio::test]
async fn dns_query_measures_the_server_delay() {
    let server = dns_server(Duration::from_millis(120)).await;
    let probe = DnsProbe::new(&ProbeConfig::default()).unwrap();
    let result = probe
        .run(&spec(
            "DNS",
            &format!("dns://{server}/svc.test?type=A&expect=127.0.0.7"),
        ))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    let dns = result.timings.dns.unwrap();
    assert!(
        dns >= Duration::from_millis(120) && dns < Duration::from_millis(400),
        "{dns:?}"
    );
    assert_eq!(result.body.unwrap()["answers"][0], "127.0.0.7");
}

/// NXDOMAIN fails with error_type dns; a wrong expectation fails with assertion.
#[tokio::test]
async fn dns_failures_are_classified() {
    let server = dns_server(Duration::ZERO).await;
    let probe = DnsProbe::new(&ProbeConfig::default()).unwrap();
    let missing = probe
        .run(&spec("DNS", &format!("dns://{server}/nope.test")))
        .await;
    let failure = missing.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Dns);
    assert!(
        failure.message.contains("NXDomain") || failure.message.contains("NXDOMAIN"),
        "{}",
        failure.message
    );
    let wrong = probe
        .run(&spec(
            "DNS",
            &format!("dns://{server}/svc.test?expect=127.0.0.9"),
        ))
        .await;
    assert_eq!(wrong.failure.expect("fails").kind, ErrorKind::Assertion);
}

/// `localhost` and `.invalid` are asked of the server like any name, never answered locally
/// (RFC 6761 lets a stub resolver do so): the server's NXDOMAIN comes back, and a server that
/// never answers is down.
#[tokio::test]
async fn special_names_are_asked_of_the_server() {
    let server = dns_server(Duration::ZERO).await;
    let probe = DnsProbe::new(&ProbeConfig::default()).unwrap();
    for name in ["localhost", "localhost?type=AAAA", "x.invalid"] {
        let result = probe
            .run(&spec("DNS", &format!("dns://{server}/{name}")))
            .await;
        let failure = result.failure.expect("the server has no such name");
        assert!(
            failure.message.contains("NXDOMAIN"),
            "{name}: {}",
            failure.message
        );
    }
    // Bound, never read from: nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("dns://{}/localhost", silent.local_addr().unwrap());
    let result = probe
        .run(&MonitorSpec {
            kind: "DNS".into(),
            ..probe_spec(&url, Duration::from_millis(300))
        })
        .await;
    // Always the check's own timeout, never the DNS client's (the two used to race).
    let failure = result.failure.expect("nothing answers");
    assert_eq!(failure.kind, ErrorKind::Timeout, "{}", failure.message);
    assert!(
        failure
            .message
            .starts_with("no complete response within 0.3s"),
        "{}",
        failure.message
    );
}

/// TCP, DNS and ICMP monitors run from the database like HTTP ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_dns_and_ping_monitors_run_from_the_database() {
    let db = TestDb::migrated();
    let pong = pong_server().await;
    let dns = dns_server(Duration::ZERO).await;
    db.execute(BASE_CONFIG);
    db.execute(&monitor_sql(
        1,
        "redis-like",
        "TCP",
        &format!("tcp://{pong}?send=PING%0D%0A&expect=PONG"),
    ));
    db.execute(&monitor_sql(
        2,
        "resolver",
        "DNS",
        &format!("dns://{dns}/svc.test?type=A"),
    ));
    db.execute(&monitor_sql(
        3,
        "loopback ping",
        "ICMP",
        "icmp://127.0.0.1?count=2&interval_ms=20",
    ));
    let _agent = AgentProcess::run(&db.url, 1, &[]);
    let client = db.client().await;
    for id in [1, 2, 3] {
        let (success, error): (Option<bool>, Option<String>) = wait_for(Duration::from_secs(20), "a heartbeat", || async {
            client
                .query_opt("SELECT success, error_message FROM api_heartbeats WHERE monitor_id = $1 LIMIT 1", &[&id])
                .await
                .unwrap()
                .map(|r| (r.get(0), r.get(1)))
        })
        .await;
        assert_eq!(success, Some(true), "monitor {id}: {error:?}");
    }
    let ping: serde_json::Value = client
        .query_one(
            "SELECT raw_response_body FROM api_heartbeats WHERE monitor_id = 3 LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (ping["sent"].as_u64(), ping["received"].as_u64()),
        (Some(2), Some(2)),
        "{ping}"
    );
}

/// A server whose UDP answers are truncated: the DNS monitor asks again over TCP and gets the
/// records.
#[tokio::test]
async fn a_truncated_dns_answer_falls_back_to_tcp() {
    let dns = TestDns::start_truncating(&[("big.test", "127.0.0.5")], Duration::ZERO).await;
    let url = format!("dns://{}/big.test?type=A&expect=127.0.0.5", dns.addr);
    let result = DnsProbe::new(&ProbeConfig::default())
        .unwrap()
        .run(&spec("DNS", &url))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    assert_eq!(dns.queries.load(Ordering::SeqCst), 1, "one UDP query");
    assert_eq!(
        dns.tcp_queries.load(Ordering::SeqCst),
        1,
        "then one over TCP"
    );
}

/// Ping to 127.0.0.1: every reply arrives, round trips recorded.
#[tokio::test]
async fn ping_loopback_gets_every_reply() {
    let probe = PingProbe::new(&ProbeConfig::default()).unwrap();
    let result = probe
        .run(&spec("ICMP", "icmp://127.0.0.1?count=3&interval_ms=20"))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    let body = result.body.unwrap();
    assert_eq!(
        (body["sent"].as_u64(), body["received"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(body["loss_pct"].as_f64(), Some(0.0));
    assert!(result.degraded.is_none());
}

/// Concurrent pings of many monitors in one process never take each other's replies.
#[tokio::test]
async fn concurrent_pings_do_not_cross() {
    let probe = Arc::new(PingProbe::new(&ProbeConfig::default()).unwrap());
    let runs = (0..20).map(|_| {
        let probe = probe.clone();
        async move {
            probe
                .run(&spec("ICMP", "icmp://127.0.0.1?count=3&interval_ms=5"))
                .await
        }
    });
    for result in futures_util::future::join_all(runs).await {
        assert!(result.success(), "{:?}", result.failure);
        assert_eq!(result.body.unwrap()["received"].as_u64(), Some(3));
    }
}

/// A network namespace of the test's own with a veth pair: 192.0.2.2 sits behind a static
/// neighbour entry on a link where nobody answers, so echo requests go out and no reply comes.
struct BlackholeNamespace {
    name: String,
}

impl BlackholeNamespace {
    fn create() -> Self {
        let name = format!("uptimeo-ping-{}", std::process::id());
        let script = format!(
            "ip netns add {name} && ip netns exec {name} sh -c 'ip link set lo up && \
             ip link add v0 type veth peer name v1 && ip addr add 192.0.2.1/24 dev v0 && \
             ip link set v0 up && ip link set v1 up && \
             ip neigh add 192.0.2.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent'"
        );
        let ok = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success();
        assert!(ok, "creating the test namespace needs root and iproute2");
        Self { name }
    }

    /// Runs `work` on a thread that entered the namespace (sockets opened there belong to it).
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a valid namespace file descriptor.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work)
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for BlackholeNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Every reply dropped: down with a timeout, at the monitor's timeout (less the 50 ms the probe
/// keeps to report its count); a working address in
/// the same namespace is up (the control).
#[test]
fn ping_with_every_reply_dropped_is_down() {
    let ns = BlackholeNamespace::create();
    let (lost, control, took) = ns.run(async {
        let probe = PingProbe::new(&ProbeConfig::default()).unwrap();
        let started = std::time::Instant::now();
        let lost = probe
            .run(&spec("ICMP", "icmp://192.0.2.2?count=2&interval_ms=50"))
            .await;
        let took = started.elapsed();
        let control = probe
            .run(&spec("ICMP", "icmp://127.0.0.1?count=2&interval_ms=50"))
            .await;
        (lost, control, took)
    });
    let failure = lost.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Timeout, "{}", failure.message);
    assert!(failure.message.contains("all lost"), "{}", failure.message);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(control.success(), "{:?}", control.failure);
}
