//! The timed HTTP probe in process, against loopback servers the tests start.

mod common;

use std::time::{Duration, Instant};

use common::*;
use uptimeo_agent::heartbeat::{CheckResult, ErrorKind};

/// HTTPS through a name: all phases measured, in order, each within the total.
#[tokio::test]
async fn https_through_a_name_measures_every_phase() {
    let pki = TestPki::new();
    let server = TestServer::https(&pki).await;
    let result = http_probe(Some(&pki))
        .run(&probe_spec(
            &server.url("https", "localhost", "/"),
            Duration::from_secs(5),
        ))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    let t = result.timings;
    let (dns, connect, tls, ttfb, total) = (
        t.dns.unwrap(),
        t.connect.unwrap(),
        t.tls.unwrap(),
        t.first_byte.unwrap(),
        t.total.unwrap(),
    );
    assert!(dns + connect + tls <= ttfb, "{t:?}");
    assert!(ttfb <= total);
    assert_eq!(result.status_code, Some(200));
    assert_eq!(result.body, Some(serde_json::json!({"ok": true})));
    assert_eq!(server.hits(), 1);
}

/// A check of a server presenting `served`'s certificate, by a probe that also trusts
/// `trusted`'s CA; returns the result after asserting it failed at the handshake.
async fn tls_failed_check(served: &TestPki, trusted: Option<&TestPki>) -> CheckResult {
    let server = TestServer::https(served).await;
    let result = http_probe(trusted)
        .run(&probe_spec(
            &server.url("https", "127.0.0.1", "/"),
            Duration::from_secs(5),
        ))
        .await;
    let failure = result.failure.as_ref().expect("fails");
    assert_eq!(failure.kind, ErrorKind::Tls, "{}", failure.message);
    assert!(result.timings.tls.is_none() && result.timings.first_byte.is_none());
    assert!(result.timings.connect.is_some());
    result
}

/// An untrusted certificate fails the handshake with a tls error.
#[tokio::test]
async fn an_unknown_ca_is_a_tls_failure() {
    let result = tls_failed_check(&TestPki::new(), None).await;
    let message = result.failure.unwrap().message;
    assert!(
        message.contains("signed by an unknown authority"),
        "{message}"
    );
}

/// A certificate whose issuer's name is that of a trusted CA which did not sign it (two test
/// CAs share a name) gets a reason saying so, not a bare `BadSignature`.
#[tokio::test]
async fn a_trusted_name_with_another_key_is_a_readable_tls_failure() {
    let result = tls_failed_check(&TestPki::new(), Some(&TestPki::new())).await;
    let message = result.failure.unwrap().message;
    assert!(
        message.contains("has its issuer's name but did not sign it"),
        "{message}"
    );
}

/// A self-signed CA certificate served as the server's own is refused even when trusted, with
/// a reason a person can read (rustls names it only `CaUsedAsEndEntity`).
#[tokio::test]
async fn a_ca_certificate_served_as_the_leaf_is_a_readable_tls_failure() {
    let pki = TestPki::ca_as_leaf(&["127.0.0.1"]);
    let result = tls_failed_check(&pki, Some(&pki)).await;
    let message = result.failure.unwrap().message;
    assert!(
        message.contains("sent a CA certificate") && !message.contains("Other("),
        "{message}"
    );
}

/// A non-2xx status is a failed check with error_type http and the status recorded.
#[tokio::test]
async fn a_server_error_status_fails_the_check() {
    let server = TestServer::http().await;
    let result = http_probe(None)
        .run(&probe_spec(
            &server.url("http", "127.0.0.1", "/status/503"),
            Duration::from_secs(5),
        ))
        .await;
    assert_eq!(result.status_code, Some(503));
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Http);
    assert!(failure.message.contains("503"));
}

/// A JSON body is sent with Content-Type application/json, and the row's headers are sent.
#[tokio::test]
async fn a_json_body_is_sent_as_json() {
    let server = TestServer::http().await;
    let mut spec = probe_spec(
        &server.url("http", "127.0.0.1", "/"),
        Duration::from_secs(5),
    );
    spec.method = http::Method::POST;
    spec.body = Some(serde_json::json!({"ping": 1}));
    let result = http_probe(None).run(&spec).await;
    assert!(result.success());
    let echoed = result.response_headers.unwrap();
    assert_eq!(echoed["x-echo-content-type"], "application/json");
    assert_eq!(echoed["x-echo-x-test"], "yes");
}

/// A server that accepts and never answers: a timeout at the monitor's timeout, not before,
/// with the phase it stopped in.
#[tokio::test]
async fn a_silent_server_times_out_at_the_configured_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(700);
    let started = Instant::now();
    let result = http_probe(None)
        .run(&probe_spec(&format!("http://127.0.0.1:{port}/"), timeout))
        .await;
    let took = started.elapsed();
    hold.abort();
    let failure = result.failure.expect("fails");
    assert_eq!(failure.kind, ErrorKind::Timeout);
    assert!(
        failure.message.contains("waiting for the response"),
        "{}",
        failure.message
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "{took:?}"
    );
    assert!(result.timings.connect.is_some() && result.timings.first_byte.is_none());
}

/// A URL's `user:password@` is sent as Basic authorization, as curl does, never in the Host
/// header; the stored request headers mask it and the stored URL has no password.
#[tokio::test]
async fn url_credentials_become_basic_authorization_and_are_not_stored() {
    use tokio::io::AsyncWriteExt;
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    let server = ScriptedServer::start(move |mut stream, _| {
        let seen = seen.clone();
        async move {
            if let Some(head) = read_request_head(&mut stream).await {
                seen.lock().unwrap().push(head);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    let url = format!(
        "http://bob:hunter%32@127.0.0.1:{}/private",
        server.addr.port()
    );
    let result = http_probe(None)
        .run(&probe_spec(&url, Duration::from_secs(5)))
        .await;
    assert!(result.success(), "{:?}", result.failure);
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    // base64("bob:hunter2")
    assert!(
        head.contains(
            "authorization: basic Ym9iOmh1bnRlcjI="
                .to_ascii_lowercase()
                .as_str()
        ),
        "{head}"
    );
    assert!(
        head.contains(&format!("host: 127.0.0.1:{}\r\n", server.addr.port())),
        "{head}"
    );
    let stored = serde_json::to_string(&result.request_headers).unwrap();
    assert!(
        !stored.contains("Ym9iOmh1bnRlcjI") && stored.contains("***"),
        "{stored}"
    );
    let details = result.details_json().to_string();
    assert!(!details.contains("hunter"), "{details}");
    assert!(details.contains(&format!("http://127.0.0.1:{}/private", server.addr.port())));
}
