//! Apply: rendered objects → the cluster, by server-side apply under one stable field manager: discovery, the
//! staged dry run of the whole set, and writing only what differs. Ownership labels are in [`ownership`], prune
//! and its guards in [`prune`], the comparison of dry-run results with live objects in [`normalize`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;

mod normalize;
mod ownership;
mod prune;

pub use normalize::{conflicting_managers, differs, digest, imperative_managers, normalized};
pub use ownership::{OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL, Owner, owned_by, owned_by_other, prepare};
pub use prune::{PRUNE_ANNOTATION, PruneBlocked, plan_prune};

use crate::api::InventoryEntry;
use crate::render::{RenderedObject, apply_rank};

/// The field manager for every server-side apply, so ownership is stable across versions and replicas.
pub const FIELD_MANAGER: &str = "ferry";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The server's dry run refused objects (invalid, unknown kind, missing namespace, …): nothing of the set
    /// was applied. Every failing object is listed.
    #[error("{} object(s) would be rejected, nothing was applied: {}", failures.len(), listed(failures))]
    Invalid { failures: Vec<String> },
    /// Objects of kinds that CRDs of the same revision define can only be dry-run once those CRDs exist, so
    /// the first stage (CRDs, Namespaces) was written before they were refused. Said plainly, as the one case
    /// where a refused revision leaves something applied.
    #[error(
        "{} object(s) would be rejected, nothing of them was applied; the first stage was applied before they \
         could be checked (created: {}): {}",
        failures.len(),
        if created.is_empty() { "none".to_string() } else { created.join(", ") },
        listed(failures)
    )]
    InvalidAfterFirstStage {
        created: Vec<String>,
        failures: Vec<String>,
    },
    /// Fields are owned by another declarative applier; `spec.force` takes them over.
    #[error("{} conflict(s) with other field managers, nothing was applied (set spec.force to take ownership): {}", failures.len(), listed(failures))]
    Conflict { failures: Vec<String> },
    /// The identity the Environment applies with (its ServiceAccount, or Ferry's own) may not do this. The API
    /// server's message names the user, the verb and the object. Found by the dry run, nothing of the set was
    /// applied; found by prune, the other stale objects were still deleted.
    #[error("{} request(s) forbidden: {}", failures.len(), listed(failures))]
    Forbidden { failures: Vec<String> },
    #[error("CustomResourceDefinition {0} did not become Established")]
    NotEstablished(String),
    #[error("{object} was rejected: {message}")]
    Rejected { object: String, message: String },
    #[error("talking to the API server failed for {object}: {source}")]
    Api {
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// The first failures, each cut short: a revision with thousands of refused objects still gets a message a
/// person can read and a status the API server accepts.
fn listed(failures: &[String]) -> String {
    const SHOWN: usize = 10;
    const EACH: usize = 600;
    let mut out: Vec<String> = failures
        .iter()
        .take(SHOWN)
        .map(|f| {
            if f.len() <= EACH {
                return f.clone();
            }
            // Head and tail: the object comes first, and the API server puts why last.
            let mut head = EACH / 2;
            while !f.is_char_boundary(head) {
                head -= 1;
            }
            let mut tail = f.len() - EACH / 2;
            while !f.is_char_boundary(tail) {
                tail += 1;
            }
            format!("{} ... {}", &f[..head], &f[tail..])
        })
        .collect();
    if failures.len() > SHOWN {
        out.push(format!("and {} more", failures.len() - SHOWN));
    }
    out.join("; ")
}

impl ApplyError {
    /// Failures that need a change in Git or the spec; the others are the API server's and are retried.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            ApplyError::Api { .. } | ApplyError::NotEstablished(_) | ApplyError::Forbidden { .. }
        )
    }

    /// A refusal by authorization, for one object.
    fn forbidden(object: String, status: &kube::core::Status) -> Self {
        ApplyError::Forbidden {
            failures: vec![format!("{object}: {}", status.message)],
        }
    }
}

/// How to apply one set.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The Environment the objects are labelled for; `None` (a local `ferry diff`) adds no labels and claims
    /// nothing.
    pub owner: Option<Owner>,
    /// Overrides every namespaced object's namespace.
    pub target_namespace: Option<String>,
    /// For namespaced objects that name no namespace.
    pub default_namespace: String,
    /// Take fields over from other declarative appliers.
    pub force: bool,
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub inventory: Vec<InventoryEntry>,
    pub created: Vec<String>,
    pub configured: Vec<String>,
    pub unchanged: usize,
    /// Each applied object's resourceVersion after the apply (what a later sync compares with).
    pub versions: std::collections::BTreeMap<InventoryEntry, String>,
    /// Each applied object's [`digest`] at that resourceVersion: what it is, for as long as it keeps it.
    pub digests: std::collections::BTreeMap<InventoryEntry, u64>,
}

/// What the caller knows of objects it applied before: each one's resourceVersion and [`digest`] then. An object
/// whose dry run still shows that resourceVersion is that object, so it need not be read to be compared.
pub type Known = std::collections::BTreeMap<InventoryEntry, (String, u64)>;

/// The live object, as far as a stage needs it.
#[derive(Debug)]
enum Live {
    /// The dry run created it: there is none.
    Absent,
    /// Read from the API server.
    Fetched(Box<DynamicObject>),
    /// Still at the resourceVersion the caller applied it at: known by its digest without a read.
    Known { version: String, digest: u64 },
}

/// Where the live object comes from, given the dry run's resourceVersion (`None`: the dry run failed, so the
/// live object may be needed to explain why; `Some("")`: the dry run would create it) and what is known.
/// Only an object that exists and is not known at exactly that resourceVersion is read.
fn live_from_dry_run(dry_run_version: Option<&str>, known: Option<&(String, u64)>) -> Option<Live> {
    match (dry_run_version, known) {
        (Some(""), _) => Some(Live::Absent),
        (Some(version), Some((at, digest))) if version == at => Some(Live::Known {
            version: version.to_string(),
            digest: *digest,
        }),
        _ => None,
    }
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !self.created.is_empty() || !self.configured.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} created, {} configured, {} unchanged",
            self.created.len(),
            self.configured.len(),
            self.unchanged
        )
    }
}

/// One object that applying would change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDiff {
    pub object: String,
    /// `None` when the object would be created.
    pub live: Option<Value>,
    pub desired: Value,
}

/// Annotation ordering objects within a stage (lower first), like Argo CD's sync waves.
pub const APPLY_ORDER_ANNOTATION: &str = "ferry.dev/apply-order";

/// Discovered kinds: the same for every identity, so shared by the appliers of one cluster.
type Discovered = Arc<Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>>;

/// Applies and prunes with a discovery cache shared across reconciles.
pub struct Applier {
    client: Client,
    resources: Discovered,
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// One object ready to send: where it goes and what it says.
struct Prepared {
    api: Api<DynamicObject>,
    name: String,
    body: Value,
    label: String,
    entry: InventoryEntry,
}

/// Requests one Environment's sync has in flight at once (dry runs; writes of objects of one apply step).
const PARALLEL_REQUESTS: usize = 4;

/// What the dry run found for one object.
enum Verdict {
    Planned(Box<Planned>),
    /// The server would refuse it.
    Invalid(String),
    Conflict(String),
    Denied(String),
}

/// The dry run's verdict on one object.
struct Planned {
    prepared: Prepared,
    live: Live,
    dry_run: Value,
    force: bool,
}

/// A refusal that only a change to the object can fix. Authentication, authorization, timeouts, throttling
/// and optimistic-lock conflicts are the API server's or the install's problem and are retried.
/// Server-side apply answers 500 for an object whose fields have the wrong type ("failed to create typed patch
/// object ... expected string, got ..."): the object is what is wrong, so retrying it would never end.
fn client_error(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(status) if [400, 404, 405, 406, 413, 415, 422].contains(&status.code) => Some(status),
        kube::Error::Api(status) if status.code == 500 && status.message.starts_with(TYPED_PATCH_FAILURE) => {
            Some(status)
        }
        _ => None,
    }
}

const TYPED_PATCH_FAILURE: &str = "failed to create typed patch object";

/// A refusal by authorization: the Environment's identity may not do this (until someone grants it).
fn forbidden(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(status) if status.code == 403 => Some(status),
        _ => None,
    }
}

/// One planned object after its write step: its normalized dry run, and the write's result (`None`: unchanged,
/// not written).
type Written = (Planned, Value, Option<Result<DynamicObject, kube::Error>>);

/// The apply step an object is written in: its kind's rank, then its apply-order annotation.
fn write_step(plan: &Planned) -> (u8, i64) {
    (apply_rank(&plan.prepared.entry.kind), order_of(&plan.prepared.body))
}

fn order_of(object: &Value) -> i64 {
    object["metadata"]["annotations"][APPLY_ORDER_ANNOTATION]
        .as_str()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier {
            client,
            resources: Discovered::default(),
        }
    }

    /// An applier for the same cluster through another client (another identity), sharing discovery.
    pub fn with_client(&self, client: Client) -> Self {
        Applier {
            client,
            resources: self.resources.clone(),
        }
    }

    /// The API resource of a kind this applier has already discovered (no request).
    pub fn discovered(&self, api_version: &str, kind: &str) -> Option<ApiResource> {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&gvk_of(api_version, kind))
            .map(|(ar, _)| ar.clone())
    }

    /// Maps a kind to its API resource. Only hits are cached, so a CRD installed later is found next time.
    async fn resource(
        &self,
        gvk: &GroupVersionKind,
        object: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, ApplyError> {
        if let Some(hit) = self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(gvk) {
            return Ok(Some(hit.clone()));
        }
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok(found) => {
                self.resources
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(gvk.clone(), found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(source) => Err(ApplyError::Api {
                object: object.to_string(),
                source,
            }),
        }
    }

    fn api_for(&self, ar: &ApiResource, caps: &ApiCapabilities, namespace: Option<&str>) -> Api<DynamicObject> {
        match (caps.scope == Scope::Namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    fn prepare(
        &self,
        rendered: &RenderedObject,
        ar: &ApiResource,
        caps: &ApiCapabilities,
        opts: &ApplyOptions,
    ) -> Prepared {
        let namespaced = caps.scope == Scope::Namespaced;
        let namespace = namespaced.then(|| {
            opts.target_namespace
                .clone()
                .or_else(|| rendered.namespace().map(str::to_string))
                .unwrap_or_else(|| opts.default_namespace.clone())
        });
        let entry = InventoryEntry {
            api_version: rendered.api_version().to_string(),
            kind: rendered.kind().to_string(),
            namespace: namespace.clone(),
            name: rendered.name().to_string(),
        };
        Prepared {
            api: self.api_for(ar, caps, namespace.as_deref()),
            name: rendered.name().to_string(),
            body: prepare(&rendered.object, namespace.as_deref(), opts.owner.as_ref()),
            label: entry.to_string(),
            entry,
        }
    }

    /// Applies the whole set, staged: CRDs and Namespaces first (then waits for the CRDs to be Established),
    /// then everything else. Each stage is dry-run in full first; if any object would be rejected, nothing of
    /// that stage is applied and every failure is reported. Objects whose dry run equals the live object are
    /// not written, so a reconcile where nothing changed makes no mutating request.
    /// On failure, `report` still lists what was written before it, so the caller can keep tracking it.
    pub async fn apply_all(
        &self,
        objects: &[RenderedObject],
        opts: &ApplyOptions,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        self.apply_all_known(objects, opts, &Known::new(), report).await
    }

    /// [`Applier::apply_all`], reading no object that `known` (what this caller applied before, see [`Known`])
    /// already answers for. `report.versions` and `report.digests` are the next call's `known`.
    pub async fn apply_all_known(
        &self,
        objects: &[RenderedObject],
        opts: &ApplyOptions,
        known: &Known,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let mut ordered: Vec<&RenderedObject> = objects.iter().collect();
        ordered.sort_by_key(|o| (apply_rank(o.kind()), order_of(&o.object)));
        let defined_by_set: BTreeSet<(String, String)> = objects
            .iter()
            .filter(|o| o.kind() == "CustomResourceDefinition")
            .filter_map(|o| {
                let spec = &o.object["spec"];
                Some((
                    spec["group"].as_str()?.to_string(),
                    spec["names"]["kind"].as_str()?.to_string(),
                ))
            })
            .collect();

        // Every kind must be served, or defined by a CRD of this same set, before anything is applied.
        let mut unknown = Vec::new();
        let mut first_stage = Vec::new();
        let mut second_stage: Vec<&RenderedObject> = Vec::new();
        for o in &ordered {
            let gvk = gvk_of(o.api_version(), o.kind());
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            match self.resource(&gvk, &label).await? {
                Some((ar, caps)) if apply_rank(o.kind()) <= 1 => first_stage.push(self.prepare(o, &ar, &caps, opts)),
                Some(_) => second_stage.push(o),
                None if defined_by_set.contains(&(gvk.group.clone(), gvk.kind.clone())) => second_stage.push(o),
                None => unknown.push(format!("{label}: kind {} is not served by the cluster", o.kind())),
            }
        }
        if !unknown.is_empty() {
            return Err(ApplyError::Invalid { failures: unknown });
        }

        // Before the first stage is written, dry-run whatever of the second stage can be checked already (kinds
        // served now, namespaces that exist), so an invalid object stops the revision before anything is applied.
        if !first_stage.is_empty() {
            self.precheck(&second_stage, opts).await?;
        }
        let crds: Vec<String> = first_stage
            .iter()
            .filter(|p| p.entry.kind == "CustomResourceDefinition")
            .map(|p| p.name.clone())
            .collect();
        self.apply_stage(first_stage, opts, known, report).await?;
        for crd in &crds {
            self.wait_established(crd).await?;
        }
        let mut prepared = Vec::new();
        for o in second_stage {
            let gvk = gvk_of(o.api_version(), o.kind());
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            let Some((ar, caps)) = self.resource(&gvk, &label).await? else {
                return Err(ApplyError::Invalid {
                    failures: vec![format!(
                        "{label}: kind {} is not served after its CRD was applied",
                        o.kind()
                    )],
                });
            };
            prepared.push(self.prepare(o, &ar, &caps, opts));
        }
        match self.apply_stage(prepared, opts, known, report).await {
            Err(ApplyError::Invalid { failures }) if report.changed() => {
                return Err(ApplyError::InvalidAfterFirstStage {
                    created: report.created.clone(),
                    failures,
                });
            }
            other => other?,
        }
        report.inventory.sort();
        Ok(())
    }

    /// Dry-runs the objects that do not depend on the first stage; refusals other than "namespace not found"
    /// fail the whole set.
    async fn precheck(&self, objects: &[&RenderedObject], opts: &ApplyOptions) -> Result<(), ApplyError> {
        let mut failures = Vec::new();
        let mut denied = Vec::new();
        for o in objects {
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            let Some((ar, caps)) = self.resource(&gvk_of(o.api_version(), o.kind()), &label).await? else {
                continue; // defined by a CRD of this set: checked after it is Established
            };
            let p = self.prepare(o, &ar, &caps, opts);
            let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
            params.force = true;
            match p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {} // its namespace comes with the first stage
                Err(e) => match (client_error(&e), forbidden(&e)) {
                    (Some(status), _) => failures.push(format!("{}: {}", p.label, status.message)),
                    (None, Some(status)) => denied.push(format!("{}: {}", p.label, status.message)),
                    (None, None) => {
                        return Err(ApplyError::Api {
                            object: p.label,
                            source: e,
                        });
                    }
                },
            }
        }
        if !denied.is_empty() {
            return Err(ApplyError::Forbidden { failures: denied });
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Invalid { failures })
        }
    }

    async fn apply_stage(
        &self,
        stage: Vec<Prepared>,
        opts: &ApplyOptions,
        known: &Known,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let planned = self.plan_stage(stage, opts, known).await?;
        self.write(planned, report).await
    }

    /// Dry-runs every object of a stage; fails listing every object the server would refuse. The live object is
    /// read only when the dry run says it exists and `known` does not already say what it is. Objects are
    /// dry-run a few at a time (dry runs write nothing, so their order does not matter); verdicts are collected
    /// in the stage's order, as one after another would find them.
    async fn plan_stage(
        &self,
        stage: Vec<Prepared>,
        opts: &ApplyOptions,
        known: &Known,
    ) -> Result<Vec<Planned>, ApplyError> {
        use futures::StreamExt;
        let verdicts: Vec<Result<Verdict, ApplyError>> = futures::stream::iter(stage)
            .map(|p| self.plan_one(p, opts, known))
            .buffered(PARALLEL_REQUESTS)
            .collect()
            .await;
        let mut invalid = Vec::new();
        let mut conflicts = Vec::new();
        let mut denied = Vec::new();
        let mut planned = Vec::new();
        for verdict in verdicts {
            match verdict? {
                Verdict::Planned(p) => planned.push(*p),
                Verdict::Invalid(f) => invalid.push(f),
                Verdict::Conflict(f) => conflicts.push(f),
                Verdict::Denied(f) => denied.push(f),
            }
        }
        if !denied.is_empty() {
            return Err(ApplyError::Forbidden { failures: denied });
        }
        if !invalid.is_empty() {
            invalid.extend(conflicts);
            return Err(ApplyError::Invalid { failures: invalid });
        }
        if !conflicts.is_empty() {
            return Err(ApplyError::Conflict { failures: conflicts });
        }
        Ok(planned)
    }

    /// The dry run's verdict on one object (an `Err` is the API server's, which fails the whole stage).
    async fn plan_one(&self, p: Prepared, opts: &ApplyOptions, known: &Known) -> Result<Verdict, ApplyError> {
        let force = opts.force;
        let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
        params.force = force;
        let first = p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await;
        let dry_run_version = first
            .as_ref()
            .ok()
            .map(|d| d.metadata.resource_version.as_deref().unwrap_or_default());
        let live = match live_from_dry_run(dry_run_version, known.get(&p.entry)) {
            Some(live) => live,
            None => match p.api.get_opt(&p.name).await {
                Ok(Some(live)) => Live::Fetched(Box::new(live)),
                Ok(None) => Live::Absent,
                Err(e) => {
                    return match forbidden(&e) {
                        Some(status) => Ok(Verdict::Denied(format!("{}: {}", p.label, status.message))),
                        None => Err(ApplyError::Api {
                            object: p.label,
                            source: e,
                        }),
                    };
                }
            },
        };
        // What is known was applied by this same owner; anything else is read and checked.
        let claimed = match &live {
            Live::Fetched(l) => opts.owner.as_ref().and_then(|o| owned_by_other(l, o)),
            _ => None,
        };
        if let Some(other) = claimed {
            return Ok(Verdict::Conflict(format!(
                "{}: already applied by Environment {other}",
                p.label
            )));
        }
        let (result, forced) = match first {
            Err(kube::Error::Api(s)) if s.code == 409 && !force && !conflicting_managers(&s.message).is_empty() => {
                // Fields taken by an imperative edit are drift: take them back. Fields of another
                // declarative applier are its to keep unless the Environment says force.
                let managers = conflicting_managers(&s.message);
                let imperative = match &live {
                    Live::Fetched(l) => serde_json::to_value(l).ok().map(|l| imperative_managers(&l)),
                    _ => None,
                }
                .unwrap_or_default();
                if !managers.is_empty() && managers.iter().all(|m| imperative.contains(m)) {
                    params.force = true;
                    (p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await, true)
                } else {
                    return Ok(Verdict::Conflict(format!("{}: {}", p.label, s.message)));
                }
            }
            other => (other, force),
        };
        match result {
            Ok(dry) => {
                let dry_run = serde_json::to_value(&dry).unwrap_or_default();
                Ok(Verdict::Planned(Box::new(Planned {
                    prepared: p,
                    live,
                    dry_run,
                    force: forced,
                })))
            }
            Err(e) => match (client_error(&e), forbidden(&e)) {
                (Some(status), _) => Ok(Verdict::Invalid(format!("{}: {}", p.label, status.message))),
                (None, Some(status)) => Ok(Verdict::Denied(format!("{}: {}", p.label, status.message))),
                (None, None) => Err(ApplyError::Api {
                    object: p.label,
                    source: e,
                }),
            },
        }
    }

    /// Writes the planned objects that differ from the live ones, in order: objects of one apply step (the same
    /// kind rank and apply-order annotation, which promise no order among themselves) a few at a time. On a
    /// failure, every object that was written is still in `report`, and nothing of a later step is written.
    async fn write(&self, planned: Vec<Planned>, report: &mut ApplyReport) -> Result<(), ApplyError> {
        use futures::StreamExt;
        let mut planned = planned.into_iter().peekable();
        while let Some(first) = planned.next() {
            let step = write_step(&first);
            let mut group = vec![first];
            while let Some(next) = planned.next_if(|p| write_step(p) == step) {
                group.push(next);
            }
            let results: Vec<Written> = futures::stream::iter(group)
                .map(|plan| async move {
                    let desired = normalized(&plan.dry_run);
                    let needs_write = match &plan.live {
                        Live::Absent => true,
                        Live::Fetched(live) => desired != normalized(&serde_json::to_value(live).unwrap_or_default()),
                        Live::Known { digest: known, .. } => digest(&desired) != *known,
                    };
                    let written = if needs_write {
                        let p = &plan.prepared;
                        let mut params = PatchParams::apply(FIELD_MANAGER);
                        params.force = plan.force;
                        Some(p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await)
                    } else {
                        None
                    };
                    (plan, desired, written)
                })
                .buffered(PARALLEL_REQUESTS)
                .collect()
                .await;
            let mut failed = None;
            for (plan, desired, written) in results {
                let p = plan.prepared;
                match written {
                    Some(Ok(written)) => {
                        if let Some(version) = &written.metadata.resource_version {
                            report.versions.insert(p.entry.clone(), version.clone());
                            let value = serde_json::to_value(&written).unwrap_or_default();
                            report.digests.insert(p.entry.clone(), digest(&normalized(&value)));
                        }
                        if matches!(plan.live, Live::Absent) {
                            report.created.push(p.label);
                        } else {
                            report.configured.push(p.label);
                        }
                    }
                    Some(Err(e)) => {
                        if failed.is_none() {
                            failed = Some(match (client_error(&e), forbidden(&e)) {
                                (Some(status), _) => ApplyError::Rejected {
                                    object: p.label,
                                    message: status.message.clone(),
                                },
                                (None, Some(status)) => ApplyError::forbidden(p.label, status),
                                (None, None) => ApplyError::Api {
                                    object: p.label,
                                    source: e,
                                },
                            });
                        }
                        continue;
                    }
                    None => {
                        report.unchanged += 1;
                        // Unchanged: the live object is the desired one, whose digest is already at hand.
                        let version = match &plan.live {
                            Live::Fetched(l) => l.metadata.resource_version.clone(),
                            Live::Known { version, .. } => Some(version.clone()),
                            Live::Absent => None,
                        };
                        if let Some(version) = version {
                            report.versions.insert(p.entry.clone(), version);
                            report.digests.insert(p.entry.clone(), digest(&desired));
                        }
                    }
                }
                report.inventory.push(p.entry);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// What applying would change, without changing anything: for each object that differs, the live object
    /// (if any) and the server's dry-run result, both normalized. Objects of kinds that a CRD in the same set
    /// defines cannot be dry-run before that CRD exists and are listed as new.
    pub async fn diff(&self, objects: &[RenderedObject], opts: &ApplyOptions) -> Result<Vec<ObjectDiff>, ApplyError> {
        let mut prepared = Vec::new();
        let mut unknown = Vec::new();
        let mut diffs = Vec::new();
        for o in objects {
            let gvk = gvk_of(o.api_version(), o.kind());
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            match self.resource(&gvk, &label).await? {
                Some((ar, caps)) => prepared.push(self.prepare(o, &ar, &caps, opts)),
                None if objects.iter().any(|c| {
                    c.kind() == "CustomResourceDefinition"
                        && c.object["spec"]["group"] == gvk.group.as_str()
                        && c.object["spec"]["names"]["kind"] == gvk.kind.as_str()
                }) =>
                {
                    diffs.push(ObjectDiff {
                        object: label,
                        live: None,
                        desired: normalized(&o.object),
                    })
                }
                None => unknown.push(format!("{label}: kind {} is not served by the cluster", o.kind())),
            }
        }
        if !unknown.is_empty() {
            return Err(ApplyError::Invalid { failures: unknown });
        }
        for plan in self.plan_stage(prepared, opts, &Known::new()).await? {
            let live = match &plan.live {
                Live::Fetched(l) => serde_json::to_value(l).ok(),
                _ => None,
            };
            let changed = live.as_ref().is_none_or(|l| differs(&plan.dry_run, l));
            if changed {
                diffs.push(ObjectDiff {
                    object: plan.prepared.label,
                    live: live.as_ref().map(normalized),
                    desired: normalized(&plan.dry_run),
                });
            }
        }
        Ok(diffs)
    }

    async fn wait_established(&self, name: &str) -> Result<(), ApplyError> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let crd = crds.get_opt(name).await.map_err(|source| ApplyError::Api {
                object: format!("CustomResourceDefinition {name}"),
                source,
            })?;
            let established = crd
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(ApplyError::NotEstablished(name.to_string()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The live object for an inventory entry, as JSON (for health checks and diffs).
    pub async fn get(&self, entry: &InventoryEntry) -> Result<Option<Value>, ApplyError> {
        let label = entry.to_string();
        let Some((ar, caps)) = self.resource(&gvk_of(&entry.api_version, &entry.kind), &label).await? else {
            return Ok(None);
        };
        let api = self.api_for(&ar, &caps, entry.namespace.as_deref());
        match api.get_opt(&entry.name).await {
            Ok(live) => Ok(live.and_then(|l| serde_json::to_value(l).ok())),
            Err(source) => Err(ApplyError::Api { object: label, source }),
        }
    }
}

/// An API server error for `object`, told apart when it is an authorization refusal.
fn api_or_forbidden(object: String, source: kube::Error) -> ApplyError {
    match forbidden(&source) {
        Some(status) => ApplyError::forbidden(object, status),
        None => ApplyError::Api { object, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_order_annotation_is_read_as_an_integer() {
        let o = serde_json::json!({"metadata": {"annotations": {APPLY_ORDER_ANNOTATION: "-2"}}});
        assert_eq!(order_of(&o), -2);
        assert_eq!(order_of(&serde_json::json!({})), 0);
    }

    #[test]
    fn only_an_existing_object_not_known_at_its_version_is_read() {
        let known = ("41".to_string(), 7u64);
        // The dry run would create it: nothing to read.
        assert!(matches!(live_from_dry_run(Some(""), None), Some(Live::Absent)));
        assert!(matches!(live_from_dry_run(Some(""), Some(&known)), Some(Live::Absent)));
        // Still at the version this caller left it at: known by its digest.
        assert!(matches!(
            live_from_dry_run(Some("41"), Some(&known)),
            Some(Live::Known { version, digest: 7 }) if version == "41"
        ));
        // Changed since (a hand edit, another writer), never applied by this caller, or the dry run failed.
        assert!(live_from_dry_run(Some("42"), Some(&known)).is_none());
        assert!(live_from_dry_run(Some("41"), None).is_none());
        assert!(live_from_dry_run(None, Some(&known)).is_none());
    }

    #[test]
    fn gvk_parses_core_and_grouped_versions() {
        assert_eq!(gvk_of("v1", "ConfigMap"), GroupVersionKind::gvk("", "v1", "ConfigMap"));
        assert_eq!(
            gvk_of("apps/v1", "Deployment"),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
    }

    #[test]
    fn a_typed_patch_failure_is_the_object_s_fault_and_other_500s_are_the_server_s() {
        let status = |code: u16, message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.to_string(),
                ..Default::default()
            }))
        };
        let typed = status(
            500,
            "failed to create typed patch object (ns/x; apps/v1, Kind=Deployment): .spec.replicas: expected numeric",
        );
        assert!(client_error(&typed).is_some());
        assert!(client_error(&status(500, "etcdserver: request timed out")).is_none());
        assert!(client_error(&status(422, "Deployment.apps \"x\" is invalid")).is_some());
    }

    #[test]
    fn failure_lists_are_bounded() {
        let failures: Vec<String> = (0..5000)
            .map(|i| format!("v1/ConfigMap c{i}: {}", "x".repeat(2000)))
            .collect();
        let message = ApplyError::Invalid { failures }.to_string();
        assert!(message.len() < 10 * 700, "{}", message.len());
        assert!(message.starts_with("5000 object(s)") && message.ends_with("and 4990 more"));
        let long = ApplyError::Invalid {
            failures: vec![format!(
                "v1/ConfigMap {}: must be no more than 253 characters",
                "a".repeat(900)
            )],
        };
        assert!(long.to_string().ends_with("must be no more than 253 characters"));
    }
}
