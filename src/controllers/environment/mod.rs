//! Environment reconcile: revision → manifests → rendered objects → server-side apply → prune → status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

mod dependencies;
mod fresh;
mod policy;
mod promoted;
mod verification;

pub use crate::sync::capabilities::{CapabilityCache, discover as discover_capabilities};
pub use dependencies::dependents_of;
pub use fresh::Freshness;

use verification::Poll;

use super::{Context, ReconcileError};
use crate::api::{
    ConditionSet, Environment, EnvironmentStatus, GitRepository, RECONCILE_REQUESTED_AT, Reason, parse_duration,
    set_condition_status,
};
use crate::cluster::{ClusterError, Target};
use crate::sync::history;
use std::collections::BTreeSet;

use crate::api::{DeletionPolicy, DriftCorrection, InventoryEntry};
use crate::apply::{ApplyError, ApplyReport, Owner, PruneBlocked, plan_prune};
use crate::health::{Health, assess};
use crate::source::{FetchOptions, Revision};
use crate::sync::{Copies, Failure, Pipeline, decide};

/// Removes applied objects (per `deletionPolicy`) before an Environment is deleted.
pub const FINALIZER: &str = "ferry.dev/finalizer";

/// Environments promoted from `upstream`: reconciled when it verifies a revision, to propose a Promotion.
pub fn downstream_of(envs: &Store<Environment>, upstream: &Environment) -> Vec<ObjectRef<Environment>> {
    let namespace = upstream.namespace();
    let name = upstream.name_any();
    envs.state()
        .iter()
        .filter(|env| env.namespace() == namespace && env.spec.promotion.as_ref().is_some_and(|p| p.from == name))
        .map(|env| ObjectRef::from_obj(env.as_ref()))
        .collect()
}

/// The Environment a Promotion moves: reconciled when the Promotion's phase changes.
pub fn target_of(promotion: &crate::api::Promotion) -> Option<ObjectRef<Environment>> {
    let namespace = promotion.namespace()?;
    Some(ObjectRef::new(&promotion.spec.environment).within(&namespace))
}

/// Environments whose `sourceRef` names `repo`: reconciled as soon as the repo's status changes.
pub fn consumers_of(envs: &Store<Environment>, repo: &GitRepository) -> Vec<ObjectRef<Environment>> {
    let repo_ns = repo.namespace().unwrap_or_default();
    let repo_name = repo.name_any();
    envs.state()
        .iter()
        .filter(|env| {
            let env_ns = env.namespace().unwrap_or_default();
            let source_ns = env.spec.source_ref.namespace.as_deref().unwrap_or(&env_ns);
            // A promoted Environment does not follow the repository's head.
            env.spec.source_ref.name == repo_name && source_ns == repo_ns && env.spec.promotion.is_none()
        })
        .map(|env| ObjectRef::from_obj(env.as_ref()))
        .collect()
}

/// Whether this promoted Environment applied nothing and its Ready condition is the failure of the revision it
/// last tried.
fn refused_first_revision(status: &EnvironmentStatus) -> bool {
    status.last_applied_revision.is_none()
        && status.last_attempted_revision.is_some()
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == crate::api::READY && c.status == "False")
}

pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = env.namespace().unwrap_or_default();
    let name = env.name_any();
    let span = info_span!("reconcile", kind = "Environment", namespace = %namespace, name = %name, revision = tracing::field::Empty);
    let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &namespace);
    // The watch cache can lag behind this controller's own last status write; deciding from a stale status
    // would re-announce a revision (and write status) that was already applied. Unless the cached copy is at
    // the newest version this process knows, one GET buys a fresh view.
    let key = (namespace.clone(), name.clone());
    let env = if ctx
        .env_freshness
        .is_current(&key, env.metadata.resource_version.as_deref())
    {
        env
    } else {
        let fetched = api.get_opt(&name).await;
        if fetched.is_err() {
            ctx.env_freshness.unsure(&key);
        }
        let Some(env) = fetched? else {
            ctx.env_freshness.forget(&key);
            return Ok(Action::await_change());
        };
        ctx.env_freshness.saw(&key, env.metadata.resource_version.as_deref());
        Arc::new(env)
    };
    let target = ctx.target_of(&env).await;
    let finalizers = api.clone();
    // Adding or removing the finalizer is a write by this process that the helper does not hand back: until a
    // read shows what it left, the cached copy is not to be decided on (see `fresh`).
    let adds_finalizer = env.metadata.deletion_timestamp.is_none() && !env.finalizers().iter().any(|f| f == FINALIZER);
    let version = env.metadata.resource_version.clone();
    let deleting = env.metadata.deletion_timestamp.is_some();
    let freshness_ctx = ctx.clone();
    let freshness_key = key;
    // kube-runtime's finalizer helper: it adds FINALIZER before the first sync (whose patch wakes the next
    // reconcile), and removes it once the cleanup succeeded.
    let reconciled = finalizer(&finalizers, FINALIZER, env, |event| async move {
        let (env, cleanup) = match event {
            FinalizerEvent::Apply(env) => (env, false),
            FinalizerEvent::Cleanup(env) => (env, true),
        };
        let reconcile = Reconcile {
            api,
            ctx,
            namespace,
            name,
            env,
            target,
            applied_now: Default::default(),
        };
        match cleanup {
            false => reconcile.run().await,
            true => reconcile.finalize().await,
        }
    })
    .instrument(span)
    .await;
    match (&reconciled, deleting) {
        // Gone, or on its way with only others' finalizers left.
        (Ok(_), true) => freshness_ctx.env_freshness.forget(&freshness_key),
        // The finalizer patch may or may not have been written: the next reconcile reads.
        (_, true) => freshness_ctx.env_freshness.unsure(&freshness_key),
        // The finalizer was added over this copy (or tried to be): a copy still at its version lacks it.
        (_, false) if adds_finalizer => freshness_ctx
            .env_freshness
            .wrote_over(&freshness_key, version.as_deref()),
        _ => {}
    }
    reconciled.map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        FinalizerError::AddFinalizer(e) | FinalizerError::RemoveFinalizer(e) => ReconcileError::Kube(e),
        other => ReconcileError::Internal(other.to_string()),
    })
}

/// How often health is looked at while objects converge.
const HEALTH_POLL: Duration = Duration::from_secs(2);

/// A sync that did not fail.
enum Outcome {
    /// Applied (and healthy, with `wait`): the Ready message.
    Ready(String),
    /// Applied; waiting for objects to become healthy.
    Progressing(String),
}

/// The revision to apply now, and whether this is an attempt that `status.history` tracks and verifies
/// (a new revision or a promotion), or only the last applied one kept in place (drift correction).
struct Desired {
    repo: GitRepository,
    revision: String,
    /// The active Promotion's (name, uid).
    promotion: Option<(String, String)>,
    track: bool,
}

struct Reconcile {
    ctx: Arc<Context>,
    api: Api<Environment>,
    env: Arc<Environment>,
    namespace: String,
    name: String,
    target: Result<Target, ClusterError>,
    /// What this reconcile's sync applied (or found unchanged): objects that exist, as of moments ago.
    applied_now: std::sync::Mutex<BTreeSet<InventoryEntry>>,
}

impl Reconcile {
    async fn run(self) -> Result<Action, ReconcileError> {
        let old = self.env.status.as_ref();
        let mut status = old.cloned().unwrap_or_default();
        status.observed_generation = self.env.metadata.generation;
        // A "reconcile now" request (`ferry reconcile`): the annotation change woke this reconcile, which is
        // the answer whatever its outcome; every status write from here on says it was handled. A suspended
        // Environment handles nothing.
        if !self.env.spec.suspend
            && let Some(requested) = self.env.annotations().get(RECONCILE_REQUESTED_AT)
        {
            status.last_handled_reconcile_at = Some(requested.clone());
        }
        let interval = match parse_duration(&self.env.spec.interval) {
            Ok(i) => i.max(Duration::from_secs(1)),
            Err(e) => {
                let failure = Failure {
                    reason: Reason::InvalidSpec,
                    message: e.to_string(),
                    stalled: true,
                };
                self.fail(old, &mut status, failure).await?;
                return Ok(Action::await_change());
            }
        };
        if self.env.spec.suspend {
            info!("suspended; not applying");
            return Ok(Action::await_change());
        }
        let desired = match self.desired(&mut status).await? {
            Ok(desired) => desired,
            Err(failure) => {
                self.fail(old, &mut status, failure).await?;
                return Ok(Action::requeue(interval));
            }
        };
        // An Environment that no longer targets another cluster (or whose kubeconfig cannot be used) stops
        // keeping that cluster's watches running.
        let no_remote_cluster = match &self.target {
            Ok(target) => target.remote.is_none(),
            Err(e) => !matches!(e, ClusterError::Api(_)),
        };
        if no_remote_cluster && let Some(remote) = self.ctx.remote_watches() {
            remote.release(&(self.namespace.clone(), self.name.clone()));
        }
        // After `desired`: promotions are proposed and shown even while the target cluster cannot be reached.
        let target = match &self.target {
            Ok(target) => target.clone(),
            Err(e) => {
                let Some((reason, stalled)) = e.reason() else {
                    return Err(ReconcileError::Internal(e.to_string()));
                };
                let failure = Failure {
                    reason,
                    message: e.to_string(),
                    stalled,
                };
                self.fail(old, &mut status, failure).await?;
                return Ok(Action::requeue(interval));
            }
        };
        let Some(desired) = desired else {
            self.wait_for_first_promotion(old, &mut status).await?;
            return Ok(Action::requeue(interval));
        };

        // While a revision verifies, a poll only looks at health and the Job: the objects were applied at this
        // revision and spec moments ago, and a full sync (render, a dry run of every object) on every poll costs
        // the API server far more than it could find. (`wait` keeps the full sync: Ready follows health.)
        let promotion = desired.promotion.as_ref().map(|(n, u)| (n.as_str(), u.as_str()));
        let unchanged = decide::unchanged(old, status.observed_generation, &desired.revision);
        // A new revision or spec waits for what it depends on; what is already applied keeps being kept in place.
        if !self.env.spec.depends_on.is_empty()
            && !unchanged
            && let Some(failure) = self.dependencies_block(&desired.revision).await?
        {
            self.fail(old, &mut status, failure).await?;
            return Ok(Action::requeue(interval));
        }
        if desired.track
            && !self.env.spec.wait
            && unchanged
            && history::is_verifying(&status.history, &desired.revision, promotion)
        {
            let poll = self.verify(&target, &mut status, &desired.revision).await;
            // The target cluster did not answer: the Environment says so (as a full sync would), the record keeps
            // verifying, and the next answer puts Ready back through the full sync.
            if poll == Poll::Unreachable
                && let Some(cluster) = &target.remote
            {
                let why = history::current(&mut status.history, &desired.revision)
                    .and_then(|r| r.message.clone())
                    .unwrap_or_default();
                let failure = Failure {
                    reason: Reason::ClusterUnreachable,
                    message: format!(
                        "cannot reach the target cluster {cluster} to verify {}: {}",
                        desired.revision,
                        why.trim_start_matches("retrying: ")
                    ),
                    stalled: false,
                };
                let event = self.fail_conditions(&mut status, failure);
                self.write_status(old, &mut status, Some(event)).await?;
                return Ok(Action::requeue(HEALTH_POLL.min(interval)));
            }
            // An object deleted meanwhile is drift: the full sync below puts it back.
            if poll != Poll::ObjectsMissing {
                self.write_status(old, &mut status, None).await?;
                return Ok(Action::requeue(if poll.again() {
                    HEALTH_POLL.min(interval)
                } else {
                    interval
                }));
            }
        }
        let mut poll = false;
        let mut failure_event = None;
        let synced = match self.sync(&target, &mut status, &desired).await {
            Ok(synced) => synced,
            Err(e) => {
                // What the sync already did (applied objects, a new revision) is fact: keep it in status, so a
                // retry neither repeats the announcement nor restarts the verification clock.
                if let Some(cluster) = &target.remote {
                    let failure = Failure {
                        reason: Reason::ClusterUnreachable,
                        message: format!("cannot reach the target cluster {cluster}: {}", why_unreachable(&e)),
                        stalled: false,
                    };
                    self.fail(old, &mut status, failure).await?;
                } else {
                    self.patch_status(old, &status).await?;
                }
                return Err(e);
            }
        };
        if desired.track {
            self.cancel_superseded(&target, old, &status).await;
        }
        match synced {
            Ok(outcome) => {
                match outcome {
                    Outcome::Ready(summary) => {
                        let generation = status.observed_generation;
                        ConditionSet::ready(&mut status.conditions, summary, generation, Timestamp::now());
                    }
                    Outcome::Progressing(message) => {
                        let now = Timestamp::now();
                        let revision = status.last_applied_revision.clone().unwrap_or_default();
                        // The health clock starts when waiting for *this* revision starts, not the one before.
                        let same_wait = decide::same_health_wait(old, &revision);
                        ConditionSet::progressing(&mut status.conditions, message, status.observed_generation, now);
                        if !same_wait
                            && let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == crate::api::READY)
                        {
                            ready.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
                        }
                        poll = true;
                    }
                }
                if desired.track {
                    poll |= self.verify(&target, &mut status, &desired.revision).await.again();
                }
            }
            Err(failure) => {
                // A failure retrying cannot fix ends this attempt; so does a health verdict.
                if desired.track
                    && (failure.stalled || failure.reason == Reason::HealthCheckFailed)
                    && let Some(record) = history::current(&mut status.history, &desired.revision)
                {
                    history::finish(record, false, Some(failure.message.clone()), Timestamp::now());
                }
                failure_event = Some(self.fail_conditions(&mut status, failure));
            }
        }
        self.write_status(old, &mut status, failure_event).await?;
        let mut next = if poll { HEALTH_POLL.min(interval) } else { interval };
        // The periodic full check comes round even when the Environment's own interval is longer.
        let key = (self.namespace.clone(), self.name.clone());
        let full = self.ctx.settings.full_sync_interval;
        if let Some(due) = self.ctx.records.full_sync_due_in(&key, full, Instant::now()) {
            next = next.min(due.max(Duration::from_secs(1)));
        }
        Ok(Action::requeue(next))
    }

    /// Writes status unless it equals `old`, remembering the version the write left (see [`fresh`]). Returns
    /// whether it wrote.
    async fn patch_status(
        &self,
        old: Option<&EnvironmentStatus>,
        status: &EnvironmentStatus,
    ) -> Result<bool, ReconcileError> {
        let written = super::status::patched_if_changed(&self.api, &self.name, old, status).await;
        self.saw_write(written.as_ref().map(|w| w.as_ref()));
        Ok(written?.is_some())
    }

    /// Whether `entry` is known to exist without asking: this reconcile's sync just applied it, or the watch on
    /// its kind (local cluster) has it. `false` means "ask".
    fn exists(&self, entry: &InventoryEntry) -> bool {
        if self
            .applied_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(entry)
        {
            return true;
        }
        let local = self.target.as_ref().is_ok_and(|t| t.remote.is_none());
        local && self.ctx.watches().is_some_and(|w| w.live_version(entry).is_some())
    }

    /// Remembers what a write to the Environment left, for [`fresh`].
    fn saw_write<E>(&self, written: Result<Option<&Environment>, E>) {
        let key = (self.namespace.clone(), self.name.clone());
        match written {
            Ok(Some(env)) => self
                .ctx
                .env_freshness
                .saw(&key, env.metadata.resource_version.as_deref()),
            Ok(None) => {}
            Err(_) => self.ctx.env_freshness.unsure(&key),
        }
    }

    /// Writes status (with the `Verified` condition from the newest record) if it changed, then the Events
    /// for what changed: the failure, and a verification verdict.
    async fn write_status(
        &self,
        old: Option<&EnvironmentStatus>,
        status: &mut EnvironmentStatus,
        failure_event: Option<(Reason, String)>,
    ) -> Result<(), ReconcileError> {
        history::set_verified_condition(status, Timestamp::now());
        if !self.patch_status(old, status).await? {
            return Ok(());
        }
        if let Some((reason, message)) = failure_event {
            self.ctx.event(self.env.as_ref(), true, reason.as_str(), message).await;
        }
        if let Some((warning, reason, note)) = history::event(old, status, &self.name) {
            self.ctx.event(self.env.as_ref(), warning, reason.as_str(), note).await;
        }
        Ok(())
    }

    /// A promoted Environment that has applied nothing yet: Ready is Unknown and says what it waits for.
    async fn wait_for_first_promotion(
        &self,
        old: Option<&EnvironmentStatus>,
        status: &mut EnvironmentStatus,
    ) -> Result<(), ReconcileError> {
        let from = self
            .env
            .spec
            .promotion
            .as_ref()
            .map(|p| p.from.as_str())
            .unwrap_or_default();
        let message = match &status.promotion {
            Some(p) => format!(
                "nothing applied yet: Promotion {} of {} is {}",
                p.name, p.revision, p.phase
            ),
            // The first revision promoted here was refused (an image copy, a policy): that failure says why
            // nothing is applied, better than "waiting", until another Promotion comes.
            None if refused_first_revision(status) => {
                self.patch_status(old, status).await?;
                return Ok(());
            }
            None => format!("nothing applied yet: waiting for {from} to verify a revision"),
        };
        let generation = status.observed_generation;
        set_condition_status(
            &mut status.conditions,
            crate::api::READY,
            "Unknown",
            Reason::WaitingForPromotion,
            message,
            generation,
            Timestamp::now(),
        );
        self.patch_status(old, status).await?;
        Ok(())
    }

    /// Sets Ready=False (and Stalled) for a failure; returns the Event to publish if status changes.
    fn fail_conditions(&self, status: &mut EnvironmentStatus, failure: Failure) -> (Reason, String) {
        let message = match &status.last_applied_revision {
            Some(rev) => format!("{}; the cluster keeps revision {rev}", failure.message),
            None => failure.message,
        };
        warn!(reason = %failure.reason, error = %message, "sync failed");
        let generation = status.observed_generation;
        ConditionSet::failed(
            &mut status.conditions,
            failure.reason,
            message.clone(),
            failure.stalled,
            generation,
            Timestamp::now(),
        );
        (failure.reason, message)
    }

    async fn fail(
        &self,
        old: Option<&EnvironmentStatus>,
        status: &mut EnvironmentStatus,
        failure: Failure,
    ) -> Result<(), ReconcileError> {
        let (reason, message) = self.fail_conditions(status, failure);
        if self.patch_status(old, status).await? {
            self.ctx.event(self.env.as_ref(), true, reason.as_str(), message).await;
        }
        Ok(())
    }

    /// Why `dependsOn` holds `revision` back, if it does: a dependency in another namespace under
    /// `--no-cross-namespace-refs`, a cycle through this Environment, or dependencies not Ready. The direct
    /// dependencies are read from the API server (the watch cache can lag behind the change that woke this
    /// reconcile); the rest of the graph, for cycles, from the cache.
    async fn dependencies_block(&self, revision: &str) -> Result<Option<Failure>, ReconcileError> {
        let me = (self.namespace.clone(), self.name.clone());
        let deps = dependencies::dependencies(&self.env);
        if self.ctx.settings.no_cross_namespace_refs
            && let Some(other) = deps.iter().find(|d| d.0 != self.namespace)
        {
            return Ok(Some(Failure {
                reason: Reason::CrossNamespaceRef,
                message: format!(
                    "dependsOn names Environment {}, in another namespace; this Ferry runs with \
                     --no-cross-namespace-refs",
                    dependencies::show(other)
                ),
                stalled: true,
            }));
        }
        let mut fetched = std::collections::HashMap::new();
        for dep in &deps {
            let api: Api<Environment> = Api::namespaced(self.ctx.client.clone(), &dep.0);
            fetched.insert(dep.clone(), api.get_opt(&dep.1).await?);
        }
        let cache = self.ctx.caches.get().map(|c| c.envs.clone());
        let edges = |key: &dependencies::Key| -> Vec<dependencies::Key> {
            if *key == me {
                return deps.clone();
            }
            if let Some(found) = fetched.get(key) {
                return found.as_ref().map(dependencies::dependencies).unwrap_or_default();
            }
            cache
                .as_ref()
                .and_then(|c| c.get(&ObjectRef::new(&key.1).within(&key.0)))
                .map(|e| dependencies::dependencies(&e))
                .unwrap_or_default()
        };
        if let Some(cycle) = dependencies::cycle_through(&me, edges) {
            let chain: Vec<String> = cycle.iter().map(dependencies::show).collect();
            return Ok(Some(Failure {
                reason: Reason::DependencyCycle,
                message: format!("dependsOn forms a cycle: {}", chain.join(" -> ")),
                stalled: true,
            }));
        }
        let waiting: Vec<String> = deps
            .iter()
            .filter_map(|d| dependencies::not_ready(&self.env, revision, d, fetched.get(d).and_then(Option::as_ref)))
            .collect();
        if waiting.is_empty() {
            return Ok(None);
        }
        Ok(Some(Failure {
            reason: Reason::DependencyNotReady,
            message: format!("revision {revision} waits for dependencies: {}", waiting.join("; ")),
            stalled: false,
        }))
    }

    /// The GitRepository named by `sourceRef`.
    async fn source(&self) -> Result<Result<GitRepository, Failure>, ReconcileError> {
        let spec = &self.env.spec;
        let source_ns = spec
            .source_ref
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        if spec.source_ref.kind != "GitRepository" {
            return Ok(Err(Failure {
                reason: Reason::InvalidSpec,
                message: format!(
                    "sourceRef.kind {:?} is not supported; use GitRepository",
                    spec.source_ref.kind
                ),
                stalled: true,
            }));
        }
        if self.ctx.settings.no_cross_namespace_refs && source_ns != self.namespace {
            return Ok(Err(Failure {
                reason: Reason::CrossNamespaceRef,
                message: format!(
                    "sourceRef names GitRepository {source_ns}/{}, in another namespace; this Ferry runs with \
                     --no-cross-namespace-refs",
                    spec.source_ref.name
                ),
                stalled: true,
            }));
        }
        // From the cache the change that woke this reconcile went through; read only when it is not there (the
        // cache is still listing, or the repository is missing).
        if let Some(repo) = self.ctx.cached_source(&source_ns, &spec.source_ref.name) {
            return Ok(Ok(repo.as_ref().clone()));
        }
        let repos: Api<GitRepository> = Api::namespaced(self.ctx.client.clone(), &source_ns);
        Ok(repos.get_opt(&spec.source_ref.name).await?.ok_or_else(|| Failure {
            reason: Reason::SourceNotFound,
            message: format!("GitRepository {source_ns}/{} not found", spec.source_ref.name),
            stalled: false,
        }))
    }

    /// What to apply: the GitRepository's revision, or for a promoted Environment the active promotion's.
    async fn desired(
        &self,
        status: &mut EnvironmentStatus,
    ) -> Result<Result<Option<Desired>, Failure>, ReconcileError> {
        let repo = match self.source().await? {
            Ok(repo) => repo,
            Err(failure) => return Ok(Err(failure)),
        };
        if self.env.spec.promotion.is_some() {
            return self.promoted_desired(repo, status).await;
        }
        let Some(artifact) = repo.status.as_ref().and_then(|s| s.artifact.clone()) else {
            let why = repo
                .status
                .as_ref()
                .and_then(|s| {
                    let find = |t: &str| s.conditions.iter().find(|c| c.type_ == t);
                    find(crate::api::READY).or_else(|| find(crate::api::RECONCILING))
                })
                .map(|c| format!(": {}", c.message))
                .unwrap_or_default();
            return Ok(Err(Failure {
                reason: Reason::SourceNotReady,
                message: format!("GitRepository {} has no revision yet{why}", repo.name_any()),
                stalled: false,
            }));
        };
        Ok(Ok(Some(Desired {
            repo,
            revision: artifact.revision,
            promotion: None,
            track: true,
        })))
    }

    /// The sync itself. The outer `Result` is the API server's (retried); the inner one is the user's
    /// (reported).
    async fn sync(
        &self,
        target: &Target,
        status: &mut EnvironmentStatus,
        desired: &Desired,
    ) -> Result<Result<Outcome, Failure>, ReconcileError> {
        let spec = &self.env.spec;
        let repo = &desired.repo;
        let Some(revision) = Revision::parse(&desired.revision) else {
            return Ok(Err(Failure {
                reason: Reason::SourceNotReady,
                message: format!("revision {:?} is not understood", desired.revision),
                stalled: false,
            }));
        };
        let artifact_revision = &desired.revision;
        tracing::Span::current().record("revision", artifact_revision.as_str());
        status.last_attempted_revision = Some(artifact_revision.clone());
        let new_record = desired.track
            && history::begin(
                &mut status.history,
                artifact_revision,
                desired.promotion.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            );
        let previous = self.env.status.as_ref();
        let new_attempt = decide::new_attempt(previous, status.observed_generation, artifact_revision);
        if new_record || (new_attempt && status.last_applied_revision.as_ref() != Some(artifact_revision)) {
            let message = format!("applying revision {artifact_revision}");
            let generation = status.observed_generation;
            ConditionSet::reconciling(&mut status.conditions, message, generation, Timestamp::now());
            self.patch_status(previous, status).await?;
        }

        let pipeline = self.pipeline();
        // Rendered, decrypted in memory (when the render holds encrypted documents), and digests resolved or
        // taken from the upstream (and copied), then pinned: before the policy looks, so it sees what is applied.
        let track = desired.track;
        let prepared = match pipeline
            .prepare(target, repo, artifact_revision, &revision.commit, status, track)
            .await?
        {
            Ok(prepared) => prepared,
            Err(failure) => return Ok(Err(failure)),
        };
        if let Some(note) = prepared.pinned.as_ref().and_then(|p| p.copied.clone()) {
            self.ctx.event(self.env.as_ref(), false, "ImagesCopied", note).await;
        }
        let render_key = &prepared.render_key;
        let owner = self.owner();
        let objects = prepared.objects();
        if objects.is_empty() && !status.inventory.is_empty() && !spec.allow_empty {
            let blocked = PruneBlocked::EmptyRender(status.inventory.len());
            return Ok(Err(Failure {
                reason: Reason::PruneBlocked,
                message: format!("{}: {blocked}", artifact_revision),
                stalled: true,
            }));
        }
        // Before the dry run and the steady-state shortcut: a policy created or tightened since applies now.
        if let Err(failure) = self.enforce_registry_policy(objects, status, artifact_revision).await? {
            return Ok(Err(failure));
        }
        // The steady state: the same revision and spec, and every object as this process left it. Nothing to
        // ask the API server.
        let key = (self.namespace.clone(), self.name.clone());
        // A chart's render also depends on the cluster's capabilities: a change there is a change to apply.
        let fingerprint = crate::sync::fingerprint(
            &format!("{artifact_revision}{render_key}"),
            self.env.metadata.generation,
        );
        // The watches of the cluster the objects are in: the local one, or the target cluster's own set.
        let remote_watches = target.remote.as_ref().and_then(|remote| {
            let watches = self.ctx.remote_watches()?;
            Some(watches.for_environment(&key, &remote.identity, &remote.server, &remote.watch_client))
        });
        let watches = match &target.remote {
            None => self.ctx.watches(),
            Some(_) => remote_watches.as_deref(),
        };
        if let Some(watches) = watches
            && let Some(record) = self.ctx.records.get(&key)
            && status.last_applied_revision.as_ref() == Some(artifact_revision)
            && record.versions.keys().eq(status.inventory.iter())
        {
            let live = |e: &InventoryEntry| watches.live_version(e);
            let interval = self.ctx.settings.full_sync_interval;
            match crate::sync::must_sync(Some(&record), &fingerprint, live, Instant::now(), interval) {
                None => {
                    // A watch on a cluster behind a cut network hears nothing and reports nothing, which looks
                    // just like a quiet cluster. One `/version` request (with the remote client's timeouts) per
                    // sync keeps "Ready" meaning "reachable now": it fails as a sync would, `ClusterUnreachable`.
                    if target.remote.is_some() {
                        target.client.apiserver_version().await?;
                    }
                    return Ok(Ok(Outcome::Ready(record.message)));
                }
                Some(why) => debug!(?why, "full sync"),
            }
        }
        // What this process left the last time (objects still at those versions need not be read again), for the
        // local cluster, whose resourceVersions the records are of.
        let known = match self.ctx.records.get(&key) {
            Some(record) if target.remote.is_none() => record.known(),
            _ => Default::default(),
        };
        self.ctx.records.forget(&key);
        let opts = crate::sync::apply_options(&self.env);
        let mut report = ApplyReport::default();
        if let Err(e) = target
            .applier
            .apply_all_known(objects, &opts, &known, &mut report)
            .await
        {
            // Whatever was written before the failure stays tracked, so prune and deletion still find it.
            if !report.inventory.is_empty() {
                let mut union: BTreeSet<InventoryEntry> = status.inventory.iter().cloned().collect();
                union.extend(report.inventory.iter().cloned());
                status.inventory = union.into_iter().collect();
            }
            return apply_failure(e, artifact_revision);
        }
        crate::metrics::metrics().objects_changed(report.created.len(), report.configured.len(), 0);
        let same_revision = status.last_applied_revision.as_ref() == Some(artifact_revision);
        let last_applied = status.last_applied_revision.as_deref();
        let generation = self.env.metadata.generation;
        if decide::drift(previous, last_applied, generation, artifact_revision, report.changed()) {
            let objects: Vec<String> = report.created.iter().chain(&report.configured).cloned().collect();
            let note = format!("drift corrected at {}: {}", artifact_revision, objects.join(", "));
            warn!(%note);
            self.ctx.event(self.env.as_ref(), true, "DriftCorrected", note).await;
            crate::metrics::metrics().drift_corrected();
            status.last_drift_correction = Some(DriftCorrection {
                revision: artifact_revision.clone(),
                objects,
            });
        }
        if spec.prune {
            let stale = match plan_prune(
                &status.inventory,
                &report.inventory,
                spec.max_prune_percent,
                spec.allow_empty,
            ) {
                Ok(stale) => stale,
                Err(blocked) => {
                    // Everything stays owned and listed, so a later render can prune it once allowed.
                    let mut union: BTreeSet<InventoryEntry> = status.inventory.iter().cloned().collect();
                    union.extend(report.inventory.iter().cloned());
                    status.inventory = union.into_iter().collect();
                    return Ok(Err(Failure {
                        reason: Reason::PruneBlocked,
                        message: format!("{}: {blocked}", artifact_revision),
                        stalled: true,
                    }));
                }
            };
            match target.applier.prune(&stale, &owner).await {
                Ok(pruned) => {
                    crate::metrics::metrics().objects_changed(0, 0, pruned.len());
                    for p in &pruned {
                        info!(object = %p, "pruned");
                    }
                    if !pruned.is_empty() {
                        let names: Vec<String> = pruned.iter().map(ToString::to_string).collect();
                        let note = format!("pruned at {}: {}", artifact_revision, names.join(", "));
                        self.ctx.event(self.env.as_ref(), false, "Pruned", note).await;
                    }
                }
                Err(ApplyError::Api { source, .. }) => return Err(source.into()),
                Err(e) => {
                    // What this revision applied stays tracked, and so does what could not be deleted.
                    let mut union: BTreeSet<InventoryEntry> = status.inventory.iter().cloned().collect();
                    union.extend(report.inventory.iter().cloned());
                    status.inventory = union.into_iter().collect();
                    return Ok(Err(Failure {
                        reason: e.prune_reason(),
                        message: format!("pruning at {artifact_revision} failed: {e}"),
                        stalled: false,
                    }));
                }
            }
        }
        let count = report.inventory.len();
        self.applied_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(report.inventory.iter().cloned());
        let new_revision = !same_revision;
        status.inventory = report.inventory.clone();
        status.last_applied_revision = Some(artifact_revision.clone());
        if desired.track
            && let Some(record) = history::current(&mut status.history, artifact_revision)
        {
            history::applied(record, Timestamp::now());
        }
        if new_revision {
            let note = format!("applied revision {}: {}", artifact_revision, report.summary());
            self.ctx.event(self.env.as_ref(), false, "Applied", note).await;
            for note in prepared.notes() {
                warn!(%note, "render note");
                self.ctx
                    .event(self.env.as_ref(), true, "HooksSkipped", note.clone())
                    .await;
            }
        }
        let applied = format!("applied revision {} ({count} objects)", artifact_revision);
        let outcome = if spec.wait {
            self.check_health(target, status, artifact_revision, applied).await?
        } else {
            Ok(Outcome::Ready(applied))
        };
        if let Ok(Outcome::Ready(message)) = &outcome
            && report.versions.len() == report.inventory.len()
        {
            self.ctx.records.set(
                key,
                crate::sync::AppliedRecord {
                    fingerprint,
                    versions: report.versions,
                    digests: report.digests,
                    message: message.clone(),
                    full_sync_at: Instant::now(),
                },
            );
            if let Some(watches) = watches {
                watches.ensure(&report.inventory, |v, k| target.applier.discovered(v, k));
            }
        }
        Ok(outcome)
    }

    /// With `wait`, the verdict on the applied objects: all healthy, some still converging (until the health
    /// timeout, counted from when Ready went Unknown for this revision), or failed.
    async fn check_health(
        &self,
        target: &Target,
        status: &EnvironmentStatus,
        revision: &str,
        applied: String,
    ) -> Result<Result<Outcome, Failure>, ReconcileError> {
        let (waiting, failed) = health_of(target, &status.inventory, &|e| self.exists(e)).await?;
        if !failed.is_empty() {
            return Ok(Err(Failure {
                reason: Reason::HealthCheckFailed,
                message: format!("{revision} is unhealthy: {}", failed.join("; ")),
                stalled: false,
            }));
        }
        if waiting.is_empty() {
            return Ok(Ok(Outcome::Ready(format!("{applied}, all healthy"))));
        }
        let timeout = parse_duration(&self.env.spec.health_timeout).unwrap_or(Duration::from_secs(300));
        let ready = (self.env.status.as_ref()).and_then(|s| s.conditions.iter().find(|c| c.type_ == crate::api::READY));
        if decide::health_timed_out(ready, revision, Timestamp::now(), timeout) {
            return Ok(Err(Failure {
                reason: Reason::HealthCheckFailed,
                message: format!(
                    "{revision} was not healthy within {}: {}",
                    self.env.spec.health_timeout,
                    waiting.join("; ")
                ),
                stalled: false,
            }));
        }
        Ok(Ok(Outcome::Progressing(format!(
            "applied revision {revision}, waiting for: {}",
            waiting.join("; ")
        ))))
    }

    /// Before the Environment goes (the finalizer helper removes [`FINALIZER`] once this succeeded): with
    /// `deletionPolicy: Delete`, its applied objects are deleted first.
    async fn finalize(&self) -> Result<Action, ReconcileError> {
        let inventory = self
            .env
            .status
            .as_ref()
            .map(|s| s.inventory.clone())
            .unwrap_or_default();
        let target = match &self.target {
            Ok(target) => Some(target),
            Err(ClusterError::Api(e)) => return Err(ReconcileError::Internal(e.to_string())),
            Err(e) => {
                // Without a way into the target cluster the objects stay there; the Environment still goes,
                // and says so.
                if self.env.spec.deletion_policy == DeletionPolicy::Delete && !inventory.is_empty() {
                    let note = format!("{e}: the applied objects are left in the target cluster");
                    warn!(%note);
                    self.ctx.event(self.env.as_ref(), true, "NotDeleted", note).await;
                }
                None
            }
        };
        if let Some(target) = target
            && self.env.spec.deletion_policy == DeletionPolicy::Delete
            && !inventory.is_empty()
        {
            match target.applier.prune(&inventory, &self.owner()).await {
                Ok(deleted) => info!(count = deleted.len(), "deleted the Environment's objects"),
                Err(ApplyError::Api { source, .. }) => return Err(source.into()),
                Err(e @ (ApplyError::Rejected { .. } | ApplyError::Forbidden { .. })) => {
                    // A Namespace or CRD that holds objects of others stays, and so does what the Environment's
                    // account may not delete (its rights may be gone with its namespace): the Environment
                    // still goes, and says what it left.
                    warn!(error = %e, "left in place while deleting the Environment");
                    self.ctx
                        .event(self.env.as_ref(), true, "NotDeleted", e.to_string())
                        .await;
                }
                Err(e) => {
                    warn!(error = %e, "deleting the Environment's objects failed; retrying");
                    return Err(ReconcileError::Internal(e.to_string()));
                }
            }
        }
        self.ctx.records.forget(&(self.namespace.clone(), self.name.clone()));
        if let Some(remote) = self.ctx.remote_watches() {
            remote.release(&(self.namespace.clone(), self.name.clone()));
        }
        Ok(Action::await_change())
    }

    fn owner(&self) -> Owner {
        Owner {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// The pipeline from revision to objects, with this controller's caches and settings.
    fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            client: &self.ctx.client,
            secrets: self.ctx.readers(),
            env: &self.env,
            mirrors: &self.ctx.mirrors,
            renders: &self.ctx.renders,
            capabilities: &self.ctx.capabilities,
            render: &self.ctx.settings.render,
            fetch: FetchOptions {
                max_bytes: self.ctx.settings.max_repo_bytes,
                allow_file: self.ctx.settings.allow_file_urls,
                ..FetchOptions::default()
            },
            registry: &self.ctx.settings.registry,
            copies: Copies::Make,
        }
    }
}

/// The objects still converging and those that failed, each as `object: why`. Only the first few waiting
/// objects are named, so messages built from them change rarely while objects converge. Objects of kinds
/// without a status that `exists` knows to exist are healthy without being read.
async fn health_of(
    target: &Target,
    inventory: &[InventoryEntry],
    exists: &(dyn Fn(&InventoryEntry) -> bool + Sync),
) -> Result<(Vec<String>, Vec<String>), ReconcileError> {
    let mut waiting = Vec::new();
    let mut failed = Vec::new();
    for entry in inventory {
        if crate::health::only_existence_counts(&entry.api_version, &entry.kind) && exists(entry) {
            continue;
        }
        let live = target.applier.get(entry).await.map_err(|e| match e {
            // Kept as the client's error: whether the cluster answered at all is told from it.
            ApplyError::Api { source, .. } => ReconcileError::Kube(source),
            other => ReconcileError::Internal(other.to_string()),
        })?;
        match live.map(|l| assess(&l)) {
            None => waiting.push(format!("{entry}: not found")),
            Some(Health::Current) => {}
            Some(Health::InProgress(why)) => waiting.push(format!("{entry}: {why}")),
            Some(Health::Failed(why)) => failed.push(format!("{entry}: {why}")),
        }
    }
    let total_waiting = waiting.len();
    waiting.truncate(3);
    if total_waiting > waiting.len() {
        waiting.push(format!("and {} more", total_waiting - waiting.len()));
    }
    Ok((waiting, failed))
}

/// What went wrong talking to a target cluster, with the cause a person needs ("timed out", "connection
/// refused").
fn why_unreachable(e: &ReconcileError) -> String {
    let text = match e {
        ReconcileError::Kube(k) => crate::apply::with_causes(k),
        ReconcileError::Internal(why) => why.clone(),
    };
    // The connect timer's own words ("deadline has elapsed") do not say which deadline: name it.
    if text.contains("deadline has elapsed") && !text.contains("timed out") {
        format!("{text} (connecting timed out)")
    } else {
        text
    }
}

fn apply_failure(e: ApplyError, revision: &str) -> Result<Result<Outcome, Failure>, ReconcileError> {
    let Some(reason) = e.reason() else {
        return Err(ReconcileError::Internal(e.to_string()));
    };
    Ok(Err(Failure {
        reason,
        message: format!("applying {revision} failed: {e}"),
        stalled: e.is_user_error(),
    }))
}
