//! Helm charts in the repository, rendered by the pinned `helm template` (hack/versions.sh) the way kustomize is
//! run (see [`super::kustomize`]): an empty environment, `PATH` an empty directory, every proxy a closed port,
//! and all of helm's own directories (config, cache, data, plugins, repositories, registry credentials) fresh
//! and empty in a temporary home, so there is no repository or OCI pull, no plugin, and no credential to use.
//! Nothing the repository holds can add a post-renderer (only a command-line flag can, and Ferry passes none),
//! DNS lookups in templates stay off (helm's default), and `lookup` sees no cluster. Dependencies must be
//! vendored in the chart's `charts/`: `helm template` never fetches them, and names a missing one.
//!
//! The output is `helm template`'s, byte for byte, with the hooks left out (what `--no-hooks` prints): Ferry
//! is not a Helm release manager, so hooks have no install/upgrade moment to run at. They are listed in
//! [`Rendered::notes`] for a Warning Event instead of being dropped silently.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::disk::{RenderSettings, Rendered, link_error};
use super::kustomize::{resolve_program, run_bounded, sandbox_dirs, sandboxed};
use super::{RenderError, RenderedObject, check_duplicates, render_plain};
use crate::source::{LinkProblem, ManifestFile, real_path_beneath};

/// The annotation that makes a chart's object a hook.
pub const HOOK_ANNOTATION: &str = "helm.sh/hook";

/// What the target cluster serves, for `.Capabilities` (`--kube-version`, `--api-versions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `v1.36.3`.
    pub kube_version: String,
    /// `apps/v1`, `apps/v1/Deployment`, ... sorted.
    pub api_versions: Vec<String>,
}

/// The inputs of one `helm template`, besides the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelmInputs {
    pub release_name: String,
    pub namespace: String,
    /// Relative to the chart directory, inside the repository, in order.
    pub values_files: Vec<String>,
    /// Applied last.
    pub values: Option<Value>,
    pub include_crds: bool,
    /// None: helm's built-in defaults.
    pub capabilities: Option<Capabilities>,
}

impl Default for HelmInputs {
    fn default() -> Self {
        HelmInputs {
            release_name: "release".to_string(),
            namespace: "default".to_string(),
            values_files: Vec::new(),
            values: None,
            include_crds: true,
            capabilities: None,
        }
    }
}

impl HelmInputs {
    /// An Environment's inputs: `spec.helm` with its defaults (the Environment's name; its target namespace,
    /// else its own).
    pub fn for_environment(env: &crate::api::Environment, capabilities: Option<Capabilities>) -> Self {
        use kube::ResourceExt;
        let spec = env.spec.helm.clone().unwrap_or_default();
        HelmInputs {
            release_name: spec.release_name.unwrap_or_else(|| env.name_any()),
            namespace: spec
                .namespace
                .or_else(|| env.spec.target_namespace.clone())
                .unwrap_or_else(|| env.namespace().unwrap_or_default()),
            values_files: spec.values_files,
            values: spec.values,
            include_crds: spec.include_crds,
            capabilities,
        }
    }

    /// A digest of every input (values included, capabilities included): part of the render cache key, so
    /// two Environments on one commit and chart with other values never share a render.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

/// `helm template` of the chart at `chart` (a real directory inside `root`, shown as `rel`).
pub async fn template(
    root: &Path,
    chart: &Path,
    rel: &str,
    inputs: &HelmInputs,
    settings: &RenderSettings,
) -> Result<Rendered, RenderError> {
    let fail = |message: String| RenderError::Helm {
        chart: rel.to_string(),
        message,
    };
    let home = tempfile::tempdir().map_err(|e| RenderError::Io(e.to_string()))?;
    let empty_path = sandbox_dirs(home.path())?;
    // Every value a tenant writes goes in `--flag=value` form, and the positionals after `--`: a release name
    // or namespace that looks like a flag (`--post-renderer=...`) stays a value.
    let flag = |name: &str, value: &std::ffi::OsStr| {
        let mut arg = std::ffi::OsString::from(format!("--{name}="));
        arg.push(value);
        arg
    };
    let mut args: Vec<std::ffi::OsString> = vec!["template".into(), flag("namespace", inputs.namespace.as_ref())];
    if inputs.include_crds {
        args.push("--include-crds".into());
    }
    for file in &inputs.values_files {
        args.push(flag("values", values_file(root, rel, file)?.as_os_str()));
    }
    if let Some(values) = &inputs.values {
        // JSON is YAML; the file lives in the temporary home and goes with it.
        let path = home.path().join("spec.helm.values.yaml");
        std::fs::write(&path, serde_json::to_vec(values).unwrap_or_default())
            .map_err(|e| RenderError::Io(e.to_string()))?;
        args.push(flag("values", path.as_os_str()));
    }
    if let Some(caps) = &inputs.capabilities {
        if !caps.kube_version.is_empty() {
            args.push(flag("kube-version", caps.kube_version.as_ref()));
        }
        for api in &caps.api_versions {
            args.push(flag("api-versions", api.as_ref()));
        }
    }
    args.extend(["--".into(), inputs.release_name.clone().into(), chart.into()]);
    let program = resolve_program(&settings.helm);
    let mut cmd = sandboxed(&program, root, home.path(), &empty_path);
    cmd.args(&args);
    let h = home.path();
    for (var, dir) in [
        ("HELM_CONFIG_HOME", h.join("config")),
        ("HELM_CACHE_HOME", h.join("cache")),
        ("HELM_DATA_HOME", h.join("data")),
        ("HELM_PLUGINS", empty_path.clone()),
        ("HELM_REGISTRY_CONFIG", h.join("config/registry/config.json")),
        ("HELM_REPOSITORY_CONFIG", h.join("config/repositories.yaml")),
        ("HELM_REPOSITORY_CACHE", h.join("cache/repository")),
        ("KUBECONFIG", h.join("no-kubeconfig")),
    ] {
        cmd.env(var, dir);
    }
    let home_prefix = format!("{}/", h.display());
    let out = run_bounded(cmd, root, settings, "the helm template output", |message| {
        fail(explain(&message.replace(&home_prefix, ""), rel))
    })
    .await?;
    let (yaml, hooks) = without_hooks(&out);
    let mut objects: Vec<RenderedObject> = Vec::new();
    for (source, block) in blocks(&yaml) {
        objects.extend(render_plain(&[ManifestFile {
            path: format!("{rel}: {source}"),
            content: block.as_bytes().to_vec(),
        }])?);
    }
    check_duplicates(&objects)?;
    if objects.len() > settings.max_objects {
        return Err(RenderError::TooManyObjects {
            count: objects.len(),
            limit: settings.max_objects,
        });
    }
    let notes = hooks_note(&hooks).into_iter().collect();
    Ok(Rendered::new(yaml, objects, false, notes))
}

/// A values file named relative to the chart: it must stay inside the repository (`..` may climb out of the
/// chart, not out of the repository) and be a file there.
fn values_file(root: &Path, chart_rel: &str, file: &str) -> Result<std::path::PathBuf, RenderError> {
    let shown = format!("spec.helm.valuesFiles: {file}");
    if Path::new(file).is_absolute() {
        return Err(RenderError::InvalidPath(shown));
    }
    let real = real_path_beneath(root, &Path::new(chart_rel).join(file)).map_err(|p| match p {
        LinkProblem::Escapes => RenderError::InvalidPath(shown.clone()),
        LinkProblem::Loops => link_error(&shown, p),
    })?;
    if !real.is_file() {
        return Err(RenderError::PathNotFound(shown));
    }
    Ok(real)
}

/// helm's messages as users need them: a values schema failure names the schema file.
fn explain(message: &str, rel: &str) -> String {
    let message = message.trim().trim_start_matches("Error: ").to_string();
    if message.contains("values don't meet the specifications of the schema") {
        return format!("{rel}/values.schema.json: {message}");
    }
    message
}

/// `helm template`'s output cut into its `# Source:` blocks, each with the template (or CRD file) it came from.
/// helm prints every rendered document, and every CRD file, as `---\n# Source: <path>\n<content>\n`.
fn blocks(out: &str) -> Vec<(&str, &str)> {
    const MARK: &str = "---\n# Source: ";
    let mut starts: Vec<usize> = out
        .match_indices(MARK)
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || out.as_bytes()[i - 1] == b'\n')
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut result = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(out.len());
        let block = &out[start..end];
        let source = block
            .strip_prefix(MARK)
            .and_then(|rest| rest.lines().next())
            .unwrap_or("(helm output)");
        result.push((source, block));
    }
    result
}

/// The output without its hook blocks (exactly what `--no-hooks` prints: helm appends hooks after the
/// manifests), and each hook as `Kind/name (event)`.
fn without_hooks(out: &str) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(out.len());
    let mut hooks = Vec::new();
    for (_, block) in blocks(out) {
        match serde_yaml_ng::from_str::<Value>(block).ok().as_ref().and_then(hook_of) {
            Some(h) => hooks.push(h),
            None => kept.push_str(block),
        }
    }
    (kept, hooks)
}

/// `Kind/name (event)` when the object is a hook (has the hook annotation), else `None`.
fn hook_of(object: &Value) -> Option<String> {
    let event = object["metadata"]["annotations"][HOOK_ANNOTATION].as_str()?;
    Some(format!(
        "{}/{} ({event})",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    ))
}

/// A chart's objects without its hooks, and each hook left out as `Kind/name (event)`: the second look, at
/// objects decrypted after `helm template` ran. sops leaves keys in clear, so [`without_hooks`] already sees
/// the annotation of an encrypted template (its value ciphertext) and leaves it out; looking again at the
/// objects as they are applied keeps the filter from resting on that.
pub fn split_hooks(objects: Vec<RenderedObject>) -> (Vec<RenderedObject>, Vec<String>) {
    let mut hooks = Vec::new();
    let kept = objects
        .into_iter()
        .filter(|o| match hook_of(&o.object) {
            Some(hook) => {
                hooks.push(hook);
                false
            }
            None => true,
        })
        .collect();
    (kept, hooks)
}

/// The Warning note that names the hooks left out; `None` when there are none.
pub fn hooks_note(hooks: &[String]) -> Option<String> {
    if hooks.is_empty() {
        return None;
    }
    Some(format!(
        "helm hooks are not applied (Ferry renders charts as `helm template --no-hooks`): {}",
        hooks.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "---\n# Source: app/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# Source: app/templates/job.yaml\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n    \"helm.sh/hook\": pre-install,pre-upgrade\n---\n# Source: app/templates/tests/t.yaml\napiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations:\n    helm.sh/hook: test\n";

    #[test]
    fn hooks_are_cut_out_and_named() {
        let (kept, hooks) = without_hooks(OUT);
        assert_eq!(
            kept,
            "---\n# Source: app/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
        );
        assert_eq!(hooks, ["Job/migrate (pre-install,pre-upgrade)", "Pod/t (test)"]);
        // sops encrypts values, never keys: an encrypted hook still shows its annotation.
        let encrypted = "---\n# Source: app/templates/job.yaml\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: ENC[AES256_GCM,data:AA==,iv:BB==,tag:CC==,type:str]\n  annotations:\n    helm.sh/hook: ENC[AES256_GCM,data:DD==,iv:EE==,tag:FF==,type:str]\nsops:\n  mac: ENC[AES256_GCM,data:GG==,iv:HH==,tag:II==,type:str]\n";
        let (kept, hooks) = without_hooks(encrypted);
        assert_eq!((kept.as_str(), hooks.len()), ("", 1));
        let sources: Vec<&str> = blocks(OUT).iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sources,
            [
                "app/templates/cm.yaml",
                "app/templates/job.yaml",
                "app/templates/tests/t.yaml"
            ]
        );
    }

    #[test]
    fn decrypted_hooks_are_left_out_as_the_render_leaves_out_the_others() {
        let object = |name: &str, annotations: Value| RenderedObject {
            source: "charts/app: app/templates/x.yaml".to_string(),
            object: serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "annotations": annotations}}),
        };
        let objects = vec![
            object("web", serde_json::json!({"team": "a"})),
            object("migrate", serde_json::json!({HOOK_ANNOTATION: "pre-upgrade"})),
        ];
        let (kept, hooks) = split_hooks(objects);
        assert_eq!(kept.iter().map(|o| o.name()).collect::<Vec<_>>(), ["web"]);
        assert_eq!(hooks, ["Job/migrate (pre-upgrade)"]);
        let note = hooks_note(&hooks).unwrap();
        assert!(
            note.ends_with("`helm template --no-hooks`): Job/migrate (pre-upgrade)"),
            "{note}"
        );
        assert_eq!(hooks_note(&[]), None);
    }

    #[test]
    fn values_files_stay_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("charts/app")).unwrap();
        std::fs::write(root.join("charts/app/values-prod.yaml"), "a: 1\n").unwrap();
        std::fs::write(root.join("shared.yaml"), "a: 1\n").unwrap();
        assert!(values_file(&root, "charts/app", "values-prod.yaml").is_ok());
        assert!(values_file(&root, "charts/app", "../../shared.yaml").is_ok());
        for hostile in ["/etc/passwd", "../../../etc/passwd", "../../.."] {
            assert!(
                matches!(
                    values_file(&root, "charts/app", hostile),
                    Err(RenderError::InvalidPath(_))
                ),
                "{hostile}"
            );
        }
        std::os::unix::fs::symlink("/etc/hostname", root.join("charts/app/link.yaml")).unwrap();
        assert!(matches!(
            values_file(&root, "charts/app", "link.yaml"),
            Err(RenderError::InvalidPath(_))
        ));
        assert!(matches!(
            values_file(&root, "charts/app", "missing.yaml"),
            Err(RenderError::PathNotFound(_))
        ));
    }

    #[test]
    fn an_environments_inputs_default_to_its_name_and_namespace() {
        let env = |spec: serde_json::Value| -> crate::api::Environment {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
                "metadata": {"name": "shop", "namespace": "team"},
                "spec": spec,
            }))
            .unwrap()
        };
        let plain = HelmInputs::for_environment(&env(serde_json::json!({"sourceRef": {"name": "c"}})), None);
        assert_eq!(
            (plain.release_name.as_str(), plain.namespace.as_str()),
            ("shop", "team")
        );
        assert!(plain.include_crds && plain.values_files.is_empty() && plain.values.is_none());
        let target = HelmInputs::for_environment(
            &env(serde_json::json!({"sourceRef": {"name": "c"}, "targetNamespace": "prod", "helm": {}})),
            None,
        );
        assert_eq!(target.namespace, "prod");
        assert!(target.include_crds, "includeCRDs defaults to true");
        let set = HelmInputs::for_environment(
            &env(
                serde_json::json!({"sourceRef": {"name": "c"}, "targetNamespace": "prod",
                "helm": {"releaseName": "web", "namespace": "edge", "includeCRDs": false,
                         "valuesFiles": ["v.yaml"], "values": {"a": 1}}}),
            ),
            None,
        );
        assert_eq!((set.release_name.as_str(), set.namespace.as_str()), ("web", "edge"));
        assert!(!set.include_crds);
        assert_eq!(set.values_files, ["v.yaml"]);
        assert_eq!(set.values, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn the_digest_changes_with_every_input() {
        let base = HelmInputs::default();
        let mut values = base.clone();
        values.values = Some(serde_json::json!({"replicas": 2}));
        let mut caps = base.clone();
        caps.capabilities = Some(Capabilities {
            kube_version: "v1.36.3".into(),
            api_versions: vec!["example.com/v1/Widget".into()],
        });
        let mut files = base.clone();
        files.values_files = vec!["values-prod.yaml".into()];
        let digests: std::collections::BTreeSet<String> =
            [&base, &values, &caps, &files].iter().map(|i| i.digest()).collect();
        assert_eq!(digests.len(), 4);
    }
}
