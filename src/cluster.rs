//! Target clusters. An Environment applies to the cluster Ferry runs in, or to another one reached with the
//! kubeconfig in a Secret (`spec.kubeConfig.secretRef`). Clients are cached per Secret version, so a rotated
//! kubeconfig takes effect on the next reconcile and an unchanged one costs one Secret read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::api::KubeConfigReference;
use crate::apply::Applier;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig Secret {0} not found")]
    SecretNotFound(String),
    #[error("kubeconfig Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: String },
    #[error("kubeconfig in Secret {secret} is invalid: {message}")]
    Invalid { secret: String, message: String },
    #[error("kubeconfig in Secret {secret} is refused: {message}")]
    Refused { secret: String, message: String },
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// Where an Environment's objects go: a client and the applier (with its discovery cache) for it.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    pub applier: Arc<Applier>,
}

impl Target {
    pub fn new(client: Client) -> Self {
        Target {
            applier: Arc::new(Applier::new(client.clone())),
            client,
        }
    }
}

/// Checks that a kubeconfig is self-contained: it may not run programs (`exec`, `auth-provider`) or read
/// files on Ferry's disk (`certificate-authority`, `client-key`, `tokenFile`, …), which would let whoever
/// writes the Secret use the controller's own identity or files.
pub fn parse_kubeconfig(text: &str) -> Result<Kubeconfig, String> {
    // The parser quotes the input in its errors, and the input may be any Secret's value: say only where.
    let kc = Kubeconfig::from_yaml(text).map_err(|e| {
        let at = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .and_then(|s| s.rsplit_once(" at line ").map(|(_, at)| format!(" (at line {at})")))
            .unwrap_or_default();
        format!("not a kubeconfig{at}")
    })?;
    let context = kc
        .current_context
        .as_deref()
        .or_else(|| kc.contexts.first().map(|c| c.name.as_str()))
        .ok_or("no context")?;
    if !kc.contexts.iter().any(|c| c.name == context) {
        return Err(format!("current context {context:?} is not defined"));
    }
    for named in &kc.clusters {
        let Some(c) = &named.cluster else { continue };
        if c.certificate_authority.is_some() {
            return Err(format!(
                "cluster {:?} reads certificate-authority from a file; embed certificate-authority-data",
                named.name
            ));
        }
    }
    for named in &kc.auth_infos {
        let Some(a) = &named.auth_info else { continue };
        let refused = [
            (a.exec.is_some(), "exec"),
            (a.auth_provider.is_some(), "auth-provider"),
            (a.token_file.is_some(), "tokenFile"),
            (a.client_certificate.is_some(), "client-certificate (a file)"),
            (a.client_key.is_some(), "client-key (a file)"),
        ];
        if let Some((_, what)) = refused.iter().find(|(set, _)| *set) {
            return Err(format!(
                "user {:?} uses {what}; use a token or embedded certificate data",
                named.name
            ));
        }
    }
    Ok(kc)
}

/// (namespace, Secret name, key): which kubeconfig.
type SecretKey = (String, String, String);

/// Clients for remote clusters, one per kubeconfig Secret version.
#[derive(Default)]
pub struct Clusters {
    /// The Secret's resourceVersion the target was built from, and the target.
    cache: Mutex<HashMap<SecretKey, (String, Target)>>,
}

impl Clusters {
    /// The target for an Environment in `namespace`: `local` without a kubeConfig, else the cluster its
    /// Secret names.
    pub async fn target(
        &self,
        local: &Target,
        namespace: &str,
        reference: Option<&KubeConfigReference>,
    ) -> Result<Target, ClusterError> {
        let Some(reference) = reference else {
            return Ok(local.clone());
        };
        let secret_name = &reference.secret_ref.name;
        let key = &reference.secret_ref.key;
        let shown = format!("{namespace}/{secret_name}");
        let secrets: Api<Secret> = Api::namespaced(local.client.clone(), namespace);
        let secret = secrets
            .get_opt(secret_name)
            .await?
            .ok_or_else(|| ClusterError::SecretNotFound(shown.clone()))?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let cache_key = (namespace.to_string(), secret_name.clone(), key.clone());
        if let Some((v, target)) = self.cache.lock().ok().and_then(|c| c.get(&cache_key).cloned())
            && v == version
        {
            return Ok(target);
        }
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| ClusterError::MissingKey {
                secret: shown.clone(),
                key: key.clone(),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ClusterError::Invalid {
            secret: shown.clone(),
            message: "not UTF-8".into(),
        })?;
        let kc = parse_kubeconfig(&text).map_err(|message| ClusterError::Refused {
            secret: shown.clone(),
            message,
        })?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Invalid {
                secret: shown.clone(),
                message: e.to_string(),
            })?;
        let client = Client::try_from(config).map_err(|e| ClusterError::Invalid {
            secret: shown.clone(),
            message: e.to_string(),
        })?;
        let target = Target::new(client);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(cache_key, (version, target.clone()));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        )
    }

    #[test]
    fn self_contained_kubeconfigs_are_accepted() {
        let kc = kubeconfig("    certificate-authority-data: Zm9v", "    token: abc");
        assert!(parse_kubeconfig(&kc).is_ok());
    }

    #[test]
    fn kubeconfigs_that_run_programs_or_read_files_are_refused() {
        let cases = [
            (
                kubeconfig("    certificate-authority: /etc/ca.crt", "    token: abc"),
                "certificate-authority",
            ),
            (kubeconfig("", "    tokenFile: /var/run/secrets/token"), "tokenFile"),
            (kubeconfig("", "    client-key: /root/key.pem"), "client-key"),
            (
                kubeconfig(
                    "",
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: sh",
                ),
                "exec",
            ),
        ];
        for (kc, what) in cases {
            let err = parse_kubeconfig(&kc).unwrap_err();
            assert!(err.contains(what), "{err} should name {what}");
        }
        assert!(parse_kubeconfig("clusters: [").is_err());
    }

    #[test]
    fn errors_never_quote_the_secret() {
        for text in [
            "password: hunter2-SECRET",
            "hunter2-SECRET",
            "apiVersion: v1\nclusters: hunter2-SECRET\n",
        ] {
            let err = parse_kubeconfig(text).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.starts_with("not a kubeconfig") || err.contains("context"), "{err}");
        }
    }
}
