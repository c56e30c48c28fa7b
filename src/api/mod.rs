//! The `ferry.dev/v1alpha1` API: what users write (spec) and what Ferry reports (status).
//!
//! The CRD YAML in `crds/` is generated from these types (`ferry crds`), so the types are the single source of
//! truth for the schema, the short names and the printer columns.

mod conditions;
mod duration;
mod environment;
mod gitrepository;
mod promotion;
mod registrypolicy;

pub use conditions::{ConditionSet, Reason, condition_status, set_condition, set_condition_status};
pub use duration::{DurationError, parse_duration};
pub use environment::{
    CopyImages, Decryption, DeletionPolicy, DependencyReference, DriftCorrection, Environment, EnvironmentSpec,
    EnvironmentStatus, Freeze, HISTORY_LIMIT, HelmSpec, ImagePolicy, ImageRecord, InventoryEntry, KubeConfigReference,
    KubeConfigSecretRef, LocalSecretReference, PromotionPolicy, PromotionSummary, PromotionWindow, RevisionPhase,
    RevisionRecord, RollbackPolicy, SourceReference, Verification,
};
pub use gitrepository::{
    Artifact, GitRef, GitRepository, GitRepositorySpec, GitRepositoryStatus, RECONCILE_REQUESTED_AT, SecretReference,
};
pub use promotion::{Approval, Decision, PhaseTransition, Promotion, PromotionPhase, PromotionSpec, PromotionStatus};
pub use registrypolicy::{
    Enforcement, EnvironmentSelector, EnvironmentViolations, PolicyViolation, PolicyViolationCount, PolicyViolations,
    RegistryPolicy, RegistryPolicySpec, RegistryPolicyStatus,
};

use kube::CustomResourceExt;

/// API group of every Ferry kind.
pub const GROUP: &str = "ferry.dev";

/// Condition types shared by every kind, as in Flux and kstatus.
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Environment condition: the applied revision passed (True), failed (False) or is in (Unknown) verification.
pub const VERIFIED: &str = "Verified";

/// All CRDs as one multi-document YAML stream, in a stable order: what `crds/` must contain.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in [
        GitRepository::crd(),
        Environment::crd(),
        Promotion::crd(),
        RegistryPolicy::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
