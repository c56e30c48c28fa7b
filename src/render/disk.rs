//! Rendering a path of an exported tree: kustomize when the path holds a kustomization, `helm template` when it
//! holds a `Chart.yaml`, Flux's generated kustomization when subdirectories hold kustomizations (see `tree`),
//! plain YAML otherwise. This is the one entry point the controllers and the CLI use.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::helm::{self, HelmInputs};
use super::kustomize::{self, KUSTOMIZATION_FILES};
use super::sandbox::Sandbox;
use super::tree::{self, CHART_FILE};
use super::{RenderError, RenderedObject, render_plain};
use crate::source::{ESCAPING_SYMLINKS, LinkProblem, ManifestFile, normalize_path, real_path_beneath, removed_links};

#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// The kustomize binary (pinned upstream build; see `hack/controlplane-build.sh`).
    pub kustomize: PathBuf,
    /// The helm binary (pinned upstream build), for chart paths and kustomize's `helmCharts:`.
    pub helm: PathBuf,
    /// Upper bound on one render, plain YAML or kustomize: a hostile tree must not hold a reconcile forever.
    pub timeout: Duration,
    /// Objects one render may produce (`--max-render-objects`): each is dry-run and applied, and kept in the
    /// inventory, so a render of millions would take the controller and the API server down with it.
    pub max_objects: usize,
    /// Bytes of manifests one plain render may read, and of YAML any render may produce
    /// (`--max-render-bytes`): kustomize can turn a small tree into a huge output.
    pub max_bytes: u64,
    /// Bytes of renders the render cache keeps (`--render-cache-bytes`).
    pub cache_bytes: u64,
    /// Where renders run: a confined worker in every `ferry` command; in this process only in unit tests and
    /// inside the worker itself.
    pub sandbox: Sandbox,
    /// Set inside a worker whose walls could not be raised: why kustomize and helm are not run
    /// (`SandboxUnavailable`). Plain YAML still renders.
    pub exec_refusal: Option<String>,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            kustomize: PathBuf::from("kustomize"),
            helm: PathBuf::from("helm"),
            timeout: Duration::from_secs(60),
            max_objects: 5000,
            max_bytes: 64 << 20,
            cache_bytes: 128 << 20,
            sandbox: Sandbox::InProcess,
            exec_refusal: None,
        }
    }
}

/// A render: the objects, and the YAML exactly as the renderer produced it (what `ferry render` prints).
#[derive(Debug, Serialize, Deserialize)]
pub struct Rendered {
    pub yaml: String,
    pub objects: Vec<RenderedObject>,
    pub kustomize: bool,
    /// What users should know about the render that is not an error (helm hooks left out): published as a
    /// Warning Event when the revision is applied.
    pub notes: Vec<String>,
    /// Whether an object is SOPS-encrypted, worked out on the first ask and kept: a cached render is shared
    /// (behind an `Arc`, never changed) by every sync of every Environment on it, and each sync asks, so the
    /// objects are scanned once per render rather than once per sync. Private, so only [`Rendered::new`]
    /// makes one, knowing nothing yet.
    #[serde(skip)]
    encrypted: OnceLock<bool>,
}

impl Clone for Rendered {
    /// A copy knows nothing yet: it may be changed (the original must not be, once asked).
    fn clone(&self) -> Rendered {
        Rendered::new(
            self.yaml.clone(),
            self.objects.clone(),
            self.kustomize,
            self.notes.clone(),
        )
    }
}

impl PartialEq for Rendered {
    /// The render itself; whether the memo was filled yet is no part of it.
    fn eq(&self, other: &Self) -> bool {
        self.yaml == other.yaml
            && self.objects == other.objects
            && self.kustomize == other.kustomize
            && self.notes == other.notes
    }
}

impl Rendered {
    pub fn new(yaml: String, objects: Vec<RenderedObject>, kustomize: bool, notes: Vec<String>) -> Rendered {
        Rendered {
            yaml,
            objects,
            kustomize,
            notes,
            encrypted: OnceLock::new(),
        }
    }

    /// Whether anything in the render is SOPS-encrypted ([`crate::decrypt::find_encrypted`]), scanned on the
    /// first call only. The render must not be changed after that call (a cached one never is).
    pub fn holds_encrypted(&self) -> bool {
        *self
            .encrypted
            .get_or_init(|| crate::decrypt::find_encrypted(self).is_some())
    }
}

/// Renders `path` inside the exported repository (or checkout) at `root`, within `settings.timeout`.
/// A chart path is rendered with helm's defaults (release `release` in `default`); see [`render_path_with`].
pub async fn render_path(root: &Path, path: &str, settings: &RenderSettings) -> Result<Rendered, RenderError> {
    render_path_with(root, path, settings, &HelmInputs::default()).await
}

/// [`render_path`], with the inputs a chart path is rendered with (an Environment's `spec.helm`): in a confined
/// worker process (see [`super::sandbox`]) unless `settings.sandbox` says this process.
pub async fn render_path_with(
    root: &Path,
    path: &str,
    settings: &RenderSettings,
    helm_inputs: &HelmInputs,
) -> Result<Rendered, RenderError> {
    match &settings.sandbox {
        Sandbox::Worker(worker) => super::sandbox::render(worker, root, path, settings, helm_inputs).await,
        Sandbox::InProcess => render_in_process(root, path, settings, helm_inputs).await,
    }
}

/// The render itself, in this process, within `settings.timeout`: what a worker runs.
pub(crate) async fn render_in_process(
    root: &Path,
    path: &str,
    settings: &RenderSettings,
    helm_inputs: &HelmInputs,
) -> Result<Rendered, RenderError> {
    tokio::time::timeout(settings.timeout, render_within(root, path, settings, helm_inputs))
        .await
        .map_err(|_| RenderError::Timeout(settings.timeout.as_secs()))?
}

async fn render_within(
    root: &Path,
    path: &str,
    settings: &RenderSettings,
    helm_inputs: &HelmInputs,
) -> Result<Rendered, RenderError> {
    let parts = normalize_path(path).map_err(|_| RenderError::InvalidPath(path.to_string()))?;
    let rel = parts.join("/");
    let canonical_root = root
        .canonicalize()
        .map_err(|_| RenderError::PathNotFound(path.to_string()))?;
    // Links the export removed (escaping or looping) under this path: named rather than silently missing.
    let removed = removed_links(&std::fs::read_to_string(root.join(ESCAPING_SYMLINKS)).unwrap_or_default());
    if let Some(err) = removed
        .iter()
        .find(|(l, _)| rel.is_empty() || l.starts_with(&format!("{rel}/")))
        .map(|(l, p)| link_error(l, *p))
    {
        return Err(err);
    }
    let canonical_dir = match real_path_beneath(&canonical_root, Path::new(&rel)) {
        Ok(dir) => dir,
        Err(LinkProblem::Escapes) => return Err(RenderError::InvalidPath(path.to_string())),
        Err(LinkProblem::Loops) => return Err(RenderError::SymlinkLoop(rel)),
    };
    if !canonical_dir.is_dir() {
        return Err(RenderError::PathNotFound(path.to_string()));
    }
    if KUSTOMIZATION_FILES.iter().any(|f| canonical_dir.join(f).is_file()) {
        // secretGenerator files sops encrypted are never read as data: kustomize reads stand-ins here (the
        // render every Environment shares, keys or not), the plaintext only per Environment (crate::decrypt).
        let checked = kustomize::check_local_only(&canonical_root, &canonical_dir, &removed)?;
        let stand_ins =
            crate::decrypt::stand_ins(&canonical_root, &checked.dirs).map_err(|e| RenderError::Io(e.to_string()))?;
        if !stand_ins.is_empty() {
            return Box::pin(render_path_replacing(&canonical_root, path, settings, &stand_ins)).await;
        }
        // Checked just above: run it, rather than check every kustomization a second time.
        let yaml = kustomize::run(&canonical_root, &canonical_dir, settings, checked.uses_helm).await?;
        let source = format!("kustomize build {}", if rel.is_empty() { "." } else { &rel });
        let objects = render_plain(&[ManifestFile {
            path: source,
            content: yaml.clone().into_bytes(),
        }])?;
        check_object_count(objects.len(), settings)?;
        return Ok(Rendered::new(yaml, objects, true, Vec::new()));
    }
    if canonical_dir.join(CHART_FILE).is_file() {
        let shown = if rel.is_empty() { "." } else { &rel };
        return helm::template(&canonical_root, &canonical_dir, shown, helm_inputs, settings).await;
    }
    // The walk reads on a blocking thread; it stops at the deadline even after the timeout above has given up
    // on it.
    let deadline = Instant::now() + settings.timeout;
    let walk_settings = settings.clone();
    let walk_root = canonical_root.clone();
    let entries = tokio::task::spawn_blocking(move || tree::walk(&walk_root, &canonical_dir, &walk_settings, deadline))
        .await
        .map_err(|e| RenderError::Io(e.to_string()))??;
    if entries.iter().any(|e| matches!(e, tree::Entry::Kustomization(..))) {
        // A Flux-style tree: plain files next to kustomize directories.
        return tree::render(&canonical_root, entries, settings, &removed).await;
    }
    let files = entries
        .into_iter()
        .filter_map(|e| match e {
            tree::Entry::File(f) => Some(f),
            tree::Entry::Kustomization(..) => None,
        })
        .collect::<Vec<_>>();
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || render_plain_files(files, &settings))
        .await
        .map_err(|e| RenderError::Io(e.to_string()))?
}

/// The kustomization directories a build of `path` reads (checked as a render checks them), with the canonical
/// root they are below: where decryption looks for `secretGenerator` sources.
pub fn kustomization_dirs(root: &Path, path: &str) -> Result<(PathBuf, Vec<PathBuf>), RenderError> {
    let parts = normalize_path(path).map_err(|_| RenderError::InvalidPath(path.to_string()))?;
    let rel = parts.join("/");
    let canonical_root = root
        .canonicalize()
        .map_err(|_| RenderError::PathNotFound(path.to_string()))?;
    let removed = removed_links(&std::fs::read_to_string(root.join(ESCAPING_SYMLINKS)).unwrap_or_default());
    let dir = match real_path_beneath(&canonical_root, Path::new(&rel)) {
        Ok(dir) => dir,
        Err(LinkProblem::Escapes) => return Err(RenderError::InvalidPath(path.to_string())),
        Err(LinkProblem::Loops) => return Err(RenderError::SymlinkLoop(rel)),
    };
    let dirs = kustomize::check_local_only(&canonical_root, &dir, &removed)?.dirs;
    Ok((canonical_root, dirs))
}

/// Where plaintext that kustomize must read from files is put: memory-backed storage (`/dev/shm`, a tmpfs on
/// Linux and in every Kubernetes Pod), else the system's temporary directory.
pub(super) fn memory_backed_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Renders `path` from a copy of the tree at `root` in memory-backed storage, with the files in `replaced`
/// (relative to `root`) holding the given contents: decrypted `secretGenerator` sources, which kustomize can
/// only read from files. The copy (files 0600 in a 0700 directory) is deleted before this returns; the render
/// is the caller's, never cached.
pub async fn render_path_replacing(
    root: &Path,
    path: &str,
    settings: &RenderSettings,
    replaced: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Rendered, RenderError> {
    let io = |e: std::io::Error| RenderError::Io(e.to_string());
    let scratch = tempfile::Builder::new()
        .prefix("ferry-decrypt-")
        .tempdir_in(memory_backed_dir())
        .map_err(io)?;
    let copy = scratch.path().join("tree");
    copy_tree(root, &copy).map_err(io)?;
    for (rel, content) in replaced {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let target = copy.join(rel);
        let _ = std::fs::remove_file(&target);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(io)?;
        file.write_all(content).map_err(io)?;
    }
    let rendered = render_path(&copy, path, settings).await;
    drop(scratch);
    rendered
}

/// Copies a tree: directories and files, symlinks as symlinks (the export already removed those that leave).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

pub(super) fn link_error(rel: &str, problem: LinkProblem) -> RenderError {
    match problem {
        LinkProblem::Escapes => RenderError::SymlinkEscapes(rel.to_string()),
        LinkProblem::Loops => RenderError::SymlinkLoop(rel.to_string()),
    }
}

fn check_object_count(count: usize, settings: &RenderSettings) -> Result<(), RenderError> {
    if count > settings.max_objects {
        return Err(RenderError::TooManyObjects {
            count,
            limit: settings.max_objects,
        });
    }
    Ok(())
}

fn render_plain_files(files: Vec<ManifestFile>, settings: &RenderSettings) -> Result<Rendered, RenderError> {
    let objects = render_plain(&files)?;
    check_object_count(objects.len(), settings)?;
    let mut yaml = String::new();
    for o in &objects {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml_ng::to_string(&o.object).unwrap_or_default());
        if yaml.len() as u64 > settings.max_bytes {
            // YAML anchors can make the objects far bigger than the files.
            return Err(RenderError::TooManyBytes {
                what: "the rendered YAML".to_string(),
                limit: settings.max_bytes,
            });
        }
    }
    Ok(Rendered::new(yaml, objects, false, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MAX_FILE_BYTES;

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

    #[tokio::test]
    async fn a_link_chain_that_looks_local_is_refused_naming_the_link() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("repo");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("apps")).unwrap();
        std::fs::write(
            outer.path().join("secret.yaml"),
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: outside}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/c/up")).unwrap();
        std::os::unix::fs::symlink("../a/b/c/up/../..", root.join("apps/x")).unwrap();
        let err = render_path(&root, "apps", &RenderSettings::default())
            .await
            .unwrap_err();
        assert_eq!(err, RenderError::SymlinkEscapes("apps/x".to_string()));
        assert!(matches!(
            render_path(&root, "apps/x", &RenderSettings::default()).await,
            Err(RenderError::InvalidPath(_))
        ));
        std::fs::remove_file(root.join("apps/x")).unwrap();
        std::os::unix::fs::symlink("one.yaml", root.join("apps/two.yaml")).unwrap();
        std::os::unix::fs::symlink("two.yaml", root.join("apps/one.yaml")).unwrap();
        let err = render_path(&root, "apps", &RenderSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RenderError::SymlinkLoop(ref l) if l.starts_with("apps/")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn directory_links_back_up_the_tree_are_read_once_not_forever() {
        // Two links to the parent make a naive walk visit 2^40 paths before the kernel's ELOOP stops it.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "apps/cm.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n",
        );
        std::fs::create_dir_all(dir.path().join("apps/sub")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("apps/sub/l1")).unwrap();
        std::os::unix::fs::symlink("../..", dir.path().join("apps/sub/l2")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("apps/here")).unwrap();
        let r = render_path(dir.path(), "apps", &RenderSettings::default())
            .await
            .unwrap();
        let names: Vec<_> = r.objects.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["one"]);
    }

    #[tokio::test]
    async fn plain_yaml_renders_have_a_timeout_too() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "apps/cm.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n",
        );
        let settings = RenderSettings {
            timeout: Duration::ZERO,
            ..RenderSettings::default()
        };
        assert_eq!(
            render_path(dir.path(), "apps", &settings).await,
            Err(RenderError::Timeout(0))
        );
    }

    #[tokio::test]
    async fn renders_over_the_object_or_byte_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut many = String::new();
        for i in 0..11 {
            many.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n"
            ));
        }
        write(dir.path(), "apps/many.yaml", many.as_bytes());
        let limited = |max_objects, max_bytes| RenderSettings {
            max_objects,
            max_bytes,
            ..RenderSettings::default()
        };
        let err = render_path(dir.path(), "apps", &limited(10, 1 << 20))
            .await
            .unwrap_err();
        assert_eq!(err, RenderError::TooManyObjects { count: 11, limit: 10 });
        assert_eq!(err.reason(), crate::api::Reason::RenderLimitExceeded);
        assert!(render_path(dir.path(), "apps", &limited(11, 1 << 20)).await.is_ok());
        let err = render_path(dir.path(), "apps", &limited(100, 100)).await.unwrap_err();
        assert!(matches!(err, RenderError::TooManyBytes { limit: 100, .. }), "{err}");
        // Anchors make the output much bigger than the input: the produced YAML is bounded too.
        write(
            dir.path(),
            "anchors/a.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  a: &a xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n  b: *a\n  c: *a\n  d: *a\n  e: *a\n  f: *a\n",
        );
        let input = std::fs::metadata(dir.path().join("anchors/a.yaml")).unwrap().len();
        let err = render_path(dir.path(), "anchors", &limited(100, input + 10))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RenderError::TooManyBytes { ref what, .. } if what == "the rendered YAML"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_returns_one_render_per_commit_and_path() {
        let cache = super::super::RenderCache::default();
        let rendered = Rendered::new(String::new(), Vec::new(), false, Vec::new());
        let first = cache.insert("c1", "apps", rendered);
        assert!(std::sync::Arc::ptr_eq(&first, &cache.get("c1", "apps").unwrap()));
        assert!(cache.get("c1", "other").is_none() && cache.get("c2", "apps").is_none());
    }
}
