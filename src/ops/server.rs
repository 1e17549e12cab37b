//! The ops HTTP listener: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::internal_events::OpsListenerFailed;
use super::{Health, Metrics};

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Binds `listen` and serves until `shutdown`. Returns the bound address.
pub async fn spawn(
    listen: &str,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(OpsState { metrics, health });
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            OpsListenerFailed {
                error: &e.to_string(),
            }
            .emit();
        }
    });
    Ok(addr)
}

async fn metrics_handler(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<OpsState>) -> impl IntoResponse {
    match s.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: {why}\n"),
        ),
    }
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(degraded) if degraded.is_empty() => (StatusCode::OK, "ready\n".to_string()),
        // Tenants that are down do not stop the others: ready, and said.
        Ok(degraded) => (
            StatusCode::OK,
            format!("ready, degraded:\n{}\n", degraded.join("\n")),
        ),
        Err(causes) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", causes.join("\n")),
        ),
    }
}
