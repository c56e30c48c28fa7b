//! What the pages show, read from the cluster: Ferry's kinds from watch-fed caches (the same watches feed the
//! live updates), Events, live objects for health, commits from the repository mirror, and dry-run diffs.
//!
//! The UI runs its own watches rather than borrowing the controllers' caches: a standby replica (no leader
//! lease, no controllers) serves the UI too.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::auth::{Access, Authorizer, Viewer};
use super::pages::{Cell, Commit, Commits, DiffItem, Live, needs_secret};
use super::redact::Redactor;
use crate::api::{Environment, GitRepository, InventoryEntry, Promotion};
use crate::cli::{CliError, DiffError, EventRow};
use crate::cluster::Target;
use crate::controllers::Context;
use crate::render::RenderSettings;
use crate::secrets::{Readers, SecretReader};
use crate::source::{FetchOptions, MirrorStore, Revision};

pub const GROUP: &str = crate::api::GROUP;
/// Longest wait for the caches' first list before a page renders with what there is.
const CACHE_WAIT: Duration = Duration::from_secs(10);
/// A repository missing a commit is fetched again at most this often (local mode).
const REFETCH_AFTER: Duration = Duration::from_secs(60);
/// Live objects read at once for one inventory tree.
const HEALTH_READS: usize = 8;
/// Diffs computed at once (each fetches, renders and dry-runs): page loads cannot pile up work on the server.
const DIFFS_AT_ONCE: usize = 2;

/// Whether a viewer may see an Environment's live objects (health, images, diffs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveView {
    /// This cluster (per-object `get` reviews decide), or another cluster whose kubeconfig Secret the viewer
    /// may `get`.
    Shown,
    /// Another cluster, reached with a kubeconfig Secret (`namespace/name`) the viewer may not `get`.
    NeedsSecret(String),
}

/// Something in a namespace changed (an empty namespace: maybe anything, refresh).
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub namespace: String,
    /// `Kind/name`.
    pub object: String,
}

/// Where Environments' objects are read from.
pub enum Backend {
    /// `ferry ui`: with the caller's kubeconfig (`config`), as `ferry tree` and `ferry diff` do.
    Local { config: Box<kube::Config> },
    /// `ferry run --ui-addr`: with the identity the controller applies each Environment with.
    Cluster { ctx: Arc<Context> },
}

/// (apiVersion, kind) → (group, plural), or None when the kind is not served.
type Plurals = HashMap<(String, String), Option<(String, String)>>;

pub struct Data {
    client: Client,
    backend: Backend,
    render: RenderSettings,
    envs: Store<Environment>,
    promotions: Store<Promotion>,
    repos: Store<GitRepository>,
    pub changes: broadcast::Sender<Change>,
    pub auth: Authorizer,
    mirrors: MirrorStore,
    /// Fetch repositories to learn about commits (local mode); in the cluster the controller's mirrors are read.
    fetch: bool,
    commits: Mutex<HashMap<(String, String), Commit>>,
    fetched: Mutex<HashMap<String, Instant>>,
    /// Discovery: (apiVersion, kind) → (group, plural), for access reviews of live objects.
    plurals: Mutex<Plurals>,
    diffs: tokio::sync::Semaphore,
    _mirror_dir: Option<tempfile::TempDir>,
}

impl Data {
    /// Starts the watches (all namespaces, or `scope`) and returns at once; pages wait for the first list.
    pub fn start(client: Client, backend: Backend, scope: Option<&str>) -> std::io::Result<Data> {
        let (changes, _) = broadcast::channel(256);
        let (render, mirrors, fetch, dir) = match &backend {
            Backend::Cluster { ctx } => (ctx.settings.render.clone(), ctx.mirrors.clone(), false, None),
            Backend::Local { .. } => {
                let dir = tempfile::tempdir()?;
                let render = RenderSettings {
                    kustomize: std::env::var_os("FERRY_KUSTOMIZE")
                        .map(Into::into)
                        .unwrap_or_else(|| "kustomize".into()),
                    // `ferry ui` renders in the same sandbox as the controller.
                    sandbox: crate::render::Sandbox::Worker(crate::render::WorkerSettings::this_binary()?),
                    ..crate::controllers::Settings::new(dir.path()).render
                };
                (render, MirrorStore::new(dir.path()), true, Some(dir))
            }
        };
        let api = |c: &Client| match scope {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
        };
        let (envs, promotions, repos) = api(&client);
        Ok(Data {
            envs: watch(envs, changes.clone()),
            promotions: watch(promotions, changes.clone()),
            repos: watch(repos, changes.clone()),
            auth: Authorizer::new(client.clone()),
            client,
            backend,
            render,
            changes,
            mirrors,
            fetch,
            commits: Mutex::default(),
            fetched: Mutex::default(),
            plurals: Mutex::default(),
            diffs: tokio::sync::Semaphore::new(DIFFS_AT_ONCE),
            _mirror_dir: dir,
        })
    }

    /// Every Environment in the cache.
    pub async fn envs(&self) -> Vec<Environment> {
        snapshot(&self.envs).await
    }

    pub async fn envs_in(&self, ns: &str) -> Vec<Environment> {
        let mut v: Vec<Environment> = snapshot(&self.envs)
            .await
            .into_iter()
            .filter(|e| e.namespace().as_deref() == Some(ns))
            .collect();
        v.sort_by_key(|e| e.name_any());
        v
    }

    pub async fn promotions_in(&self, ns: &str) -> Vec<Promotion> {
        snapshot(&self.promotions)
            .await
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns))
            .collect()
    }

    /// Ferry's Events about `name` in `ns`, oldest first.
    pub async fn events(&self, ns: &str, name: &str) -> Result<Vec<EventRow>, CliError> {
        crate::cli::events(&self.client, ns, Some(name)).await
    }

    /// Where `env` applies, as the controller (cluster) or the CLI (local) reaches it.
    async fn target(&self, env: &Environment) -> Result<Target, CliError> {
        target_of(&self.backend, &self.client, env).await
    }

    /// The group and plural of a kind, from discovery (None: not served here).
    async fn plural(&self, api_version: &str, kind: &str) -> Option<(String, String)> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(hit) = lock(&self.plurals).get(&key) {
            return hit.clone();
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .ok()
            .map(|(ar, _)| (ar.group, ar.plural));
        lock(&self.plurals).insert(key, found.clone());
        found
    }

    /// May `viewer` `get` the object `api_version`/`kind` in `namespace`?
    async fn may_get(&self, viewer: &Viewer, api_version: &str, kind: &str, namespace: Option<&str>) -> bool {
        if matches!(viewer, Viewer::Local) {
            return true;
        }
        let Some((group, resource)) = self.plural(api_version, kind).await else {
            return false;
        };
        let access = Access {
            verb: "get",
            group,
            resource,
            namespace: namespace.map(str::to_string),
            name: None,
        };
        self.auth.allowed(viewer, &access).await.unwrap_or(false)
    }

    /// Whether `viewer` may see what `env`'s target cluster says. Another cluster is reached with the
    /// kubeconfig in the Environment's Secret, so what Ferry reads there is the viewer's to see only if the
    /// Secret is: `get` on it, the same right `kubectl` would need to look for themselves.
    pub async fn live_view(&self, viewer: &Viewer, env: &Environment) -> LiveView {
        let Some(kube_config) = &env.spec.kube_config else {
            return LiveView::Shown;
        };
        let ns = env.namespace().unwrap_or_default();
        let secret = &kube_config.secret_ref.name;
        let access = Access::get_secret(&ns, secret);
        match self.auth.allowed(viewer, &access).await {
            Ok(true) => LiveView::Shown,
            // Unanswered counts as refused: a wrong answer may only hide.
            Ok(false) | Err(_) => LiveView::NeedsSecret(format!("{ns}/{secret}")),
        }
    }

    /// What must be cut from the messages shown to `viewer` among `envs` (a namespace's Environments): the
    /// servers of the kubeconfig Secrets they may not `get` ([`Redactor`]).
    pub async fn redactor(&self, viewer: &Viewer, envs: &[Environment]) -> Redactor {
        let mut hidden = false;
        let mut servers = Vec::new();
        for env in envs {
            if let LiveView::NeedsSecret(_) = self.live_view(viewer, env).await {
                hidden = true;
                // Ferry's own read of the Secret (cached per version): where the messages would point.
                if let Ok(Target { remote: Some(r), .. }) = self.target(env).await {
                    servers.push(r.server);
                }
            }
        }
        if hidden {
            Redactor::hiding(servers)
        } else {
            Redactor::none()
        }
    }

    /// The inventory with each object's health, for what the viewer may read.
    pub async fn tree(&self, viewer: &Viewer, env: &Environment) -> Vec<(InventoryEntry, Live)> {
        let inventory = env.status.as_ref().map(|s| s.inventory.clone()).unwrap_or_default();
        let target = self.target(env).await;
        futures::stream::iter(inventory)
            .map(|entry| {
                let target = &target;
                async move {
                    if !self
                        .may_get(viewer, &entry.api_version, &entry.kind, entry.namespace.as_deref())
                        .await
                    {
                        let hidden = Live {
                            cell: Cell::Hidden,
                            images: Vec::new(),
                        };
                        return (entry, hidden);
                    }
                    let (cell, images) = match target {
                        Err(e) => (Cell::Error(e.to_string()), Vec::new()),
                        Ok(t) => match t.applier.get(&entry).await {
                            Ok(Some(live)) => (Cell::Health(crate::health::assess(&live)), super::pages::images(&live)),
                            Ok(None) => (Cell::NotFound, Vec::new()),
                            Err(e) => (Cell::Error(e.to_string()), Vec::new()),
                        },
                    };
                    (entry, Live { cell, images })
                }
            })
            .buffered(HEALTH_READS)
            .collect()
            .await
    }

    /// The dry-run diff of promotion `p`'s revision into its Environment, masked, for what the viewer may read.
    pub async fn diff(&self, viewer: &Viewer, p: &Promotion) -> Result<Vec<DiffItem>, DiffError> {
        let ns = p.namespace().unwrap_or_default();
        let env_name = &p.spec.environment;
        let env = self
            .envs_in(&ns)
            .await
            .into_iter()
            .find(|e| &e.name_any() == env_name)
            .ok_or_else(|| DiffError::NoRevision(format!("Environment {env_name} not found")))?;
        // The dry run compares with the live objects of the target cluster.
        if let LiveView::NeedsSecret(secret) = self.live_view(viewer, &env).await {
            return Err(DiffError::NoRevision(needs_secret(&secret)));
        }
        let source_ns = env.spec.source_ref.namespace.clone().unwrap_or_else(|| ns.clone());
        if let Backend::Cluster { ctx } = &self.backend
            && ctx.settings.no_cross_namespace_refs
            && source_ns != ns
        {
            return Err(DiffError::NoRevision(format!(
                "Environment {env_name} names a GitRepository of another namespace, which this installation refuses"
            )));
        }
        // The diff shows the repository's content: as much as reading its GitRepository lets one see.
        if !self
            .auth
            .allowed(viewer, &Access::list(GROUP, "gitrepositories", &source_ns))
            .await
            .unwrap_or(false)
        {
            return Err(DiffError::NoRevision(format!(
                "you may not list GitRepositories in namespace {source_ns}"
            )));
        }
        let (allow_file, registry) = match &self.backend {
            Backend::Cluster { ctx } => (ctx.settings.allow_file_urls, ctx.settings.registry.clone()),
            Backend::Local { .. } => (true, crate::registry::RegistrySettings::default()),
        };
        let (backend, client) = (&self.backend, &self.client);
        // The Secrets the objects name are read as the controller reads them (each object's ServiceAccount),
        // or, in `ferry ui`, with the caller's own client.
        let secrets = match &self.backend {
            Backend::Cluster { ctx } => ctx.readers(),
            Backend::Local { .. } => Readers::Caller(&self.client),
        };
        let _permit = self
            .diffs
            .acquire()
            .await
            .map_err(|e| DiffError::Internal(e.to_string()))?;
        let diffs = crate::cli::diff_environment_at(
            self.client.clone(),
            &ns,
            env_name,
            Some(p.spec.revision.clone()),
            &self.render,
            &registry,
            allow_file,
            secrets,
            |env| {
                let env = env.clone();
                async move { target_of(backend, client, &env).await }
            },
        )
        .await?
        .diffs;
        let mut items = Vec::with_capacity(diffs.len());
        for d in diffs {
            let api_version = d.desired["apiVersion"].as_str().unwrap_or_default().to_string();
            let kind = d.desired["kind"].as_str().unwrap_or_default().to_string();
            let namespace = d.desired["metadata"]["namespace"].as_str().map(str::to_string);
            let text = if self.may_get(viewer, &api_version, &kind, namespace.as_deref()).await {
                Some(crate::format::unified(&d, false))
            } else {
                None
            };
            items.push(DiffItem { object: d.object, text });
        }
        Ok(items)
    }

    /// Message and author of the commits the pages will show, from the repository mirror; repositories the
    /// viewer may not list are not looked at. Unknown commits start a fetch (local mode) whose end refreshes
    /// the page.
    pub async fn commits_for(&self, viewer: &Viewer, envs: &[Environment], promotions: &[Promotion]) -> Commits {
        let repos = snapshot(&self.repos).await;
        let repo_of = |env: &Environment| {
            let ns = env.namespace().unwrap_or_default();
            let repo_ns = env.spec.source_ref.namespace.clone().unwrap_or(ns);
            repos.iter().find(|r| {
                r.namespace().as_deref() == Some(repo_ns.as_str()) && r.name_any() == env.spec.source_ref.name
            })
        };
        let mut wanted: Vec<(GitRepository, String, String)> = Vec::new();
        let mut add = |repo: Option<&GitRepository>, env_ns: String, revision: &str| {
            if let (Some(repo), Some(r)) = (repo, Revision::parse(revision)) {
                wanted.push((repo.clone(), r.commit, env_ns));
            }
        };
        let all_envs = if promotions.is_empty() {
            Vec::new()
        } else {
            self.envs().await
        };
        for env in envs {
            let status = env.status.clone().unwrap_or_default();
            let ns = env.namespace().unwrap_or_default();
            for revision in status
                .last_applied_revision
                .iter()
                .chain(status.history.iter().map(|h| &h.revision))
            {
                add(repo_of(env), ns.clone(), revision);
            }
        }
        for p in promotions {
            let ns = p.namespace().unwrap_or_default();
            let env = all_envs
                .iter()
                .find(|e| e.namespace().as_deref() == Some(ns.as_str()) && e.name_any() == p.spec.environment);
            add(env.and_then(repo_of), ns, &p.spec.revision);
        }
        let mut allowed: HashMap<String, bool> = HashMap::new();
        let mut out = Commits::new();
        let mut to_fetch: HashSet<(String, String)> = HashSet::new();
        for (repo, commit, env_ns) in wanted {
            let repo_ns = repo.namespace().unwrap_or_default();
            let ok = match allowed.get(&repo_ns) {
                Some(ok) => *ok,
                None => {
                    let ok = self
                        .auth
                        .allowed(viewer, &Access::list(GROUP, "gitrepositories", &repo_ns))
                        .await
                        .unwrap_or(false);
                    allowed.insert(repo_ns.clone(), ok);
                    ok
                }
            };
            if !ok || out.contains_key(&commit) {
                continue;
            }
            let mirror = self
                .mirrors
                .mirror_path(&repo.spec.url, &repo.credentials_identity())
                .to_string_lossy()
                .into_owned();
            let key = (mirror.clone(), commit.clone());
            if let Some(c) = lock(&self.commits).get(&key) {
                out.insert(commit, c.clone());
                continue;
            }
            let found = {
                let (mirror, commit) = (mirror.clone(), commit.clone());
                tokio::task::spawn_blocking(move || read_commit(&mirror, &commit))
                    .await
                    .ok()
                    .flatten()
            };
            match found {
                Some(c) => {
                    lock(&self.commits).insert(key, c.clone());
                    out.insert(commit, c);
                }
                None if self.fetch && to_fetch.insert((repo_ns.clone(), repo.name_any())) => {
                    self.fetch_later(repo.clone(), env_ns);
                }
                None => {}
            }
        }
        out
    }

    /// Fetches `repo` into the UI's own mirror in the background (at most every [`REFETCH_AFTER`]), then tells
    /// the pages of `env_ns` to refresh.
    fn fetch_later(&self, repo: GitRepository, env_ns: String) {
        let url = repo.spec.url.clone();
        {
            let mut fetched = lock(&self.fetched);
            if fetched.get(&url).is_some_and(|t| t.elapsed() < REFETCH_AFTER) {
                return;
            }
            fetched.insert(url.clone(), Instant::now());
        }
        // Local mode only (`ferry ui`): the caller's own client reads the credentials.
        let reader = SecretReader::own(self.client.clone());
        let (mirrors, changes) = (self.mirrors.clone(), self.changes.clone());
        tokio::spawn(async move {
            let creds = match crate::source::credentials::load_credentials(&reader, &repo).await {
                Ok(Ok(c)) => c,
                _ => return,
            };
            let reference = repo.spec.effective_ref();
            let done = tokio::task::spawn_blocking(move || {
                let opts = FetchOptions {
                    allow_file: true,
                    ..FetchOptions::default()
                };
                mirrors.fetch(&url, &reference, &creds, &opts).is_ok()
            })
            .await
            .unwrap_or(false);
            if done {
                let _ = changes.send(Change {
                    namespace: env_ns,
                    object: format!("GitRepository/{}", repo.name_any()),
                });
            }
        });
    }
}

async fn target_of(backend: &Backend, client: &Client, env: &Environment) -> Result<Target, CliError> {
    match backend {
        Backend::Local { config } => crate::cli::environment_target(client, config, env).await,
        Backend::Cluster { ctx } => {
            let ns = env.namespace().unwrap_or_default();
            let account = env
                .spec
                .service_account_name
                .as_deref()
                .or(ctx.settings.default_service_account.as_deref());
            Ok(ctx
                .clusters
                .target(&ctx.local, &ns, env.spec.kube_config.as_ref(), account)
                .await?)
        }
    }
}

/// The summary and author of `commit` in the bare repository at `mirror`.
fn read_commit(mirror: &str, commit: &str) -> Option<Commit> {
    let repo = git2::Repository::open_bare(mirror).ok()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    let c = repo.find_commit(oid).ok()?;
    Some(Commit {
        summary: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
        author: String::from_utf8_lossy(c.author().name_bytes()).into_owned(),
    })
}

/// A cache fed by a watch; every change is announced on `changes`.
fn watch<K>(api: Api<K>, changes: broadcast::Sender<Change>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                    let _ = changes.send(Change {
                        namespace: o.namespace().unwrap_or_default(),
                        object: format!("{kind}/{}", o.name_any()),
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, kind, "ui watch error (retrying)"),
            }
        }
    });
    store
}

async fn snapshot<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let _ = tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await;
    store.state().iter().map(|o| (**o).clone()).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
