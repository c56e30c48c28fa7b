//! Controllers: thin loops that read a resource, call the pure steps (source → render → apply), and write
//! what happened into status, conditions and Events.

mod environment;
mod events;
pub mod gitrepository;
mod history;
mod promotion;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};

use crate::api::{Environment, GitRepository, Promotion};
use crate::cluster::{Clusters, Target};
use crate::source::MirrorStore;

/// Errors a reconcile returns to the runtime: only the API server's, which are retried with a delay.
/// Everything a user can cause is reported in status instead and is not an error here.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("internal: {0}")]
    Internal(String),
}

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
    pub events: events::EventPublisher,
}

impl Context {
    pub fn new(client: Client, settings: Settings) -> Self {
        Context {
            events: events::EventPublisher::new(client.clone()),
            local: Target::new(client.clone()),
            clusters: Clusters::default(),
            renders: crate::render::RenderCache::new(settings.render.cache_bytes),
            mirrors: MirrorStore::new(&settings.storage_dir),
            settings,
            client,
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

const RETRY_AFTER_API_ERROR: Duration = Duration::from_secs(5);

fn error_policy<K>(_obj: Arc<K>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(RETRY_AFTER_API_ERROR)
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

/// Runs every controller until the process is asked to stop (or `shutdown` resolves).
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let client = ctx.client.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency);
    let repos = Controller::new(scope.api::<GitRepository>(&client), watcher::Config::default())
        .with_config(config.clone())
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(gitrepository::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let envs = Controller::new(scope.api::<Environment>(&client), watcher::Config::default());
    let (sources, downstream) = (envs.store(), envs.store());
    let envs = envs
        .watches(
            scope.api::<GitRepository>(&client),
            watcher::Config::default(),
            move |repo| environment::consumers_of(&sources, &repo),
        )
        .watches(
            scope.api::<Environment>(&client),
            watcher::Config::default(),
            move |upstream| environment::downstream_of(&downstream, &upstream),
        )
        .watches(
            scope.api::<Promotion>(&client),
            watcher::Config::default(),
            |promotion| environment::target_of(&promotion),
        )
        .with_config(config.clone())
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(environment::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let promotions = Controller::new(scope.api::<Promotion>(&client), watcher::Config::default());
    let promotion_store = promotions.store();
    let promotions = promotions
        .watches(
            scope.api::<Environment>(&client),
            watcher::Config::default(),
            move |env| promotion::affected_by(&promotion_store, &env),
        )
        .with_config(config)
        .graceful_shutdown_on(stopped(stop_rx))
        .run(promotion::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let gc = tokio::spawn(collect_mirror_garbage(ctx.clone()));
    tokio::join!(repos, envs, promotions);
    gc.abort();
}
