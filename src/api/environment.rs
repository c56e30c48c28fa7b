//! `Environment`: a path in a GitRepository applied to a target namespace, kept in sync and reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
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
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
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
    #[schemars(range(min = 0, max = 100))]
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
