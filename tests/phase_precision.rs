//! Known delays injected on loopback come back as the stored phases, to within 2 ms at the
//! median of several checks (and in microseconds in `details`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

/// Checks per measurement; the median is compared.
const RUNS: usize = 9;
/// Largest accepted difference between a median phase and the injected delay.
const TOLERANCE: Duration = Duration::from_millis(2);

/// What the server really waited, per connection: before the head, and within the body
/// (a sleep may overshoot its request by a timer tick; the comparison is with the real wait).
type Waited = Arc<Mutex<Vec<(Duration, Duration)>>>;

/// A server that waits `head_delay` after the request before the response head, then sends
/// half the body, waits `body_delay`, and sends the rest.
async fn delaying_server(head_delay: Duration, body_delay: Duration) -> (ScriptedServer, Waited) {
    let waited = Waited::default();
    let record = waited.clone();
    let server = ScriptedServer::start(move |mut stream, _| {
        let record = record.clone();
        async move {
            if read_request_head(&mut stream).await.is_none() {
                return;
            }
            let t = Instant::now();
            tokio::time::sleep(head_delay).await;
            let head = t.elapsed();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfirst")
                .await;
            let t = Instant::now();
            tokio::time::sleep(body_delay).await;
            record.lock().unwrap().push((head, t.elapsed()));
            let _ = stream.write_all(b"end").await;
        }
    })
    .await;
    (server, waited)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn assert_close(what: &str, measured: Duration, injected: Duration) {
    let error = measured.abs_diff(injected);
    // Shown with --nocapture: the figure the README quotes.
    eprintln!("{what}: measured {measured:?}, server waited {injected:?}, off by {error:?}");
    assert!(
        error <= TOLERANCE,
        "{what}: median {measured:?} for an injected {injected:?}"
    );
}

/// Server wait (first byte minus connect) and transfer (total minus first byte) match the
/// server's delays, for delays of 60 and 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wait_and_transfer_match_injected_delays() {
    // The server's tasks run on this test's own runtime, beside the probe: multi-threaded, so
    // that neither waits for the other to yield.
    for (head, body) in [(60, 250), (250, 60)] {
        let (head, body) = (Duration::from_millis(head), Duration::from_millis(body));
        let (server, waited) = delaying_server(head, body).await;
        let probe = http_probe(None);
        let (mut waits, mut transfers) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let result = probe
                .run(&probe_spec(&server.url("/"), Duration::from_secs(5)))
                .await;
            assert!(result.success(), "{:?}", result.failure);
            let t = result.timings;
            let (connect, ttfb, total) = (
                t.connect.expect("connect"),
                t.first_byte.expect("ttfb"),
                t.total.expect("total"),
            );
            waits.push(ttfb - connect);
            transfers.push(total - ttfb);
            let details = result.details_json();
            let ttfb_us = details["ttfb_us"].as_u64().expect("ttfb_us");
            assert_eq!(u128::from(ttfb_us), ttfb.as_micros());
        }
        let waited = waited.lock().unwrap().clone();
        let real_head = median(waited.iter().map(|w| w.0).collect());
        let real_body = median(waited.iter().map(|w| w.1).collect());
        assert!(real_head >= head && real_body >= body);
        assert_close("server wait", median(waits), real_head);
        assert_close("transfer", median(transfers), real_body);
        assert_eq!(server.connections(), RUNS);
    }
}
