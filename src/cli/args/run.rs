//! `ferry run`'s flags: the controller's settings, each with its env var for the install manifests.

use std::path::PathBuf;

use clap::Args;

use super::{duration, service_account_name};

#[derive(Args)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FERRY_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where git mirrors are kept.
    #[arg(long, env = "FERRY_STORAGE_DIR", default_value = "/tmp/ferry")]
    pub storage_dir: PathBuf,
    /// Largest download one git fetch may make, in bytes.
    #[arg(long, env = "FERRY_MAX_REPO_BYTES", default_value_t = 1 << 30)]
    pub max_repo_bytes: u64,
    /// The kustomize binary used for paths with a kustomization.
    #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
    pub kustomize: PathBuf,
    /// The helm binary used for chart paths (`helm template`) and kustomize's `helmCharts:`.
    #[arg(long, env = "FERRY_HELM", default_value = "helm")]
    pub helm: PathBuf,
    /// Accept file:// GitRepository URLs (local development only).
    #[arg(long, env = "FERRY_ALLOW_FILE_URLS")]
    pub allow_file_urls: bool,
    /// Reconciles running at once, per kind.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Client-side limit on requests per second to the API server (0: no limit). Off by default: the
    /// reconcile concurrency already bounds the load, and this limiter (tower's) costs far more throughput than
    /// its nominal rate (see docs/src/performance.md, Sync engine).
    #[arg(long, env = "FERRY_KUBE_API_QPS", default_value_t = 0)]
    pub kube_api_qps: u64,
    /// Address of the push-webhook receiver (`POST /hooks/<namespace>/<gitrepository>`).
    #[arg(long, env = "FERRY_WEBHOOK_ADDR", default_value = "0.0.0.0:9292")]
    pub webhook_addr: std::net::SocketAddr,
    /// Multi-tenant clusters: the ServiceAccount (in each Environment's own namespace) whose rights an
    /// Environment without `spec.serviceAccountName` applies with; Ferry impersonates it for every request
    /// made for that Environment. The install manifests set `default`, which has no rights until a team
    /// grants them. Without this flag such Environments apply with Ferry's own identity (single-team
    /// clusters; needs the broad role in manifests/single-tenant/).
    #[arg(long, env = "FERRY_DEFAULT_SERVICE_ACCOUNT", value_parser = service_account_name)]
    pub default_service_account: Option<String>,
    /// Refuse an Environment whose `sourceRef.namespace` names another namespace (`CrossNamespaceRef`):
    /// each team renders only its own namespace's repositories. On in the install manifests.
    #[arg(long, env = "FERRY_NO_CROSS_NAMESPACE_REFS")]
    pub no_cross_namespace_refs: bool,
    /// Accept kubeConfig Secrets that set `insecure-skip-tls-verify: true` or a `proxy-url` (refused by
    /// default: either hands the connection and its credentials to whoever sits in between).
    #[arg(long, env = "FERRY_ALLOW_INSECURE_KUBECONFIG")]
    pub allow_insecure_kubeconfig: bool,
    /// How long a request to a cluster reached through a kubeconfig Secret may take to connect, or wait
    /// without an answer, before it fails (the Environment then says `ClusterUnreachable` and retries), e.g. `30s`.
    #[arg(long, env = "FERRY_REMOTE_CLUSTER_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub remote_cluster_timeout: std::time::Duration,
    /// A registry host (`host[:port]`) reached over plain HTTP when resolving and copying images (repeat for
    /// several; default none: every registry over HTTPS). For local registries only.
    #[arg(long = "insecure-registry", env = "FERRY_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
    /// Most objects one render may produce; over it the sync stops with RenderLimitExceeded.
    #[arg(long, env = "FERRY_MAX_RENDER_OBJECTS", default_value_t = 5000)]
    pub max_render_objects: usize,
    /// Most bytes of manifests one render may read, and of YAML it may produce (kustomize output included).
    #[arg(long, env = "FERRY_MAX_RENDER_BYTES", default_value_t = 64 << 20)]
    pub max_render_bytes: u64,
    /// Bytes of renders kept in memory, shared by Environments on the same commit and path.
    #[arg(long, env = "FERRY_RENDER_CACHE_BYTES", default_value_t = 128 << 20)]
    pub render_cache_bytes: u64,
    /// Memory (private writable bytes) each process of a render may use: the render worker, kustomize, helm.
    /// Over it the render fails with RenderLimitExceeded; the controller's own memory does not move.
    #[arg(long, env = "FERRY_RENDER_MEMORY_BYTES", default_value_t = 1 << 30)]
    pub render_memory_bytes: u64,
    /// Run kustomize and helm even where the render sandbox (Landlock, seccomp) cannot be raised. Without
    /// it such paths fail with SandboxUnavailable. A config repo can then reach whatever the controller can:
    /// only for clusters whose every config repo is trusted.
    #[arg(long, env = "FERRY_INSECURE_RENDER_WITHOUT_SANDBOX")]
    pub insecure_render_without_sandbox: bool,
    /// How often an Environment nobody touched still goes through the full dry-run path, e.g. `1h` (in between,
    /// watches on the applied objects tell whether anything changed, and an unchanged sync asks nothing).
    #[arg(long, env = "FERRY_FULL_SYNC_INTERVAL", default_value = "1h", value_parser = duration)]
    pub full_sync_interval: std::time::Duration,
    /// Elect one leader among replicas with a Lease; only the leader runs the controllers (every replica
    /// serves webhooks). `--leader-elect=false` for a single local process.
    #[arg(long, env = "FERRY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferry-system")]
    pub leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "FERRY_LEADER_ELECTION_ID", default_value = "ferry-leader")]
    pub leader_election_id: String,
    /// How long a standby waits for a silent leader before taking over, e.g. `15s`.
    #[arg(long, env = "FERRY_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub leader_election_lease_duration: std::time::Duration,
    /// This process's name in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,
    /// Address of Prometheus `/metrics`.
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Address of the `/livez` and `/readyz` probes.
    #[arg(long, env = "FERRY_PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: std::net::SocketAddr,
    /// Serve the read-only web view here (off by default). Viewers sign in with a Kubernetes bearer token
    /// and see only what they may list (TokenReview and SubjectAccessReview).
    #[arg(long, env = "FERRY_UI_ADDR")]
    pub ui_addr: Option<std::net::SocketAddr>,
    /// How often an open live-update stream of the web view asks the API server again whether its viewer's
    /// token is valid and may still list the namespace's Environments; it closes when not, e.g. `30s`.
    #[arg(long, env = "FERRY_UI_ACCESS_RECHECK", default_value = "30s", value_parser = duration)]
    pub ui_access_recheck: std::time::Duration,
}
