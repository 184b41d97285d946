//! A TLS handshake held by the server comes back as the stored handshake phase: over several
//! runs, the median of the phase minus the delay the server really injected is within 2 ms of
//! the median handshake without delay (the handshake's own work and round trips, which every
//! client spends: about 2 ms on this machine's sandboxed loopback, release build, curl 4 ms;
//! `bench/curl_compare.sh`). (The server wait and transfer phases:
//! `tests/phase_precision.rs`.)

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uptimeo_agent::heartbeat::PhaseTimings;
use uptimeo_agent::monitor::http::HttpProbe;
use uptimeo_agent::monitor::{MonitorSpec, ProbeConfig};

const RUNS: usize = 5;
const TOLERANCE: Duration = Duration::from_millis(2);

/// Where the test server waits.
#[derive(Clone, Copy, Default)]
struct Delays {
    /// Before starting the TLS handshake (the ClientHello waits in the socket).
    handshake: Duration,
    /// Between reading the request and sending the response head.
    headers: Duration,
    /// Over which the body is sent, in ten pieces.
    body: Duration,
}

/// The delays a server actually injected, as measured on its side (a timer sleeps a little
/// longer than asked; the client's phases are compared with what really happened).
type Injected = Arc<std::sync::Mutex<Vec<Duration>>>;

/// An HTTP/1.1 server (TLS when `pki` is given) that injects `delays` and records each one.
async fn delaying_server(delays: Delays, pki: Option<&TestPki>) -> (SocketAddr, Injected) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = pki.map(|p| {
        let mut config = p.server_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let injected = Injected::default();
    let record = injected.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tls, record) = (tls.clone(), record.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        let held = Instant::now();
                        tokio::time::sleep(delays.handshake).await;
                        record.lock().unwrap().push(held.elapsed());
                        if let Ok(s) = acceptor.accept(stream).await {
                            respond(s, delays, None).await;
                        }
                    }
                    None => respond(stream, delays, Some(&record)).await,
                }
            });
        }
    });
    (addr, injected)
}

async fn respond<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    delays: Delays,
    record: Option<&Injected>,
) {
    // Read the request head.
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let waited = Instant::now();
    tokio::time::sleep(delays.headers).await;
    let piece = "x".repeat(100);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n",
        piece.len() * 10
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.flush().await;
    let headers_sent = Instant::now();
    let header_delay = headers_sent - waited;
    // Pieces at fixed deadlines, so that timer overshoot does not add up.
    for i in 1..=10u32 {
        tokio::time::sleep_until((headers_sent + delays.body * i / 10).into()).await;
        let _ = s.write_all(piece.as_bytes()).await;
        let _ = s.flush().await;
    }
    let transfer = headers_sent.elapsed();
    if let Some(record) = record {
        let actual = if delays.body.is_zero() {
            header_delay
        } else {
            transfer
        };
        record.lock().unwrap().push(actual);
    }
    let _ = s.shutdown().await;
}

fn spec(url: &str) -> MonitorSpec {
    probe_spec(url, Duration::from_secs(5))
}

/// Runs the check `RUNS` times; asserts that the median gap between `phase` and the delay
/// the server actually injected is within the tolerance of `baseline`.
async fn assert_phase_matches(
    probe: &HttpProbe,
    url: &str,
    injected: &Injected,
    baseline: Duration,
    what: &str,
    phase: impl Fn(&PhaseTimings) -> Duration,
) {
    let mut gaps = Vec::new();
    for run in 0..RUNS {
        let result = probe.run(&spec(url)).await;
        assert!(result.success(), "{:?}", result.failure);
        let actual = injected.lock().unwrap()[run];
        let measured = phase(&result.timings);
        let gap = measured.as_secs_f64() - actual.as_secs_f64() - baseline.as_secs_f64();
        gaps.push(gap * 1000.0);
    }
    gaps.sort_by(f64::total_cmp);
    let median = gaps[RUNS / 2];
    assert!(
        median.abs() <= TOLERANCE.as_secs_f64() * 1000.0,
        "{what}: measured minus injected minus {baseline:?}, ms, per run: {gaps:?}"
    );
}

/// The TLS handshake phase carries the server's handshake delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_delay_shows_in_the_tls_phase() {
    let pki = TestPki::new();
    let probe = HttpProbe::new(&ProbeConfig {
        extra_roots: vec![pki.ca_der.clone()],
        ..ProbeConfig::default()
    })
    .unwrap();
    // The handshake without delay.
    let (addr, _) = delaying_server(Delays::default(), Some(&pki)).await;
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let mut plain = Vec::new();
    for _ in 0..RUNS {
        let result = probe.run(&spec(&url)).await;
        plain.push(result.timings.tls.expect("handshake timed"));
    }
    plain.sort();
    let baseline = plain[RUNS / 2];
    eprintln!("tls handshake without delay: median {baseline:?}");
    for ms in [50, 200] {
        let injected = Duration::from_millis(ms);
        let (addr, actual) = delaying_server(
            Delays {
                handshake: injected,
                ..Delays::default()
            },
            Some(&pki),
        )
        .await;
        let url = format!("https://127.0.0.1:{}/", addr.port());
        let tls = |t: &PhaseTimings| t.tls.unwrap();
        assert_phase_matches(&probe, &url, &actual, baseline, "tls handshake", tls).await;
    }
}
