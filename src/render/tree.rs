//! A plain directory, walked the way Flux's kustomize-controller walks one: every manifest below it, except that
//! a subdirectory holding a kustomization is a kustomize build of its own (not descended into), and a
//! kustomization file is never read as an object.
//!
//! Flux generates a `kustomization.yaml` for such a path listing, in walk order, each plain manifest and each
//! subdirectory holding a kustomization, and builds that. Ferry builds the same list without writing into the
//! tree: the plain files are parsed as plain files always are, each kustomize subdirectory is built by the pinned
//! kustomize (with the same static check and sandbox as a kustomize path), and the objects are joined in walk
//! order, a duplicate across them refused just as kustomize refuses one. With no transformer in the generated
//! kustomization, the objects are the ones Flux's build yields (tests/render.rs compares them).
//!
//! One deliberate difference: `*.json` files are manifests here as in every plain path (Flux's generator lists
//! only `*.yaml` and `*.yml`), so adding a kustomize subdirectory never drops, and prunes, JSON objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::disk::{RenderSettings, Rendered, link_error};
use super::kustomize::{self, KUSTOMIZATION_FILES};
use super::{RenderError, RenderedObject, check_duplicates, render_plain};
use crate::source::{LinkProblem, MAX_FILE_BYTES, ManifestFile, real_path_beneath};

/// Files that make a directory a Helm chart.
pub const CHART_FILE: &str = "Chart.yaml";

/// What a walk of a plain directory found, in path order.
#[derive(Debug)]
pub enum Entry {
    /// A manifest file, read.
    File(ManifestFile),
    /// A subdirectory holding a kustomization: (its path as the repository shows it, its real directory).
    Kustomization(String, PathBuf),
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::File(f) => &f.path,
            Entry::Kustomization(rel, _) => rel,
        }
    }
}

/// Every `*.yaml|*.yml|*.json` below `dir`, recursively, in path order, within the size limits, and every
/// subdirectory holding a kustomization (not descended into). Every entry is resolved against the real
/// filesystem (an escaping or looping link is an error naming it), and each real directory is read once, so
/// directory links back up the tree cannot make the walk endless. A chart below a plain directory is refused:
/// it is rendered only as an Environment's own path, where its values are known.
pub fn walk(root: &Path, dir: &Path, settings: &RenderSettings, deadline: Instant) -> Result<Vec<Entry>, RenderError> {
    let io = |e: std::io::Error| RenderError::Io(e.to_string());
    let mut entries = Vec::new();
    let mut total = 0u64;
    let mut visited = BTreeSet::from([dir.to_path_buf()]);
    // (the path as the repository shows it, relative to root; its real directory)
    let logical = dir.strip_prefix(root).unwrap_or(dir).to_path_buf();
    let mut stack = vec![(logical, dir.to_path_buf())];
    while let Some((shown, real_dir)) = stack.pop() {
        for entry in std::fs::read_dir(&real_dir).map_err(io)?.flatten() {
            if Instant::now() > deadline {
                return Err(RenderError::Timeout(settings.timeout.as_secs()));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".ferry-") {
                continue;
            }
            let shown_path = shown.join(&name);
            let rel = shown_path.to_string_lossy().into_owned();
            let real_rel = real_dir.strip_prefix(root).unwrap_or(&real_dir).join(&name);
            let real = real_path_beneath(root, &real_rel).map_err(|p| link_error(&rel, p))?;
            let Ok(meta) = std::fs::metadata(&real) else {
                continue; // a dangling link: nothing to read
            };
            if meta.is_dir() {
                if KUSTOMIZATION_FILES.iter().any(|f| real.join(f).is_file()) {
                    entries.push(Entry::Kustomization(rel, real));
                } else if real.join(CHART_FILE).is_file() {
                    return Err(RenderError::Unsupported {
                        file: format!("{rel}/{CHART_FILE}"),
                        what: "Helm charts below a plain directory (set an Environment's path to the chart)"
                            .to_string(),
                    });
                } else if visited.insert(real.clone()) {
                    stack.push((shown_path, real));
                }
                continue;
            }
            if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
                continue;
            }
            if meta.len() > MAX_FILE_BYTES {
                return Err(RenderError::TooLarge {
                    file: rel,
                    bytes: meta.len(),
                });
            }
            total += meta.len();
            if total > settings.max_bytes {
                return Err(RenderError::TooManyBytes {
                    what: format!("the manifests read up to {rel}"),
                    limit: settings.max_bytes,
                });
            }
            let content = std::fs::read(&real).map_err(io)?;
            entries.push(Entry::File(ManifestFile { path: rel, content }));
        }
    }
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(entries)
}

/// Renders walked entries: plain files parsed as plain YAML, each kustomize subdirectory built by kustomize,
/// in walk order. `removed` are the links the export took out (see `source::export`).
pub async fn render(
    root: &Path,
    entries: Vec<Entry>,
    settings: &RenderSettings,
    removed: &[(String, LinkProblem)],
) -> Result<Rendered, RenderError> {
    let mut objects: Vec<RenderedObject> = Vec::new();
    let mut yaml = String::new();
    let mut kustomized = false;
    for entry in entries {
        match entry {
            Entry::File(file) => {
                let plain = render_plain(std::slice::from_ref(&file))?;
                for o in &plain {
                    yaml.push_str("---\n");
                    yaml.push_str(&serde_yaml_ng::to_string(&o.object).unwrap_or_default());
                }
                objects.extend(plain);
            }
            Entry::Kustomization(rel, real) => {
                kustomized = true;
                let out = kustomize::build(root, &real, settings, removed).await?;
                let built = render_plain(&[ManifestFile {
                    path: format!("kustomize build {rel}"),
                    content: out.as_bytes().to_vec(),
                }])?;
                if !built.is_empty() {
                    yaml.push_str("---\n");
                    yaml.push_str(&out);
                }
                objects.extend(built);
            }
        }
        if yaml.len() as u64 > settings.max_bytes {
            // YAML anchors and kustomize generators can make the objects far bigger than the files.
            return Err(RenderError::TooManyBytes {
                what: "the rendered YAML".to_string(),
                limit: settings.max_bytes,
            });
        }
        if objects.len() > settings.max_objects {
            return Err(RenderError::TooManyObjects {
                count: objects.len(),
                limit: settings.max_objects,
            });
        }
    }
    // kustomize refuses an object defined twice across the resources of one kustomization; so does this.
    check_duplicates(&objects)?;
    Ok(Rendered::new(yaml, objects, kustomized, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn paths(entries: &[Entry]) -> Vec<(&str, bool)> {
        entries
            .iter()
            .map(|e| (e.path(), matches!(e, Entry::Kustomization(..))))
            .collect()
    }

    #[test]
    fn kustomize_subdirectories_are_entries_not_descended_into() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(&root, "clusters/prod/cm.yaml", "kind: ConfigMap\n");
        write(
            &root,
            "clusters/prod/flux-system/kustomization.yaml",
            "resources: [a.yaml]\n",
        );
        write(&root, "clusters/prod/flux-system/a.yaml", "kind: ConfigMap\n");
        write(&root, "clusters/prod/infra/Kustomization", "resources: []\n");
        write(&root, "clusters/prod/plain/x.yml", "kind: ConfigMap\n");
        write(
            &root,
            "clusters/prod/plain/deeper/app/kustomization.yml",
            "resources: []\n",
        );
        write(&root, "clusters/prod/plain/y.json", "{}");
        write(&root, "clusters/prod/README.md", "#");
        let settings = RenderSettings::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let entries = walk(&root, &root.join("clusters/prod"), &settings, deadline).unwrap();
        assert_eq!(
            paths(&entries),
            [
                ("clusters/prod/cm.yaml", false),
                ("clusters/prod/flux-system", true),
                ("clusters/prod/infra", true),
                ("clusters/prod/plain/deeper/app", true),
                ("clusters/prod/plain/x.yml", false),
                ("clusters/prod/plain/y.json", false),
            ]
        );
    }

    #[test]
    fn a_chart_below_a_plain_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "apps/podinfo/Chart.yaml",
            "apiVersion: v2\nname: podinfo\nversion: 1.0.0\n",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = walk(&root, &root.join("apps"), &RenderSettings::default(), deadline).unwrap_err();
        assert!(
            matches!(err, RenderError::Unsupported { ref file, .. } if file == "apps/podinfo/Chart.yaml"),
            "{err}"
        );
    }
}
