//! `RegistryPolicy`: which registries the Environments it selects may run images from, and whether images
//! must be pinned by digest. Cluster-scoped, so it belongs to whoever runs the cluster, not to tenants.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelectorRequirement};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The platform team's rules for the images Environments may run.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    doc = "Rules for the container images that selected Environments may run: trusted registry prefixes and \
           digest pinning, checked on every rendered pod spec (and the verification Job) before anything is \
           applied. Deny stops the revision; Audit applies it and reports. Cluster-scoped: tenants cannot \
           weaken it.",
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "RegistryPolicy",
    status = "RegistryPolicyStatus",
    shortname = "regpol",
    category = "ferry",
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement"}"#,
    printcolumn = r#"{"name":"Violations","type":"integer","jsonPath":".status.totalViolations"}"#,
    printcolumn = r#"{"name":"Environments","type":"integer","description":"Environments with violations","jsonPath":".status.violatingEnvironments"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPolicySpec {
    /// Which Environments the policy applies to. Empty: every Environment.
    #[serde(default)]
    pub environment_selector: EnvironmentSelector,
    /// Registry prefixes images must start with, matched at path boundaries on the fully-qualified name:
    /// `prod.example.io/team/` allows `prod.example.io/team/app` (not `prod.example.io/teamx/app` nor
    /// `prod.example.io.evil.com/team/app`); `docker.io/library/` allows `nginx`. Must not be empty.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Every image must name a digest (`repo@sha256:…` or `repo:tag@sha256:…`). Default false.
    #[serde(default)]
    pub require_digest: bool,
    /// `Deny` (default): a revision with a violation is not applied at all. `Audit`: it is applied, with a
    /// Warning Event and `status.policyViolations` on the Environment.
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// What a violation does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema, PartialOrd, Ord)]
pub enum Enforcement {
    #[default]
    Deny,
    Audit,
}

impl std::fmt::Display for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Enforcement::Deny => "Deny",
            Enforcement::Audit => "Audit",
        })
    }
}

/// Environments by their labels and/or namespaces; both must match when both are given.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSelector {
    /// Labels the Environment must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Label requirements (`In`, `NotIn`, `Exists`, `DoesNotExist`), as in a Kubernetes label selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
    /// Namespaces the Environment must be in. Empty: any namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// What the policy found, per Environment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when the spec is valid; False with reason `InvalidSpec` naming the bad entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Violations across all selected Environments, at their last evaluated revision.
    #[serde(default)]
    pub total_violations: u32,
    /// How many Environments have at least one violation.
    #[serde(default)]
    pub violating_environments: u32,
    /// Violation counts per Environment (only those with violations), sorted by namespace and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<EnvironmentViolations>,
}

/// One Environment's violations of one policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentViolations {
    /// The Environment's namespace.
    pub namespace: String,
    /// The Environment's name.
    pub name: String,
    /// The revision evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// How many violations of this policy it has.
    pub violations: u32,
}

/// `status.policyViolations` of an Environment: what registry policies found in the revision last
/// evaluated. Absent when nothing was found.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolations {
    /// The revision evaluated.
    pub revision: String,
    /// All violations found (the list below may be cut short).
    pub total: u32,
    /// Per policy: how many violations it found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyViolationCount>,
    /// The violations, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<PolicyViolation>,
}

/// Violations of one policy in one Environment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolationCount {
    /// The RegistryPolicy.
    pub policy: String,
    /// Its enforcement: `Deny` or `Audit`.
    pub enforcement: Enforcement,
    /// How many violations it found.
    pub violations: u32,
}

/// One image that breaks one rule of one policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolation {
    /// The RegistryPolicy.
    pub policy: String,
    /// The policy's enforcement: `Deny` or `Audit`.
    pub enforcement: Enforcement,
    /// `UntrustedRegistry`, `DigestRequired`, `InvalidReference` or `InvalidPolicy`.
    pub rule: String,
    /// The object, e.g. `Deployment team/web`, or `Job spec.verification.jobTemplate`.
    pub object: String,
    /// The container, e.g. `initContainer migrate`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// The image as written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}
