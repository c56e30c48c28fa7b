//! `metav1.Condition` bookkeeping that never churns: a condition's `lastTransitionTime` only moves when its
//! status flips, so a reconcile that changes nothing produces an identical status and no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Machine-readable reasons, one per outcome users need to tell apart (`kubectl get` shows the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Succeeded,
    Progressing,
    Suspended,
    InvalidSpec,
    InvalidUrl,
    FetchFailed,
    RefNotFound,
    SourceNotFound,
    SourceNotReady,
    ArtifactFailed,
    /// The storage directory (mirrors, exported trees) is full, read-only or otherwise not writable.
    StorageFailed,
    PathNotFound,
    RenderFailed,
    /// A render went over `--max-render-objects` or `--max-render-bytes`.
    RenderLimitExceeded,
    /// The render sandbox cannot be raised on this node: kustomize and helm paths are not rendered.
    SandboxUnavailable,
    ApplyFailed,
    PruneFailed,
    AuthFailed,
    HostKeyMismatch,
    TooLarge,
    SecretNotFound,
    ValidationFailed,
    Conflict,
    PruneBlocked,
    HealthCheckFailed,
    UpstreamNotFound,
    PromotionCycle,
    WaitingForPromotion,
    InvalidKubeConfig,
    ClusterUnreachable,
    Verifying,
    Verified,
    VerificationFailed,
    InvalidVerification,
    Pending,
    Soaking,
    OutsideWindow,
    Frozen,
    WaitingApproval,
    Approved,
    Rejected,
    Applying,
    Superseded,
    Queued,
    RevisionNotVerified,
    EnvironmentNotFound,
    NotPromoted,
    AlreadyApplied,
    RolledBack,
    Forbidden,
    CrossNamespaceRef,
    /// A SOPS-encrypted file could not be decrypted (or the Environment has no `spec.decryption`).
    DecryptionFailed,
    /// An image in the render is not a valid reference.
    InvalidImageReference,
    /// An image could not be resolved to a digest (registry down, 401, 404, 5xx, bad pull secret).
    ImageResolutionFailed,
    /// A promoted revision names an image whose digest the upstream did not record.
    ImageNotVerified,
    /// `promotion.copyImages` could not copy an image to the target registry.
    ImageCopyFailed,
    /// An image breaks a RegistryPolicy in Deny mode: nothing of the revision is applied.
    PolicyViolation,
    /// An Environment named in `dependsOn` is not Ready at its current revision yet.
    DependencyNotReady,
    /// `dependsOn` leads back to the Environment itself.
    DependencyCycle,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Succeeded => "Succeeded",
            Reason::Progressing => "Progressing",
            Reason::Suspended => "Suspended",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::InvalidUrl => "InvalidURL",
            Reason::FetchFailed => "FetchFailed",
            Reason::RefNotFound => "RefNotFound",
            Reason::SourceNotFound => "SourceNotFound",
            Reason::SourceNotReady => "SourceNotReady",
            Reason::ArtifactFailed => "ArtifactFailed",
            Reason::StorageFailed => "StorageFailed",
            Reason::PathNotFound => "PathNotFound",
            Reason::RenderFailed => "RenderFailed",
            Reason::RenderLimitExceeded => "RenderLimitExceeded",
            Reason::SandboxUnavailable => "SandboxUnavailable",
            Reason::ApplyFailed => "ApplyFailed",
            Reason::PruneFailed => "PruneFailed",
            Reason::AuthFailed => "AuthFailed",
            Reason::HostKeyMismatch => "HostKeyMismatch",
            Reason::TooLarge => "TooLarge",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::ValidationFailed => "ValidationFailed",
            Reason::Conflict => "Conflict",
            Reason::PruneBlocked => "PruneBlocked",
            Reason::HealthCheckFailed => "HealthCheckFailed",
            Reason::UpstreamNotFound => "UpstreamNotFound",
            Reason::PromotionCycle => "PromotionCycle",
            Reason::WaitingForPromotion => "WaitingForPromotion",
            Reason::InvalidKubeConfig => "InvalidKubeConfig",
            Reason::ClusterUnreachable => "ClusterUnreachable",
            Reason::Verifying => "Verifying",
            Reason::Verified => "Verified",
            Reason::VerificationFailed => "VerificationFailed",
            Reason::InvalidVerification => "InvalidVerification",
            Reason::Pending => "Pending",
            Reason::Soaking => "Soaking",
            Reason::OutsideWindow => "OutsideWindow",
            Reason::Frozen => "Frozen",
            Reason::WaitingApproval => "WaitingApproval",
            Reason::Approved => "Approved",
            Reason::Rejected => "Rejected",
            Reason::Applying => "Applying",
            Reason::Superseded => "Superseded",
            Reason::Queued => "Queued",
            Reason::RevisionNotVerified => "RevisionNotVerified",
            Reason::EnvironmentNotFound => "EnvironmentNotFound",
            Reason::NotPromoted => "NotPromoted",
            Reason::AlreadyApplied => "AlreadyApplied",
            Reason::RolledBack => "RolledBack",
            Reason::Forbidden => "Forbidden",
            Reason::CrossNamespaceRef => "CrossNamespaceRef",
            Reason::DecryptionFailed => "DecryptionFailed",
            Reason::InvalidImageReference => "InvalidImageReference",
            Reason::ImageResolutionFailed => "ImageResolutionFailed",
            Reason::ImageNotVerified => "ImageNotVerified",
            Reason::ImageCopyFailed => "ImageCopyFailed",
            Reason::PolicyViolation => "PolicyViolation",
            Reason::DependencyNotReady => "DependencyNotReady",
            Reason::DependencyCycle => "DependencyCycle",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Inserts or updates the condition of `type_`, keeping `lastTransitionTime` unless the status changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: Reason,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    set_condition_status(conditions, type_, status, reason, message, observed_generation, now);
}

/// Like [`set_condition`], for any status including `Unknown`.
pub fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: Reason,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let status = status.to_string();
    let message = bounded_message(message.into());
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != status {
            existing.last_transition_time = Time(now);
        }
        existing.status = status;
        existing.reason = reason.as_str().to_string();
        existing.message = message;
        existing.observed_generation = observed_generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.as_str().to_string(),
            message,
            observed_generation,
            last_transition_time: Time(now),
        });
    }
}

/// metav1.Condition's limit on `message`. A hostile repository can make a failure message as long as it likes
/// (thousands of refused objects, long names); an over-long status would be refused by the API server and the
/// failure never reported.
pub const MAX_CONDITION_MESSAGE: usize = 32768;

fn bounded_message(mut message: String) -> String {
    if message.len() > MAX_CONDITION_MESSAGE {
        let mut cut = MAX_CONDITION_MESSAGE - 16;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" ... (cut)");
    }
    message
}

/// The status string (`True`/`False`/`Unknown`) of a condition, if present.
pub fn condition_status<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

/// The three standard conditions set together from one outcome, so they can never contradict each other.
pub struct ConditionSet;

impl ConditionSet {
    /// Ready=True, Reconciling and Stalled removed.
    pub fn ready(conditions: &mut Vec<Condition>, message: impl Into<String>, generation: Option<i64>, now: Timestamp) {
        set_condition(
            conditions,
            super::READY,
            true,
            Reason::Succeeded,
            message,
            generation,
            now,
        );
        conditions.retain(|c| c.type_ != super::RECONCILING && c.type_ != super::STALLED);
    }

    /// Reconciling=True while work towards a new generation or revision is under way; Ready keeps describing
    /// what is in effect until the work ends.
    pub fn reconciling(
        conditions: &mut Vec<Condition>,
        message: impl Into<String>,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        set_condition(
            conditions,
            super::RECONCILING,
            true,
            Reason::Progressing,
            message,
            generation,
            now,
        );
    }

    /// Ready=Unknown (Progressing) and Reconciling=True: applied, waiting for the objects to become healthy.
    pub fn progressing(
        conditions: &mut Vec<Condition>,
        message: impl Into<String>,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        let message = message.into();
        set_condition_status(
            conditions,
            super::READY,
            "Unknown",
            Reason::Progressing,
            message.clone(),
            generation,
            now,
        );
        Self::reconciling(conditions, message, generation, now);
        conditions.retain(|c| c.type_ != super::STALLED);
    }

    /// Ready=False. `stalled` marks failures that retrying cannot fix without a change to the spec or repo.
    pub fn failed(
        conditions: &mut Vec<Condition>,
        reason: Reason,
        message: impl Into<String>,
        stalled: bool,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        let message = message.into();
        set_condition(
            conditions,
            super::READY,
            false,
            reason,
            message.clone(),
            generation,
            now,
        );
        conditions.retain(|c| c.type_ != super::RECONCILING);
        if stalled {
            set_condition(conditions, super::STALLED, true, reason, message, generation, now);
        } else {
            conditions.retain(|c| c.type_ != super::STALLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_to_the_condition_limit() {
        let mut conditions = Vec::new();
        let long = "é".repeat(40_000);
        set_condition(
            &mut conditions,
            "Ready",
            false,
            Reason::ValidationFailed,
            long,
            None,
            ts(1),
        );
        let m = &conditions[0].message;
        assert!(m.len() <= MAX_CONDITION_MESSAGE && m.ends_with("(cut)"), "{}", m.len());
    }

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(&mut conds, "Ready", false, Reason::FetchFailed, "a", Some(1), ts(10));
        set_condition(&mut conds, "Ready", false, Reason::RefNotFound, "b", Some(2), ts(20));
        assert_eq!(conds[0].last_transition_time, Time(ts(10)));
        assert_eq!(conds[0].reason, "RefNotFound");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(&mut conds, "Ready", true, Reason::Succeeded, "c", Some(2), ts(30));
        assert_eq!(conds[0].last_transition_time, Time(ts(30)));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn reconciling_is_cleared_by_the_outcome() {
        let mut conds = Vec::new();
        ConditionSet::ready(&mut conds, "at a", Some(1), ts(1));
        ConditionSet::reconciling(&mut conds, "applying b", Some(1), ts(2));
        assert_eq!(condition_status(&conds, "Reconciling"), Some("True"));
        assert_eq!(
            condition_status(&conds, "Ready"),
            Some("True"),
            "Ready still describes what is in effect"
        );
        ConditionSet::failed(&mut conds, Reason::ApplyFailed, "b failed", false, Some(1), ts(3));
        assert_eq!(condition_status(&conds, "Reconciling"), None);
        ConditionSet::reconciling(&mut conds, "applying c", Some(1), ts(4));
        ConditionSet::ready(&mut conds, "at c", Some(1), ts(5));
        assert_eq!(condition_status(&conds, "Reconciling"), None);
    }

    #[test]
    fn stalled_is_set_and_cleared_with_ready() {
        let mut conds = Vec::new();
        ConditionSet::failed(&mut conds, Reason::InvalidUrl, "bad", true, Some(1), ts(1));
        assert_eq!(condition_status(&conds, "Stalled"), Some("True"));
        assert_eq!(condition_status(&conds, "Ready"), Some("False"));
        ConditionSet::ready(&mut conds, "ok", Some(2), ts(2));
        assert_eq!(condition_status(&conds, "Stalled"), None);
        assert_eq!(condition_status(&conds, "Ready"), Some("True"));
    }
}
