//! The push-webhook receiver: `POST /hooks/<namespace>/<gitrepository>` from GitHub, GitLab, Gitea/Forgejo or
//! any caller with the token. A verified push asks every GitRepository of that namespace on the same URL (and
//! tracking the pushed ref) to fetch now, by setting `ferry.dev/reconcile-requested-at`; their Environments
//! follow through the watch. Unverified or malformed calls change nothing, bodies over [`MAX_BODY_BYTES`] are
//! not read, and every refusal gets the same answer ([`REFUSED_STATUS`], [`REFUSED_BODY`]).

mod verify;

pub use verify::{Provider, Verdict, VerifyError, push_affects, verify};

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{GitRepository, RECONCILE_REQUESTED_AT};
use crate::cluster::{Clusters, Target};
use crate::secrets::{Readers, SecretError};

/// Key of the webhook Secret holding the shared token / HMAC key.
pub const TOKEN_KEY: &str = "token";

/// Largest request body the receiver reads (1 MiB); a longer one gets 413 before any lookup or verification.
/// The body is buffered whole before its signature can be checked, so without a bound any caller, verified
/// or not, could make the receiver hold arbitrary amounts of memory. Push payloads are far smaller (GitHub and
/// GitLab list at most 20 commits in one).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The one answer to every call the receiver cannot act on for want of proof: no such namespace served, no
/// such GitRepository, no webhook configured, a missing or empty token, a bad signature. Giving them all the
/// same status and body means a caller without the token learns nothing about which repositories exist.
pub const REFUSED_STATUS: StatusCode = StatusCode::NOT_FOUND;
/// The body of [`REFUSED_STATUS`] answers.
pub const REFUSED_BODY: &str = "no such webhook, or a bad signature or token\n";

/// Why a call was refused. Only the receiver's log says which (callers all get [`REFUSED_BODY`]), and never
/// with the token or signature in it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("namespace not served by this receiver")]
    NamespaceNotServed,
    #[error("no such GitRepository")]
    UnknownRepository,
    #[error("the GitRepository has no webhookSecretRef")]
    NoWebhook,
    #[error("webhook Secret {0:?} or its key \"token\" is missing")]
    SecretMissing(String),
    /// The GitRepository's ServiceAccount may not read the webhook Secret (or cannot be acted as).
    #[error("webhook Secret: {0}")]
    SecretForbidden(String),
    #[error("webhook Secret {0:?} has an empty \"token\" (an empty key would let anyone sign)")]
    EmptySecret(String),
    #[error("bad or missing signature or token")]
    BadSignature,
}

/// What stops a call short of triggering.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// The identities the receiver acts with: Ferry's own client (reading GitRepositories, asking for a fetch),
/// what it was built from (the base of the clients that impersonate ServiceAccounts), and the ServiceAccount
/// whose rights the webhook Secret of a GitRepository naming none is read with (`--default-service-account`;
/// `None`: Ferry's own).
#[derive(Clone)]
pub struct Identity {
    pub client: Client,
    pub config: kube::Config,
    pub default_service_account: Option<String>,
}

struct ReceiverState {
    client: Client,
    /// Impersonating clients, one per ServiceAccount: each GitRepository's webhook Secret is read as its account.
    clusters: Clusters,
    local: Target,
    default_service_account: Option<String>,
    /// Only this namespace is served when the controller watches one namespace.
    namespace: Option<String>,
}

impl ReceiverState {
    fn readers(&self) -> Readers<'_> {
        Readers::Accounts {
            clusters: &self.clusters,
            local: &self.local,
            default_account: self.default_service_account.as_deref(),
        }
    }
}

pub fn router(identity: Identity, namespace: Option<String>) -> Router {
    let state = ReceiverState {
        local: Target::new(identity.client.clone()),
        clusters: Clusters::new(identity.config, false),
        client: identity.client,
        default_service_account: identity.default_service_account,
        namespace,
    };
    Router::new()
        .route("/hooks/{namespace}/{name}", post(hook))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(state))
}

/// Serves the receiver on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: Identity,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(identity, namespace))
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
    let reply = answer(&state, &namespace, &name, &headers, &body).await;
    let result = match reply.0 {
        s if s.is_success() => "accepted",
        REFUSED_STATUS => "refused",
        StatusCode::SERVICE_UNAVAILABLE => "error",
        _ => "invalid",
    };
    crate::metrics::metrics().webhook_request(result);
    reply
}

async fn answer(state: &ReceiverState, namespace: &str, name: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
    match handle(state, namespace, name, headers, body).await {
        Ok(reply) => reply,
        Err(HookError::Refused(why)) => {
            tracing::warn!(namespace = %namespace, name = %name, reason = %why, "webhook refused");
            (REFUSED_STATUS, REFUSED_BODY.to_string())
        }
        Err(e @ HookError::Kube(_)) => {
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
) -> Result<Reply, HookError> {
    if state.namespace.as_deref().is_some_and(|ns| ns != namespace) {
        return Err(Refusal::NamespaceNotServed.into());
    }
    let repos: Api<GitRepository> = Api::namespaced(state.client.clone(), namespace);
    let repo = repos.get_opt(name).await?.ok_or(Refusal::UnknownRepository)?;
    let secret_ref = repo.spec.webhook_secret_ref.as_ref().ok_or(Refusal::NoWebhook)?;
    // Read as the GitRepository's ServiceAccount: naming a Secret there does not make Ferry use it for anyone.
    let reader = state
        .readers()
        .for_repository(&repo)
        .map_err(|e| Refusal::SecretForbidden(e.to_string()))?;
    let token = match reader.get(namespace, &secret_ref.name).await {
        Ok(secret) => secret,
        Err(SecretError::Forbidden(message)) => return Err(Refusal::SecretForbidden(message).into()),
        Err(SecretError::Api(e)) => return Err(e.into()),
    }
    .and_then(|s| s.data)
    .and_then(|mut d| d.remove(TOKEN_KEY))
    .map(|b| b.0)
    .ok_or_else(|| Refusal::SecretMissing(secret_ref.name.clone()))?;
    if token.is_empty() {
        return Err(Refusal::EmptySecret(secret_ref.name.clone()).into());
    }
    // Malformed payloads are only reported once the call is verified, so they say nothing to outsiders either.
    let pushed_ref = match verify(headers, body, &token) {
        Err(VerifyError::Unauthorized) => return Err(Refusal::BadSignature.into()),
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
