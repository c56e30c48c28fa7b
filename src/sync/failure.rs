//! A sync step that failed for a reason the user can act on: the condition reason, the message, and whether
//! only a change (to Git or the spec) can fix it. The controller writes it into Ready/Stalled and an Event;
//! `ferry diff` prints its message.
//!
//! Every module's error meets its condition reason here, in one place: the source (git), render, decryption,
//! registry, apply and prune, and target-cluster errors, each with whether retrying can help.

use crate::api::Reason;
use crate::apply::ApplyError;
use crate::cluster::ClusterError;
use crate::decrypt::{DecryptError, SopsError};
use crate::registry::RegistryError;
use crate::render::RenderError;
use crate::source::SourceError;

/// One failed step: the condition reason, the message, and whether only a change can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
    pub stalled: bool,
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure {
            reason: e.reason(),
            stalled: e.is_stalled(),
            message: e.to_string(),
        }
    }
}

impl Failure {
    /// A registry step that failed (`doing`: "resolving", "copying"): `reason`, unless the reference itself is
    /// what is wrong.
    pub fn registry(reason: Reason, doing: &str, e: &RegistryError) -> Failure {
        let reason = match e {
            RegistryError::InvalidReference { .. } => Reason::InvalidImageReference,
            _ => reason,
        };
        Failure {
            reason,
            message: format!("{doing} images failed: {e}"),
            stalled: !e.is_transient(),
        }
    }
}

impl Failure {
    /// An object's ServiceAccount that cannot be used to read its Secrets (an invalid name, a client that
    /// could not be built): reported with the reason the target cluster would give it.
    pub fn reader(e: ClusterError) -> Failure {
        let (reason, stalled) = e.reason().unwrap_or((Reason::InvalidSpec, true));
        Failure {
            reason,
            message: e.to_string(),
            stalled,
        }
    }
}

impl SourceError {
    /// The condition reason users see for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            SourceError::InvalidUrl { .. } => Reason::InvalidUrl,
            SourceError::InvalidRef(_) => Reason::InvalidSpec,
            SourceError::RefNotFound { .. } => Reason::RefNotFound,
            SourceError::Fetch { .. } | SourceError::Timeout { .. } => Reason::FetchFailed,
            SourceError::CommitMissing(_) | SourceError::Storage(_) => Reason::ArtifactFailed,
            SourceError::Disk { .. } => Reason::StorageFailed,
            SourceError::PathNotFound { .. } | SourceError::InvalidPath(_) => Reason::PathNotFound,
            SourceError::Auth(_) => Reason::AuthFailed,
            SourceError::HostKey(_) => Reason::HostKeyMismatch,
            SourceError::TooLarge { .. } => Reason::TooLarge,
        }
    }

    /// Failures that retrying cannot fix until the spec or the repository changes.
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            SourceError::InvalidUrl { .. } | SourceError::InvalidRef(_) | SourceError::InvalidPath(_)
        )
    }
}

impl RenderError {
    /// The condition reason a failed render is reported with.
    pub fn reason(&self) -> Reason {
        match self {
            RenderError::PathNotFound(_) | RenderError::InvalidPath(_) => Reason::PathNotFound,
            RenderError::TooManyBytes { .. } | RenderError::TooManyObjects { .. } | RenderError::LimitExceeded(_) => {
                Reason::RenderLimitExceeded
            }
            RenderError::SandboxUnavailable(_) => Reason::SandboxUnavailable,
            _ => Reason::RenderFailed,
        }
    }

    /// Whether retrying the same revision may succeed (a slow disk, a busy machine); everything else waits for
    /// a new revision or new settings.
    pub fn is_transient(&self) -> bool {
        matches!(self, RenderError::Timeout(_) | RenderError::Io(_))
    }
}

impl DecryptError {
    /// The condition reason a failed decryption is reported with.
    pub fn reason(&self) -> Reason {
        match self {
            DecryptError::Render(e) => e.reason(),
            DecryptError::SecretNotFound(_) => Reason::SecretNotFound,
            DecryptError::Forbidden(_) => Reason::Forbidden,
            _ => Reason::DecryptionFailed,
        }
    }

    /// Whether retrying may succeed without a change to the spec or the repository: a busy disk, or the key
    /// Secret (created, granted to the account, or given the right identity, later). Everything else is Stalled.
    pub fn is_transient(&self) -> bool {
        match self {
            DecryptError::Render(e) => e.is_transient(),
            DecryptError::Io(_)
            | DecryptError::SecretNotFound(_)
            | DecryptError::Forbidden(_)
            | DecryptError::NoIdentities(_)
            | DecryptError::InvalidKey { .. } => true,
            DecryptError::Failed { reason, .. } => {
                matches!(reason, SopsError::WrongKey { .. } | SopsError::NoIdentities)
            }
            _ => false,
        }
    }
}

impl RegistryError {
    /// Whether trying again later may help (a registry down or failing), as opposed to a wrong reference,
    /// missing image or refused credentials, which need a change.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. } | RegistryError::Status { .. })
    }
}

impl ApplyError {
    /// Failures that need a change in Git or the spec; the others are the API server's and are retried.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            ApplyError::Api { .. } | ApplyError::NotEstablished(_) | ApplyError::Forbidden { .. }
        )
    }

    /// The condition reason a failed apply is reported with; `None` for the API server's own trouble, which
    /// is retried rather than reported.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            ApplyError::Api { .. } => return None,
            ApplyError::Invalid { .. } | ApplyError::InvalidAfterFirstStage { .. } => Reason::ValidationFailed,
            ApplyError::Conflict { .. } => Reason::Conflict,
            ApplyError::NotEstablished(_) | ApplyError::Rejected { .. } => Reason::ApplyFailed,
            ApplyError::Forbidden { .. } => Reason::Forbidden,
        })
    }

    /// The condition reason a failed prune is reported with.
    pub fn prune_reason(&self) -> Reason {
        match self {
            ApplyError::Forbidden { .. } => Reason::Forbidden,
            _ => Reason::PruneFailed,
        }
    }
}

impl ClusterError {
    /// The condition reason when the target cluster cannot be reached as the spec says; `None` for the API
    /// server's own trouble (retried), and whether only a change can fix it (a missing Secret may appear).
    pub fn reason(&self) -> Option<(Reason, bool)> {
        let reason = match self {
            ClusterError::Api(_) => return None,
            ClusterError::InvalidServiceAccount(_) | ClusterError::Impersonation { .. } => Reason::InvalidSpec,
            ClusterError::Forbidden(_) => Reason::Forbidden,
            _ => Reason::InvalidKubeConfig,
        };
        // A missing Secret may appear, and a refused one be granted, without a change to the spec.
        let stalled = !matches!(self, ClusterError::SecretNotFound(_) | ClusterError::Forbidden(_));
        Some((reason, stalled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_server_s_trouble_has_no_reason_and_is_retried() {
        let api = kube::Error::Api(Box::default());
        let apply = ApplyError::Api {
            object: "v1/ConfigMap ns/a".into(),
            source: api,
        };
        assert_eq!(apply.reason(), None);
        assert!(!apply.is_user_error());
        let invalid = ApplyError::Invalid { failures: vec![] };
        assert_eq!(invalid.reason(), Some(Reason::ValidationFailed));
        assert!(invalid.is_user_error());
        let forbidden = ApplyError::Forbidden { failures: vec![] };
        assert_eq!(
            (forbidden.reason(), forbidden.prune_reason()),
            (Some(Reason::Forbidden), Reason::Forbidden)
        );
        assert_eq!(
            ApplyError::NotEstablished("x".into()).prune_reason(),
            Reason::PruneFailed
        );
    }

    #[test]
    fn a_missing_kubeconfig_secret_may_still_appear_an_invalid_account_may_not() {
        assert_eq!(
            ClusterError::SecretNotFound("ns/kc".into()).reason(),
            Some((Reason::InvalidKubeConfig, false))
        );
        assert_eq!(
            ClusterError::Forbidden("ServiceAccount x may not get Secret ns/kc".into()).reason(),
            Some((Reason::Forbidden, false))
        );
        assert_eq!(
            ClusterError::InvalidServiceAccount("Bad!".into()).reason(),
            Some((Reason::InvalidSpec, true))
        );
    }

    #[test]
    fn a_registry_failure_keeps_its_reason_unless_the_reference_is_wrong() {
        let unreachable = RegistryError::Unreachable {
            image: "r/a:1".into(),
            why: "refused".into(),
        };
        let f = Failure::registry(Reason::ImageResolutionFailed, "resolving", &unreachable);
        assert_eq!((f.reason, f.stalled), (Reason::ImageResolutionFailed, false));
        let invalid = RegistryError::InvalidReference {
            image: "UPPER".into(),
            why: "bad".into(),
        };
        let f = Failure::registry(Reason::ImageCopyFailed, "copying", &invalid);
        assert_eq!((f.reason, f.stalled), (Reason::InvalidImageReference, true));
        assert!(f.message.starts_with("copying images failed: "), "{}", f.message);
    }
}
