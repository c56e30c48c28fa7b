//! Rendering a path of an exported tree: kustomize when the path holds a kustomization, plain YAML otherwise.
//! This is the one entry point the controllers and the CLI use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::kustomize::{self, KUSTOMIZATION_FILES};
use super::{RenderError, RenderedObject, render_plain};
use crate::source::{ESCAPING_SYMLINKS, MAX_FILE_BYTES, MAX_TOTAL_BYTES, ManifestFile, normalize_path};

#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// The kustomize binary (pinned upstream build; see `hack/controlplane-build.sh`).
    pub kustomize: PathBuf,
    pub timeout: Duration,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            kustomize: PathBuf::from("kustomize"),
            timeout: Duration::from_secs(60),
        }
    }
}

/// A render: the objects, and the YAML exactly as the renderer produced it (what `ferry render` prints).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub yaml: String,
    pub objects: Vec<RenderedObject>,
    pub kustomize: bool,
}

/// Renders `path` inside the exported repository at `root`.
pub async fn render_path(root: &Path, path: &str, settings: &RenderSettings) -> Result<Rendered, RenderError> {
    let parts = normalize_path(path).map_err(|_| RenderError::InvalidPath(path.to_string()))?;
    let rel = parts.join("/");
    let dir = root.join(&rel);
    let escaping = std::fs::read_to_string(root.join(ESCAPING_SYMLINKS)).unwrap_or_default();
    if let Some(link) = escaping
        .lines()
        .find(|l| rel.is_empty() || l.starts_with(&format!("{rel}/")))
    {
        return Err(RenderError::SymlinkEscapes(link.to_string()));
    }
    let (Ok(canonical_root), Ok(canonical_dir)) = (root.canonicalize(), dir.canonicalize()) else {
        return Err(RenderError::PathNotFound(path.to_string()));
    };
    if !canonical_dir.starts_with(&canonical_root) {
        return Err(RenderError::InvalidPath(path.to_string()));
    }
    if !canonical_dir.is_dir() {
        return Err(RenderError::PathNotFound(path.to_string()));
    }
    if KUSTOMIZATION_FILES.iter().any(|f| canonical_dir.join(f).is_file()) {
        let yaml = kustomize::build(&canonical_root, &canonical_dir, settings).await?;
        let source = format!("kustomize build {}", if rel.is_empty() { "." } else { &rel });
        let objects = render_plain(&[ManifestFile {
            path: source,
            content: yaml.clone().into_bytes(),
        }])?;
        return Ok(Rendered {
            yaml,
            objects,
            kustomize: true,
        });
    }
    let files = read_dir(&canonical_root, &canonical_dir)?;
    let objects = render_plain(&files)?;
    let mut yaml = String::new();
    for o in &objects {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml_ng::to_string(&o.object).unwrap_or_default());
    }
    Ok(Rendered {
        yaml,
        objects,
        kustomize: false,
    })
}

/// Every `*.yaml|*.yml|*.json` below `dir`, recursively, in path order, within the size limits.
fn read_dir(root: &Path, dir: &Path) -> Result<Vec<ManifestFile>, RenderError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| RenderError::Io(e.to_string()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".ferry-") {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| RenderError::Io(e.to_string()))?;
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
                continue;
            }
            total += meta.len();
            if meta.len() > MAX_FILE_BYTES || total > MAX_TOTAL_BYTES {
                return Err(RenderError::TooLarge {
                    file: rel,
                    bytes: meta.len(),
                });
            }
            let content = std::fs::read(&path).map_err(|e| RenderError::Io(e.to_string()))?;
            files.push(ManifestFile { path: rel, content });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[tokio::test]
    async fn plain_yaml_is_read_recursively_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "apps/b/two.yml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n",
        );
        write(
            dir.path(),
            "apps/a.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n",
        );
        write(dir.path(), "apps/notes.txt", b"not a manifest");
        let r = render_path(dir.path(), "./apps/", &RenderSettings::default())
            .await
            .unwrap();
        assert!(!r.kustomize);
        let names: Vec<_> = r.objects.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(r.yaml.contains("name: one") && r.yaml.contains("name: two"));
    }

    #[tokio::test]
    async fn oversized_files_missing_and_escaping_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'#'; (MAX_FILE_BYTES + 1) as usize];
        write(dir.path(), "apps/huge.yaml", &big);
        let settings = RenderSettings::default();
        assert!(matches!(
            render_path(dir.path(), "apps", &settings).await,
            Err(RenderError::TooLarge { .. })
        ));
        assert!(matches!(
            render_path(dir.path(), "nope", &settings).await,
            Err(RenderError::PathNotFound(_))
        ));
        assert!(matches!(
            render_path(dir.path(), "../..", &settings).await,
            Err(RenderError::InvalidPath(_))
        ));
        std::fs::write(dir.path().join(ESCAPING_SYMLINKS), "apps/link.yaml").unwrap();
        assert!(matches!(
            render_path(dir.path(), "apps", &settings).await,
            Err(RenderError::SymlinkEscapes(_))
        ));
    }

    #[test]
    fn the_cache_returns_one_render_per_commit_and_path() {
        let cache = super::super::RenderCache::default();
        let rendered = Rendered {
            yaml: String::new(),
            objects: Vec::new(),
            kustomize: false,
        };
        let first = cache.insert("c1", "apps", rendered);
        assert!(std::sync::Arc::ptr_eq(&first, &cache.get("c1", "apps").unwrap()));
        assert!(cache.get("c1", "other").is_none() && cache.get("c2", "apps").is_none());
    }
}
