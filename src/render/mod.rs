//! Render: manifest files → Kubernetes objects. Pure, so every rule is unit-tested without a cluster.
//!
//! The whole set is rendered before anything is applied; one bad document fails the render, and the cluster
//! keeps what the last good revision applied.

mod cache;
mod disk;
mod helm;
mod kustomize;
pub mod sandbox;
mod strict;
mod tree;

pub use cache::RenderCache;
pub use disk::{RenderSettings, Rendered, kustomization_dirs, render_path, render_path_replacing, render_path_with};
pub use helm::{Capabilities, HOOK_ANNOTATION, HelmInputs, hooks_note, split_hooks};
pub use kustomize::{CLOSED_PROXY, KUSTOMIZATION_FILES, SKIP_CHECKS_VAR, is_remote, run as run_kustomize_unchecked};
pub use sandbox::{Sandbox, WorkerSettings};
pub use tree::CHART_FILE;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::source::ManifestFile;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenderError {
    #[error("{file}: document {doc}: invalid YAML: {message}")]
    Yaml { file: String, doc: usize, message: String },
    #[error("{file}: document {doc}: {message}")]
    InvalidObject { file: String, doc: usize, message: String },
    #[error("{id} is defined twice: in {first} and in {second}")]
    Duplicate { id: String, first: String, second: String },
    #[error("path {0:?} does not exist in the repository")]
    PathNotFound(String),
    #[error("path {0:?} is invalid: it must be relative and stay inside the repository")]
    InvalidPath(String),
    #[error("symlink {0} points outside the repository")]
    SymlinkEscapes(String),
    #[error("symlink {0} is part of a cycle (or a chain of more than 40 links)")]
    SymlinkLoop(String),
    #[error("{file} is {bytes} bytes, over the size limit")]
    TooLarge { file: String, bytes: u64 },
    #[error("{file}: {field} is a remote resource, which is not allowed; vendor it into the repository")]
    RemoteBase { file: String, field: String },
    #[error("{file}: {what} are not supported")]
    Unsupported { file: String, what: String },
    #[error("kustomize build failed: {0}")]
    Kustomize(String),
    #[error("helm template {chart} failed: {message}")]
    Helm { chart: String, message: String },
    #[error("rendering took longer than {0}s")]
    Timeout(u64),
    #[error("{what}: over the limit of {limit} bytes (ferry run --max-render-bytes)")]
    TooManyBytes { what: String, limit: u64 },
    #[error("the render has {count} objects, over the limit of {limit} (ferry run --max-render-objects)")]
    TooManyObjects { count: usize, limit: usize },
    #[error("reading the repository: {0}")]
    Io(String),
    /// The walls around renderers could not be raised here (see `render::sandbox`).
    #[error(
        "the render sandbox is unavailable ({0}): kustomize and helm are not run without it \
         (ferry run --insecure-render-without-sandbox runs them anyway)"
    )]
    SandboxUnavailable(String),
    /// The worker went over one of its resource limits.
    #[error("the render went over its {0} limit")]
    LimitExceeded(String),
    /// The worker crashed or answered nothing readable.
    #[error("{0}")]
    Worker(String),
}

/// One rendered object and where it came from, for error messages that point at a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedObject {
    pub source: String,
    pub object: Value,
}

impl RenderedObject {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}

/// Plain YAML/JSON: every document of every file, in path order. Empty documents are skipped; `kind: List`
/// is flattened, as `kubectl apply` does.
pub fn render_plain(files: &[ManifestFile]) -> Result<Vec<RenderedObject>, RenderError> {
    let mut out = Vec::new();
    for file in files {
        for (i, document) in serde_yaml_ng::Deserializer::from_slice(&file.content).enumerate() {
            let doc = i + 1;
            let value = strict::StrictValue::deserialize(document)
                .map_err(|e| RenderError::Yaml {
                    file: file.path.clone(),
                    doc,
                    message: e.to_string(),
                })?
                .0;
            match value {
                Value::Null => continue,
                Value::Object(_) => {}
                _ => {
                    return Err(RenderError::InvalidObject {
                        file: file.path.clone(),
                        doc,
                        message: "not a mapping".to_string(),
                    });
                }
            }
            let items = if value["kind"] == "List" && value["items"].is_array() {
                value["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![value]
            };
            for object in items {
                validate_object(&object).map_err(|message| RenderError::InvalidObject {
                    file: file.path.clone(),
                    doc,
                    message,
                })?;
                out.push(RenderedObject {
                    source: file.path.clone(),
                    object,
                });
            }
        }
    }
    check_duplicates(&out)?;
    Ok(out)
}

fn validate_object(object: &Value) -> Result<(), String> {
    let field = |name: &str, v: &Value| match v.as_str() {
        Some(s) if !s.is_empty() => Ok(()),
        _ => Err(format!("missing or empty {name}")),
    };
    field("apiVersion", &object["apiVersion"])?;
    field("kind", &object["kind"])?;
    field("metadata.name", &object["metadata"]["name"])?;
    if object["metadata"].get("generateName").is_some() {
        return Err("metadata.generateName is not supported: GitOps objects need stable names".to_string());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if !is_path_segment_name(name) {
        return Err(format!(
            "metadata.name {:?} is not a Kubernetes name (printable ASCII, not \".\" or \"..\", no '/', '%', '?' or '#')",
            shorten(name)
        ));
    }
    match &object["metadata"]["namespace"] {
        Value::Null => {}
        Value::String(ns) if is_dns_label(ns) => {}
        other => {
            return Err(format!(
                "metadata.namespace {} is not a namespace name (lowercase letters, digits and '-', at most 63)",
                shorten(&other.to_string())
            ));
        }
    }
    Ok(())
}

/// What every kind's name must be to address it at all (apimachinery's `IsValidPathSegmentName`), narrowed to
/// printable ASCII: no built-in kind allows more, and a name that cannot be put in a request path would
/// otherwise fail every request as if the API server were down, and be retried forever.
fn is_path_segment_name(name: &str) -> bool {
    name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'%' | b'?' | b'#'))
}

/// RFC 1123 label: what a namespace name must be.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A hostile value quoted in a message is cut short: messages end up in status, Events and logs.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}...")
}

pub(crate) fn check_duplicates(objects: &[RenderedObject]) -> Result<(), RenderError> {
    let mut seen: std::collections::HashMap<String, &str> = Default::default();
    for o in objects {
        let group = o.api_version().rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let id = format!("{}/{} {}/{}", group, o.kind(), o.namespace().unwrap_or(""), o.name());
        if let Some(first) = seen.insert(id.clone(), &o.source) {
            return Err(RenderError::Duplicate {
                id,
                first: first.to_string(),
                second: o.source.clone(),
            });
        }
    }
    Ok(())
}

/// Kinds that others depend on are applied first and pruned last.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "CustomResourceDefinition" => 0,
        "Namespace" => 1,
        "ServiceAccount" | "ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding" => 2,
        "ConfigMap" | "Secret" | "PersistentVolumeClaim" | "Service" => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> ManifestFile {
        ManifestFile {
            path: path.to_string(),
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn renders_multi_document_files_in_order() {
        let objs = render_plain(&[
            file(
                "a.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n",
            ),
            file("b/c.json", r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"three"}}"#),
        ])
        .unwrap();
        let names: Vec<_> = objs.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["one", "two", "three"]);
        assert_eq!(objs[2].source, "b/c.json");
    }

    #[test]
    fn names_that_cannot_address_an_object_are_refused_at_render() {
        let object = |meta: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {meta}\n");
        for meta in [
            r#"{name: "bad name"}"#,
            r#"{name: "a/b"}"#,
            r#"{name: ".."}"#,
            r#"{name: "100%"}"#,
            r#"{name: "q?x=1"}"#,
            r#"{name: "аdmin"}"#,
            r#"{name: ok, namespace: "Upper"}"#,
            r#"{name: ok, namespace: "a/b"}"#,
            r#"{name: ok, namespace: 7}"#,
        ] {
            let err = render_plain(&[file("x.yaml", &object(meta))]).unwrap_err();
            assert!(matches!(err, RenderError::InvalidObject { .. }), "{meta}: {err}");
        }
        // What built-in kinds do use: dots, colons (RBAC), upper case (some CRDs).
        for meta in [
            r#"{name: "system:controller:a.b", namespace: team-1}"#,
            r#"{name: "Mixed.Case"}"#,
        ] {
            render_plain(&[file("x.yaml", &object(meta))]).unwrap();
        }
        let long = render_plain(&[file("x.yaml", &object(&format!("{{name: \"{} x\"}}", "a".repeat(500))))])
            .unwrap_err()
            .to_string();
        assert!(long.len() < 300, "a hostile name is quoted short: {long}");
    }

    #[test]
    fn flattens_lists() {
        let objs = render_plain(&[file(
            "l.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
        )])
        .unwrap();
        assert_eq!(objs.len(), 2);
    }

    #[test]
    fn malformed_yaml_names_file_and_document() {
        let err = render_plain(&[file(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nmetadata: [unclosed\n",
        )])
        .unwrap_err();
        match err {
            RenderError::Yaml { file, doc, .. } => {
                assert_eq!(file, "bad.yaml");
                assert_eq!(doc, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn objects_need_api_version_kind_and_name() {
        let err = render_plain(&[file("x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")]).unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = render_plain(&[file("x.yaml", "- 1\n- 2\n")]).unwrap_err();
        assert!(err.to_string().contains("not a mapping"), "{err}");
    }

    #[test]
    fn duplicates_are_rejected() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let err = render_plain(&[file("1.yaml", cm), file("2.yaml", cm)]).unwrap_err();
        assert!(matches!(err, RenderError::Duplicate { .. }), "{err}");
    }
}
