//! The error type shared by the controllers and the pure steps they call.

/// Errors a reconcile returns to the runtime: only the API server's, which are retried with a delay.
/// Everything a user can cause is reported in status instead and is not an error here.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("internal: {0}")]
    Internal(String),
}
