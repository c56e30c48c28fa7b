//! `Promotion`: one revision moving into one promoted Environment, through gates, apply and verification.
//! Its status is the record of that move: each phase change is a transition with a reason and a time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which revision moves into which promoted Environment, and the decision on it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    doc = "One revision moving into one promoted Environment (spec.promotion.from): gated by soak time, \
           windows, freezes and approval, then applied and verified there. Created by Ferry when the upstream \
           verifies a revision, or by `ferry promote` / `ferry rollback`; status.transitions records each phase.",
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Promotion",
    namespaced,
    status = "PromotionStatus",
    shortname = "promo",
    category = "ferry",
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Rollback","type":"boolean","priority":1,"jsonPath":".spec.rollback"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.environment == oldSelf.environment", "message": "spec.environment is immutable"},
    {"rule": "self.revision == oldSelf.revision", "message": "spec.revision is immutable: create another Promotion"},
    {"rule": "(has(self.rollback) && self.rollback) == (has(oldSelf.rollback) && oldSelf.rollback)", "message": "spec.rollback is immutable"},
    {"rule": "!has(oldSelf.approval) || (has(self.approval) && self.approval == oldSelf.approval)", "message": "an approval decision is final"}
]))]
pub struct PromotionSpec {
    /// The Environment (same namespace) that receives the revision.
    pub environment: String,
    /// The revision to promote, e.g. `main@sha1:…`, as the upstream Environment's history names it.
    pub revision: String,
    /// Return to a revision that succeeded in this Environment before (`ferry rollback`), under the
    /// Environment's rollback gates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// The decision on a promotion that waits for approval; `ferry approve` / `ferry reject` write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// A person's decision on a Promotion; final once written.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// `Approved` lets a WaitingApproval promotion apply; `Rejected` aborts a promotion that has not finished.
    pub decision: Decision,
    /// Who decided, as the API server identified them (`ferry` asks with a SelfSubjectReview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    /// Why, in the decider's words (`ferry approve -m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An approval decision.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Decision {
    Approved,
    Rejected,
}

/// Where a Promotion is: Pending (gated), WaitingApproval, Applying, Verifying, then Succeeded, Failed,
/// Superseded or Aborted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PromotionPhase {
    Pending,
    WaitingApproval,
    Applying,
    Verifying,
    Succeeded,
    Failed,
    Superseded,
    Aborted,
}

impl PromotionPhase {
    /// Nothing moves a promotion out of these.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PromotionPhase::Succeeded | PromotionPhase::Failed | PromotionPhase::Superseded | PromotionPhase::Aborted
        )
    }

    /// The Environment is applying or verifying this promotion's revision.
    pub fn is_active(self) -> bool {
        matches!(self, PromotionPhase::Applying | PromotionPhase::Verifying)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PromotionPhase::Pending => "Pending",
            PromotionPhase::WaitingApproval => "WaitingApproval",
            PromotionPhase::Applying => "Applying",
            PromotionPhase::Verifying => "Verifying",
            PromotionPhase::Succeeded => "Succeeded",
            PromotionPhase::Failed => "Failed",
            PromotionPhase::Superseded => "Superseded",
            PromotionPhase::Aborted => "Aborted",
        }
    }
}

impl std::fmt::Display for PromotionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the Promotion is and how it got there.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The current phase (absent until first reconciled: Pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PromotionPhase>,
    /// `Ready`: True once Succeeded, False once Failed, Superseded or Aborted, Unknown in between; its reason
    /// and message say what the promotion waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Every phase change, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<PhaseTransition>,
    /// When the upstream verified the revision, as first seen: the soak clock, kept even after the record
    /// leaves the upstream's bounded history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_verified_at: Option<Time>,
    /// The rollback Promotion started because this one failed (`rollbackOnFailure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_promotion: Option<String>,
}

/// One phase change of a Promotion.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTransition {
    /// The phase entered.
    pub phase: PromotionPhase,
    /// Why, machine-readable (e.g. `Soaking`, `Approved`, `VerificationFailed`).
    pub reason: String,
    /// Why, for people.
    pub message: String,
    /// When the phase was entered.
    pub time: Time,
}

impl Promotion {
    pub fn phase(&self) -> PromotionPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(PromotionPhase::Pending)
    }
}
