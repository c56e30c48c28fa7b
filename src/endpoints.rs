//! The operator's own HTTP endpoints: Prometheus `/metrics` on the metrics address, `/livez` and `/readyz` on the
//! probe address (the webhook receiver has its own, in [`crate::receiver`]).
//!
//! Ready means: a standby (leader election on, not leading) is ready as soon as it serves, since its webhook
//! receiver works; the leader, or a process without leader election, once its controllers' caches have synced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controllers::Context;

/// What the probes and metrics look at.
pub struct Process {
    pub ctx: Arc<Context>,
    /// This process runs the controllers (holds the lease, or runs without leader election).
    pub leading: AtomicBool,
}

impl Process {
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Process {
            ctx,
            leading: AtomicBool::new(false),
        })
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
        crate::metrics::metrics().set_leader(leading);
    }

    fn ready(&self) -> bool {
        !self.leading.load(Ordering::Relaxed) || self.ctx.synced()
    }
}

pub fn probes(process: Arc<Process>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(process)
}

pub fn metrics(process: Arc<Process>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(process)
}

/// The body's second line says which render sandbox holds (see `render::sandbox`): an unavailable sandbox does
/// not make the process unready (plain YAML still renders), it is shown here, in the log and in the
/// `ferry_render_sandbox` metric.
async fn readyz(State(process): State<Arc<Process>>) -> (StatusCode, String) {
    let sandbox = match crate::render::sandbox::last_walls() {
        Some(walls) => walls.summary(),
        None => "not probed yet".to_string(),
    };
    if process.ready() {
        (StatusCode::OK, format!("ok\nrender sandbox: {sandbox}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("caches not synced yet\nrender sandbox: {sandbox}\n"),
        )
    }
}

async fn scrape(State(process): State<Arc<Process>>) -> impl IntoResponse {
    let text = crate::metrics::metrics().encode(process.ctx.ready_states());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
