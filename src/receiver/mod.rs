//! The push-webhook receiver: `POST /hooks/<namespace>/<gitrepository>` from GitHub, GitLab, Gitea/Forgejo or
//! any caller with the token. A verified push asks every GitRepository of that namespace on the same URL (and
//! tracking the pushed ref) to fetch now, by setting `ferry.dev/reconcile-requested-at`; their Environments
//! follow through the watch. Unverified or malformed calls change nothing.

mod verify;

pub use verify::{Provider, Verdict, VerifyError, push_affects, verify};

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{GitRepository, RECONCILE_REQUESTED_AT};

/// Key of the webhook Secret holding the shared token / HMAC key.
pub const TOKEN_KEY: &str = "token";

struct ReceiverState {
    client: Client,
    /// Only this namespace is served when the controller watches one namespace.
    namespace: Option<String>,
}

pub fn router(client: Client, namespace: Option<String>) -> Router {
    Router::new()
        .route("/hooks/{namespace}/{name}", post(hook))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(ReceiverState { client, namespace }))
}

/// Serves the receiver on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(client, namespace))
        .with_graceful_shutdown(shutdown)
        .await
}

type Reply = (StatusCode, String);

async fn hook(
    State(state): State<Arc<ReceiverState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    match handle(&state, &namespace, &name, &headers, &body).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(namespace = %namespace, name = %name, error = %e, "webhook failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the API server is unavailable; retry\n".to_string(),
            )
        }
    }
}

async fn handle(
    state: &ReceiverState,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, kube::Error> {
    let not_found = || (StatusCode::NOT_FOUND, "no webhook here\n".to_string());
    if state.namespace.as_deref().is_some_and(|ns| ns != namespace) {
        return Ok(not_found());
    }
    let repos: Api<GitRepository> = Api::namespaced(state.client.clone(), namespace);
    // Unknown repos and repos without a webhook secret look the same from outside.
    let Some(repo) = repos.get_opt(name).await? else {
        return Ok(not_found());
    };
    let Some(secret_ref) = &repo.spec.webhook_secret_ref else {
        return Ok(not_found());
    };
    let secrets: Api<Secret> = Api::namespaced(state.client.clone(), namespace);
    let token = secrets
        .get_opt(&secret_ref.name)
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(TOKEN_KEY))
        .map(|b| b.0);
    let Some(token) = token else {
        tracing::warn!(namespace, name, secret = %secret_ref.name, "webhook Secret or its key \"token\" is missing");
        return Ok((StatusCode::UNAUTHORIZED, "unauthorized\n".to_string()));
    };
    let pushed_ref = match verify(headers, body, &token) {
        Err(VerifyError::Unauthorized) => {
            tracing::warn!(namespace, name, "webhook rejected: bad signature or token");
            return Ok((StatusCode::UNAUTHORIZED, "unauthorized\n".to_string()));
        }
        Err(e @ VerifyError::Malformed(_)) => return Ok((StatusCode::BAD_REQUEST, format!("{e}\n"))),
        Ok(Verdict::Ignore(why)) => return Ok((StatusCode::OK, format!("{why}\n"))),
        Ok(Verdict::Push { pushed_ref }) => pushed_ref,
    };

    let requested_at = Timestamp::now().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: requested_at}}});
    let mut triggered = Vec::new();
    for other in repos.list(&Default::default()).await?.items {
        if other.spec.url != repo.spec.url || !push_affects(&other.spec.effective_ref(), pushed_ref.as_deref()) {
            continue;
        }
        let other_name = other.name_any();
        repos
            .patch(&other_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        triggered.push(other_name);
    }
    tracing::info!(
        namespace,
        name,
        pushed_ref = pushed_ref.as_deref().unwrap_or("?"),
        ?triggered,
        "push received"
    );
    Ok((StatusCode::ACCEPTED, format!("triggered: {}\n", triggered.join(", "))))
}
