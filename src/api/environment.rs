//! `Environment`: a path in a GitRepository applied to a target namespace, kept in sync and reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
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
    /// The GitRepository whose revision this Environment applies.
    pub source_ref: SourceReference,
    /// Directory inside the repository holding the manifests, e.g. `apps/staging`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Namespace for every namespaced object; defaults to the Environment's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// How often to re-apply (and so revert drift), e.g. `5m`.
    #[serde(default = "super::gitrepository::default_interval")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub interval: String,
    /// Delete objects that were applied before and are no longer in Git.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Hold Ready at Unknown (Progressing) until every applied object is healthy; fail after `healthTimeout`.
    #[serde(default)]
    pub wait: bool,
    /// How long `wait` waits for health after applying a revision, e.g. `5m`.
    #[serde(default = "default_health_timeout")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub health_timeout: String,
    /// Refuse to prune more than this share (percent) of the applied objects in one go.
    #[serde(default = "default_max_prune_percent")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub max_prune_percent: u8,
    /// Allow a render with no objects to prune everything (otherwise that stops with `PruneBlocked`).
    #[serde(default)]
    pub allow_empty: bool,
    /// Take ownership of fields that another declarative applier (another server-side-apply manager) owns.
    /// Fields changed by hand (`kubectl edit`) are drift and are reverted regardless.
    #[serde(default)]
    pub force: bool,
    /// What happens to applied objects when the Environment is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Stop applying; the cluster keeps what was applied last.
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
    /// The ServiceAccount (in this namespace) whose rights every request for this Environment is made with:
    /// Ferry impersonates it for the dry run, apply, prune, health reads and the verification Job, so an
    /// Environment can only do what this account may. Defaults to `ferry run --default-service-account`;
    /// ignored with `kubeConfig` (the kubeconfig's identity applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub service_account_name: Option<String>,
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
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
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
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Exclusive; `24:00` is the end of the day. An end before the start wraps past midnight.
    #[schemars(regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"))]
    pub end: String,
}

/// No promotion from `from` (inclusive) until `to` (exclusive), RFC 3339 timestamps.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freeze {
    pub from: String,
    pub to: String,
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
    /// How long health plus the Job may take, per attempt, e.g. `10m`.
    #[serde(default = "default_verification_timeout")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub timeout: String,
    /// Further Jobs to run after a failed one before the revision counts as failed.
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

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigReference {
    pub secret_ref: KubeConfigSecretRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeConfigSecretRef {
    pub name: String,
    /// The data key holding the kubeconfig.
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
    /// Only `GitRepository` for now.
    #[serde(default = "default_source_kind")]
    pub kind: String,
    pub name: String,
    /// Defaults to the Environment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_source_kind() -> String {
    "GitRepository".to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
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
    /// Revisions applied here, newest first (at most [`HISTORY_LIMIT`]), with what verification found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
}

/// How many revisions `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionSummary {
    pub name: String,
    pub revision: String,
    pub phase: super::PromotionPhase,
}

/// One revision's life in one Environment. Timestamps are written once, when the phase they name is reached.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: String,
    pub phase: RevisionPhase,
    /// The Promotion that brought the revision here (promoted Environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// Its uid: a Promotion deleted and created again under the same name is another attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// When verification ended, either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Verification Jobs started for this revision.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int32"))]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

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

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftCorrection {
    pub revision: String,
    pub objects: Vec<String>,
}

/// One applied object, identified the way `kubectl` would address it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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
