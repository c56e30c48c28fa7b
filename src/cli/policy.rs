//! Registry policy in `ferry render` and `ferry diff`, so a pull request can be checked before it merges.
//! `ferry render --registry-policy FILE` evaluates policies from files (offline; their selectors are ignored,
//! since a render has no Environment); `ferry diff` reads the RegistryPolicies from the cluster and selects them
//! as the controller does (by the Environment's namespace and labels; in local mode by `--namespace` only).

use std::path::Path;

use kube::{Api, Client};
use serde::Deserialize;

use crate::api::{Enforcement, Environment, RegistryPolicy};
use crate::policy::{Evaluation, Subject, describe, evaluate_with, verification_object};
use crate::render::RenderedObject;

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: document {doc}: not a RegistryPolicy: {message}")]
    Invalid { path: String, doc: usize, message: String },
}

/// Every RegistryPolicy in the YAML files (several documents per file allowed; other kinds are an error).
pub fn policies_from_files(paths: &[impl AsRef<Path>]) -> Result<Vec<RegistryPolicy>, PolicyFileError> {
    let mut out = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyFileError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        for (i, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let invalid = |message: String| PolicyFileError::Invalid {
                path: shown.clone(),
                doc: i + 1,
                message,
            };
            let value = serde_json::Value::deserialize(document).map_err(|e| invalid(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            if value["kind"] != "RegistryPolicy" {
                return Err(invalid(format!("kind is {}", value["kind"])));
            }
            let mut policy: RegistryPolicy = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
            // A file's policy applies to the render as a whole.
            policy.spec.environment_selector = Default::default();
            out.push(policy);
        }
    }
    Ok(out)
}

/// For a policy check of a local render that was not decrypted: a warning naming the first encrypted
/// document, whose images the check could not see (sops can hide any field, the kind and the images too).
/// `None` when nothing is encrypted. The controller decrypts before its own check, so it does see them.
pub fn unchecked_encrypted(rendered: &crate::render::Rendered) -> Option<String> {
    let what = crate::decrypt::find_encrypted(rendered)?;
    Some(format!(
        "warning: {what} is SOPS-encrypted: images in encrypted documents are not checked without the key \
         (`ferry render --decrypt-with KEYFILE --registry-policy FILE` checks them)"
    ))
}

/// The cluster's RegistryPolicies; `None` when they cannot be read (the kind is not installed, or the caller
/// may not list them), which the caller reports as "not checked".
pub async fn cluster_policies(client: &Client) -> Result<Option<Vec<RegistryPolicy>>, kube::Error> {
    match Api::<RegistryPolicy>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(list) => Ok(Some(list.items)),
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the policies find in a render for `env` (its namespace and labels select the policies; its
/// verification Job is checked too), or for a namespace when there is no Environment.
pub fn check(
    policies: &[RegistryPolicy],
    env: Option<&Environment>,
    namespace: &str,
    objects: &[RenderedObject],
) -> Evaluation {
    let job = env
        .and_then(|e| e.spec.verification.as_ref())
        .and_then(|v| v.job_template.as_ref())
        .and_then(verification_object);
    let subject = Subject {
        namespace,
        labels: env.map(|e| e.metadata.labels.as_ref().unwrap_or(&EMPTY)),
    };
    evaluate_with(policies, &subject, objects, job.as_ref())
}

static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

/// One line per violation, Deny first: `deny: Deployment web, container app: image "…" is not from …`.
pub fn format_violations(evaluation: &Evaluation) -> String {
    let mut out = String::new();
    for (enforcement, label) in [(Enforcement::Deny, "deny"), (Enforcement::Audit, "audit")] {
        for v in evaluation.of(enforcement) {
            out.push_str(&format!("{label}: {}\n", describe(v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_check_that_could_not_decrypt_says_what_it_did_not_see() {
        let object = |object: serde_json::Value| RenderedObject {
            source: "apps/web.enc.yaml".to_string(),
            object,
        };
        let cipher = "ENC[AES256_GCM,data:AAAA,iv:BBBB,tag:CCCC,type:str]";
        let hidden = serde_json::json!({"apiVersion": "apps/v1", "kind": cipher, "metadata": {"name": "web"},
            "sops": {"mac": cipher}});
        let rendered = crate::render::Rendered::new(String::new(), vec![object(hidden)], false, Vec::new());
        let warning = unchecked_encrypted(&rendered).expect("a warning");
        assert!(
            warning.contains("web (from apps/web.enc.yaml)") && warning.contains("not checked"),
            "{warning}"
        );
        let plain = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}});
        let rendered = crate::render::Rendered::new(String::new(), vec![object(plain)], false, Vec::new());
        assert_eq!(unchecked_encrypted(&rendered), None);
    }

    #[test]
    fn policies_come_from_yaml_files_and_apply_to_the_whole_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(
            &path,
            "apiVersion: ferry.dev/v1alpha1\nkind: RegistryPolicy\nmetadata: {name: prod}\nspec:\n  environmentSelector: {namespaces: [elsewhere]}\n  allowedRegistries: [prod.example.io/]\n---\n",
        )
        .unwrap();
        let policies = policies_from_files(&[&path]).unwrap();
        assert_eq!(policies.len(), 1);
        let objects = vec![RenderedObject {
            source: "x".into(),
            object: serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        }];
        let e = check(&policies, None, "", &objects);
        assert!(e.denied());
        let text = format_violations(&e);
        assert!(text.starts_with("deny: Pod p, container c: image \"nginx\""), "{text}");

        std::fs::write(&path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap();
        assert!(matches!(
            policies_from_files(&[&path]),
            Err(PolicyFileError::Invalid { .. })
        ));
    }
}
