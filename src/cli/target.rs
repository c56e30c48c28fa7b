//! The cluster an Environment's objects live in, reached as the controller reaches it: through its
//! `spec.kubeConfig` Secret (that kubeconfig's identity), else the cluster of the caller's kubeconfig. The
//! caller's own identity is kept there rather than impersonating the Environment's ServiceAccount, which most
//! users may not do; what they cannot read shows up as the API server's refusal.

use kube::{Client, ResourceExt};

use super::pipeline::CliError;
use crate::api::Environment;
use crate::cluster::{Clusters, Target};

/// Where `env` applies. `config` is what `client` was built from.
pub async fn environment_target(client: &Client, config: &kube::Config, env: &Environment) -> Result<Target, CliError> {
    let local = Target::new(client.clone());
    let Some(reference) = env.spec.kube_config.as_ref() else {
        return Ok(local);
    };
    // Refused kubeconfigs (insecure-skip-tls-verify, proxy-url) stay refused: the CLI goes where the
    // controller would, and a default install's controller goes nowhere else.
    let clusters = Clusters::new(config.clone(), false);
    let namespace = env.namespace().unwrap_or_default();
    Ok(clusters.target(&local, &namespace, Some(reference), None).await?)
}
