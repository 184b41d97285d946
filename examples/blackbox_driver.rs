//! Drives Prometheus blackbox_exporter at the agent's probe rate, for `bench/blackbox.sh`: N
//! targets, each probed once per 10 s interval with the `http_2xx` module, spread evenly over
//! the interval as the agent spreads its monitors; keep-alive connections to the exporter, so
//! that the exporter's own cost is what the bench measures.
//!
//! `blackbox_driver EXPORTER_ADDR TARGET_ADDR N WARMUP_S WINDOW_S` (both addresses on
//! 127.0.0.1); prints `probes=P successful=S late=L` for the probes sent inside the window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    probes: AtomicU64,
    successful: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: EXPORTER_ADDR TARGET_ADDR N WARMUP_S WINDOW_S"
    );
    let (exporter, target) = (args[1].clone(), args[2].clone());
    let n: u64 = args[3].parse()?;
    let warmup = Duration::from_secs(args[4].parse()?);
    let window = Duration::from_secs(args[5].parse()?);
    for addr in [&exporter, &target] {
        anyhow::ensure!(addr.starts_with("127.0.0.1:"), "{addr} is not on loopback");
    }

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(10))
        .build()?;
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + window);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("http://{exporter}/probe?module=http_2xx&target=http://{target}/m/{i}");
        let (client, counts) = (client.clone(), counts.clone());
        let offset = INTERVAL.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start + offset, INTERVAL);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                let slot = ticks.tick().await;
                if slot >= until {
                    return;
                }
                let ok = match client.get(&url).send().await {
                    Ok(response) => response
                        .text()
                        .await
                        .is_ok_and(|body| body.contains("\nprobe_success 1")),
                    Err(_) => false,
                };
                if slot >= from {
                    counts.probes.fetch_add(1, Ordering::Relaxed);
                    counts
                        .successful
                        .fetch_add(u64::from(ok), Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    println!(
        "probes={} successful={}",
        counts.probes.load(Ordering::Relaxed),
        counts.successful.load(Ordering::Relaxed)
    );
    Ok(())
}
