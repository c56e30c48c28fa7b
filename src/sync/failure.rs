//! A sync step that failed for a reason the user can act on: the condition reason, the message, and whether
//! only a change (to Git or the spec) can fix it. The controller writes it into Ready/Stalled and an Event;
//! `ferry diff` prints its message.

use crate::api::Reason;
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
