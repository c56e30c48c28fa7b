//! kustomize, as the pinned upstream binary: no network (remote bases are refused before it runs), no plugins,
//! no exec functions, no helm, and a timeout.

use std::collections::BTreeSet;
use std::path::Path;

use super::RenderError;
use super::disk::RenderSettings;

pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Whether a kustomization entry names something remote rather than a file or directory of the repository.
pub fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
        || entry.contains("?ref=")
        || entry.contains(".git//")
}

/// Checks every kustomization reachable from `dir` for remote references and helm charts.
pub fn check_local_only(root: &Path, dir: &Path) -> Result<(), RenderError> {
    let mut queue = vec![dir.to_path_buf()];
    let mut seen = BTreeSet::new();
    while let Some(d) = queue.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Some(file) = KUSTOMIZATION_FILES.iter().map(|f| d.join(f)).find(|p| p.is_file()) else {
            continue;
        };
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| RenderError::Io(e.to_string()))?;
        let k: serde_json::Value = serde_yaml_ng::from_str(&text).map_err(|e| RenderError::Yaml {
            file: rel.clone(),
            doc: 1,
            message: e.to_string(),
        })?;
        if k.get("helmCharts").is_some() || k.get("helmChartInflationGenerator").is_some() {
            return Err(RenderError::Unsupported {
                file: rel,
                what: "helm charts".to_string(),
            });
        }
        for field in ["resources", "bases", "components"] {
            for entry in k[field].as_array().into_iter().flatten().filter_map(|e| e.as_str()) {
                if is_remote(entry) {
                    return Err(RenderError::RemoteBase {
                        file: rel.clone(),
                        entry: entry.to_string(),
                    });
                }
                let target = d.join(entry);
                if let Ok(canonical) = target.canonicalize() {
                    if !canonical.starts_with(root) {
                        return Err(RenderError::InvalidPath(format!(
                            "{rel}: {entry} is outside the repository"
                        )));
                    }
                    if canonical.is_dir() {
                        queue.push(canonical);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `kustomize build dir` and returns its output unchanged.
pub async fn build(root: &Path, dir: &Path, settings: &RenderSettings) -> Result<String, RenderError> {
    check_local_only(root, dir)?;
    let home = tempfile::tempdir().map_err(|e| RenderError::Io(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(&settings.kustomize);
    cmd.arg("build")
        .arg(dir)
        .current_dir(root)
        // A clean environment: no proxies, credentials or plugin paths of the controller leak in.
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| RenderError::Kustomize(format!("cannot run {}: {e}", settings.kustomize.display())))?;
    let out = tokio::time::timeout(settings.timeout, child.wait_with_output())
        .await
        .map_err(|_| RenderError::Timeout(settings.timeout.as_secs()))?
        .map_err(|e| RenderError::Kustomize(e.to_string()))?;
    if !out.status.success() {
        let root_prefix = format!("{}/", root.display());
        let stderr = String::from_utf8_lossy(&out.stderr)
            .replace(&root_prefix, "")
            .trim()
            .to_string();
        return Err(RenderError::Kustomize(stderr));
    }
    String::from_utf8(out.stdout).map_err(|_| RenderError::Kustomize("output is not UTF-8".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_references_are_recognized() {
        for remote in [
            "https://github.com/org/repo//base?ref=v1",
            "github.com/org/repo/base",
            "git@github.com:org/repo.git//base",
            "ssh://git@example.com/r.git",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in ["../base", "deployment.yaml", "./overlays/prod", "components/x"] {
            assert!(!is_remote(local), "{local}");
        }
    }

    #[test]
    fn remote_bases_and_helm_are_refused_before_kustomize_runs() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        let app = root_path.join("app");
        std::fs::create_dir_all(root_path.join("base")).unwrap();
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(
            root_path.join("base/kustomization.yaml"),
            "resources:\n- https://example.com/x.yaml\n",
        )
        .unwrap();
        std::fs::write(app.join("kustomization.yaml"), "resources:\n- ../base\n").unwrap();
        let err = check_local_only(&root_path, &app).unwrap_err();
        assert!(
            matches!(err, RenderError::RemoteBase { ref file, .. } if file == "base/kustomization.yaml"),
            "{err}"
        );
        std::fs::write(app.join("kustomization.yaml"), "helmCharts:\n- name: x\n").unwrap();
        assert!(matches!(
            check_local_only(&root_path, &app),
            Err(RenderError::Unsupported { .. })
        ));
        std::fs::write(app.join("kustomization.yaml"), "resources:\n- cm.yaml\n").unwrap();
        assert!(check_local_only(&root_path, &app).is_ok());
    }
}
