//! Targets that misbehave, each its own loopback server: every one gives a failed (or, where
//! the answer is usable, a measured) result with the right `error_type`, within the monitor's
//! timeout and never after it, on exactly one connection.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uptimeo_agent::heartbeat::{CheckResult, ErrorKind};
use uptimeo_agent::monitor::http::BODY_READ_CAP;

/// The timeout of checks expected to fail early: they must take far less.
const LONG: Duration = Duration::from_secs(5);
/// The timeout of checks expected to time out.
const SHORT: Duration = Duration::from_millis(800);
/// How late a timeout may fire (scheduling slack on a loaded machine).
const SLACK: Duration = Duration::from_millis(500);

/// Runs one check and returns its result and how long it took.
async fn check(url: &str, timeout: Duration) -> (CheckResult, Duration) {
    let started = Instant::now();
    let result = http_probe(None).run(&probe_spec(url, timeout)).await;
    (result, started.elapsed())
}

/// Asserts a failure of `kind` well before the timeout, and returns its message.
fn assert_fails_early(result: &CheckResult, took: Duration, kind: ErrorKind) -> String {
    let failure = result.failure.clone().expect("the check fails");
    assert_eq!(failure.kind, kind, "{}", failure.message);
    assert!(took < LONG / 2, "took {took:?} of a {LONG:?} timeout");
    assert!(
        result.timings.total.is_some(),
        "a failed check still measures"
    );
    failure.message
}

/// Asserts a timeout no earlier than `SHORT` and not much later.
fn assert_times_out(result: &CheckResult, took: Duration) -> String {
    let failure = result.failure.clone().expect("the check fails");
    assert_eq!(failure.kind, ErrorKind::Timeout, "{}", failure.message);
    assert!(took >= SHORT && took < SHORT + SLACK, "took {took:?}");
    failure.message
}

/// A server that writes its first bytes once a request head arrived, then `each` every
/// 100 ms until the peer goes away.
async fn trickling(first: &'static [u8], each: &'static [u8]) -> ScriptedServer {
    ScriptedServer::start(move |mut stream, _| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream.write_all(first).await;
        while stream.write_all(each).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// A server that accepts and then neither reads nor writes for a minute.
async fn silent_server() -> ScriptedServer {
    ScriptedServer::start(|stream, _| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await
}

/// Nothing listens: a connect failure at once, no phase after connect.
#[tokio::test]
async fn a_refused_port_is_a_connect_failure() {
    let url = format!("http://127.0.0.1:{}/", refused_port());
    let (result, took) = check(&url, LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Connect);
    assert!(message.contains("refused"), "{message}");
    assert!(result.timings.connect.is_none() && result.timings.first_byte.is_none());
}

/// Accepts and never answers: a timeout at the configured timeout, not before, one connection.
#[tokio::test]
async fn a_silent_server_times_out_at_the_timeout() {
    let server = silent_server().await;
    let (result, took) = check(&server.url("/"), SHORT).await;
    let message = assert_times_out(&result, took);
    assert!(message.contains("waiting for the response"), "{message}");
    assert_eq!(server.connections(), 1);
}

/// Reads the request and closes: an http failure, and exactly one connection (no retry).
#[tokio::test]
async fn a_server_closing_without_answer_gets_one_connection() {
    let server = ScriptedServer::start(|mut stream, _| async move {
        let _ = read_request_head(&mut stream).await;
    })
    .await;
    let (result, took) = check(&server.url("/"), LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Http);
    assert!(message.contains("closed"), "{message}");
    assert_eq!(server.connections(), 1);
}

/// An SSH banner instead of HTTP: an http failure saying the server does not speak HTTP.
#[tokio::test]
async fn a_non_http_banner_is_an_http_failure() {
    let server = ScriptedServer::start(|mut stream, _| async move {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let (result, took) = check(&server.url("/"), LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Http);
    // Whether the banner arrives before or after the request is sent, the message says it.
    assert!(
        message.contains("not valid HTTP") || message.contains("not an HTTP server"),
        "{message}"
    );
    assert_eq!(server.connections(), 1);
}

/// A status line that is not one.
#[tokio::test]
async fn a_garbage_status_line_is_an_http_failure() {
    let server = ScriptedServer::answering(b"HTTP/1.1 2x0 Whatever\r\n\r\n").await;
    let (result, took) = check(&server.url("/"), LONG).await;
    assert_fails_early(&result, took, ErrorKind::Http);
    assert!(result.status_code.is_none());
}

/// Headers that never end (one more every 100 ms): a timeout at the timeout.
#[tokio::test]
async fn endless_headers_time_out_at_the_timeout() {
    let server = trickling(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n").await;
    let (result, took) = check(&server.url("/"), SHORT).await;
    assert_times_out(&result, took);
    assert!(result.status_code.is_none() && result.timings.first_byte.is_none());
}

/// A response head over 64 KiB fails with a clear message; one under it is read.
#[tokio::test]
async fn headers_over_64_kib_are_refused() {
    async fn big_head(size: usize) -> ScriptedServer {
        ScriptedServer::start(move |mut stream, _| async move {
            if read_request_head(&mut stream).await.is_some() {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
                    "a".repeat(size)
                );
                let _ = stream.write_all(head.as_bytes()).await;
            }
        })
        .await
    }
    let server = big_head(70 * 1024).await;
    let (result, took) = check(&server.url("/"), LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Http);
    assert!(message.contains("too large"), "{message}");

    let server = big_head(60 * 1024).await;
    let (result, _) = check(&server.url("/"), LONG).await;
    assert!(result.success(), "{:?}", result.failure);
}

/// A body that never ends: reading stops at the cap, the truncation is recorded, the check
/// succeeds and measures.
#[tokio::test]
async fn an_endless_body_stops_at_the_read_cap() {
    let server = ScriptedServer::start(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        while stream.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let (result, took) = check(&server.url("/"), Duration::from_secs(30)).await;
    assert!(result.success(), "{:?}", result.failure);
    assert!(result.details.body_truncated);
    let size = result.size_bytes.expect("size");
    assert!(
        (BODY_READ_CAP..BODY_READ_CAP + 64 * 1024).contains(&size),
        "{size}"
    );
    let total = result.timings.total.expect("total");
    assert!(total >= result.timings.first_byte.expect("ttfb") && total <= took);
}

/// Checks a server whose body breaks off after its 200 head: a body failure, early, on one
/// connection.
async fn assert_broken_off_body(server: &ScriptedServer) {
    let (result, took) = check(&server.url("/"), LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Body);
    assert!(message.contains("body"), "{message}");
    assert_eq!(result.status_code, Some(200));
    assert_eq!(server.connections(), 1);
}

/// The connection closes after 10 of 1000 announced body bytes: a body failure.
#[tokio::test]
async fn a_close_mid_body_is_a_body_failure() {
    let server =
        ScriptedServer::answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await;
    assert_broken_off_body(&server).await;
}

/// A chunk size that is not hexadecimal: a body failure.
#[tokio::test]
async fn a_broken_chunked_body_is_a_body_failure() {
    let server = ScriptedServer::answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let (result, took) = check(&server.url("/"), LONG).await;
    assert_fails_early(&result, took, ErrorKind::Body);
}

/// Interim 100 and 103 answers are skipped; the final 200 is the result.
#[tokio::test]
async fn interim_responses_are_skipped() {
    let server = ScriptedServer::answering(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let (result, _) = check(&server.url("/"), LONG).await;
    assert!(result.success(), "{:?}", result.failure);
    assert_eq!(result.status_code, Some(200));
    assert_eq!(result.size_bytes, Some(2));
}

/// HTTP/1.0 with the body delimited by the connection's close.
#[tokio::test]
async fn an_http10_body_ends_at_close() {
    let server = ScriptedServer::answering(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, close",
    )
    .await;
    let (result, _) = check(&server.url("/"), LONG).await;
    assert!(result.success(), "{:?}", result.failure);
    assert_eq!(result.size_bytes, Some(12));
    assert_eq!(result.details.http_version.as_deref(), Some("HTTP/1.0"));
    assert_eq!(result.body, Some(serde_json::json!("hello, close")));
}

/// https:// against a plain HTTP server (which answers the ClientHello with a 400): a tls
/// failure, quickly.
#[tokio::test]
async fn tls_against_a_plain_port_is_a_tls_failure() {
    let server = ScriptedServer::start(|mut stream, _| async move {
        let mut buf = [0u8; 512];
        if stream.read(&mut buf).await.unwrap_or(0) > 0 {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
        }
    })
    .await;
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let (result, took) = check(&url, LONG).await;
    assert_fails_early(&result, took, ErrorKind::Tls);
    assert!(result.timings.tls.is_none() && result.timings.connect.is_some());
    assert_eq!(server.connections(), 1);
}

/// An expired leaf: a tls failure saying so; with verification off, the check succeeds and
/// records the (negative) days left.
#[tokio::test]
async fn an_expired_certificate_fails_and_is_recorded_when_not_verified() {
    let pki = TestPki::with_leaf(&["localhost", "127.0.0.1"], true);
    let server = TestServer::https(&pki).await;
    let url = server.url("https", "localhost", "/");
    let started = Instant::now();
    let result = http_probe(Some(&pki)).run(&probe_spec(&url, LONG)).await;
    let message = assert_fails_early(&result, started.elapsed(), ErrorKind::Tls);
    assert!(message.contains("expired"), "{message}");
    // The failed handshake still reports when the served certificate expired.
    let expiry = result
        .details
        .cert_not_after
        .expect("expiry of the rejected certificate");
    assert_eq!(expiry.to_rfc3339(), "2021-01-01T00:00:00+00:00");

    let mut spec = probe_spec(&url, LONG);
    spec.http.verify_tls = false;
    let result = http_probe(None).run(&spec).await;
    assert!(result.success(), "{:?}", result.failure);
    let expiry = result.details.cert_not_after.expect("expiry recorded");
    assert_eq!(expiry.to_rfc3339(), "2021-01-01T00:00:00+00:00");
    assert!(result.cert_days_left().expect("days") < -365);
}

/// A certificate for another name: a tls failure naming the problem.
#[tokio::test]
async fn a_certificate_for_another_name_is_a_tls_failure() {
    let pki = TestPki::with_leaf(&["other.test"], false);
    let server = TestServer::https(&pki).await;
    let url = server.url("https", "localhost", "/");
    let started = Instant::now();
    let result = http_probe(Some(&pki)).run(&probe_spec(&url, LONG)).await;
    let message = assert_fails_early(&result, started.elapsed(), ErrorKind::Tls);
    assert!(message.contains("name"), "{message}");
    assert_eq!(server.hits(), 0);
}

/// A server answering 200 with `body` sent as is, labelled with `encoding`.
async fn encoded(encoding: &'static str, body: Vec<u8>) -> ScriptedServer {
    let body = std::sync::Arc::new(body);
    ScriptedServer::start(move |mut stream, _| {
        let body = body.clone();
        async move {
            if read_request_head(&mut stream).await.is_some() {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            }
        }
    })
    .await
}

/// gzip, deflate and brotli bodies: decoded for the stored body and for the body assertion,
/// both sizes recorded.
#[tokio::test]
async fn compressed_bodies_are_decoded_and_both_sizes_recorded() {
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;
    use uptimeo_agent::monitor::expect::{BodyMatch, BodyMatchMode};
    let text = r#"{"ok":true,"padding":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
    zlib.write_all(text.as_bytes()).unwrap();
    let mut br = Vec::new();
    brotli::BrotliCompress(&mut text.as_bytes(), &mut br, &Default::default()).unwrap();
    for (encoding, wire) in [
        ("gzip", gz.finish().unwrap()),
        ("deflate", zlib.finish().unwrap()),
        ("br", br),
    ] {
        let wire_len = wire.len() as u64;
        let server = encoded(encoding, wire).await;
        let (result, _) = check(&server.url("/"), LONG).await;
        assert!(result.success(), "{encoding}: {:?}", result.failure);
        assert_eq!(result.size_bytes, Some(wire_len), "{encoding}");
        assert_eq!(result.details.decoded_bytes, Some(text.len() as u64));
        assert_eq!(result.details.content_encoding.as_deref(), Some(encoding));
        let body = result.body.clone().expect("stored body");
        assert_eq!(body["ok"], true, "{encoding}: {body}");
        let details = result.details_json();
        assert_eq!(details["wire_bytes"], wire_len);
        assert_eq!(details["decoded_bytes"], text.len());

        // The body assertion sees the decoded text, not the bytes on the wire.
        let mut spec = probe_spec(&server.url("/"), LONG);
        spec.expect.body = Some(BodyMatch::new(r#""ok":true"#, BodyMatchMode::Contains).unwrap());
        let matched = http_probe(None).run(&spec).await;
        assert!(matched.success(), "{encoding}: {:?}", matched.failure);
        spec.expect.body = Some(BodyMatch::new("a{40}", BodyMatchMode::NotRegex).unwrap());
        let failure = http_probe(None).run(&spec).await.failure.expect("fails");
        assert_eq!(failure.kind, ErrorKind::Assertion, "{encoding}");
    }
}

/// A body labelled gzip that is not: a body failure naming the encoding.
#[tokio::test]
async fn a_corrupt_gzip_body_is_a_body_failure() {
    let server = encoded(
        "gzip",
        b"\x1f\x8b\x08\x00garbage that is not deflate".to_vec(),
    )
    .await;
    let (result, took) = check(&server.url("/"), LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Body);
    assert!(message.contains("gzip"), "{message}");
    assert_eq!(result.status_code, Some(200));
}

/// A body labelled brotli that is not: a body failure naming the encoding.
#[tokio::test]
async fn a_corrupt_brotli_body_is_a_body_failure() {
    let server = encoded("br", b"this is not brotli at all".to_vec()).await;
    let (result, took) = check(&server.url("/"), LONG).await;
    let message = assert_fails_early(&result, took, ErrorKind::Body);
    assert!(message.contains("br"), "{message}");
}

/// An expired certificate sent after the leaf (an unneeded extra in the chain) is not the
/// expiry reported: the leaf's is.
#[tokio::test]
async fn an_expired_extra_certificate_in_the_chain_is_not_the_expiry() {
    let mut pki = TestPki::new();
    let expired = TestPki::with_leaf(&["old.test"], true).server_chain[0].clone();
    pki.server_chain.push(expired);
    let server = TestServer::https(&pki).await;
    let url = server.url("https", "localhost", "/");
    let result = http_probe(Some(&pki)).run(&probe_spec(&url, LONG)).await;
    assert!(result.success(), "{:?}", result.failure);
    let days = result.cert_days_left().expect("expiry recorded");
    assert!(days > 365, "{days} days: the expired extra was reported");
    // Without verification (no path is built) the same leaf's expiry is reported.
    let probe = http_probe(None);
    let mut spec = probe_spec(&url, LONG);
    spec.http.verify_tls = false;
    let unverified = probe.run(&spec).await;
    assert_eq!(
        unverified.details.cert_not_after,
        result.details.cert_not_after
    );
}

/// The connection is reset (RST, not FIN) after 10 of 1000 announced body bytes: a body
/// failure, one connection.
#[tokio::test]
async fn a_reset_mid_body_is_a_body_failure() {
    let server = ScriptedServer::start(|mut stream, _| async move {
        if read_request_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                .await;
            let _ = stream.flush().await;
            // Give the head time to leave before the reset discards what is unsent.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stream.set_zero_linger();
        }
    })
    .await;
    assert_broken_off_body(&server).await;
}

/// https:// to a server that accepts and never answers the ClientHello: a timeout at the
/// timeout, during the handshake.
#[tokio::test]
async fn a_stalled_handshake_times_out_at_the_timeout() {
    let server = silent_server().await;
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let (result, took) = check(&url, SHORT).await;
    let message = assert_times_out(&result, took);
    assert!(message.contains("tls handshake"), "{message}");
    assert!(result.timings.connect.is_some() && result.timings.tls.is_none());
    assert_eq!(server.connections(), 1);
}

/// A body trickling a byte every 100 ms, longer than the timeout: a timeout during the body,
/// with the head's figures kept.
#[tokio::test]
async fn a_body_slower_than_the_timeout_times_out_reading_it() {
    let server = trickling(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x").await;
    let (result, took) = check(&server.url("/"), SHORT).await;
    let message = assert_times_out(&result, took);
    assert!(message.contains("reading the body"), "{message}");
    assert_eq!(result.status_code, Some(200));
    let ttfb = result.timings.first_byte.expect("ttfb");
    assert!(ttfb < SHORT && result.timings.total.expect("total") >= SHORT);
}
