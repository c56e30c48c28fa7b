//! The `ferry` commands people run, as library functions: `render` and `diff` (the engine's render and
//! dry-run) here, the promotion pipeline (`get`, `promote`, `approve`, `reject`, `rollback`, `history`) in
//! `pipeline.rs`.

mod pipeline;

pub use pipeline::{
    CliError, approve, format_history, format_pipeline, history, pipeline, promote, reject, resolve_verified, rollback,
    short_revision,
};

use std::path::Path;

use kube::{Api, Client, ResourceExt};
use similar::TextDiff;

use crate::api::{Environment, GitRepository};
use crate::apply::{Applier, ApplyOptions, ObjectDiff, Owner};
use crate::render::{RenderSettings, Rendered, render_path};
use crate::source::{FetchOptions, MirrorStore, Revision};

/// Renders `path` of a local checkout as the controller would.
pub async fn render_local(dir: &Path, path: &str, settings: &RenderSettings) -> anyhow::Result<Rendered> {
    Ok(render_path(dir, path, settings).await?)
}

/// What applying a local checkout's `path` into `namespace` would change.
pub async fn diff_local(
    client: Client,
    dir: &Path,
    path: &str,
    namespace: &str,
    settings: &RenderSettings,
) -> anyhow::Result<Vec<ObjectDiff>> {
    let rendered = render_path(dir, path, settings).await?;
    let opts = ApplyOptions {
        owner: None,
        target_namespace: None,
        default_namespace: namespace.to_string(),
        force: false,
    };
    Ok(Applier::new(client).diff(&rendered.objects, &opts).await?)
}

/// What the Environment would change if it applied its source's current revision now. Returns the revision.
pub async fn diff_environment(
    client: Client,
    namespace: &str,
    name: &str,
    settings: &RenderSettings,
) -> anyhow::Result<(String, Vec<ObjectDiff>)> {
    let env = Api::<Environment>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let source_ns = env
        .spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.to_string());
    let repo = Api::<GitRepository>::namespaced(client.clone(), &source_ns)
        .get(&env.spec.source_ref.name)
        .await?;
    let artifact = repo
        .status
        .as_ref()
        .and_then(|s| s.artifact.clone())
        .ok_or_else(|| anyhow::anyhow!("GitRepository {source_ns}/{} has no revision yet", repo.name_any()))?;
    let revision = Revision::parse(&artifact.revision)
        .ok_or_else(|| anyhow::anyhow!("revision {:?} is not understood", artifact.revision))?;
    let creds = crate::controllers::gitrepository::load_credentials(&client, &repo)
        .await?
        .map_err(|(_, message, _)| anyhow::anyhow!(message))?;
    let storage = tempfile::tempdir()?;
    let mirrors = MirrorStore::new(storage.path());
    let (url, reference, identity, commit) = (
        artifact.url.clone(),
        repo.spec.effective_ref(),
        creds.identity.clone(),
        revision.commit.clone(),
    );
    let tree = tokio::task::spawn_blocking(move || {
        // The user's own machine: local URLs are theirs to read.
        let opts = FetchOptions {
            allow_file: true,
            ..FetchOptions::default()
        };
        mirrors.fetch(&url, &reference, &creds, &opts)?;
        mirrors.export(&url, &identity, &commit)
    })
    .await??;
    let rendered = render_path(&tree, &env.spec.path, settings).await?;
    let opts = ApplyOptions {
        owner: Some(Owner {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }),
        target_namespace: env.spec.target_namespace.clone(),
        default_namespace: namespace.to_string(),
        force: env.spec.force,
    };
    let diffs = Applier::new(client).diff(&rendered.objects, &opts).await?;
    Ok((artifact.revision, diffs))
}

/// A Secret's values replaced by a short digest: a diff shows *that* a value changed, never the value.
pub fn mask_secret(object: &serde_json::Value) -> serde_json::Value {
    use sha2::Digest;
    let mut out = object.clone();
    if object["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(map) = out.get_mut(field).and_then(|d| d.as_object_mut()) {
                for value in map.values_mut() {
                    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
                    *value = format!("<secret sha256:{}>", &hex::encode(digest)[..12]).into();
                }
            }
        }
    }
    out
}

/// A unified diff of one object, live → desired, as YAML. `color` adds ANSI colors for terminals.
pub fn unified(diff: &ObjectDiff, color: bool) -> String {
    let live = diff
        .live
        .as_ref()
        .map(|l| serde_yaml_ng::to_string(&mask_secret(l)).unwrap_or_default())
        .unwrap_or_default();
    let desired = serde_yaml_ng::to_string(&mask_secret(&diff.desired)).unwrap_or_default();
    let text = TextDiff::from_lines(&live, &desired)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{}", diff.object), &format!("desired/{}", diff.object))
        .to_string();
    if !color {
        return text;
    }
    text.lines()
        .map(|line| {
            let code = if line.starts_with("+++") || line.starts_with("---") {
                "1"
            } else if line.starts_with('+') {
                "32"
            } else if line.starts_with('-') {
                "31"
            } else if line.starts_with("@@") {
                "36"
            } else {
                return format!("{line}\n");
            };
            format!("\x1b[{code}m{line}\x1b[0m\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unified_diff_shows_changed_fields() {
        let d = ObjectDiff {
            object: "v1/ConfigMap ns/a".into(),
            live: Some(json!({"data": {"color": "red", "size": "1"}})),
            desired: json!({"data": {"color": "blue", "size": "1"}}),
        };
        let text = unified(&d, false);
        assert!(text.contains("--- live/v1/ConfigMap ns/a"), "{text}");
        assert!(
            text.contains("-  color: red") && text.contains("+  color: blue"),
            "{text}"
        );
        assert!(!text.contains("-  size"), "{text}");
        let colored = unified(&d, true);
        assert!(colored.contains("\x1b[31m-  color: red\x1b[0m"), "{colored}");
    }

    #[test]
    fn secret_values_never_reach_the_diff() {
        let d = ObjectDiff {
            object: "v1/Secret ns/s".into(),
            live: Some(json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}})),
            desired: json!({"kind": "Secret", "data": {"password": "c3dvcmRmaXNo"}}),
        };
        let text = unified(&d, false);
        assert!(
            !text.contains("aHVudGVyMg==") && !text.contains("c3dvcmRmaXNo"),
            "{text}"
        );
        assert!(
            text.contains("-  password: <secret sha256:") && text.contains("+  password: <secret sha256:"),
            "{text}"
        );
    }

    #[test]
    fn a_new_object_is_all_additions() {
        let d = ObjectDiff {
            object: "v1/ConfigMap ns/new".into(),
            live: None,
            desired: json!({"kind": "ConfigMap"}),
        };
        assert!(unified(&d, false).contains("+kind: ConfigMap"));
    }
}
