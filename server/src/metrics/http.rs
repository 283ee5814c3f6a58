//! The metrics listener: plain HTTP/1.1, `GET /metrics` in the Prometheus text format
//! (`text/plain; version=0.0.4`), 404 for every other path.
use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

use super::Metrics;
use crate::domain::app::StPeter;

/// Binds the metrics address, naming the flag in the error.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("--metrics-listen: binding {address}"))
}

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: &'static Metrics,
    app: Arc<StPeter>,
) -> std::io::Result<()> {
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state((metrics, app));
    axum::serve(listener, router).await
}

async fn scrape(
    State((metrics, app)): State<(&'static Metrics, Arc<StPeter>)>,
) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics.scrape(&app),
    )
}

/// The address a bound listener has (port 0 resolved).
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound TCP listener has a local address")
}
