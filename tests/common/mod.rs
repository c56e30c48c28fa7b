//! Shared integration-test support: one real control plane and one `git daemon` per test binary, one namespace,
//! one git repository and one controller instance per test.
#![allow(dead_code, unused_imports)]

pub mod faulty;
pub mod ferry_run;
pub mod fixtures;
pub mod git;
pub mod git_http;
pub mod http;
pub mod registry;
pub mod sshd;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::api::{Environment, GitRepository};
use ferry::controllers::{self, Context, Scope, Settings};
use ferry_testenv::{ControlPlane, Options, bin_dir_from_env_or_build};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

pub use faulty::{Fault, FaultyProxy};
pub use ferry_run::{FerryRun, deployment_args, start_ferry_run};
pub use fixtures::*;
pub use git::{GitDaemon, GitRepo};
pub use git_http::{GitHttpServer, HttpAuth};
pub use http::{http_post, http_post_chunked};
pub use sshd::Sshd;

/// How long any condition may take before a test fails; generous for a loaded 2-core CI machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

struct Shared {
    bin_dir: PathBuf,
    cp: ControlPlane,
    git: GitDaemon,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();

/// The binary's control plane; the first caller decides whether it runs workloads (controller-manager,
/// scheduler, kwok), so a test binary uses one kind of TestEnv throughout.
async fn shared(workloads: bool) -> &'static Shared {
    SHARED
        .get_or_init(|| async move {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let bin_dir = bin_dir_from_env_or_build(&root).expect("control-plane binaries");
            let cp = ControlPlane::start(Options {
                bin_dir: bin_dir.clone(),
                workloads,
                dir: None,
            })
            .await
            .expect("starting the local control plane");
            ferry_testenv::install_crds(&cp.client().await.expect("client"))
                .await
                .expect("installing CRDs");
            let git = GitDaemon::start().expect("starting git daemon");
            Shared { bin_dir, cp, git }
        })
        .await
}

/// One test's world: a fresh namespace, a git repo served by the shared daemon, and a controller for that
/// namespace only (so parallel tests never see each other's objects).
pub struct TestEnv {
    pub client: Client,
    pub namespace: String,
    pub repo: GitRepo,
    pub kubeconfig: PathBuf,
    /// Where kustomize, kubectl and the control-plane binaries are.
    pub bin_dir: PathBuf,
    /// The control plane's audit log (mutating requests only).
    pub audit_log: PathBuf,
    /// Root of the shared git daemon: serve it over HTTP or SSH too.
    pub git_root: PathBuf,
    /// `http://127.0.0.1:<port>` of this test's webhook receiver.
    pub webhook_base: String,
    receiver: tokio::task::JoinHandle<std::io::Result<()>>,
    controller: tokio::task::JoinHandle<()>,
    /// The running controller's context (its caches, records and watches).
    context: Option<Arc<Context>>,
    settings: Settings,
    /// The controller's connection settings.
    config: kube::Config,
    control_plane: &'static ControlPlane,
    _storage: tempfile::TempDir,
}

impl TestEnv {
    pub async fn new(name: &str) -> TestEnv {
        Self::build(name, false, |_| {}).await
    }

    /// A TestEnv on a control plane that runs workloads: Deployments become Available and Jobs finish on
    /// kwok's simulated node (pods labelled `ferry.dev/kwok-outcome: fail` fail).
    pub async fn with_workloads(name: &str) -> TestEnv {
        Self::build(name, true, |_| {}).await
    }

    /// A TestEnv that runs workloads, with adjusted operator settings.
    pub async fn with_workloads_and_settings(name: &str, adjust: impl FnOnce(&mut Settings)) -> TestEnv {
        Self::build(name, true, adjust).await
    }

    /// A TestEnv whose controller runs with adjusted operator settings.
    pub async fn with_settings(name: &str, adjust: impl FnOnce(&mut Settings)) -> TestEnv {
        Self::build(name, false, adjust).await
    }

    /// A TestEnv as the install manifests run Ferry: the controller and the webhook receiver authenticate as
    /// the `ferry` ServiceAccount with only the rights `manifests/rbac.yaml` gives it (a token from a
    /// TokenRequest), and run locked down as `manifests/deployment.yaml` says (`--default-service-account
    /// default --no-cross-namespace-refs`), then `adjust`. The test's own `client` stays the admin's.
    pub async fn installed(name: &str, adjust: impl FnOnce(&mut Settings)) -> TestEnv {
        Self::build_as(name, false, Identity::Installed, |s| {
            s.default_service_account = Some("default".into());
            s.no_cross_namespace_refs = true;
            adjust(s);
        })
        .await
    }

    /// A TestEnv with no controller and no webhook receiver: for tests that run `ferry run` processes.
    pub async fn without_controller(name: &str) -> TestEnv {
        Self::build_as(name, false, Identity::NoController, |_| {}).await
    }

    /// A TestEnv with no controller and no webhook receiver, on a control plane that runs workloads (Jobs
    /// finish on kwok's simulated node): for tests that run `ferry run` processes with verification Jobs.
    pub async fn without_controller_with_workloads(name: &str) -> TestEnv {
        Self::build_as(name, true, Identity::NoController, |_| {}).await
    }

    /// A kubeconfig file holding a token of the install manifests' `ferry` ServiceAccount (applying the
    /// manifests' RBAC first): what `ferry run` as installed authenticates with.
    pub async fn installed_kubeconfig(&self) -> PathBuf {
        let token = installed_token(&self.client).await;
        let text = self.control_plane.kubeconfig_with_token(&token).expect("kubeconfig");
        let path = self._storage.path().join("ferry-installed.kubeconfig");
        std::fs::write(&path, text).expect("writing kubeconfig");
        path
    }

    async fn build(name: &str, workloads: bool, adjust: impl FnOnce(&mut Settings)) -> TestEnv {
        Self::build_as(name, workloads, Identity::Admin, adjust).await
    }

    async fn build_as(name: &str, workloads: bool, identity: Identity, adjust: impl FnOnce(&mut Settings)) -> TestEnv {
        // FERRY_TEST_LOG=ferry=debug shows the controllers' logs for a failing test.
        if let Ok(filter) = std::env::var("FERRY_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let shared = shared(workloads).await;
        let client = shared.cp.client().await.expect("client");
        let namespace = format!("{name}-{:x}", std::process::id() as u64 * 1000 + rand_small());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).expect("ns");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating namespace");
        let repo = shared.git.create_repo(&namespace).expect("creating git repo");
        let storage = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::new(storage.path());
        settings.render.kustomize = shared.bin_dir.join("kustomize");
        settings.render.helm = shared.bin_dir.join("helm");
        // Every render of the integration tests goes through the confined worker, as in `ferry run`.
        settings.render.sandbox = ferry::render::Sandbox::Worker(ferry::render::WorkerSettings {
            program: env!("CARGO_BIN_EXE_ferry").into(),
            limits: Default::default(),
            allow_unconfined: false,
        });
        adjust(&mut settings);
        let config = match identity {
            Identity::Admin | Identity::NoController => shared.cp.config().await.expect("config"),
            Identity::Installed => {
                let token = installed_token(&client).await;
                shared
                    .cp
                    .config_with_token(&token)
                    .await
                    .expect("config with the ferry token")
            }
        };
        let controller_client = Client::try_from(config.clone()).expect("controller client");
        let (controller, context) = match identity {
            Identity::NoController => (tokio::spawn(async {}), None),
            _ => {
                let (task, ctx) = spawn_controller(&controller_client, &config, &namespace, &settings);
                (task, Some(ctx))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let webhook_base = format!("http://{}", listener.local_addr().expect("addr"));
        let receiver = match identity {
            Identity::NoController => tokio::spawn(async { Ok(()) }),
            _ => tokio::spawn(ferry::receiver::serve(
                listener,
                ferry::receiver::Identity {
                    client: controller_client.clone(),
                    config: config.clone(),
                    default_service_account: settings.default_service_account.clone(),
                },
                Some(namespace.clone()),
                std::future::pending(),
            )),
        };
        TestEnv {
            client,
            namespace,
            repo,
            kubeconfig: shared.cp.kubeconfig.clone(),
            git_root: shared.git.base.path().to_path_buf(),
            audit_log: shared.cp.audit_log(),
            bin_dir: shared.bin_dir.clone(),
            webhook_base,
            receiver,
            controller,
            context,
            settings,
            config,
            control_plane: &shared.cp,
            _storage: storage,
        }
    }

    /// The controller's storage directory (mirrors, exported trees).
    pub fn storage_dir(&self) -> &std::path::Path {
        self._storage.path()
    }

    /// A kubeconfig for this control plane that works from a Secret (an Environment's `kubeConfig`).
    pub fn kubeconfig_self_contained(&self) -> String {
        self.control_plane.kubeconfig_self_contained().expect("kubeconfig")
    }

    /// A client for a user with no rights of its own (`alice`, `bob`): for RBAC tests.
    pub async fn client_as(&self, user: &str) -> Client {
        self.control_plane.client_as(user).await.expect("test user client")
    }

    /// Kills the controller mid-whatever it is doing (as a crash or a rollout would) and starts a fresh one
    /// with nothing in memory but the same storage directory.
    pub fn restart_controller(&mut self) {
        self.controller.abort();
        let client = Client::try_from(self.config.clone()).expect("controller client");
        let (task, ctx) = spawn_controller(&client, &self.config, &self.namespace, &self.settings);
        self.controller = task;
        self.context = Some(ctx);
    }

    /// The running controller's context.
    pub fn context(&self) -> &Context {
        self.context.as_deref().expect("a TestEnv with a controller")
    }

    /// Stops the controller (as a crash would), for tests that look at a hand-made change Ferry would revert.
    pub fn stop_controller(&mut self) {
        self.controller.abort();
        self.context = None;
    }

    /// Asks for a reconcile of Environment `env` and waits until it says it handled it: proof a reconcile ran.
    pub async fn reconciled(&self, env: &str, token: &str) {
        let request = serde_json::json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": token}}});
        self.api::<Environment>()
            .patch(env, &PatchParams::default(), &Patch::Merge(&request))
            .await
            .expect("reconcile request");
        wait_for(&self.api::<Environment>(), env, |e: &Environment| {
            e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(token)
        })
        .await;
    }

    /// Server-side applies one object (JSON, as a manifest) as the admin, in this test's namespace when it is
    /// namespaced: fixtures such as ServiceAccounts, Roles and bindings.
    pub async fn apply_json(&self, o: &serde_json::Value) {
        let (group, version) = o["apiVersion"]
            .as_str()
            .and_then(|v| v.rsplit_once('/'))
            .unwrap_or(("", "v1"));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, o["kind"].as_str().unwrap_or_default());
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .expect("kind served");
        let api: Api<kube::api::DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(self.client.clone(), &self.namespace, &ar),
            kube::discovery::Scope::Cluster => Api::all_with(self.client.clone(), &ar),
        };
        api.patch(
            o["metadata"]["name"].as_str().unwrap_or_default(),
            &PatchParams::apply("ferry-tests").force(),
            &Patch::Apply(o),
        )
        .await
        .expect("applying a test fixture");
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a GitRepository from a spec given as JSON.
    pub async fn create_gitrepo(&self, name: &str, spec: serde_json::Value) -> GitRepository {
        self.create_ferry_object("GitRepository", name, spec).await
    }

    /// Creates an Environment from a spec given as JSON.
    pub async fn create_env(&self, name: &str, spec: serde_json::Value) -> Environment {
        self.create_ferry_object("Environment", name, spec).await
    }

    /// Creates a `ferry.dev/v1alpha1` object of `kind` named `name` in this namespace from a spec given as JSON.
    async fn create_ferry_object<K>(&self, kind: &str, name: &str, spec: serde_json::Value) -> K
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
    {
        let obj: K = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"))
    }

    /// Creates a Secret with string data.
    pub async fn create_secret(&self, name: &str, data: &[(&str, &str)]) {
        let string_data: std::collections::BTreeMap<String, String> =
            data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            string_data: Some(string_data),
            ..Default::default()
        };
        self.api::<k8s_openapi::api::core::v1::Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .expect("creating Secret");
    }

    /// Waits until an Event of `type_` and `reason` exists for `name` (events are written after status, so a
    /// test that just saw the status may be a moment early); returns every (type, reason, note) for `name`.
    pub async fn wait_event(&self, name: &str, type_: &str, reason: &str) -> Vec<(String, String, String)> {
        eventually(&format!("{type_} event {reason} for {name}"), || async {
            let events = self.events(name).await;
            events
                .iter()
                .any(|(t, r, _)| t == type_ && r == reason)
                .then_some(events)
        })
        .await
    }

    /// (type, reason, note) of the Events recorded for the object `name` in this namespace.
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        events
            .list(&Default::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// Who the controller runs as.
enum Identity {
    /// The control plane's admin (system:masters).
    Admin,
    /// The install manifests' `ferry` ServiceAccount.
    Installed,
    /// No controller in the test process.
    NoController,
}

static INSTALLED: OnceCell<String> = OnceCell::const_new();

/// Applies the install manifests' Namespace and RBAC (once per control plane) and returns a token of their
/// `ferry` ServiceAccount, so a missing rule in `manifests/rbac.yaml` fails tests.
async fn installed_token(admin: &Client) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let token = INSTALLED
        .get_or_init(|| async {
            apply_files(admin, &["manifests/namespace.yaml", "manifests/rbac.yaml"]).await;
            let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "ferry-system");
            let request: TokenRequest =
                serde_json::from_value(serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 7200}}))
                    .expect("token request");
            let issued: TokenRequest = accounts
                .create_subresource("token", "ferry", &PostParams::default(), &request)
                .await
                .expect("a token of the ferry ServiceAccount");
            issued.status.and_then(|s| s.token).expect("token issued")
        })
        .await;
    token.clone()
}

/// Server-side applies every object of the repository's YAML `files` as the admin.
pub async fn apply_files(admin: &Client, files: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<ferry::source::ManifestFile> = files
        .iter()
        .map(|f| ferry::source::ManifestFile {
            path: f.to_string(),
            content: std::fs::read(root.join(f)).expect("manifest file"),
        })
        .collect();
    for o in ferry::render::render_plain(&files).expect("manifests parse") {
        let (group, version) = o.api_version().rsplit_once('/').unwrap_or(("", o.api_version()));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, o.kind());
        let (ar, caps) = kube::discovery::pinned_kind(admin, &gvk).await.expect("kind served");
        let api: Api<kube::api::DynamicObject> = match (caps.scope, o.namespace()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(admin.clone(), ns, &ar),
            _ => Api::all_with(admin.clone(), &ar),
        };
        api.patch(
            o.name(),
            &PatchParams::apply("ferry-tests").force(),
            &Patch::Apply(&o.object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {}: {e}", o.kind(), o.name()));
    }
}

fn spawn_controller(
    client: &Client,
    config: &kube::Config,
    namespace: &str,
    settings: &Settings,
) -> (tokio::task::JoinHandle<()>, Arc<Context>) {
    let ctx = Arc::new(Context::new(client.clone(), config.clone(), settings.clone()));
    let scope = Scope {
        namespace: Some(namespace.to_string()),
    };
    let task = tokio::spawn(controllers::run(ctx.clone(), scope, std::future::pending()));
    (task, ctx)
}

static SECOND: OnceCell<ControlPlane> = OnceCell::const_new();

/// A second control plane with workloads, for Environments that target another cluster. Started once per
/// test binary, on first use.
pub async fn second_cluster() -> &'static ControlPlane {
    SECOND
        .get_or_init(|| async {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let bin_dir = bin_dir_from_env_or_build(&root).expect("control-plane binaries");
            ControlPlane::start(Options {
                bin_dir,
                workloads: true,
                dir: None,
            })
            .await
            .expect("starting the second control plane")
        })
        .await
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.controller.abort();
        self.receiver.abort();
    }
}

fn rand_small() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Mutating requests in `namespace` from the audit log: (verb, requestURI, dry run?).
pub fn audited_writes(audit_log: &std::path::Path, namespace: &str) -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .filter_map(|e| {
            let verb = e["verb"].as_str()?.to_string();
            let uri = e["requestURI"].as_str()?.to_string();
            Some((verb, uri.clone(), uri.contains("dryRun=All")))
        })
        .collect()
}

/// The creates of `resource` (e.g. `jobs`) in `namespace` that the API server carried out (201), not dry runs
/// and not refusals such as 409 AlreadyExists: the name of each object created, in order.
pub fn audited_creates(audit_log: &std::path::Path, namespace: &str, resource: &str) -> Vec<String> {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["objectRef"]["namespace"] == namespace
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"].is_null()
                && e["verb"] == "create"
                && e["responseStatus"]["code"] == 201
                && !e["requestURI"].as_str().unwrap_or_default().contains("dryRun=All")
        })
        .map(|e| e["objectRef"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls `name` until `cond` holds, failing the test with the last seen object at the deadline.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, cond: F) -> K
where
    K: Clone + DeserializeOwned + Debug,
    F: Fn(&K) -> bool,
{
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Ok(Some(obj)) = api.get_opt(name).await {
            if cond(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        if Instant::now() > deadline {
            panic!("condition on {name} not met within {DEADLINE:?}; last seen: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until `probe` returns `Some`, failing the test at the deadline with `what`.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Ready condition's (status, reason, message).
pub fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn env_ready(env: &Environment) -> Option<(String, String, String)> {
    env.status.as_ref().and_then(|s| ready_of(&s.conditions))
}

pub fn repo_ready(repo: &GitRepository) -> Option<(String, String, String)> {
    repo.status.as_ref().and_then(|s| ready_of(&s.conditions))
}
