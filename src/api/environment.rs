//! `Environment`: a path in a GitRepository applied to a target namespace, kept in sync and reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an Environment asks for: which path of which repository to apply where, and how carefully.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    doc = "A path of a GitRepository rendered (kustomize or plain YAML) and applied to a namespace of this or \
           another cluster with server-side apply, kept in sync (drift reverted, removed objects pruned), \
           verified, and optionally promoted from another Environment. Status says what runs and why.",
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Environment",
    namespaced,
    status = "EnvironmentStatus",
    shortname = "env",
    category = "ferry",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourceRef.name"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.lastAppliedRevision"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Verified","type":"string","jsonPath":".status.conditions[?(@.type==\"Verified\")].status"}"#,
    printcolumn = r#"{"name":"Promoting","type":"string","jsonPath":".status.promotion.revision"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.promotion.phase"}"#,
    printcolumn = r#"{"name":"Status","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// The GitRepository whose revision this Environment applies (its head, or promoted revisions of it).
    pub source_ref: SourceReference,
    /// Directory inside the repository holding the manifests, e.g. `apps/staging`. Default `.` (the root).
    /// Kustomize if it holds a kustomization, else every `*.yaml`, `*.yml` and `*.json` below it.
    #[serde(default = "default_path")]
    pub path: String,
    /// Namespace for every namespaced object, overriding the manifests'. Default: an object's own namespace,
    /// else the Environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// How often to re-apply (and so revert drift) without a new revision, as a Go duration. Default `1m`.
    #[serde(default = "super::gitrepository::default_interval")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub interval: String,
    /// Delete objects that were applied before and are no longer in Git (only objects labelled as this
    /// Environment's). Default true.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Hold Ready at Unknown (Progressing) until every applied object is healthy; fail after `healthTimeout`.
    /// Default false.
    #[serde(default)]
    pub wait: bool,
    /// How long `wait` waits for health after applying a revision, as a Go duration. Default `5m`.
    #[serde(default = "default_health_timeout")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub health_timeout: String,
    /// Refuse to prune more than this share (percent, 0-100) of the applied objects in one go
    /// (`PruneBlocked`). Default 50.
    #[serde(default = "default_max_prune_percent")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub max_prune_percent: u8,
    /// Allow a render with no objects to prune everything (otherwise that stops with `PruneBlocked`).
    /// Default false.
    #[serde(default)]
    pub allow_empty: bool,
    /// Take ownership of fields that another declarative applier (another server-side-apply manager) owns.
    /// Fields changed by hand (`kubectl edit`) are drift and are reverted regardless. Default false.
    #[serde(default)]
    pub force: bool,
    /// What happens to applied objects when the Environment is deleted: `Delete` (default) or `Orphan`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop applying (`ferry suspend environment`); the cluster keeps what was applied last, drift is not
    /// reverted. Default false.
    #[serde(default)]
    pub suspend: bool,
    /// Take revisions from another Environment once it verified them, instead of following the GitRepository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionPolicy>,
    /// How a newly applied revision is verified: health, then optionally an acceptance-test Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Apply to another cluster, reached with the kubeconfig in this Secret (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    /// Decrypt SOPS-encrypted files of the repository with age identities before applying (Flux's field and
    /// layout). Without it, a render holding an encrypted document is refused (`DecryptionFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// The ServiceAccount (in this namespace) whose rights every request for this Environment is made with:
    /// Ferry impersonates it for the dry run, apply, prune, health reads and the verification Job, so an
    /// Environment can only do what this account may. The Secrets the Environment names (`kubeConfig`,
    /// `decryption` and registry credentials) are read as this account too: it needs `get` on them, else the
    /// Environment is `Forbidden`. Defaults to `ferry run --default-service-account`. With `kubeConfig` the
    /// kubeconfig's identity applies in the other cluster; this account still reads the Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub service_account_name: Option<String>,
    /// Image digests: every image of a revision is resolved to its digest in its registry when the revision is
    /// applied, and recorded in `status.history`; a promoted Environment takes the digests its upstream
    /// recorded instead of looking tags up again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagePolicy>,
    /// Environments that must be Ready at their current revision before this one applies a new revision
    /// (infrastructure before apps, CRDs before their users). While one is not, Ready is False with
    /// `DependencyNotReady` naming it; a cycle is `DependencyCycle` (Stalled). This Environment is reconciled as
    /// soon as one of them changes. A namespace other than this one is refused under
    /// `--no-cross-namespace-refs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    /// How a Helm chart at `path` (a directory holding `Chart.yaml`) is rendered with `helm template`.
    /// Ignored for other paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSpec>,
}

/// An Environment this one depends on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyReference {
    /// The Environment's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its namespace. Default: this Environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The inputs of `helm template` for a chart path. Output is exactly what `helm template` prints for them
/// (hooks left out, see docs/src/rendering.md); nothing is fetched: dependencies must be vendored in `charts/`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmSpec {
    /// The release name (`.Release.Name`). Default: the Environment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 53), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub release_name: Option<String>,
    /// The release namespace (`.Release.Namespace`). Default: `targetNamespace`, else the Environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    /// Values files, relative to the chart directory and inside the repository (e.g.
    /// `values-production.yaml`), applied in order after the chart's own `values.yaml`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values, applied last (over every values file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub values: Option<serde_json::Value>,
    /// Render the chart's `crds/` directory too (`--include-crds`); CRDs are applied first and waited for.
    /// Default true.
    #[serde(default = "default_true", rename = "includeCRDs")]
    pub include_crds: bool,
}

impl Default for HelmSpec {
    fn default() -> Self {
        HelmSpec {
            release_name: None,
            namespace: None,
            values_files: Vec::new(),
            values: None,
            include_crds: true,
        }
    }
}

/// How images are resolved and pinned.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicy {
    /// Apply `repo:tag@sha256:…` instead of `repo:tag`, so the cluster runs exactly the resolved (or, when
    /// promoted, the upstream-verified) digest. Promoted Environments whose upstream recorded digests pin
    /// them regardless. Default false: digests are only recorded.
    #[serde(default)]
    pub pin_digests: bool,
    /// A `kubernetes.io/dockerconfigjson` Secret (same namespace) with credentials for the registries.
    /// Without it registries are asked anonymously (and answer bearer-token challenges anonymously).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret_ref: Option<LocalSecretReference>,
}

/// A Secret in the Environment's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretReference {
    /// The Secret's name.
    pub name: String,
}

/// Images under `from` are copied, by digest, to the same path under `to` before a promotion applies, and
/// the render is rewritten to `to/…@sha256:…`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyImages {
    /// Registry and path prefix of the images to copy, e.g. `nonprod.example.io/team` (matched at a path
    /// boundary: `nonprod.example.io/teamx` is not under it).
    pub from: String,
    /// Where they go, e.g. `prod.example.io/team`: `from/app:1.2` becomes `to/app:1.2@sha256:…`.
    pub to: String,
    /// A `kubernetes.io/dockerconfigjson` Secret (same namespace) with credentials for both registries
    /// (pull from `from`, push to `to`). Default: `images.pullSecretRef`, else anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalSecretReference>,
}

/// Where a promoted Environment takes its revisions from, and the gates before one is applied.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionPolicy {
    /// The upstream Environment (same namespace). Only revisions it applied, found healthy and verified move on.
    pub from: String,
    /// How long a revision must have been verified upstream before it is promoted, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub soak_time: Option<String>,
    /// Every promotion waits in `WaitingApproval` until `ferry approve` (or a patch of `spec.approval`).
    #[serde(default)]
    pub require_approval: bool,
    /// When promotions may start (UTC). None: any time. Rollbacks ignore them unless `rollback.respectWindows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<PromotionWindow>,
    /// Absolute time ranges when nothing is promoted (a holiday freeze); they win over `windows`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<Freeze>,
    /// A newer verified revision replaces one still waiting (Pending or WaitingApproval), which ends
    /// `Superseded`. When false, promotions queue and apply in the order they were created.
    #[serde(default = "default_true")]
    pub supersede: bool,
    /// When verification fails after a promotion applied, promote the previous succeeded revision back.
    #[serde(default)]
    pub rollback_on_failure: bool,
    /// Gates for rollbacks (from `ferry rollback` or `rollbackOnFailure`). A rollback never soaks.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Finished Promotions kept per Environment; older ones are deleted (the one of the upstream's newest
    /// verified revision always stays, so a failed or rejected revision is not proposed again).
    #[serde(default = "default_promotion_history_limit")]
    #[schemars(range(min = 1), extend("format" = "int32"))]
    pub history_limit: u32,
    /// Copy the verified images from a non-production registry to a production one before applying, and
    /// apply the copies by digest. A copy that fails fails the Promotion; nothing is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_images: Vec<CopyImages>,
}

fn default_promotion_history_limit() -> u32 {
    20
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        PromotionPolicy {
            from: String::new(),
            soak_time: None,
            require_approval: false,
            windows: Vec::new(),
            freezes: Vec::new(),
            supersede: true,
            rollback_on_failure: false,
            rollback: RollbackPolicy::default(),
            history_limit: default_promotion_history_limit(),
            copy_images: Vec::new(),
        }
    }
}

/// Gates that apply to rollbacks.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// A rollback waits in `WaitingApproval` until approved, like a promotion. Default false: rollbacks run
    /// at once.
    #[serde(default)]
    pub require_approval: bool,
    /// Hold rollbacks to `windows` and `freezes` too (by default a rollback may run any time).
    #[serde(default)]
    pub respect_windows: bool,
}

/// A weekly window, in UTC: `days: [Mon, Tue, Wed, Thu, Fri], start: "09:00", end: "16:00"`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionWindow {
    /// `Mon` … `Sun`; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Inclusive start, `HH:MM` in UTC.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Exclusive end, `HH:MM` in UTC; `24:00` is the end of the day. An end before the start wraps past
    /// midnight.
    #[schemars(regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"))]
    pub end: String,
}

/// No promotion from `from` (inclusive) until `to` (exclusive), RFC 3339 timestamps.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freeze {
    /// Start of the freeze (inclusive), RFC 3339, e.g. `2026-12-23T00:00:00Z`.
    pub from: String,
    /// End of the freeze (exclusive), RFC 3339.
    pub to: String,
    /// Why, shown in the message of a Promotion held by the freeze.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An acceptance test per applied revision, run as a Job in the target cluster once every object is healthy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// A batch/v1 Job template (`metadata` labels/annotations and `spec`), as in a CronJob's `jobTemplate`.
    /// Ferry names the Job, labels it (and its pods) with `ferry.dev/revision`, and sets `FERRY_REVISION` and
    /// `FERRY_ENVIRONMENT` in every container. `spec.backoffLimit` defaults to 0: `retries` counts whole Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub job_template: Option<serde_json::Value>,
    /// How long health plus the Job may take, per attempt, as a Go duration. Default `10m`.
    #[serde(default = "default_verification_timeout")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub timeout: String,
    /// Further Jobs to run after a failed one before the revision counts as failed (0-100). Default 0.
    #[serde(default)]
    #[schemars(range(max = 100), extend("format" = "int32"))]
    pub retries: u32,
}

fn default_verification_timeout() -> String {
    "10m".to_string()
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Another cluster, reached with a kubeconfig stored in a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigReference {
    /// The Secret (same namespace) holding a self-contained kubeconfig (no `exec`, `auth-provider` or file
    /// paths; `kubectl config view --raw --minify --flatten` makes one). Its identity applies.
    pub secret_ref: KubeConfigSecretRef,
}

/// How encrypted files of the repository are decrypted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// The decryption provider: only `sops`.
    pub provider: String,
    /// The Secret (same namespace) whose keys ending in `.agekey` each hold one or more age identities
    /// (`AGE-SECRET-KEY-1…` lines, as `age-keygen` writes them). Read with Ferry's own identity, only in the
    /// Environment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<super::gitrepository::SecretReference>,
}

/// A key of a Secret in the Environment's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigSecretRef {
    /// The Secret's name.
    pub name: String,
    /// The data key holding the kubeconfig. Default `value`.
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "value".to_string()
}

fn default_health_timeout() -> String {
    "5m".to_string()
}

fn default_max_prune_percent() -> u8 {
    50
}

/// What deleting an Environment does to the objects it applied.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete every object Ferry applied (except those annotated `ferry.dev/prune: disabled`).
    #[default]
    Delete,
    /// Leave the objects in the cluster.
    Orphan,
}

fn default_path() -> String {
    ".".to_string()
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceReference {
    /// The source's kind: only `GitRepository` (the default) for now.
    #[serde(default = "default_source_kind")]
    pub kind: String,
    /// The GitRepository's name.
    pub name: String,
    /// The GitRepository's namespace. Default: the Environment's. Refused (`CrossNamespaceRef`) when Ferry
    /// runs with `--no-cross-namespace-refs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_source_kind() -> String {
    "GitRepository".to_string()
}

/// What the Environment runs and how it went.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the revision is applied, and healthy with `wait`; else why not), `Reconciling` (a new
    /// revision or spec is being applied), `Stalled` (only a change can fix it) and `Verified` (the newest
    /// revision's verification: True, False, or Unknown while it runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The revision whose objects are in the cluster now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// The revision last tried, which differs from the applied one while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// Every object applied at `lastAppliedRevision`: what prune compares against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// The last time objects had drifted from Git (changed or deleted by hand) and were put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift_correction: Option<DriftCorrection>,
    /// The Promotion this Environment is applying, or the one waiting to be (promoted Environments only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionSummary>,
    /// Revisions applied here, newest first (at most 10), with what verification found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
    /// The value of the `ferry.dev/reconcile-requested-at` annotation last acted on: equal to the annotation
    /// once a `ferry reconcile` request was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// What RegistryPolicies found in the revision last evaluated (Deny and Audit); absent when nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_violations: Option<super::PolicyViolations>,
}

/// How many revisions `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// The Promotion in flight for an Environment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionSummary {
    /// The Promotion's name (same namespace).
    pub name: String,
    /// The revision it brings, e.g. `main@sha1:…`.
    pub revision: String,
    /// Its phase: Pending, WaitingApproval, Applying, Verifying (the final ones are not shown here).
    pub phase: super::PromotionPhase,
}

/// One revision's life in one Environment. Timestamps are written once, when the phase they name is reached.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    /// The revision, e.g. `main@sha1:…`.
    pub revision: String,
    /// Applying, Verifying, Verified, Failed or Superseded.
    pub phase: RevisionPhase,
    /// The Promotion that brought the revision here (promoted Environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// Its uid: a Promotion deleted and created again under the same name is another attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_uid: Option<String>,
    /// When every object of the revision was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// When verification ended, either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Verification Jobs started for this revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int32"))]
    pub attempts: u32,
    /// The verification Job of the latest attempt (in the target cluster and namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What verification found, or why the revision failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The images of the revision as applied here, each with the digest it was pinned to (with
    /// `spec.images`, or when promoted from an Environment that recorded digests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
}

/// One image of a revision and the digest that stands for it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The image as the manifests name it, e.g. `nonprod.example.io/team/web:1.4`.
    pub image: String,
    /// The manifest or multi-arch index digest, `sha256:…`.
    pub digest: String,
    /// Where it was copied to by `promotion.copyImages` and applied from, e.g. `prod.example.io/team/web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_to: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a revision is in its life in one Environment.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RevisionPhase {
    /// Being rendered and applied.
    Applying,
    /// Applied; waiting for health, then the verification Job.
    Verifying,
    /// Healthy and the verification Job (if any) succeeded: eligible for promotion downstream.
    Verified,
    /// Apply, health or verification failed.
    Failed,
    /// A newer revision was applied before this one finished verifying.
    Superseded,
}

impl RevisionPhase {
    pub fn is_final(self) -> bool {
        !matches!(self, RevisionPhase::Applying | RevisionPhase::Verifying)
    }
}

/// Objects put back because they had drifted from Git.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftCorrection {
    /// The revision the objects were put back to.
    pub revision: String,
    /// The objects re-created or re-applied, as `apiVersion/Kind namespace/name`.
    pub objects: Vec<String>,
}

/// One applied object, identified the way `kubectl` would address it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// The object's apiVersion, e.g. `apps/v1`.
    pub api_version: String,
    /// The object's kind, e.g. `Deployment`.
    pub kind: String,
    /// The object's namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

impl std::fmt::Display for InventoryEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} {}/{}", self.api_version, self.kind, ns, self.name),
            None => write!(f, "{}/{} {}", self.api_version, self.kind, self.name),
        }
    }
}

impl EnvironmentStatus {
    /// The newest record of `revision`.
    pub fn record(&self, revision: &str) -> Option<&RevisionRecord> {
        self.history.iter().find(|r| r.revision == revision)
    }

    /// The newest revision that verified here: what a downstream Environment is offered.
    pub fn newest_verified(&self) -> Option<&RevisionRecord> {
        self.history.iter().find(|r| r.phase == RevisionPhase::Verified)
    }
}
