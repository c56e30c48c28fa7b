//! kustomize, as the pinned upstream binary, in two layers that each stand alone:
//!
//! 1. A static check ([`check_local_only`]) of every kustomization the build will read: no remote reference in
//!    any field kustomize loads (resources, patches, generators, transformers, validators, crds,
//!    configurations, openapi, replacements, generator files …), no helm, no path or symlink leaving the
//!    repository. It names the file and the field, never the value (it could hold credentials).
//! 2. A process with no way out ([`run`]): an empty environment, a `PATH` that is an empty directory (so no
//!    `git` to clone with), and every proxy variable pointing at a closed loopback port (so any HTTP fetch the
//!    check missed fails without reaching the network). Plugins, exec functions and helm stay off, the output
//!    is bounded by `--max-render-bytes`, and the run by the render timeout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::RenderError;
use super::disk::{RenderSettings, link_error};
use crate::source::{LinkProblem, real_path_beneath, symlinks_below};

pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Where kustomize's HTTP client is sent: port 1 of loopback, where nothing listens (and an unprivileged
/// process cannot start to).
pub const CLOSED_PROXY: &str = "http://127.0.0.1:1";

/// Entries a reachable directory may hold before the symlink scan gives up (and the render with it).
const MAX_SCANNED_ENTRIES: usize = 100_000;

/// Set in a debug build's environment, switches the field checks off, so tests can show the sandbox holding on
/// its own (see tests/sandbox.rs). Release builds never read it.
pub(crate) const SKIP_CHECKS_VAR: &str = "FERRY_TEST_SKIP_RENDER_CHECKS";

/// Bytes of kustomize's stderr kept for the error message.
const MAX_STDERR_BYTES: u64 = 16 << 10;

/// Fields whose values are data kustomize never loads (literal values, inline patches, labels, annotations):
/// a URL there is content, not a reference.
const DATA_FIELDS: [&str; 6] = [
    "literals",
    "patch",
    "commonLabels",
    "commonAnnotations",
    "labels",
    "annotations",
];

/// Top-level lists whose entries are paths (or remote references) kustomize loads.
const PATH_LISTS: [&str; 9] = [
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "generators",
    "transformers",
    "validators",
    "patchesStrategicMerge",
];

/// Top-level lists of objects whose `path` kustomize loads.
const PATH_OBJECTS: [&str; 3] = ["patches", "patchesJson6902", "replacements"];

/// Path lists whose directories are kustomizations kustomize builds (and so reads) in turn.
const KUSTOMIZATION_LISTS: [&str; 6] = [
    "resources",
    "bases",
    "components",
    "generators",
    "transformers",
    "validators",
];

/// Whether a string is, by its form alone, a reference to something remote: a URL of any scheme, go-getter's
/// `git::`, scp-like `user@host:path`, a well-known forge's `host/org/repo`, or kustomize's `?ref=` and
/// `.git//` forms.
pub fn is_remote(entry: &str) -> bool {
    let entry = entry.trim();
    let lower = entry.to_ascii_lowercase();
    lower.contains("://")
        || lower.starts_with("git::")
        || lower.starts_with("git@")
        || lower.starts_with("ssh:")
        || lower.starts_with("github.com/")
        || lower.starts_with("gitlab.com/")
        || lower.starts_with("bitbucket.org/")
        || lower.contains("?ref=")
        || lower.contains("?version=")
        || lower.contains(".git//")
        || looks_like_scp(entry)
}

/// `user@host:path`, the scp-like form git accepts: no `/` before the `:`, an `@` before it.
fn looks_like_scp(entry: &str) -> bool {
    let Some((head, _)) = entry.split_once(':') else {
        return false;
    };
    head.contains('@') && !head.contains('/') && !head.chars().any(char::is_whitespace)
}

/// `example.org/team/repo`: a first segment that is a host name (labels of letters, digits and `-`, a dot, an
/// alphabetic top-level label, maybe a port). kustomize clones such entries; a local directory could be named
/// so too, so callers only use this for paths that do not exist.
pub fn looks_like_host_path(entry: &str) -> bool {
    let Some((first, rest)) = entry.split_once('/') else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    let host = first.split_once(':').map_or(first, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            ""
        }
    });
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Checks every kustomization reachable from `dir` (through resources, bases, components, generators,
/// transformers and validators) and every symlink below the directories the build can read. `removed` are the
/// links the export took out (see `source::export`): one under a reachable directory is named too. Returns
/// the directories checked.
pub fn check_local_only(
    root: &Path,
    dir: &Path,
    removed: &[(String, LinkProblem)],
) -> Result<Vec<PathBuf>, RenderError> {
    let mut queue = vec![dir.to_path_buf()];
    let mut seen = BTreeSet::new();
    let mut scanned = BTreeSet::new();
    while let Some(d) = queue.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        // The links first, so not even the kustomization file is read through one that leaves.
        check_links(root, &d, removed, &mut scanned)?;
        let Some(file) = KUSTOMIZATION_FILES.iter().map(|f| d.join(f)).find(|p| p.is_file()) else {
            continue;
        };
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| RenderError::Io(format!("{rel}: {e}")))?;
        let k: Value = serde_yaml_ng::from_str(&text).map_err(|e| RenderError::Yaml {
            file: rel.clone(),
            doc: 1,
            message: e.to_string(),
        })?;
        let k = check_helm_charts(root, &d, &rel, k, removed)?;
        if let Some(field) = find_remote(&k, "") {
            return Err(RenderError::RemoteBase { file: rel, field });
        }
        for (field, entry) in local_paths(&k) {
            queue.extend(check_path(root, &d, &rel, &field, entry, removed)?);
        }
    }
    Ok(seen.into_iter().collect())
}

/// kustomize's `helmCharts:` run the pinned helm (see [`run`]) on charts vendored in the repository, never on
/// pulled ones: each chart must be in its chart home (`helmGlobals.chartHome`, default `charts`, inside the
/// repository) where kustomize looks for it, so kustomize never runs `helm pull`; values files are local paths
/// checked like any other. `helmGlobals.configHome` (helm's config, data and plugin directories) and the
/// deprecated `helmChartInflationGenerator` are refused. Returns the kustomization with the `repo` of each
/// vendored chart taken out, so the remote check does not refuse a URL that is never fetched.
fn check_helm_charts(
    root: &Path,
    dir: &Path,
    file: &str,
    mut k: Value,
    removed: &[(String, LinkProblem)],
) -> Result<Value, RenderError> {
    let unsupported = |what: String| RenderError::Unsupported {
        file: file.to_string(),
        what,
    };
    if k.get("helmChartInflationGenerator").is_some() {
        return Err(unsupported(
            "helmChartInflationGenerator entries (use helmCharts)".to_string(),
        ));
    }
    if k["helmGlobals"].get("configHome").is_some() {
        return Err(unsupported("helmGlobals.configHome settings".to_string()));
    }
    let chart_home = k["helmGlobals"]["chartHome"].as_str().unwrap_or("charts").to_string();
    let Some(charts) = k.get_mut("helmCharts").and_then(Value::as_array_mut) else {
        return Ok(k);
    };
    if Path::new(&chart_home).is_absolute() {
        return Err(RenderError::InvalidPath(format!(
            "{file}: helmGlobals.chartHome is outside the repository"
        )));
    }
    check_path(root, dir, file, "helmGlobals.chartHome", &chart_home, removed)?;
    for (i, chart) in charts.iter_mut().enumerate() {
        let field = |f: &str| format!("helmCharts[{i}].{f}");
        let name = chart["name"].as_str().unwrap_or_default().to_string();
        let version = chart["version"].as_str().unwrap_or_default();
        let repo = chart["repo"].as_str().unwrap_or_default();
        // Where kustomize looks before it would pull.
        let local = if !version.is_empty() && !repo.is_empty() {
            format!("{chart_home}/{name}-{version}/{name}")
        } else {
            format!("{chart_home}/{name}")
        };
        let vendored = !name.is_empty()
            && !Path::new(&name).is_absolute()
            && check_path(root, dir, file, &field("name"), &local, removed).is_ok()
            && real_path_beneath(root, &dir.strip_prefix(root).unwrap_or(dir).join(&local))
                .is_ok_and(|p| p.join("Chart.yaml").is_file());
        if !vendored {
            return Err(unsupported(format!(
                "{}: charts that are not vendored (expected in {local}; Ferry never pulls charts)",
                field("name")
            )));
        }
        // kustomize passes the release name to helm as a bare argument: one that looks like a flag
        // (`--post-renderer=...`) would be one. No value of a chart entry needs a leading dash.
        let flag_like = |v: &Value| v.as_str().is_some_and(|s| s.trim_start().starts_with('-'));
        if let Some(key) = ["releaseName", "namespace", "nameTemplate", "kubeVersion", "valuesFile"]
            .into_iter()
            .find(|k| flag_like(&chart[*k]))
            .map(String::from)
            .or_else(|| {
                ["apiVersions", "additionalValuesFiles"]
                    .into_iter()
                    .find(|k| chart[*k].as_array().is_some_and(|a| a.iter().any(flag_like)))
                    .map(String::from)
            })
        {
            return Err(unsupported(format!("{}: values that start with '-'", field(&key))));
        }
        if let Some(map) = chart.as_object_mut() {
            map.remove("repo");
        }
        for key in ["valuesFile"] {
            if let Some(path) = chart[key].as_str().filter(|p| !is_remote(p)) {
                check_path(root, dir, file, &field(key), path, removed)?;
            }
        }
        for (j, path) in chart["additionalValuesFiles"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(path) = path.as_str().filter(|p| !is_remote(p)) {
                check_path(
                    root,
                    dir,
                    file,
                    &format!("{}[{j}]", field("additionalValuesFiles")),
                    path,
                    removed,
                )?;
            }
        }
    }
    Ok(k)
}

/// The first string field (as `a.b[2].c`) holding a remote reference, outside [`DATA_FIELDS`]. Multi-line
/// strings are inline documents (patches, generator and transformer configs), never a reference.
fn find_remote(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) => (!s.trim().contains('\n') && is_remote(s)).then(|| at.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_remote(item, &format!("{at}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !DATA_FIELDS.contains(&key.as_str()))
            .find_map(|(key, item)| {
                let at = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                find_remote(item, &at)
            }),
        _ => None,
    }
}

/// (field, path) of every entry of the kustomization that names a file or directory to load.
fn local_paths(k: &Value) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for list in PATH_LISTS {
        for (i, entry) in k[list].as_array().into_iter().flatten().enumerate() {
            // Multi-line entries are inline documents (patches, transformer configs), not paths.
            if let Some(s) = entry.as_str().filter(|s| !s.contains('\n')) {
                out.push((format!("{list}[{i}]"), s));
            }
        }
    }
    for list in PATH_OBJECTS {
        for (i, entry) in k[list].as_array().into_iter().flatten().enumerate() {
            if let Some(s) = entry["path"].as_str() {
                out.push((format!("{list}[{i}].path"), s));
            }
        }
    }
    if let Some(s) = k["openapi"]["path"].as_str() {
        out.push(("openapi.path".to_string(), s));
    }
    out
}

/// Checks one local path entry of the kustomization in `dir`; returns the directory to check next when the
/// entry is a kustomization kustomize will build.
fn check_path(
    root: &Path,
    dir: &Path,
    file: &str,
    field: &str,
    entry: &str,
    removed: &[(String, LinkProblem)],
) -> Result<Option<PathBuf>, RenderError> {
    let rel_dir = dir.strip_prefix(root).unwrap_or(dir);
    let target = match real_path_beneath(root, &rel_dir.join(entry)) {
        Ok(target) => target,
        Err(LinkProblem::Escapes) => {
            return Err(RenderError::InvalidPath(format!(
                "{file}: {field} is outside the repository"
            )));
        }
        Err(LinkProblem::Loops) => return Err(RenderError::SymlinkLoop(format!("{file}: {field}"))),
    };
    // A link the export removed: named, rather than left for kustomize to call a missing file.
    let rel_target = target
        .strip_prefix(root)
        .unwrap_or(&target)
        .to_string_lossy()
        .into_owned();
    if let Some((link, problem)) = removed
        .iter()
        .find(|(l, _)| rel_target == *l || rel_target.starts_with(&format!("{l}/")))
    {
        return Err(link_error(link, *problem));
    }
    if !target.exists() && looks_like_host_path(entry) {
        return Err(RenderError::RemoteBase {
            file: file.to_string(),
            field: field.to_string(),
        });
    }
    let list = field.split('[').next().unwrap_or_default();
    Ok((target.is_dir() && KUSTOMIZATION_LISTS.contains(&list)).then_some(target))
}

/// Every symlink below a directory the build reads must resolve inside the repository, and none of them may
/// be a link the export removed. Links to directories elsewhere in the repository are followed; `scanned`
/// (shared by the calls of one check) keeps each directory to one scan.
fn check_links(
    root: &Path,
    dir: &Path,
    removed: &[(String, LinkProblem)],
    scanned: &mut BTreeSet<PathBuf>,
) -> Result<(), RenderError> {
    let mut queue = vec![dir.to_path_buf()];
    while let Some(dir) = queue.pop() {
        if !scanned.insert(dir.clone()) {
            continue;
        }
        let rel_dir = dir.strip_prefix(root).unwrap_or(&dir).to_string_lossy().into_owned();
        if let Some((link, problem)) = removed
            .iter()
            .find(|(l, _)| rel_dir.is_empty() || l.starts_with(&format!("{rel_dir}/")))
        {
            return Err(link_error(link, *problem));
        }
        let links = symlinks_below(root, &dir, MAX_SCANNED_ENTRIES).ok_or_else(|| RenderError::Unsupported {
            file: if rel_dir.is_empty() { ".".to_string() } else { rel_dir },
            what: format!("directories of more than {MAX_SCANNED_ENTRIES} entries"),
        })?;
        for link in links {
            let real = real_path_beneath(root, &link).map_err(|p| link_error(&link.to_string_lossy(), p))?;
            if real.is_dir() {
                queue.push(real);
            }
        }
    }
    Ok(())
}

/// Runs `kustomize build dir` after [`check_local_only`] and returns its output unchanged.
pub async fn build(
    root: &Path,
    dir: &Path,
    settings: &RenderSettings,
    removed: &[(String, LinkProblem)],
) -> Result<String, RenderError> {
    check_local_only(root, dir, removed)?;
    run(root, dir, settings).await
}

/// Runs `kustomize build dir` in a process with no way out (see the module doc), without the static check:
/// [`build`] is what renders use; this is public so tests can show the sandbox holds on its own.
pub async fn run(root: &Path, dir: &Path, settings: &RenderSettings) -> Result<String, RenderError> {
    let home = tempfile::tempdir().map_err(|e| RenderError::Io(e.to_string()))?;
    let empty_path = sandbox_dirs(home.path())?;
    // Found on the controller's PATH: the sandbox's own is empty, and a bare `kustomize` (the default) would be
    // looked up there.
    let mut cmd = sandboxed(&resolve_program(&settings.kustomize), root, home.path(), &empty_path);
    cmd.arg("build")
        .arg(dir)
        // `helmCharts:` (checked to be vendored) run the pinned helm, in this same sandbox.
        .arg("--enable-helm")
        .arg("--helm-command")
        .arg(resolve_program(&settings.helm))
        .env("KUSTOMIZE_PLUGIN_HOME", &empty_path);
    let what = "the kustomize output";
    run_bounded(cmd, root, settings, what, RenderError::Kustomize).await
}

/// A program named without a directory, found on the controller's own `PATH` (a sandboxed process has an
/// empty one, so it needs the full path of what it runs).
pub(super) fn resolve_program(program: &Path) -> PathBuf {
    if program.components().count() != 1 {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

/// The directory a sandboxed process gets as `PATH` (empty), created inside its temporary home.
pub(super) fn sandbox_dirs(home: &Path) -> Result<PathBuf, RenderError> {
    let empty_path = home.join("empty-path");
    std::fs::create_dir(&empty_path).map_err(|e| RenderError::Io(e.to_string()))?;
    Ok(empty_path)
}

/// A renderer's process with no way out: started in `root`, with nothing of the controller's environment
/// (credentials, proxies, plugin paths), `PATH` an empty directory (so no `git` or other program to run),
/// `HOME` a fresh temporary directory, and every HTTP request sent to a proxy that is not there. Go never
/// proxies loopback addresses; nothing of Ferry's own listens there for the process to read.
pub(super) fn sandboxed(program: &Path, root: &Path, home: &Path, empty_path: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.current_dir(root)
        .env_clear()
        .env("PATH", empty_path)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env("NO_PROXY", "")
        .env("no_proxy", "");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, CLOSED_PROXY);
    }
    cmd
}

/// Runs a [`sandboxed`] command: stdout bounded by `--max-render-bytes` (`what` names it), the run by the
/// render timeout; a failure is `fail(stderr)`, with `root`'s path taken out of the message.
pub(super) async fn run_bounded(
    mut cmd: tokio::process::Command,
    root: &Path,
    settings: &RenderSettings,
    what: &str,
    fail: impl Fn(String) -> RenderError,
) -> Result<String, RenderError> {
    if let Some(why) = &settings.exec_refusal {
        return Err(RenderError::SandboxUnavailable(why.clone()));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run {program}: {e}")))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(fail("no output pipes".to_string()));
    };
    let limit = settings.max_bytes;
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut stdout = stdout.take(limit + 1);
        let (read_out, _) = tokio::join!(stdout.read_to_end(&mut out), drain_keeping(stderr, &mut err));
        read_out.map_err(|e| RenderError::Io(e.to_string()))?;
        if out.len() as u64 > limit {
            // Stop it now rather than let it write the rest into a closed pipe.
            let _ = child.start_kill();
            return Err(RenderError::TooManyBytes {
                what: what.to_string(),
                limit,
            });
        }
        let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
        Ok((status, out, err))
    };
    let (status, out, err) = tokio::time::timeout(settings.timeout, work)
        .await
        .map_err(|_| RenderError::Timeout(settings.timeout.as_secs()))??;
    if !status.success() {
        let root_prefix = format!("{}/", root.display());
        let stderr = String::from_utf8_lossy(&err)
            .replace(&root_prefix, "")
            .trim()
            .to_string();
        return Err(fail(stderr));
    }
    String::from_utf8(out).map_err(|_| fail("output is not UTF-8".to_string()))
}

/// Reads `from` to its end (so the writer never blocks on a full pipe), keeping the first
/// [`MAX_STDERR_BYTES`].
async fn drain_keeping(mut from: impl tokio::io::AsyncRead + Unpin, kept: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let room = (MAX_STDERR_BYTES as usize).saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_references_are_recognized() {
        for remote in [
            "https://github.com/org/repo//base?ref=v1",
            "HTTP://example.com/x.yaml",
            "github.com/org/repo/base",
            "git@github.com:org/repo.git//base",
            "deploy@git.example.com:org/repo",
            "ssh://git@example.com/r.git",
            "git::https://example.com/r.git",
            "file:///etc/passwd",
            "example.com/org/repo//base?ref=main",
        ] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in [
            "../base",
            "deployment.yaml",
            "./overlays/prod",
            "components/x",
            "a:b.yaml",
        ] {
            assert!(!is_remote(local), "{local}");
        }
        for host in ["example.org/team/repo", "git.corp.io:8443/r/base"] {
            assert!(looks_like_host_path(host), "{host}");
        }
        for local in ["../base", "config.d/x.yaml", "apps.v2/base", "base", "example.org"] {
            assert!(!looks_like_host_path(local), "{local}");
        }
    }

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(path.join("base")).unwrap();
        std::fs::create_dir_all(path.join("app")).unwrap();
        (root, path)
    }

    fn refused(root: &Path, kustomization: &str) -> RenderError {
        std::fs::write(root.join("app/kustomization.yaml"), kustomization).unwrap();
        check_local_only(root, &root.join("app"), &[]).expect_err(kustomization)
    }

    #[test]
    fn remote_bases_and_helm_are_refused_before_kustomize_runs() {
        let (_t, root) = repo();
        std::fs::write(
            root.join("base/kustomization.yaml"),
            "resources:\n- https://example.com/x.yaml\n",
        )
        .unwrap();
        std::fs::write(root.join("app/kustomization.yaml"), "resources:\n- ../base\n").unwrap();
        let err = check_local_only(&root, &root.join("app"), &[]).unwrap_err();
        assert!(
            matches!(err, RenderError::RemoteBase { ref file, ref field } if file == "base/kustomization.yaml" && field == "resources[0]"),
            "{err}"
        );
        assert!(!err.to_string().contains("example.com"), "values are not quoted: {err}");
        assert!(matches!(
            refused(&root, "helmCharts:\n- name: x\n"),
            RenderError::Unsupported { .. }
        ));
        std::fs::write(root.join("app/kustomization.yaml"), "resources:\n- cm.yaml\n").unwrap();
        assert!(check_local_only(&root, &root.join("app"), &[]).is_ok());
    }

    #[test]
    fn remote_references_in_any_loaded_field_are_refused() {
        let (_t, root) = repo();
        for (kustomization, field) in [
            ("patches:\n- path: https://example.com/p.yaml\n", "patches[0].path"),
            (
                "patchesStrategicMerge:\n- https://example.com/p.yaml\n",
                "patchesStrategicMerge[0]",
            ),
            (
                "patchesJson6902:\n- target: {kind: X, name: y}\n  path: git::https://e.com/r//p.yaml\n",
                "patchesJson6902[0].path",
            ),
            ("generators:\n- https://example.com/gen.yaml\n", "generators[0]"),
            ("transformers:\n- github.com/org/repo/t?ref=v1\n", "transformers[0]"),
            ("validators:\n- git@github.com:org/v.git\n", "validators[0]"),
            ("openapi:\n  path: https://example.com/schema.json\n", "openapi.path"),
            ("crds:\n- https://example.com/crd.yaml\n", "crds[0]"),
            ("configurations:\n- https://example.com/c.yaml\n", "configurations[0]"),
            (
                "replacements:\n- path: https://example.com/r.yaml\n",
                "replacements[0].path",
            ),
            (
                "configMapGenerator:\n- name: c\n  files:\n  - https://example.com/f\n",
                "configMapGenerator[0].files[0]",
            ),
            ("resources:\n- example.org/team/repo//base\n", "resources[0]"),
            ("someFutureField:\n  nested: [ssh://h/r]\n", "someFutureField.nested[0]"),
        ] {
            match refused(&root, kustomization) {
                RenderError::RemoteBase { file, field: f } => {
                    assert_eq!(file, "app/kustomization.yaml");
                    assert_eq!(f, field, "{kustomization}");
                }
                other => panic!("{kustomization}: {other}"),
            }
        }
        // Data is not a reference.
        std::fs::write(
            root.join("app/kustomization.yaml"),
            "configMapGenerator:\n- name: c\n  literals: [URL=https://api.example.com]\ncommonAnnotations:\n  docs: https://example.com\nimages:\n- name: docker.io/library/nginx\n  newName: ghcr.io/org/nginx\npatches:\n- patch: |\n    - op: add\n      path: /metadata/annotations/x\n      value: https://example.com\n  target: {kind: Deployment}\npatchesStrategicMerge:\n- |\n  apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: x, annotations: {docs: \"https://example.com\"}}\n",
        )
        .unwrap();
        check_local_only(&root, &root.join("app"), &[]).unwrap();
    }

    #[test]
    fn bare_program_names_are_found_on_the_controllers_path() {
        // The sandbox's PATH is empty: `kustomize` and `helm` (the defaults) must be resolved before.
        let sh = resolve_program(Path::new("sh"));
        assert!(sh.is_absolute() && sh.is_file(), "{sh:?}");
        assert_eq!(
            resolve_program(Path::new("./bin/kustomize")),
            PathBuf::from("./bin/kustomize")
        );
        assert_eq!(
            resolve_program(Path::new("no-such-program-here")),
            PathBuf::from("no-such-program-here")
        );
    }

    #[test]
    fn helm_charts_must_be_vendored_local_and_plain() {
        let (_t, root) = repo();
        std::fs::create_dir_all(root.join("app/charts/cache")).unwrap();
        std::fs::write(root.join("app/charts/cache/Chart.yaml"), "name: cache\n").unwrap();
        std::fs::create_dir_all(root.join("app/vendor/redis-1.0.0/redis")).unwrap();
        std::fs::write(root.join("app/vendor/redis-1.0.0/redis/Chart.yaml"), "name: redis\n").unwrap();
        // Vendored where kustomize looks: its repo is never used, so it is no remote reference.
        for ok in [
            "helmCharts:\n- name: cache\n  repo: https://charts.example.com\n",
            "helmGlobals: {chartHome: vendor}\nhelmCharts:\n- name: redis\n  version: 1.0.0\n  repo: oci://r.example.com/c\n",
        ] {
            std::fs::write(root.join("app/kustomization.yaml"), ok).unwrap();
            check_local_only(&root, &root.join("app"), &[]).expect(ok);
        }
        for (bad, needle) in [
            (
                "helmCharts:\n- name: redis\n  repo: https://charts.example.com\n",
                "not vendored",
            ),
            ("helmCharts:\n- name: ../../../etc\n", "not vendored"),
            ("helmCharts:\n- name: /etc\n", "not vendored"),
            (
                "helmGlobals: {configHome: .}\nhelmCharts:\n- name: cache\n",
                "configHome",
            ),
            (
                "helmChartInflationGenerator:\n- chartName: cache\n",
                "helmChartInflationGenerator",
            ),
            (
                "helmCharts:\n- name: cache\n  releaseName: --post-renderer=/bin/sh\n",
                "releaseName",
            ),
            ("helmCharts:\n- name: cache\n  apiVersions: [--debug]\n", "apiVersions"),
        ] {
            let err = refused(&root, bad);
            assert!(matches!(err, RenderError::Unsupported { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
        for (bad, want) in [
            (
                "helmGlobals: {chartHome: /etc}\nhelmCharts:\n- name: cache\n",
                "InvalidPath",
            ),
            (
                "helmGlobals: {chartHome: ../../..}\nhelmCharts:\n- name: cache\n",
                "InvalidPath",
            ),
            (
                "helmCharts:\n- name: cache\n  valuesFile: ../../../etc/passwd\n",
                "InvalidPath",
            ),
            (
                "helmCharts:\n- name: cache\n  valuesFile: https://example.com/v.yaml\n",
                "RemoteBase",
            ),
        ] {
            let err = refused(&root, bad);
            assert!(format!("{err:?}").starts_with(want), "{bad}: {err:?}");
        }
    }

    #[test]
    fn local_kustomizations_reached_through_generators_are_checked_too() {
        let (_t, root) = repo();
        std::fs::write(
            root.join("base/kustomization.yaml"),
            "patches:\n- path: https://example.com/p.yaml\n",
        )
        .unwrap();
        match refused(&root, "generators:\n- ../base\n") {
            RenderError::RemoteBase { file, .. } => assert_eq!(file, "base/kustomization.yaml"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn links_below_reachable_directories_are_resolved() {
        let (_t, root) = repo();
        std::os::unix::fs::symlink("../../..", root.join("base/up")).unwrap();
        std::fs::write(root.join("base/kustomization.yaml"), "resources: []\n").unwrap();
        match refused(&root, "resources:\n- ../base\n") {
            RenderError::SymlinkEscapes(link) => assert_eq!(link, "base/up"),
            other => panic!("{other}"),
        }
        std::fs::remove_file(root.join("base/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("base/loop")).unwrap();
        assert!(matches!(
            refused(&root, "resources:\n- ../base\n"),
            RenderError::SymlinkLoop(_)
        ));
        std::fs::remove_file(root.join("base/loop")).unwrap();
        let removed = [("base/gone.yaml".to_string(), LinkProblem::Escapes)];
        std::fs::write(root.join("app/kustomization.yaml"), "resources:\n- ../base\n").unwrap();
        assert!(matches!(
            check_local_only(&root, &root.join("app"), &removed),
            Err(RenderError::SymlinkEscapes(l)) if l == "base/gone.yaml"
        ));
        let removed = [("other/stolen.yaml".to_string(), LinkProblem::Escapes)];
        std::fs::write(
            root.join("app/kustomization.yaml"),
            "resources:\n- ../other/stolen.yaml\n",
        )
        .unwrap();
        assert!(matches!(
            check_local_only(&root, &root.join("app"), &removed),
            Err(RenderError::SymlinkEscapes(l)) if l == "other/stolen.yaml"
        ));
        std::os::unix::fs::symlink("../../../etc/hostname", root.join("app/kustomization.yml")).unwrap();
        std::fs::remove_file(root.join("app/kustomization.yaml")).unwrap();
        assert!(matches!(
            check_local_only(&root, &root.join("app"), &[]),
            Err(RenderError::SymlinkEscapes(l)) if l == "app/kustomization.yml"
        ));
        std::fs::remove_file(root.join("app/kustomization.yml")).unwrap();
        assert!(matches!(
            refused(&root, "resources:\n- ../../outside\n"),
            RenderError::InvalidPath(_)
        ));
    }
}
