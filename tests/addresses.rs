//! Names that resolve to several addresses, through a DNS server the test runs: every address
//! is tried, the one used is recorded, and the lookup time is the server's delay.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use uptimeo_agent::heartbeat::ErrorKind;
use uptimeo_agent::monitor::net::FailedConnect;

/// Nothing listens on ::1 at the server's port (it is bound to 127.0.0.1 only), and nothing at
/// all on 127.0.0.2.
const RECORDS: &[(&str, &str)] = &[
    ("dual.test", "::1"),
    ("dual.test", "127.0.0.1"),
    ("multi.test", "127.0.0.2"),
    ("multi.test", "127.0.0.1"),
    ("v6only.test", "::1"),
    ("v4dead.test", "127.0.0.2"),
    ("v4dead.test", "::1"),
];

/// Checks `name` (resolved to a dead address and 127.0.0.1) against a live server: up, through
/// 127.0.0.1, with one request; returns the addresses that failed first.
async fn assert_up_through_the_live_address(name: &str) -> Vec<FailedConnect> {
    let dns = TestDns::start(RECORDS, Duration::ZERO).await;
    let server = TestServer::http().await;
    let url = server.url("http", name, "/");
    let result = dns
        .probe()
        .run(&probe_spec(&url, Duration::from_secs(5)))
        .await;
    assert!(result.success(), "{name}: {:?}", result.failure);
    assert_eq!(result.details.remote_addr, Some(server.addr), "{name}");
    assert!(result.timings.dns.is_some());
    assert_eq!(server.hits(), 1);
    result.details.failed_connects
}

/// A dead AAAA with a live A: up, through the A.
#[tokio::test]
async fn a_dead_aaaa_with_a_live_a_is_up() {
    // IPv4 goes first: the dead AAAA is never tried.
    assert_eq!(assert_up_through_the_live_address("dual.test").await, []);
}

/// Two A records, the first refusing: the second is used.
#[tokio::test]
async fn a_refusing_address_is_skipped_for_the_next() {
    let failed = assert_up_through_the_live_address("multi.test").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].addr.ip().to_string(), "127.0.0.2");
    assert!(failed[0].error.contains("refused"), "{failed:?}");
}

/// A dead A with a live AAAA: up, through the AAAA (the IPv6 loopback).
#[tokio::test]
async fn a_dead_a_with_a_live_aaaa_is_up_through_ipv6() {
    let dns = TestDns::start(RECORDS, Duration::ZERO).await;
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind ::1");
    let addr = listener.local_addr().expect("addr");
    let serve = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            if read_request_head(&mut stream).await.is_some() {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    });
    let url = format!("http://v4dead.test:{}/", addr.port());
    let result = dns
        .probe()
        .run(&probe_spec(&url, Duration::from_secs(5)))
        .await;
    serve.abort();
    assert!(result.success(), "{:?}", result.failure);
    assert_eq!(result.details.remote_addr, Some(addr));
    let failed = result.details_json()["failed_connects"].clone();
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    assert!(failed[0]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.2:"));
    assert!(failed[0]["us"].as_u64().is_some(), "{failed}");
}

/// Only a dead address: a connect failure naming it.
#[tokio::test]
async fn only_dead_addresses_is_a_connect_failure() {
    let dns = TestDns::start(RECORDS, Duration::ZERO).await;
    let url = format!("http://v6only.test:{}/", refused_port());
    let result = dns
        .probe()
        .run(&probe_spec(&url, Duration::from_secs(5)))
        .await;
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Connect, "{}", failure.message);
    assert!(failure.message.contains("[::1]"), "{}", failure.message);
}

/// A name the server does not know: a dns failure naming it.
#[tokio::test]
async fn an_unknown_name_is_a_dns_failure() {
    let dns = TestDns::start(RECORDS, Duration::ZERO).await;
    let result = dns
        .probe()
        .run(&probe_spec("http://nowhere.test/", Duration::from_secs(5)))
        .await;
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Dns, "{}", failure.message);
    assert!(
        failure.message.contains("nowhere.test"),
        "{}",
        failure.message
    );
    assert!(result.timings.dns.is_none() && result.timings.connect.is_none());
}

/// The median lookup phase of five checks of `dual.test` through `dns`.
async fn median_lookup(dns: &TestDns) -> Duration {
    let server = TestServer::http().await;
    let url = server.url("http", "dual.test", "/");
    let probe = dns.probe();
    let mut lookups = Vec::new();
    for _ in 0..5 {
        let result = probe.run(&probe_spec(&url, Duration::from_secs(5))).await;
        assert!(result.success(), "{:?}", result.failure);
        lookups.push(result.timings.dns.expect("dns"));
    }
    lookups.sort();
    lookups[2]
}

/// Asserts that `median`, the lookup through a server answering after `delay`, is the delay
/// plus `round_trip` (the same lookup without delay), within 2 ms.
fn assert_lookup_is_the_delay(median: Duration, round_trip: Duration, delay: Duration) {
    assert!(median >= delay, "{median:?}");
    let added = median.saturating_sub(round_trip);
    assert!(
        added.abs_diff(delay) <= Duration::from_millis(2),
        "the delay added {added:?} to the lookup, not {delay:?}"
    );
}

/// A server answering after 120 ms: the lookup phase is the delay plus the round trip of an
/// answer without delay, within 2 ms. (The round trip itself is real time that curl measures
/// too: about 1.8 ms on this machine's sandboxed loopback for both, `bench/curl_compare.sh`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_phase_is_the_servers_delay() {
    let delay = Duration::from_millis(120);
    let round_trip = median_lookup(&TestDns::start(RECORDS, Duration::ZERO).await).await;
    let median = median_lookup(&TestDns::start(RECORDS, delay).await).await;
    eprintln!("dns lookup: median {median:?} for a {delay:?} server delay, {round_trip:?} without");
    assert_lookup_is_the_delay(median, round_trip, delay);
}

/// A server whose UDP answers are truncated: the lookup is asked again over TCP, and the phase
/// still shows the TCP answer's delay within 2 ms (over the same exchange without delay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_is_asked_again_over_tcp_and_timed() {
    let delay = Duration::from_millis(80);
    let round_trip = median_lookup(&TestDns::start_truncating(RECORDS, Duration::ZERO).await).await;
    let dns = TestDns::start_truncating(RECORDS, delay).await;
    let median = median_lookup(&dns).await;
    eprintln!("dns over tcp: median {median:?} for a {delay:?} delay, {round_trip:?} without");
    assert!(
        dns.tcp_queries.load(Ordering::SeqCst) >= 5,
        "each check asks over TCP"
    );
    assert_lookup_is_the_delay(median, round_trip, delay);
}
