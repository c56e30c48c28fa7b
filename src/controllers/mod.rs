//! Controllers: thin loops that read a resource, call the pure steps (source → render → apply), and write
//! what happened into status, conditions and Events.

mod environment;
mod events;
pub mod gitrepository;
mod promotion;
mod registrypolicy;
mod status;

pub use crate::error::ReconcileError;
pub use environment::discover_capabilities;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use crate::api::{Environment, GitRepository, Promotion, RegistryPolicy};
use crate::cluster::{Clusters, Target};
use crate::source::MirrorStore;

/// Operator-level settings (flags of `ferry run`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where git mirrors are kept.
    pub storage_dir: std::path::PathBuf,
    /// Largest download one fetch may make.
    pub max_repo_bytes: u64,
    /// Mirrors nobody fetched for this long are deleted.
    pub mirror_ttl: Duration,
    /// The kustomize binary, the render timeout, and the render limits.
    pub render: crate::render::RenderSettings,
    /// Accept `file://` GitRepository URLs (local development only: they can read the controller's disk).
    pub allow_file_urls: bool,
    /// Reconciles running at once per kind: bounds memory and API load when thousands of objects wake up.
    pub concurrency: u16,
    /// The ServiceAccount (in the object's namespace) impersonated for Environments that name none, and whose
    /// rights the Secrets of GitRepositories and Environments that name none are read with. `None` keeps
    /// Ferry's own identity for them: a single-team cluster.
    pub default_service_account: Option<String>,
    /// Refuse `sourceRef`s and `promotion.from`s that name another namespace.
    pub no_cross_namespace_refs: bool,
    /// Accept kubeconfig Secrets that turn TLS verification off or name a proxy.
    pub allow_insecure_kubeconfig: bool,
    /// How long a request to a cluster reached through a kubeconfig Secret may take to connect, or go without
    /// an answer, before it fails (`ClusterUnreachable`, retried).
    pub remote_cluster_timeout: Duration,
    /// How often an Environment whose objects nobody touched still goes through the dry-run path (admission
    /// webhooks and server defaults can change what applying means without any object changing).
    pub full_sync_interval: Duration,
    /// How image registries are reached (which hosts in plain HTTP).
    pub registry: crate::registry::RegistrySettings,
}

impl Settings {
    pub fn new(storage_dir: impl Into<std::path::PathBuf>) -> Self {
        Settings {
            storage_dir: storage_dir.into(),
            max_repo_bytes: 1 << 30,
            mirror_ttl: Duration::from_secs(24 * 3600),
            render: crate::render::RenderSettings::default(),
            concurrency: 16,
            allow_file_urls: false,
            default_service_account: None,
            no_cross_namespace_refs: false,
            allow_insecure_kubeconfig: false,
            remote_cluster_timeout: crate::cluster::DEFAULT_REMOTE_TIMEOUT,
            full_sync_interval: Duration::from_secs(3600),
            registry: crate::registry::RegistrySettings::default(),
        }
    }
}

/// What the controllers share.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub mirrors: MirrorStore,
    /// The cluster Ferry runs in: where Environments without a kubeConfig apply.
    pub local: Target,
    /// Clients for Environments that target other clusters.
    pub clusters: Clusters,
    pub renders: crate::render::RenderCache,
    /// Target clusters' versions and APIs, for charts' `.Capabilities`.
    pub capabilities: environment::CapabilityCache,
    pub events: events::EventPublisher,
    /// The controllers' caches, once they run: what metrics read readiness from.
    caches: OnceLock<Caches>,
    /// Every cache has listed its kind once (`/readyz`).
    synced: AtomicBool,
    /// Consecutive failed reconciles per object: how long the next retry waits.
    failures: Failures,
    /// What each Environment last applied, and the resourceVersions it left.
    pub records: Arc<crate::sync::AppliedRecords>,
    /// Watches on the applied objects (the local cluster), once the controllers run.
    watches: OnceLock<crate::sync::OwnedObjectWatches>,
    /// Watches on the objects applied to other clusters, one set per cluster identity, once the controllers run.
    remote_watches: OnceLock<crate::sync::RemoteWatches>,
    /// The RegistryPolicies, and the Environments, as the running controllers see them (replaced when the
    /// controllers restart).
    policies: std::sync::RwLock<Option<Store<RegistryPolicy>>>,
    environments: std::sync::RwLock<Option<Store<Environment>>>,
    /// The GitRepositories as the stream that wakes their Environments sees them (updated before it wakes
    /// them), so an Environment reads its source without a request.
    sources: std::sync::RwLock<Option<Store<GitRepository>>>,
    /// Whether the Environment controller's cached copy of an Environment is fresh enough to decide on.
    env_freshness: environment::Freshness,
}

/// The controllers' views of Ferry's kinds.
struct Caches {
    repos: Store<GitRepository>,
    envs: Store<Environment>,
    promotions: Store<Promotion>,
}

impl Context {
    /// `client` is Ferry's own; `config` is what it was built from, the base of the clients that impersonate
    /// Environments' ServiceAccounts.
    pub fn new(client: Client, config: kube::Config, settings: Settings) -> Self {
        Context {
            events: events::EventPublisher::new(client.clone()),
            local: Target::new(client.clone()),
            clusters: Clusters::new(config, settings.allow_insecure_kubeconfig)
                .with_timeout(settings.remote_cluster_timeout),
            renders: crate::render::RenderCache::new(settings.render.cache_bytes),
            capabilities: Default::default(),
            mirrors: MirrorStore::new(&settings.storage_dir),
            settings,
            client,
            caches: OnceLock::new(),
            synced: AtomicBool::new(false),
            records: Arc::default(),
            failures: Failures::default(),
            watches: OnceLock::new(),
            remote_watches: OnceLock::new(),
            policies: Default::default(),
            environments: Default::default(),
            sources: Default::default(),
            env_freshness: Default::default(),
        }
    }

    /// Every RegistryPolicy: from the controllers' cache once it has listed them (never a partial view at
    /// startup, which would let images through), else straight from the API server (whose error, such as a
    /// missing RBAC rule, then fails the reconcile visibly instead of waiting for a cache that never fills).
    pub async fn registry_policies(&self) -> Result<Vec<RegistryPolicy>, ReconcileError> {
        let store = self.policies.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(store) = store
            && let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), until_ready(&store)).await
        {
            return Ok(store.state().iter().map(|p| p.as_ref().clone()).collect());
        }
        let api: Api<RegistryPolicy> = Api::all(self.client.clone());
        Ok(api.list(&Default::default()).await?.items)
    }

    /// The Environments in the controllers' cache (empty before they run).
    pub fn environments(&self) -> Vec<Arc<Environment>> {
        let store = self.environments.read().unwrap_or_else(|e| e.into_inner()).clone();
        store.map(|s| s.state()).unwrap_or_default()
    }

    /// A GitRepository from the Environment controller's source cache (`None`: not there, or no cache yet).
    pub fn cached_source(&self, namespace: &str, name: &str) -> Option<Arc<GitRepository>> {
        let store = self.sources.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }

    /// The watches on applied objects, when the controllers run.
    pub fn watches(&self) -> Option<&crate::sync::OwnedObjectWatches> {
        self.watches.get()
    }

    /// The watches on objects applied to other clusters, when the controllers run.
    pub fn remote_watches(&self) -> Option<&crate::sync::RemoteWatches> {
        self.remote_watches.get()
    }

    /// The controllers run and their caches have listed everything once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Readiness of every GitRepository, Environment and Promotion in the caches (none before they run).
    pub fn ready_states(&self) -> Vec<crate::metrics::ReadyState> {
        let Some(caches) = self.caches.get() else {
            return Vec::new();
        };
        fn states<K>(
            kind: &'static str,
            store: &Store<K>,
            ready: impl Fn(&K) -> Option<(bool, String)>,
        ) -> Vec<crate::metrics::ReadyState>
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            store
                .state()
                .iter()
                .map(|o| {
                    let (is_ready, reason) = ready(o).unwrap_or((false, "Unknown".to_string()));
                    crate::metrics::ReadyState {
                        kind,
                        namespace: o.meta().namespace.clone().unwrap_or_default(),
                        name: o.meta().name.clone().unwrap_or_default(),
                        ready: is_ready,
                        reason,
                    }
                })
                .collect()
        }
        fn ready_of(
            conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        ) -> Option<(bool, String)> {
            conditions
                .iter()
                .find(|c| c.type_ == crate::api::READY)
                .map(|c| (c.status == "True", c.reason.clone()))
        }
        let mut all = states("GitRepository", &caches.repos, |r| {
            r.status.as_ref().and_then(|s| ready_of(&s.conditions))
        });
        all.extend(states("Environment", &caches.envs, |e| {
            e.status.as_ref().and_then(|s| ready_of(&s.conditions))
        }));
        all.extend(states("Promotion", &caches.promotions, |p| {
            p.status.as_ref().and_then(|s| ready_of(&s.conditions))
        }));
        all
    }

    /// The cluster and identity an Environment's requests go to: its kubeConfig's cluster, else this one as
    /// its ServiceAccount (or the default one), else this one as Ferry.
    pub async fn target_of(&self, env: &crate::api::Environment) -> Result<Target, crate::cluster::ClusterError> {
        let namespace = env.metadata.namespace.as_deref().unwrap_or_default();
        let account = env
            .spec
            .service_account_name
            .as_deref()
            .or(self.settings.default_service_account.as_deref());
        self.clusters
            .target(&self.local, namespace, env.spec.kube_config.as_ref(), account)
            .await
    }

    /// Who reads the Secrets objects name: each object's ServiceAccount (or the default one), else Ferry.
    pub fn readers(&self) -> crate::secrets::Readers<'_> {
        crate::secrets::Readers::Accounts {
            clusters: &self.clusters,
            local: &self.local,
            default_account: self.settings.default_service_account.as_deref(),
        }
    }

    /// Events are best-effort: failing to record one must never fail a reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        self.events.publish(obj, warning, reason, note).await;
    }
}

/// Where to watch: one namespace (as tests and single-tenant installs do) or all of them.
#[derive(Debug, Clone)]
pub struct Scope {
    pub namespace: Option<String>,
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// The first retry after an API error; each further consecutive failure of the same object doubles it.
const RETRY_AFTER_API_ERROR: Duration = Duration::from_secs(2);
/// The longest wait between retries of a failing object.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// How long to wait after the `failures`-th consecutive failure (1-based): exponential from
/// [`RETRY_AFTER_API_ERROR`], capped at [`MAX_RETRY_DELAY`], so an API server in trouble is not hammered by every
/// object every few seconds, and a passing fault still heals quickly.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_AFTER_API_ERROR
        .saturating_mul(1u32 << doublings)
        .min(MAX_RETRY_DELAY)
}

/// The first pause of a controller's watches after a watch error, and the longest.
const TRIGGER_BACKOFF_FIRST: Duration = Duration::from_millis(250);
const TRIGGER_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long a controller stops taking events from its watches after a watch error: doubling from 250 ms to 2 s,
/// back to the start after any event. kube's default (up to 30 s, reset only by an event) makes one pause per
/// error of *any* of a controller's watches, and an API server that restarts answers each of them with
/// `410 Gone` (their resourceVersion is older than its new cache) before they list again: measured, the
/// Environments then missed a new revision for 20 to over 60 s. The watches themselves are cheap to restart; the
/// reconciles, which are what could hammer an API server in trouble, keep their own backoff ([`retry_delay`]).
#[derive(Debug, Clone)]
pub struct TriggerBackoff {
    next: Duration,
}

impl Default for TriggerBackoff {
    fn default() -> Self {
        TriggerBackoff {
            next: TRIGGER_BACKOFF_FIRST,
        }
    }
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(TRIGGER_BACKOFF_MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = TRIGGER_BACKOFF_FIRST;
    }
}

/// Consecutive failed reconciles per object, for [`retry_delay`].
#[derive(Default)]
pub struct Failures(std::sync::Mutex<std::collections::HashMap<(&'static str, String, String), u32>>);

impl Failures {
    fn key<K: Resource>(kind: &'static str, obj: &K) -> (&'static str, String, String) {
        let meta = obj.meta();
        (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    fn failed<K: Resource>(&self, kind: &'static str, obj: &K) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(Self::key(kind, obj)).or_default();
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded<K: Resource>(&self, kind: &'static str, obj: &K) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(kind, obj));
    }
}

/// Counts and times each reconcile of `kind` for the metrics.
/// Counts and times each reconcile of `kind` for the metrics, and forgets an object's failures once it succeeds.
async fn measured<K: Resource>(
    kind: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl std::future::Future<Output = Result<Action, ReconcileError>>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile.await;
    crate::metrics::metrics().reconciled(kind, result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.succeeded(kind, obj.as_ref());
    }
    result
}

/// [`retry_delay`], but never longer than the object's own `interval` (when it has one): an object that asks to
/// be looked at every 30 s is retried at least that often, so a cluster that comes back is noticed as soon as
/// the interval promises, however long it was away.
pub fn retry_delay_within(failures: u32, interval: Option<Duration>) -> Duration {
    let delay = retry_delay(failures);
    match interval {
        Some(interval) => delay.min(interval.max(RETRY_AFTER_API_ERROR)),
        None => delay,
    }
}

/// An object's `spec.interval`, for [`retry_delay_within`].
fn interval_of(interval: &str) -> Option<Duration> {
    crate::api::parse_duration(interval).ok()
}

fn error_policy<K: Resource>(
    kind: &'static str,
    obj: Arc<K>,
    err: &ReconcileError,
    ctx: Arc<Context>,
    interval: Option<Duration>,
) -> Action {
    let failures = ctx.failures.failed(kind, obj.as_ref());
    let delay = retry_delay_within(failures, interval);
    let meta = obj.meta();
    tracing::warn!(
        kind,
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        name = meta.name.as_deref().unwrap_or_default(),
        error = %err,
        failures,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// Keeps the mirror cache bounded: mirrors unused for `mirror_ttl` are deleted.
async fn collect_mirror_garbage(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let (mirrors, ttl) = (ctx.mirrors.clone(), ctx.settings.mirror_ttl);
        if let Ok(removed) = tokio::task::spawn_blocking(move || mirrors.collect_garbage(ttl)).await
            && removed > 0
        {
            tracing::info!(removed, "deleted unused git mirrors");
        }
    }
}

/// Stops target clusters' watches kept for Environments that are gone without this process finalizing them
/// (their finalizer removed by hand, or handled by another replica).
async fn release_unused_watches(ctx: std::sync::Weak<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        // Holds no reference between ticks: a controller dropped without stopping takes its watches along.
        let Some(ctx) = ctx.upgrade() else { return };
        let (Some(remote), true) = (ctx.remote_watches(), ctx.synced()) else {
            continue;
        };
        let present: std::collections::HashSet<(String, String)> = ctx
            .environments()
            .iter()
            .map(|e| {
                (
                    e.metadata.namespace.clone().unwrap_or_default(),
                    e.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        remote.retain(|env| present.contains(env));
    }
}

/// Waits until `store` has listed its kind once. `Store::wait_until_ready` wakes only the last of several
/// waiters (the controller itself is one), so it is polled again every half second until it answers.
async fn until_ready<K>(store: &Store<K>) -> Result<(), kube::runtime::reflector::store::WriterDropped>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(ready) = tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await {
            return ready;
        }
    }
}

/// Runs every controller until the process is asked to stop (or `shutdown` resolves).
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let client = ctx.client.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    let repos = Controller::new(scope.api::<GitRepository>(&client), watcher::Config::default());
    let repo_cache = repos.store();
    let repos = repos
        .with_config(config.clone())
        .trigger_backoff(TriggerBackoff::default())
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            |o, c| measured("GitRepository", o.clone(), c.clone(), gitrepository::reconcile(o, c)),
            |o, e, c| {
                let interval = interval_of(&o.spec.interval);
                error_policy("GitRepository", o, e, c, interval)
            },
            ctx.clone(),
        )
        .for_each(|_| async {});

    let _ = ctx.watches.set(crate::sync::OwnedObjectWatches::new(
        client.clone(),
        scope.namespace.clone(),
        ctx.records.clone(),
    ));
    if let Some(local) = ctx.watches() {
        let _ = ctx.remote_watches.set(crate::sync::RemoteWatches::new(
            scope.namespace.clone(),
            ctx.records.clone(),
            local.trigger(),
        ));
    }
    let changed_objects = ctx.watches().and_then(|w| w.take_triggers());
    let mut envs = Controller::new(scope.api::<Environment>(&client), watcher::Config::default());
    if let Some(changed) = changed_objects {
        // A hand edit or deletion of an applied object wakes its Environment at once.
        envs = envs.reconcile_on(changed);
    }
    let (sources, downstream, dependents, env_cache) = (envs.store(), envs.store(), envs.store(), envs.store());
    // The GitRepositories that wake Environments, reflected into a store before they wake them: what the
    // Environments then read their source from.
    let (source_store, source_writer) = kube::runtime::reflector::store();
    let source_changes = kube::runtime::reflector(
        source_writer,
        watcher(scope.api::<GitRepository>(&client), watcher::Config::default()),
    )
    .touched_objects();
    *ctx.sources.write().unwrap_or_else(|e| e.into_inner()) = Some(source_store);
    *ctx.environments.write().unwrap_or_else(|e| e.into_inner()) = Some(envs.store());
    let policy_controller = Controller::new(Api::<RegistryPolicy>::all(client.clone()), watcher::Config::default());
    *ctx.policies.write().unwrap_or_else(|e| e.into_inner()) = Some(policy_controller.store());
    let every_env = envs.store();
    let envs = envs
        .watches(
            Api::<RegistryPolicy>::all(client.clone()),
            watcher::Config::default(),
            // A policy created, changed or deleted may change what any Environment may apply.
            move |_| {
                every_env
                    .state()
                    .iter()
                    .map(|e| kube::runtime::reflector::ObjectRef::from_obj(e.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .watches_stream(source_changes, move |repo| environment::consumers_of(&sources, &repo))
        .watches(
            scope.api::<Environment>(&client),
            watcher::Config::default(),
            // Promoted Environments, to propose a Promotion, and dependents, to go ahead once it is Ready.
            move |upstream| {
                let mut woken = environment::downstream_of(&downstream, &upstream);
                woken.extend(environment::dependents_of(&dependents, &upstream));
                woken
            },
        )
        .watches(
            scope.api::<Promotion>(&client),
            watcher::Config::default(),
            |promotion| environment::target_of(&promotion),
        )
        .with_config(config.clone())
        .trigger_backoff(TriggerBackoff::default())
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            |o, c| measured("Environment", o.clone(), c.clone(), environment::reconcile(o, c)),
            |o, e, c| {
                let interval = interval_of(&o.spec.interval);
                error_policy("Environment", o, e, c, interval)
            },
            ctx.clone(),
        )
        .for_each(|_| async {});

    let every_policy = policy_controller.store();
    let policy_scope = scope.namespace.clone();
    let policies = policy_controller
        .watches(
            scope.api::<Environment>(&client),
            watcher::Config::default(),
            move |_| registrypolicy::all(&every_policy),
        )
        .with_config(config.clone())
        .trigger_backoff(TriggerBackoff::default())
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(
            move |o, c| {
                let scope = policy_scope.clone();
                measured(
                    "RegistryPolicy",
                    o.clone(),
                    c.clone(),
                    registrypolicy::reconcile(o, c, scope),
                )
            },
            |o, e, c| error_policy("RegistryPolicy", o, e, c, None),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let promotions = Controller::new(scope.api::<Promotion>(&client), watcher::Config::default());
    let (promotion_store, promotion_cache) = (promotions.store(), promotions.store());
    let promotions = promotions
        .watches(
            scope.api::<Environment>(&client),
            watcher::Config::default(),
            move |env| promotion::affected_by(&promotion_store, &env),
        )
        .with_config(config)
        .trigger_backoff(TriggerBackoff::default())
        .graceful_shutdown_on(stopped(stop_rx))
        .run(
            |o, c| measured("Promotion", o.clone(), c.clone(), promotion::reconcile(o, c)),
            |o, e, c| error_policy("Promotion", o, e, c, None),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let caches = Caches {
        repos: repo_cache,
        envs: env_cache,
        promotions: promotion_cache,
    };
    let synced = {
        let (repos, envs, promotions) = (caches.repos.clone(), caches.envs.clone(), caches.promotions.clone());
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let all = futures::future::join3(until_ready(&repos), until_ready(&envs), until_ready(&promotions)).await;
            if matches!(all, (Ok(()), Ok(()), Ok(()))) {
                tracing::info!("caches synced");
                ctx.synced.store(true, Ordering::Relaxed);
            }
        })
    };
    // A second run in the same process (tests restart controllers) keeps the first caches for metrics.
    let _ = ctx.caches.set(caches);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let gc = tokio::spawn(collect_mirror_garbage(ctx.clone()));
    let sweep = tokio::spawn(release_unused_watches(Arc::downgrade(&ctx)));
    tokio::join!(repos, envs, promotions, policies);
    gc.abort();
    sweep.abort();
    synced.abort();
    ctx.synced.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let delays: Vec<u64> = (1..=10).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(0), RETRY_AFTER_API_ERROR);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn watches_pause_briefly_after_errors_and_start_over_after_an_event() {
        use kube::runtime::utils::Backoff;
        let mut b = TriggerBackoff::default();
        let pauses: Vec<u128> = (0..6).map(|_| b.next().unwrap().as_millis()).collect();
        assert_eq!(pauses, vec![250, 500, 1000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next(), Some(TRIGGER_BACKOFF_FIRST));
    }

    #[test]
    fn retries_never_wait_longer_than_the_object_s_interval() {
        let within = |n, secs| retry_delay_within(n, Some(Duration::from_secs(secs))).as_secs();
        let delays: Vec<u64> = (1..=6).map(|n| within(n, 10)).collect();
        assert_eq!(delays, vec![2, 4, 8, 10, 10, 10]);
        assert_eq!(within(9, 3600), 300, "the cap stays for long intervals");
        assert_eq!(within(3, 0), 2, "never below the first retry");
        assert_eq!(retry_delay_within(4, None), retry_delay(4));
    }

    #[test]
    fn failures_count_per_object_and_reset_on_success() {
        let object = |name: &str| {
            let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
            cm.metadata.name = Some(name.into());
            cm.metadata.namespace = Some("ns".into());
            cm
        };
        let failures = Failures::default();
        assert_eq!(failures.failed("Environment", &object("a")), 1);
        assert_eq!(failures.failed("Environment", &object("a")), 2);
        assert_eq!(failures.failed("Environment", &object("b")), 1);
        assert_eq!(failures.failed("GitRepository", &object("a")), 1, "kinds are apart");
        failures.succeeded("Environment", &object("a"));
        assert_eq!(failures.failed("Environment", &object("a")), 1);
    }
}
