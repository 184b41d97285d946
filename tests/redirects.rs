//! Redirects: followed each on a fresh connection up to the limit, counted, timed as the
//! README says (final hop's phases, earlier hops in `redirect`), loops stopped at the limit.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use uptimeo_agent::heartbeat::ErrorKind;

/// A server whose `/hop/N` redirects to `/hop/N-1` (after `/hop/slow/N`, 300 ms later), whose
/// `/hop/0` answers 200, whose `/loop` redirects to itself and whose `/to-port/P` redirects to
/// port P of 127.0.0.1. One request per connection.
async fn redirecting_server() -> ScriptedServer {
    ScriptedServer::start(|mut stream, _| async move {
        let Some(head) = read_request_head(&mut stream).await else {
            return;
        };
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let answer = if path == "/loop" {
            "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n".to_string()
        } else if path == "/hop/0" {
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
        } else if let Some(port) = path.strip_prefix("/to-port/") {
            format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        } else if let Some(n) = path.strip_prefix("/hop/slow/") {
            tokio::time::sleep(Duration::from_millis(300)).await;
            format!("HTTP/1.1 301 Moved\r\nLocation: /hop/{n}\r\nContent-Length: 0\r\n\r\n")
        } else {
            let n: u32 = path
                .strip_prefix("/hop/")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            format!(
                "HTTP/1.1 302 Found\r\nLocation: /hop/{}\r\nContent-Length: 0\r\n\r\n",
                n - 1
            )
        };
        let _ = stream.write_all(answer.as_bytes()).await;
    })
    .await
}

/// Two redirects: followed, counted, the final URL recorded, one connection per hop.
#[tokio::test]
async fn a_chain_is_followed_on_fresh_connections() {
    let server = redirecting_server().await;
    let result = http_probe(None)
        .run(&probe_spec(&server.url("/hop/2"), Duration::from_secs(5)))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    assert_eq!(result.status_code, Some(200));
    assert_eq!(result.details.redirects, 2);
    assert_eq!(
        result.details.final_url.as_deref(),
        Some(server.url("/hop/0").as_str())
    );
    assert_eq!(server.connections(), 3);
    let row = result.details_json();
    assert_eq!(row["redirects"], 2);
    assert_eq!(row["final_url"], server.url("/hop/0"));
}

/// A slow first hop: its 300 ms are in `redirect`, not in the final hop's connect; first byte
/// and total count from the start of the check.
#[tokio::test]
async fn earlier_hops_are_timed_apart_from_the_final_hop() {
    let server = redirecting_server().await;
    let result = http_probe(None)
        .run(&probe_spec(
            &server.url("/hop/slow/1"),
            Duration::from_secs(5),
        ))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    assert_eq!(result.details.redirects, 2);
    let t = result.timings;
    let redirect = t.redirect.expect("redirect time");
    let connect = t.connect.expect("final hop connect");
    let ttfb = t.first_byte.expect("ttfb");
    assert!(redirect >= Duration::from_millis(300), "{t:?}");
    assert!(connect < Duration::from_millis(100), "{t:?}");
    assert!(
        t.dns.is_none() && t.tls.is_none(),
        "an IP literal over plain http: {t:?}"
    );
    assert!(redirect + connect <= ttfb, "{t:?}");
    assert!(ttfb <= t.total.expect("total"));
    assert!(result.details_json()["redirect_us"].as_u64().unwrap() >= 300_000);
}

/// A redirect loop fails with error_type redirect once the limit is reached, after exactly
/// limit + 1 requests.
#[tokio::test]
async fn a_loop_fails_at_the_limit() {
    let server = redirecting_server().await;
    let mut spec = probe_spec(&server.url("/loop"), Duration::from_secs(5));
    spec.http.max_redirects = 3;
    let result = http_probe(None).run(&spec).await;
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Redirect);
    assert!(
        failure.message.contains("after 3 redirects"),
        "{}",
        failure.message
    );
    assert_eq!(result.details.redirects, 3);
    assert_eq!(result.status_code, Some(302));
    assert_eq!(server.connections(), 4);
}

/// With the limit at 0 a redirect is the answer: not 2xx, so an http failure, one request.
#[tokio::test]
async fn a_zero_limit_does_not_follow() {
    let server = redirecting_server().await;
    let mut spec = probe_spec(&server.url("/hop/1"), Duration::from_secs(5));
    spec.http.max_redirects = 0;
    let result = http_probe(None).run(&spec).await;
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Http);
    assert_eq!(result.status_code, Some(302));
    assert_eq!(result.details.redirects, 0);
    assert_eq!(server.connections(), 1);
}

/// A redirect to a refused port: a connect failure, and nothing of the redirect answer (its
/// status, its headers) is left in the result.
#[tokio::test]
async fn a_failed_hop_reports_only_itself() {
    let server = redirecting_server().await;
    let path = format!("/to-port/{}", refused_port());
    let result = http_probe(None)
        .run(&probe_spec(&server.url(&path), Duration::from_secs(5)))
        .await;
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Connect, "{}", failure.message);
    assert_eq!(result.details.redirects, 1);
    assert!(result.status_code.is_none() && result.response_headers.is_none());
    assert!(result.timings.redirect.is_some() && result.timings.connect.is_none());
}
