//! The health port: `GET /healthz` (the process is alive), `GET /readyz` (the database answers
//! and the agent knows its lease role: active, or a standby ready to take over) and
//! `GET /metrics` (Prometheus, OpenMetrics text format).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use slog::{debug, info, Logger};
use tokio::net::TcpListener;

use crate::db::{self, Pool};
use crate::metrics::{LeaseRole, Metrics};

/// Longest time `/readyz` waits for the database before answering 503.
pub const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read: the metrics (with the lease role) and a pool for the readiness
/// query, separate from the pools of the actors so that a probe never waits behind them.
#[derive(Clone)]
pub struct HealthState {
    pub metrics: Arc<Metrics>,
    pub pool: Pool,
}

/// Binds the health port on all interfaces (IPv4).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

/// Serves health requests until the process ends.
pub async fn serve(listener: TcpListener, state: HealthState, log: Logger) {
    if let Ok(addr) = listener.local_addr() {
        info!(log, "health endpoint listening"; "addr" => %addr);
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (log, state) = (log.clone(), state.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, state.clone()));
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(log, "health connection ended with an error"; "error" => %e);
            }
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    state: HealthState,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => match readiness(&state).await {
            Ok(role) => (StatusCode::OK, "text/plain", format!("ready: {role}\n")),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Ready when the database answers within [`READY_DB_TIMEOUT`] and the supervisor knows
/// whether it is active or a standby; the error says why not.
async fn readiness(state: &HealthState) -> Result<&'static str, String> {
    let ping = async {
        let mut conn = db::checkout(&state.pool).await?;
        db::ping(&mut conn).await
    };
    match tokio::time::timeout(READY_DB_TIMEOUT, ping).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("database unreachable: {e}")),
        Err(_) => {
            return Err(format!(
                "database unreachable: {}",
                state.pool.timed_out(READY_DB_TIMEOUT)
            ))
        }
    }
    match state.metrics.lease_role() {
        LeaseRole::Active => Ok("active"),
        LeaseRole::Standby => Ok("standby"),
        LeaseRole::Unknown => Err("lease role not known yet".to_string()),
    }
}
