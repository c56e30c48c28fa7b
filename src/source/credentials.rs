//! The credentials a GitRepository fetches with, read from its Secret: shared by the GitRepository controller,
//! the sync pipeline ([`crate::sync::plan`]) and the web view.

use kube::ResourceExt;

use super::Credentials;
use crate::api::{GitRepository, Reason};
use crate::error::ReconcileError;
use crate::secrets::{SecretError, SecretReader};

/// The credentials a GitRepository fetches with, from its Secret, read with `reader` (as its ServiceAccount in
/// the controller, see [`crate::secrets`]). `Ok(Err)` is the user's problem: a missing Secret, one the account
/// may not read, or one that does not hold credentials.
pub async fn load_credentials(
    reader: &SecretReader,
    repo: &GitRepository,
) -> Result<Result<Credentials, (Reason, String, bool)>, ReconcileError> {
    let Some(secret_ref) = &repo.spec.secret_ref else {
        return Ok(Ok(Credentials::default()));
    };
    let namespace = repo.namespace().unwrap_or_default();
    let secret = match reader.get(&namespace, &secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            let message = format!("Secret {namespace}/{} not found", secret_ref.name);
            return Ok(Err((Reason::SecretNotFound, message, false)));
        }
        // A grant fixes it without a change to the spec: retried at the interval, not stalled.
        Err(SecretError::Forbidden(message)) => return Ok(Err((Reason::Forbidden, message, false))),
        Err(SecretError::Api(e)) => return Err(e.into()),
    };
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Ok(
        Credentials::from_secret(&repo.credentials_identity(), &data, &repo.spec.url)
            .map_err(|e| (Reason::AuthFailed, e.to_string(), true)),
    )
}
