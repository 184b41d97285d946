//! Writer throughput on its own: realistic heartbeat rows (request and response headers as
//! JSON, no body) stored through the agent's own batch INSERT
//! ([`uptimeo_agent::db::heartbeats::insert_batch`]), one batch at a time on each of
//! CONNECTIONS connections, as the heartbeat writer does with `WRITE_CONNECTIONS`.
//! `bench/writer.sh` runs it and compares with `COPY`.
//!
//! `writer_throughput DB_URL [ROWS=100000] [BATCH=500] [MONITORS=1000] [CONNECTIONS=2]`; the
//! database must be migrated and hold monitors 1..=MONITORS and agent 1. Prints
//! `insert rows=R seconds=S rows_per_s=X connections=C`.

use std::time::Instant;

use chrono::{Duration, Utc};
use serde_json::json;
use uptimeo_agent::db::heartbeats::{self, NewHeartbeat};
use uptimeo_agent::db::DbTarget;

fn row(i: usize, monitors: usize, base: chrono::NaiveDateTime) -> NewHeartbeat {
    let monitor = (i % monitors) as i32 + 1;
    NewHeartbeat {
        monitor_id: Some(monitor),
        agent_id: Some(1),
        // Spread over the last minutes of the day, all in one daily partition.
        executed_at: base + Duration::milliseconds(i as i64),
        success: Some(true),
        response_time_ms: Some(3 + (i % 7) as i32),
        response_size_bytes: Some(15),
        response_status_code: Some(200),
        response_content_type: Some("application/json".to_string()),
        response_server: Some("bench-target".to_string()),
        response_cache_status: None,
        dns_lookup_ms: None,
        tcp_connect_ms: Some(1),
        tls_handshake_ms: None,
        time_to_first_byte_ms: Some(2 + (i % 5) as i32),
        warning_threshold_ms: Some(500),
        critical_threshold_ms: Some(2000),
        error_type: None,
        error_message: None,
        raw_request_headers: Some(json!({
            "Accept": "application/json",
            "User-Agent": "uptimeo-agent/0.1",
            "Authorization": "***",
            "Host": "127.0.0.1:8080",
        })),
        raw_response_headers: Some(json!({
            "content-type": "application/json",
            "server": "bench-target",
            "cache-control": "no-store",
            "content-length": "15",
            "date": "Thu, 03 Dec 2026 17:00:00 GMT",
            "x-request-id": format!("{i:016x}"),
        })),
        raw_response_body: None,
        status: Some("up".to_string()),
        lease_epoch: Some(1),
        scheduled_at: Some(base + Duration::milliseconds(i as i64)),
        details: None,
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("postgres://postgres@127.0.0.1:5432/uptimeo_bench_writer");
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (total, batch, monitors) = (arg(2, 100_000), arg(3, 500), arg(4, 1000));
    let connections = arg(5, 2).max(1);

    let today = Utc::now().date_naive();
    let base = today.and_hms_opt(0, 0, 0).unwrap_or_default();
    let rows: Vec<NewHeartbeat> = (0..total).map(|i| row(i, monitors, base)).collect();
    // Batches dealt out in turn, as the writer hands the next batch to whichever connection
    // is free.
    let batches: Vec<&[NewHeartbeat]> = rows.chunks(batch.max(1)).collect();

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let target = DbTarget::parse(url)?;
            let mut conns = Vec::new();
            for _ in 0..connections {
                conns.push(target.connect().await?);
            }
            heartbeats::ensure_partition(&mut conns[0], today).await?;
            let started = Instant::now();
            let writers = conns.iter_mut().enumerate().map(|(k, conn)| {
                let mine: Vec<&[NewHeartbeat]> =
                    batches.iter().skip(k).step_by(connections).copied().collect();
                async move {
                    for chunk in mine {
                        heartbeats::insert_batch(conn, chunk).await?;
                    }
                    Ok::<_, anyhow::Error>(())
                }
            });
            futures_util::future::try_join_all(writers).await?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "insert rows={total} seconds={seconds:.3} rows_per_s={:.0} connections={connections}",
                total as f64 / seconds
            );
            Ok(())
        })
}
