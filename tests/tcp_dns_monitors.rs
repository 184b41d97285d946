//! TCP and DNS monitors, in process and through the agent, against loopback servers.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uptimeo_agent::heartbeat::ErrorKind;
use uptimeo_agent::monitor::dns::DnsProbe;
use uptimeo_agent::monitor::tcp::TcpProbe;
use uptimeo_agent::monitor::{MonitorSpec, ProbeConfig, Schedule};

fn spec(kind: &str, url: &str) -> MonitorSpec {
    MonitorSpec {
        id: 1,
        name: "t".into(),
        kind: kind.into(),
        method: http::Method::GET,
        url: url.into(),
        headers: Vec::new(),
        body: None,
        schedule: Schedule {
            id: 1,
            interval: Duration::from_secs(2),
            include_response_body: false,
            warning_ms: None,
            critical_ms: None,
        },
        timeout: Duration::from_secs(2),
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
    let probe = DnsProbe::new().unwrap();
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
    let probe = DnsProbe::new().unwrap();
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

/// TCP and DNS monitors run from the database like HTTP ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_dns_monitors_run_from_the_database() {
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
    let _agent = AgentProcess::run(&db.url, 1, &[]);
    let client = db.client().await;
    for id in [1, 2] {
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
}
