//! Reading the Secrets that Ferry's objects name — Git credentials and webhook tokens (GitRepository), kubeconfigs,
//! age keys and registry credentials (Environment) — with the identity of the object's ServiceAccount.
//!
//! Whoever may create a GitRepository or an Environment chooses which Secret it names, and where what is in it
//! goes (a Git host, a registry, a cluster). Were the Secret read with Ferry's own rights, creating the object
//! would be enough to send any Secret of the namespace anywhere. Read as the object's ServiceAccount, it is RBAC
//! that decides: a tenant can use through Ferry only the Secrets its account may `get`. A refusal is the user's
//! to fix (grant the account `get` on the Secret), so it is a reported failure, not a retried API error.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::cluster::{ClusterError, Clusters, Target};

/// Why a Secret could not be read (a missing one is not an error: `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// RBAC refused the read (or refused Ferry acting as the account).
    #[error("{0}")]
    Forbidden(String),
    /// The API server's own trouble: retried.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// A client that reads Secrets, and who it reads them as (for messages).
#[derive(Clone)]
pub struct SecretReader {
    client: Client,
    /// The ServiceAccount's user name (`system:serviceaccount:ns:name`); `None` for Ferry's own identity (a
    /// single-tenant install) or the caller's (`ferry diff`).
    account: Option<String>,
}

impl SecretReader {
    /// Reads with `client` as it is: Ferry's own identity, or the caller's.
    pub fn own(client: Client) -> Self {
        SecretReader { client, account: None }
    }

    /// Reads with `client`, which impersonates the ServiceAccount whose user name is `account`.
    pub fn as_account(client: Client, account: String) -> Self {
        SecretReader {
            client,
            account: Some(account),
        }
    }

    /// The ServiceAccount reads are made as, if any.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The Secret `name` in `namespace`; `Ok(None)` when there is none.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SecretError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(found) => Ok(found),
            Err(kube::Error::Api(status)) if status.code == 403 => Err(SecretError::Forbidden(refusal(
                self.account(),
                namespace,
                name,
                &status.message,
            ))),
            Err(e) => Err(SecretError::Api(e)),
        }
    }
}

/// The message of a refusal: the Secret, the account, and what to grant. The API server's own message is kept
/// only when it says something else (Ferry itself may not impersonate the account) or there is no account.
fn refusal(account: Option<&str>, namespace: &str, name: &str, api_message: &str) -> String {
    let secret = format!("{namespace}/{name}");
    match account {
        Some(user) if api_message.contains("impersonate") => {
            format!("Ferry may not act as ServiceAccount {user} to read Secret {secret}: {api_message}")
        }
        Some(user) => format!(
            "ServiceAccount {user} may not get Secret {secret}: grant it get on that Secret (a Role and \
             RoleBinding) to let Ferry use it"
        ),
        None => format!("Secret {secret} may not be read: {api_message}"),
    }
}

/// Which identity reads the Secrets an object names.
#[derive(Clone, Copy)]
pub enum Readers<'a> {
    /// The controller (and its web view): each object's own ServiceAccount (`spec.serviceAccountName`, else
    /// `default_account`), impersonated; Ferry's own identity only when neither is set (a single-tenant install).
    Accounts {
        clusters: &'a Clusters,
        local: &'a Target,
        default_account: Option<&'a str>,
    },
    /// Everything with one client as it is: `ferry diff` and `ferry ui` with the caller's own.
    Caller(&'a Client),
}

impl Readers<'_> {
    /// The reader for an object in `namespace` whose spec names `account` (or none).
    pub fn for_object(&self, namespace: &str, account: Option<&str>) -> Result<SecretReader, ClusterError> {
        match *self {
            Readers::Accounts {
                clusters,
                local,
                default_account,
            } => clusters.reader(local, namespace, account.or(default_account)),
            Readers::Caller(client) => Ok(SecretReader::own(client.clone())),
        }
    }

    /// The reader for a GitRepository's Secrets (credentials, webhook token).
    pub fn for_repository(&self, repo: &crate::api::GitRepository) -> Result<SecretReader, ClusterError> {
        let namespace = repo.metadata.namespace.as_deref().unwrap_or_default();
        self.for_object(namespace, repo.spec.service_account_name.as_deref())
    }

    /// The reader for an Environment's Secrets (kubeconfig, decryption keys, registry credentials).
    pub fn for_environment(&self, env: &crate::api::Environment) -> Result<SecretReader, ClusterError> {
        let namespace = env.metadata.namespace.as_deref().unwrap_or_default();
        self.for_object(namespace, env.spec.service_account_name.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYER: &str = "system:serviceaccount:team-a:deployer";

    #[test]
    fn a_refusal_names_the_secret_and_the_account() {
        let denied =
            r#"secrets "git" is forbidden: User "system:serviceaccount:team-a:deployer" cannot get resource "secrets""#;
        let message = refusal(Some(DEPLOYER), "team-a", "git", denied);
        assert!(message.contains("team-a/git"), "{message}");
        assert!(message.contains(DEPLOYER), "{message}");
        assert!(message.contains("grant it get"), "{message}");
    }

    #[test]
    fn a_refused_impersonation_says_so() {
        let denied = r#"serviceaccounts "deployer" is forbidden: User "system:serviceaccount:ferry-system:ferry" cannot impersonate resource "serviceaccounts""#;
        let message = refusal(Some(DEPLOYER), "team-a", "git", denied);
        assert!(message.starts_with("Ferry may not act as"), "{message}");
        assert!(message.contains("team-a/git") && message.contains(denied), "{message}");
    }

    #[test]
    fn the_caller_s_refusal_keeps_the_api_server_s_words() {
        let message = refusal(None, "ns", "kc", "forbidden: you");
        assert_eq!(message, "Secret ns/kc may not be read: forbidden: you");
    }
}
