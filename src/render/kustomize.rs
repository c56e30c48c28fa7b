//! kustomize, as the pinned upstream binary, in two layers that each stand alone:
//!
//! 1. A static check ([`check_local_only`]) of every kustomization the build will read: no remote reference in
//!    any field kustomize loads (resources, patches, generators, transformers, validators, crds,
//!    configurations, openapi, replacements, generator files …), helm only on charts vendored in the
//!    repository, no path or symlink leaving the repository. The plugin configs kustomize runs — inline entries
//!    and files of `generators`, `transformers` and `validators`, and the output of kustomizations listed
//!    there — must be builtins known to run and fetch nothing (no `HelmChartInflationGenerator`, no exec,
//!    Go or KRM-function plugin), and their fields get the same remote and path checks. YAML merge keys are
//!    resolved first, so no field hides in one. It names the file and the field, never the value (it could
//!    hold credentials).
//! 2. A process with no way out ([`run`]): an empty environment, a `PATH` that is an empty directory (so no
//!    `git` to clone with), and every proxy variable pointing at a closed loopback port (so any HTTP fetch the
//!    check missed fails without reaching the network). Plugins and exec functions stay off, helm too unless
//!    the check found vendored `helmCharts:` (without `--enable-helm` kustomize refuses every helm config), the
//!    output is bounded by `--max-render-bytes`, and the run by the render timeout.
//!
//! Tests that show the second layer holding on its own switch the first one's field checks off with
//! [`SKIP_CHECKS_VAR`], in debug builds only.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::RenderError;
use super::disk::{RenderSettings, link_error};
use crate::source::{LinkProblem, real_path_beneath, symlinks_below};

pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Where kustomize's HTTP client is sent: port 1 of loopback, where nothing listens (and an unprivileged
/// process cannot start to).
pub const CLOSED_PROXY: &str = "http://127.0.0.1:1";

/// Set in the environment of a debug build (tests), it switches off the exec, helm, plugin-kind and remote
/// checks of [`check_local_only`] (and turns helm on), so a test can show the sandbox of [`run`] holding on
/// its own; the path and symlink checks stay. Test-only: release builds never read it (`cfg!(debug_assertions)`
/// is false there, and the check is compiled out).
pub const SKIP_CHECKS_VAR: &str = "FERRY_TEST_SKIP_RENDER_CHECKS";

/// Entries a reachable directory may hold before the symlink scan gives up (and the render with it).
const MAX_SCANNED_ENTRIES: usize = 100_000;

/// Bytes of kustomize's stderr kept for the error message.
const MAX_STDERR_BYTES: u64 = 16 << 10;

/// Levels of YAML merge keys (`<<` inside a merged mapping) resolved before a file is refused.
const MAX_MERGE_DEPTH: usize = 32;

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

/// The same for plugin configs: also inline patches (`patches` of a PatchStrategicMergeTransformer, `jsonOp`)
/// and the `value` a ValueAddTransformer writes.
const CONFIG_DATA_FIELDS: [&str; 7] = [
    "literals",
    "patch",
    "patches",
    "jsonOp",
    "labels",
    "annotations",
    "value",
];

/// Top-level lists whose entries are paths (or remote references) kustomize loads. The [`PLUGIN_LISTS`] are
/// checked on their own.
const PATH_LISTS: [&str; 6] = [
    "resources",
    "bases",
    "components",
    "crds",
    "configurations",
    "patchesStrategicMerge",
];

/// Top-level lists of objects whose `path` kustomize loads.
const PATH_OBJECTS: [&str; 3] = ["patches", "patchesJson6902", "replacements"];

/// Top-level lists of generator arguments whose source files (`files`, `envs`, `env`) kustomize reads.
const GENERATOR_LISTS: [&str; 2] = ["configMapGenerator", "secretGenerator"];

/// Path lists whose directories are kustomizations kustomize builds (and so reads) in turn.
const KUSTOMIZATION_LISTS: [&str; 3] = ["resources", "bases", "components"];

/// Lists whose entries kustomize runs as plugins: an entry is an inline config (tried first: any entry that
/// reads as YAML objects), else a path to a file of configs or to a kustomization whose output is configs.
const PLUGIN_LISTS: [&str; 3] = ["generators", "transformers", "validators"];

/// The `apiVersion` of kustomize's builtin plugins (its plugin loader: group empty, version `builtin`). Any
/// other is an exec, Go or KRM-function plugin.
const BUILTIN_API_VERSION: &str = "builtin";

/// Annotations that make a config a KRM function (an exec or container plugin) to kustomize.
const FUNCTION_ANNOTATIONS: [&str; 2] = ["config.kubernetes.io/function", "config.k8s.io/function"];

/// kustomize v5's builtin plugins that run nothing and fetch nothing: they change or generate objects from
/// their config and local files (whose paths are checked). Left out: HelmChartInflationGenerator (runs helm,
/// which pulls a chart it does not find), and any builtin not listed here, known or future (ResourceGenerator,
/// for one, loads resources, remote ones too).
const SAFE_BUILTINS: [&str; 18] = [
    "AnnotationsTransformer",
    "ConfigMapGenerator",
    "HashTransformer",
    "IAMPolicyGenerator",
    "ImageTagTransformer",
    "LabelTransformer",
    "NamespaceTransformer",
    "PatchJson6902Transformer",
    "PatchStrategicMergeTransformer",
    "PatchTransformer",
    "PrefixSuffixTransformer",
    "PrefixTransformer",
    "ReplacementTransformer",
    "ReplicaCountTransformer",
    "SecretGenerator",
    "SortOrderTransformer",
    "SuffixTransformer",
    "ValueAddTransformer",
];

/// The fields a kustomization may have when its output is plugin configs (it is listed in `generators`,
/// `transformers` or `validators`, or reached from one that is): those that gather files as they are. A
/// patch, replacement, transformer or generator there could turn the configs the check read into others (a
/// JSON patch can replace `kind`).
const CONFIG_KUSTOMIZATION_FIELDS: [&str; 6] = ["apiVersion", "kind", "metadata", "resources", "bases", "components"];

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

/// What [`check_local_only`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Every directory checked: the kustomizations the build reads and the directories they list.
    pub dirs: Vec<PathBuf>,
    /// Whether kustomize needs `--enable-helm`: some kustomization reached has `helmCharts:` (checked to be
    /// vendored). Without the flag kustomize refuses every helm config, so it stays off otherwise.
    pub uses_helm: bool,
}

/// A kustomization directory to check, and what kustomize builds it for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Visit {
    dir: PathBuf,
    /// Set when the build's output is plugin configs (the directory is listed in `generators`, `transformers`
    /// or `validators`, or reached from one that is): the directory of the kustomization that runs them, which
    /// the paths in those configs are relative to.
    configs_for: Option<PathBuf>,
}

/// What every step of one check shares.
struct Walk<'a> {
    root: &'a Path,
    /// The links the export took out (see `source::export`).
    removed: &'a [(String, LinkProblem)],
    /// The exec, helm, plugin-kind and remote checks: off only in tests of the sandbox alone
    /// ([`SKIP_CHECKS_VAR`]).
    fields: bool,
}

/// Checks every kustomization reachable from `dir` (through resources, bases, components, generators,
/// transformers and validators), every plugin config the build runs, and every symlink below the directories
/// the build can read. `removed` are the links the export took out (see `source::export`): one under a
/// reachable directory is named too. Returns the directories checked and whether helm is needed.
pub fn check_local_only(root: &Path, dir: &Path, removed: &[(String, LinkProblem)]) -> Result<Checked, RenderError> {
    check(root, dir, removed, field_checks_on())
}

/// Whether the exec, helm, plugin-kind and remote checks run: always in a release build; in a debug build
/// (tests) unless [`SKIP_CHECKS_VAR`] is set.
fn field_checks_on() -> bool {
    !(cfg!(debug_assertions) && std::env::var_os(SKIP_CHECKS_VAR).is_some())
}

/// [`check_local_only`], with the field checks on or off (`fields`).
fn check(root: &Path, dir: &Path, removed: &[(String, LinkProblem)], fields: bool) -> Result<Checked, RenderError> {
    let walk = Walk { root, removed, fields };
    let mut queue = vec![Visit {
        dir: dir.to_path_buf(),
        configs_for: None,
    }];
    let mut seen = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut scanned = BTreeSet::new();
    // Without the field checks (a test of the sandbox alone) helm is on, as if the check had found charts.
    let mut uses_helm = !fields;
    while let Some(visit) = queue.pop() {
        if !seen.insert(visit.clone()) {
            continue;
        }
        dirs.insert(visit.dir.clone());
        // The links first, so not even the kustomization file is read through one that leaves.
        check_links(root, &visit.dir, removed, &mut scanned)?;
        let Some(file) = KUSTOMIZATION_FILES
            .iter()
            .map(|f| visit.dir.join(f))
            .find(|p| p.is_file())
        else {
            continue;
        };
        let rel = walk.rel(&file);
        let text = std::fs::read_to_string(&file).map_err(|e| RenderError::Io(format!("{rel}: {e}")))?;
        let k = parse_one(&text).map_err(|message| RenderError::Yaml {
            file: rel.clone(),
            doc: 1,
            message,
        })?;
        let (mut k, charts) = walk.helm_charts(&visit.dir, &rel, k)?;
        uses_helm |= charts;
        queue.extend(walk.plugin_entries(&visit, &rel, &mut k)?);
        if fields {
            if let Some(field) = find_remote(&k, "", &DATA_FIELDS) {
                return Err(RenderError::RemoteBase { file: rel, field });
            }
            if visit.configs_for.is_some() {
                only_config_fields(&rel, &k)?;
            }
        }
        for (field, entry) in local_paths(&k) {
            if !fields && is_remote(entry) {
                continue;
            }
            let target = walk.path(&visit.dir, &rel, &field, entry)?;
            queue.extend(walk.follow(&visit, &field, &target)?);
        }
    }
    Ok(Checked {
        dirs: dirs.into_iter().collect(),
        uses_helm,
    })
}

impl Walk<'_> {
    /// `path` relative to the repository, for messages.
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(self.root).unwrap_or(path).display().to_string()
    }

    /// kustomize's `helmCharts:` run the pinned helm (see [`run`]) on charts vendored in the repository, never
    /// on pulled ones: each chart must be in its chart home (`helmGlobals.chartHome`, default `charts`, inside
    /// the repository) where kustomize looks for it, so kustomize never runs `helm pull`; values files are
    /// local paths checked like any other. `helmGlobals.configHome` (helm's config, data and plugin
    /// directories) and the deprecated `helmChartInflationGenerator` are refused. Returns the kustomization
    /// with the `repo` of each vendored chart taken out, so the remote check does not refuse a URL that is
    /// never fetched, and whether it has charts (so kustomize needs helm).
    fn helm_charts(&self, dir: &Path, file: &str, mut k: Value) -> Result<(Value, bool), RenderError> {
        let unsupported = |what: String| RenderError::Unsupported {
            file: file.to_string(),
            what,
        };
        if self.fields && k.get("helmChartInflationGenerator").is_some() {
            return Err(unsupported(
                "helmChartInflationGenerator entries (use helmCharts)".to_string(),
            ));
        }
        if let Some(config_home) = k["helmGlobals"].get("configHome") {
            if self.fields {
                return Err(unsupported("helmGlobals.configHome settings".to_string()));
            }
            if let Some(path) = config_home.as_str() {
                self.path(dir, file, "helmGlobals.configHome", path)?;
            }
        }
        let chart_home = k["helmGlobals"]["chartHome"].as_str().unwrap_or("charts").to_string();
        let Some(charts) = k
            .get_mut("helmCharts")
            .and_then(Value::as_array_mut)
            .filter(|c| !c.is_empty())
        else {
            return Ok((k, false));
        };
        if Path::new(&chart_home).is_absolute() {
            return Err(RenderError::InvalidPath(format!(
                "{file}: helmGlobals.chartHome is outside the repository"
            )));
        }
        self.path(dir, file, "helmGlobals.chartHome", &chart_home)?;
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
            if self.fields {
                let vendored = !name.is_empty()
                    && !Path::new(&name).is_absolute()
                    && self.path(dir, file, &field("name"), &local).is_ok()
                    && real_path_beneath(self.root, &dir.strip_prefix(self.root).unwrap_or(dir).join(&local))
                        .is_ok_and(|p| p.join("Chart.yaml").is_file());
                if !vendored {
                    return Err(unsupported(format!(
                        "{}: charts that are not vendored (expected in {local}; Ferry never pulls charts)",
                        field("name")
                    )));
                }
                check_chart_arguments(chart, &field).map_err(unsupported)?;
            } else if !Path::new(&name).is_absolute() {
                self.path(dir, file, &field("name"), &local)?;
            }
            // kustomize writes the chart's values to `{its temporary directory}/{name}-kustomize-values.yaml`:
            // a `..` in the name would put that file elsewhere.
            if Path::new(&name)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(unsupported(format!("{}: names with '..'", field("name"))));
            }
            if let Some(map) = chart.as_object_mut() {
                map.remove("repo");
            }
            for key in ["valuesFile"] {
                if let Some(path) = chart[key].as_str().filter(|p| !is_remote(p)) {
                    self.path(dir, file, &field(key), path)?;
                }
            }
            for (j, path) in chart["additionalValuesFiles"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(path) = path.as_str().filter(|p| !is_remote(p)) {
                    let field = format!("{}[{j}]", field("additionalValuesFiles"));
                    self.path(dir, file, &field, path)?;
                }
            }
        }
        Ok((k, true))
    }

    /// Checks the entries of `generators`, `transformers` and `validators` of the kustomization in `visit`
    /// (`file`): inline configs and files of configs as plugin configs, directories as kustomizations whose
    /// output is configs (returned, to check next). Inline entries are taken out of `k` once checked: they are
    /// documents, not references, and their own fields had the remote check.
    fn plugin_entries(&self, visit: &Visit, file: &str, k: &mut Value) -> Result<Vec<Visit>, RenderError> {
        let mut next = Vec::new();
        for list in PLUGIN_LISTS {
            let Some(entries) = k.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for (i, entry) in entries.iter_mut().enumerate() {
                let Some(text) = entry.as_str().map(str::to_string) else {
                    continue;
                };
                let field = format!("{list}[{i}]");
                match plugin_entry(&text).map_err(|(doc, message)| RenderError::Yaml {
                    file: format!("{file} ({field})"),
                    doc,
                    message,
                })? {
                    PluginEntry::Inline(docs) => {
                        self.configs(&visit.dir, file, &field, &docs)?;
                        self.not_also_a_path(&visit.dir, file, &field, &text)?;
                        *entry = Value::Null;
                    }
                    // Remote ones are refused with the kustomization's other fields (or, without the field
                    // checks, left to the sandbox).
                    PluginEntry::Path(path) if is_remote(path) => {}
                    PluginEntry::Path(path) => {
                        let target = self.path(&visit.dir, file, &field, path)?;
                        if target.is_dir() {
                            next.push(Visit {
                                dir: target,
                                configs_for: Some(visit.dir.clone()),
                            });
                        } else if target.is_file() {
                            self.config_file(&visit.dir, &target)?;
                        }
                    }
                }
            }
        }
        Ok(next)
    }

    /// kustomize reads an entry as a path when its inline parse fails: an entry the check read as inline
    /// configs must not also name a file or directory, or kustomize could read that instead.
    fn not_also_a_path(&self, dir: &Path, file: &str, field: &str, entry: &str) -> Result<(), RenderError> {
        if dir.join(entry).symlink_metadata().is_ok() {
            return Err(RenderError::Unsupported {
                file: file.to_string(),
                what: format!("{field}: entries that are both inline YAML and the name of a file"),
            });
        }
        Ok(())
    }

    /// Checks a file of plugin configs (a `generators`, `transformers` or `validators` entry, or a resource of a
    /// kustomization whose output is configs) run by the kustomization in `owner`.
    fn config_file(&self, owner: &Path, path: &Path) -> Result<(), RenderError> {
        let rel = self.rel(path);
        let text = std::fs::read_to_string(path).map_err(|e| RenderError::Io(format!("{rel}: {e}")))?;
        let docs = parse_docs(&text).map_err(|(doc, message)| RenderError::Yaml {
            file: rel.clone(),
            doc,
            message,
        })?;
        self.configs(owner, &rel, "", &docs)
    }

    /// Checks the plugin configs of one inline entry (`at` names it) or file: with the field checks, each must
    /// be a safe builtin ([`check_plugin_kind`]) and hold no remote reference; the files each names (relative
    /// to `owner`, the directory of the kustomization that runs it) must stay inside the repository.
    fn configs(&self, owner: &Path, file: &str, at: &str, docs: &[Value]) -> Result<(), RenderError> {
        for (n, doc) in docs.iter().enumerate().filter(|(_, d)| !d.is_null()) {
            let at = if docs.len() > 1 {
                format!("{at}(document {})", n + 1)
            } else {
                at.to_string()
            };
            let field = |f: &str| {
                if at.is_empty() {
                    f.to_string()
                } else {
                    format!("{at}.{f}")
                }
            };
            if self.fields {
                check_plugin_kind(doc).map_err(|what| RenderError::Unsupported {
                    file: file.to_string(),
                    what: if at.is_empty() { what } else { format!("{at}: {what}") },
                })?;
                if let Some(f) = find_remote(doc, "", &CONFIG_DATA_FIELDS) {
                    return Err(RenderError::RemoteBase {
                        file: file.to_string(),
                        field: field(&f),
                    });
                }
            }
            for (f, path) in config_paths(doc) {
                if !is_remote(path) {
                    self.path(owner, file, &field(&f), path)?;
                }
            }
        }
        Ok(())
    }

    /// Checks one local path entry of the kustomization in `dir` (or of a plugin config it runs); returns where
    /// it leads (the real path, inside the repository).
    fn path(&self, dir: &Path, file: &str, field: &str, entry: &str) -> Result<PathBuf, RenderError> {
        let root = self.root;
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
        if let Some((link, problem)) = self
            .removed
            .iter()
            .find(|(l, _)| rel_target == *l || rel_target.starts_with(&format!("{l}/")))
        {
            return Err(link_error(link, *problem));
        }
        if self.fields && !target.exists() && looks_like_host_path(entry) {
            return Err(RenderError::RemoteBase {
                file: file.to_string(),
                field: field.to_string(),
            });
        }
        Ok(target)
    }

    /// Where a checked local path (`field`, now `target`) of the kustomization in `visit` leads: a directory in
    /// resources, bases or components is a kustomization to check in turn (for the same purpose); when the
    /// output is plugin configs, a resource file is a file of configs, checked here.
    fn follow(&self, visit: &Visit, field: &str, target: &Path) -> Result<Option<Visit>, RenderError> {
        let list = field.split('[').next().unwrap_or_default();
        if !KUSTOMIZATION_LISTS.contains(&list) {
            return Ok(None);
        }
        if target.is_dir() {
            return Ok(Some(Visit {
                dir: target.to_path_buf(),
                configs_for: visit.configs_for.clone(),
            }));
        }
        if let Some(owner) = visit.configs_for.as_deref().filter(|_| target.is_file()) {
            self.config_file(owner, target)?;
        }
        Ok(None)
    }
}

/// Refuses, for a chart entry (`field` names its keys), values that could become helm flags.
///
/// What kustomize (v5: `HelmChart.AsHelmArgs` in api/types/helmchartargs.go and the
/// HelmChartInflationGenerator builtin, read upstream) passes to helm: `template`, the release name as a bare
/// argument, the chart as `{absolute chart home}/{name}`, then `--namespace`, `--name-template`, `-f` (values
/// files), `--api-versions` and `--kube-version`, each with its value as the next argument (which helm's flag
/// parser takes as the value whatever it starts with). `valuesInline` never reaches the command line:
/// kustomize merges it with the values file, marshals it to YAML and writes it to a file in its temporary
/// directory, passed with `-f` (`valuesFile` is copied there the same way); `version` and `repo` only go to
/// `helm pull`, which a vendored chart never needs. So the release name is the one value that could be a flag
/// (`--post-renderer=...`); no value of a chart entry needs a leading dash, so none may have one.
fn check_chart_arguments(chart: &Value, field: &dyn Fn(&str) -> String) -> Result<(), String> {
    let flag_like = |v: &Value| v.as_str().is_some_and(|s| s.trim_start().starts_with('-'));
    let key = ["releaseName", "namespace", "nameTemplate", "kubeVersion", "valuesFile"]
        .into_iter()
        .find(|k| flag_like(&chart[*k]))
        .or_else(|| {
            ["apiVersions", "additionalValuesFiles"]
                .into_iter()
                .find(|k| chart[*k].as_array().is_some_and(|a| a.iter().any(flag_like)))
        });
    match key {
        Some(key) => Err(format!("{}: values that start with '-'", field(key))),
        None => Ok(()),
    }
}

/// Refuses a plugin config kustomize would run something for, or fetch something for: any KRM function
/// (exec or container), any plugin that is not a builtin (exec and Go plugins; kustomize runs builtins only,
/// but the check says so itself), `HelmChartInflationGenerator` (helm, and `helm pull` for a chart it does not
/// find), and any builtin not in [`SAFE_BUILTINS`]. The message names no value.
fn check_plugin_kind(doc: &Value) -> Result<(), String> {
    let annotations = &doc["metadata"]["annotations"];
    if FUNCTION_ANNOTATIONS.iter().any(|a| annotations.get(a).is_some()) {
        return Err("KRM functions (plugins are off)".to_string());
    }
    if doc["apiVersion"].as_str() != Some(BUILTIN_API_VERSION) {
        return Err(format!(
            "plugin configs whose apiVersion is not {BUILTIN_API_VERSION} (exec, Go and KRM-function plugins are off)"
        ));
    }
    match doc["kind"].as_str().unwrap_or_default() {
        "HelmChartInflationGenerator" => Err(
            "HelmChartInflationGenerator configs (helm runs only for the helmCharts of vendored charts)".to_string(),
        ),
        kind if SAFE_BUILTINS.contains(&kind) => Ok(()),
        _ => Err("builtin plugins outside Ferry's list of ones that run and fetch nothing".to_string()),
    }
}

/// A kustomization whose output is plugin configs may only gather files ([`CONFIG_KUSTOMIZATION_FIELDS`]).
fn only_config_fields(file: &str, k: &Value) -> Result<(), RenderError> {
    let Some(field) = k.as_object().and_then(|m| {
        m.keys()
            .find(|key| !CONFIG_KUSTOMIZATION_FIELDS.contains(&key.as_str()))
    }) else {
        return Ok(());
    };
    Err(RenderError::Unsupported {
        file: file.to_string(),
        what: format!(
            "{field} fields in a kustomization whose output is generator, transformer or validator configs (only resources, bases and components)"
        ),
    })
}

/// One entry of `generators`, `transformers` or `validators`, read as kustomize reads it.
#[derive(Debug)]
enum PluginEntry<'a> {
    /// A file of configs, or a kustomization whose output is configs.
    Path(&'a str),
    /// Inline configs: the entry's YAML documents.
    Inline(Vec<Value>),
}

/// kustomize tries every entry as inline YAML first (a single-line flow mapping too) and reads it as a path
/// only when that fails. Here: an entry whose documents are all scalars is a path; one that holds anything
/// else is inline configs, refused (with the document number) if it does not read as plain YAML. A one-line
/// entry that is not YAML at all is refused too, rather than guessed to be a path.
fn plugin_entry(entry: &str) -> Result<PluginEntry<'_>, (usize, String)> {
    let docs = raw_docs(entry)?;
    let structured = |v: &serde_yaml_ng::Value| {
        matches!(
            v,
            serde_yaml_ng::Value::Mapping(_) | serde_yaml_ng::Value::Sequence(_) | serde_yaml_ng::Value::Tagged(_)
        )
    };
    if !docs.iter().any(structured) {
        return Ok(PluginEntry::Path(entry));
    }
    docs.into_iter()
        .enumerate()
        .map(|(i, v)| to_json(v).map_err(|e| (i + 1, e)))
        .collect::<Result<_, _>>()
        .map(PluginEntry::Inline)
}

/// The documents of a YAML stream (a config file or inline entry, which kustomize splits on `---`), merge
/// keys resolved. An error is (document number, message).
fn parse_docs(text: &str) -> Result<Vec<Value>, (usize, String)> {
    raw_docs(text)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| to_json(v).map_err(|e| (i + 1, e)))
        .collect()
}

/// A YAML file of one document (a kustomization) as JSON, merge keys resolved.
fn parse_one(text: &str) -> Result<Value, String> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    to_json(v)
}

/// The documents of a YAML stream as YAML values.
fn raw_docs(text: &str) -> Result<Vec<serde_yaml_ng::Value>, (usize, String)> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, d)| serde_yaml_ng::Value::deserialize(d).map_err(|e| (i + 1, e.to_string())))
        .collect()
}

/// A YAML value as JSON, its merge keys resolved first. Tagged values (`!foo`) are refused: kustomize's YAML
/// libraries could read them otherwise than this check would.
fn to_json(mut v: serde_yaml_ng::Value) -> Result<Value, String> {
    resolve_merges(&mut v)?;
    Value::deserialize(v).map_err(|e| e.to_string())
}

/// Resolves YAML merge keys (`<<`) as kustomize's YAML libraries do (explicit keys first, then the merged
/// mappings in order), so no field hides from the check inside one. serde_yaml_ng resolves one level a call:
/// a merged mapping can bring a `<<` of its own.
fn resolve_merges(v: &mut serde_yaml_ng::Value) -> Result<(), String> {
    for _ in 0..MAX_MERGE_DEPTH {
        v.apply_merge().map_err(|e| e.to_string())?;
        if !has_merge_key(v) {
            return Ok(());
        }
    }
    Err(format!("YAML merge keys nested more than {MAX_MERGE_DEPTH} deep"))
}

/// Whether a `<<` key is left anywhere in `v`.
fn has_merge_key(v: &serde_yaml_ng::Value) -> bool {
    match v {
        serde_yaml_ng::Value::Mapping(m) => m.contains_key("<<") || m.values().any(has_merge_key),
        serde_yaml_ng::Value::Sequence(s) => s.iter().any(has_merge_key),
        serde_yaml_ng::Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// The first string field (as `a.b[2].c`) holding a remote reference, outside the `data` fields. Multi-line
/// strings are inline documents (patches), never a reference.
fn find_remote(v: &Value, at: &str, data: &[&str]) -> Option<String> {
    match v {
        Value::String(s) => (!s.trim().contains('\n') && is_remote(s)).then(|| at.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_remote(item, &format!("{at}[{i}]"), data)),
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !data.contains(&key.as_str()))
            .find_map(|(key, item)| {
                let at = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                find_remote(item, &at, data)
            }),
        _ => None,
    }
}

/// (field, path) of every entry of the kustomization that names a file or directory to load, but for the
/// [`PLUGIN_LISTS`].
fn local_paths(k: &Value) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    for list in PATH_LISTS {
        for (i, entry) in k[list].as_array().into_iter().flatten().enumerate() {
            // Multi-line entries are inline documents (patches), not paths.
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
    for list in GENERATOR_LISTS {
        for (i, args) in k[list].as_array().into_iter().flatten().enumerate() {
            out.extend(generator_sources(args, &format!("{list}[{i}]")));
        }
    }
    if let Some(s) = k["openapi"]["path"].as_str() {
        out.push(("openapi.path".to_string(), s));
    }
    out
}

/// (field, path) of every file a builtin plugin config names for kustomize to read: patch files (`path`,
/// `paths`), replacement files, generator sources.
fn config_paths(doc: &Value) -> Vec<(String, &str)> {
    let mut out = generator_sources(doc, "");
    if let Some(s) = doc["path"].as_str() {
        out.push(("path".to_string(), s));
    }
    for (i, s) in doc["paths"].as_array().into_iter().flatten().enumerate() {
        if let Some(s) = s.as_str() {
            out.push((format!("paths[{i}]"), s));
        }
    }
    for (i, r) in doc["replacements"].as_array().into_iter().flatten().enumerate() {
        if let Some(s) = r["path"].as_str() {
            out.push((format!("replacements[{i}].path"), s));
        }
    }
    out
}

/// (field, path) of the files a ConfigMap or Secret generator reads (`at` names its arguments): `files`
/// (`key=path` or `path`), `envs` and the older `env`.
fn generator_sources<'a>(args: &'a Value, at: &str) -> Vec<(String, &'a str)> {
    let field = |f: String| if at.is_empty() { f } else { format!("{at}.{f}") };
    let mut out = Vec::new();
    for list in ["files", "envs"] {
        for (i, s) in args[list].as_array().into_iter().flatten().enumerate() {
            if let Some(s) = s.as_str() {
                // kustomize reads the path after the key.
                let path = if list == "files" {
                    s.split_once('=').map_or(s, |(_, p)| p)
                } else {
                    s
                };
                out.push((field(format!("{list}[{i}]")), path));
            }
        }
    }
    if let Some(s) = args["env"].as_str() {
        out.push((field("env".to_string()), s));
    }
    out
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

/// Runs `kustomize build dir` after [`check_local_only`] and returns its output unchanged; helm is on only when
/// the check found vendored `helmCharts:`.
pub async fn build(
    root: &Path,
    dir: &Path,
    settings: &RenderSettings,
    removed: &[(String, LinkProblem)],
) -> Result<String, RenderError> {
    let checked = check_local_only(root, dir, removed)?;
    run(root, dir, settings, checked.uses_helm).await
}

/// Runs `kustomize build dir` in a process with no way out (see the module doc), without the static check:
/// [`build`] is what renders use; this is public so tests can show the sandbox holds on its own, with helm on
/// (`helm`) or off.
pub async fn run(root: &Path, dir: &Path, settings: &RenderSettings, helm: bool) -> Result<String, RenderError> {
    let home = tempfile::tempdir().map_err(|e| RenderError::Io(e.to_string()))?;
    let empty_path = sandbox_dirs(home.path())?;
    // Found on the controller's PATH: the sandbox's own is empty, and a bare `kustomize` (the default) would be
    // looked up there.
    let mut cmd = sandboxed(&resolve_program(&settings.kustomize), root, home.path(), &empty_path);
    let helm = helm.then(|| resolve_program(&settings.helm));
    cmd.args(kustomize_args(dir, helm.as_deref()))
        .env("KUSTOMIZE_PLUGIN_HOME", &empty_path);
    let what = "the kustomize output";
    run_bounded(cmd, root, settings, what, RenderError::Kustomize).await
}

/// kustomize's arguments: `build dir`, and, given the pinned `helm`, `--enable-helm --helm-command helm` (it runs
/// in this same sandbox). Without `--enable-helm` kustomize refuses `helmCharts:` and every
/// HelmChartInflationGenerator config, whatever the check missed.
fn kustomize_args(dir: &Path, helm: Option<&Path>) -> Vec<OsString> {
    let mut args = vec![OsString::from("build"), dir.as_os_str().to_owned()];
    if let Some(helm) = helm {
        args.extend([
            OsString::from("--enable-helm"),
            OsString::from("--helm-command"),
            helm.as_os_str().to_owned(),
        ]);
    }
    args
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
        // Temporary files (kustomize's helm home, values files) go in the fresh home too: in the render
        // sandbox it is the only place a renderer may write.
        .env("TMPDIR", home)
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
pub(super) async fn drain_keeping(
    mut from: impl tokio::io::AsyncRead + Unpin,
    kept: &mut Vec<u8>,
) -> std::io::Result<()> {
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

    /// The attack of the module doc: helm run with a flag smuggled in as its release name.
    const HELM_CONFIG: &str = "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata: {name: x}\nname: c\nreleaseName: --post-renderer=/bin/sh\n";

    /// `text` as an inline entry (a YAML block scalar) of `list`.
    fn inline(list: &str, text: &str) -> String {
        let indented: String = text.lines().map(|l| format!("  {l}\n")).collect();
        format!("{list}:\n- |\n{indented}")
    }

    /// The refusal's file and what it names, checking it quotes none of the config's values.
    fn unsupported(err: RenderError) -> (String, String) {
        assert!(
            !err.to_string().contains("post-renderer"),
            "values are not quoted: {err}"
        );
        match err {
            RenderError::Unsupported { file, what } => (file, what),
            other => panic!("not Unsupported: {other:?}"),
        }
    }

    #[test]
    fn inline_helm_generators_are_refused_in_every_plugin_list() {
        let (_t, root) = repo();
        for list in ["generators", "transformers", "validators"] {
            let (file, what) = unsupported(refused(&root, &inline(list, HELM_CONFIG)));
            assert_eq!(file, "app/kustomization.yaml");
            assert!(
                what.starts_with(&format!("{list}[0]: HelmChartInflationGenerator")),
                "{what}"
            );
        }
        // A one-line flow mapping is inline to kustomize too.
        let flow =
            "generators:\n- '{apiVersion: builtin, kind: HelmChartInflationGenerator, metadata: {name: x}, name: c}'\n";
        let (_, what) = unsupported(refused(&root, flow));
        assert!(what.starts_with("generators[0]: HelmChartInflationGenerator"), "{what}");
        // Among other documents of one entry.
        let two = format!("apiVersion: builtin\nkind: LabelTransformer\nmetadata: {{name: l}}\n---\n{HELM_CONFIG}");
        let (_, what) = unsupported(refused(&root, &inline("transformers", &two)));
        assert!(
            what.starts_with("transformers[0](document 2): HelmChartInflationGenerator"),
            "{what}"
        );
    }

    #[test]
    fn helm_generators_in_config_files_are_refused() {
        let (_t, root) = repo();
        for list in ["generators", "transformers", "validators"] {
            std::fs::write(
                root.join("app/gen.yaml"),
                format!("apiVersion: builtin\nkind: LabelTransformer\nmetadata: {{name: l}}\n---\n{HELM_CONFIG}"),
            )
            .unwrap();
            let (file, what) = unsupported(refused(&root, &format!("{list}:\n- gen.yaml\n")));
            assert_eq!(file, "app/gen.yaml");
            assert!(what.starts_with("(document 2): HelmChartInflationGenerator"), "{what}");
        }
        // The output of a kustomization listed there is configs too: its resources are checked as such, and it
        // may not rewrite them.
        std::fs::write(root.join("base/helm.yaml"), HELM_CONFIG).unwrap();
        std::fs::write(root.join("base/kustomization.yaml"), "resources:\n- helm.yaml\n").unwrap();
        let (file, what) = unsupported(refused(&root, "generators:\n- ../base\n"));
        assert_eq!(
            (file.as_str(), what.as_str()),
            (
                "base/helm.yaml",
                "HelmChartInflationGenerator configs (helm runs only for the helmCharts of vendored charts)"
            )
        );
        std::fs::write(
            root.join("base/label.yaml"),
            "apiVersion: builtin\nkind: LabelTransformer\nmetadata: {name: l}\nlabels: {a: b}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("base/kustomization.yaml"),
            "resources:\n- label.yaml\npatches:\n- target: {kind: LabelTransformer}\n  patch: '[{\"op\": \"replace\", \"path\": \"/kind\", \"value\": \"HelmChartInflationGenerator\"}]'\n",
        )
        .unwrap();
        let (file, what) = unsupported(refused(&root, "transformers:\n- ../base\n"));
        assert_eq!(file, "base/kustomization.yaml");
        assert!(what.starts_with("patches fields"), "{what}");
        std::fs::write(root.join("base/kustomization.yaml"), "resources:\n- label.yaml\n").unwrap();
        std::fs::write(root.join("app/kustomization.yaml"), "transformers:\n- ../base\n").unwrap();
        check_local_only(&root, &root.join("app"), &[]).unwrap();
    }

    #[test]
    fn plugins_and_krm_functions_are_refused() {
        let (_t, root) = repo();
        for (config, needle) in [
            (
                "apiVersion: example.com/v1\nkind: Run\nmetadata:\n  name: x\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: /bin/sh\n",
                "KRM functions",
            ),
            (
                "apiVersion: builtin\nkind: LabelTransformer\nmetadata:\n  name: x\n  annotations:\n    config.k8s.io/function: 'container: {image: x}'\n",
                "KRM functions",
            ),
            (
                "apiVersion: someteam.example.com/v1\nkind: ChartInflator\nmetadata: {name: x}\n",
                "apiVersion",
            ),
            ("kind: LabelTransformer\nmetadata: {name: x}\n", "apiVersion"),
            (
                "apiVersion: builtin\nkind: ResourceGenerator\nmetadata: {name: x}\n",
                "builtin plugins outside",
            ),
            ("apiVersion: builtin\nmetadata: {name: x}\n", "builtin plugins outside"),
            ("apiVersion: v1\nkind: List\nitems: []\n", "apiVersion"),
        ] {
            let (_, what) = unsupported(refused(&root, &inline("transformers", config)));
            assert!(
                what.starts_with("transformers[0]: ") && what.contains(needle),
                "{config}: {what}"
            );
        }
        // Tags could be read otherwise by kustomize: refused as YAML Ferry does not read.
        let err = refused(
            &root,
            &inline(
                "generators",
                "apiVersion: builtin\nkind: !x HelmChartInflationGenerator\n",
            ),
        );
        assert!(matches!(err, RenderError::Yaml { .. }), "{err}");
    }

    #[test]
    fn safe_builtin_configs_pass_and_their_fields_are_checked() {
        let (_t, root) = repo();
        std::fs::write(root.join("app/patch.yaml"), "- op: add\n  path: /x\n  value: y\n").unwrap();
        let ok = format!(
            "{}{}",
            inline(
                "transformers",
                "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: patch.yaml\ntarget: {kind: Deployment}\n---\napiVersion: builtin\nkind: LabelTransformer\nmetadata: {name: l}\nlabels: {docs: 'https://example.com'}\nfieldSpecs: [{path: metadata/labels, create: true}]\n",
            ),
            "generators:\n- '{apiVersion: builtin, kind: ConfigMapGenerator, metadata: {name: c}, literals: [u=https://example.com]}'\n",
        );
        std::fs::write(root.join("app/kustomization.yaml"), &ok).unwrap();
        let checked = check_local_only(&root, &root.join("app"), &[]).expect(&ok);
        assert!(!checked.uses_helm);
        for (config, field) in [
            (
                "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: https://example.com/p.yaml\n",
                "transformers[0].path",
            ),
            (
                "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: c}\nfiles: [k=https://example.com/f]\n",
                "transformers[0].files[0]",
            ),
        ] {
            match refused(&root, &inline("transformers", config)) {
                RenderError::RemoteBase { file, field: f } => {
                    assert_eq!((file.as_str(), f.as_str()), ("app/kustomization.yaml", field));
                }
                other => panic!("{config}: {other}"),
            }
        }
        for config in [
            "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: ../../../etc/passwd\n",
            "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: c}\nfiles: [k=../../../etc/passwd]\n",
            "apiVersion: builtin\nkind: SecretGenerator\nmetadata: {name: c}\nenvs: [../../../etc/environment]\n",
            "apiVersion: builtin\nkind: PatchStrategicMergeTransformer\nmetadata: {name: p}\npaths: [../../../etc/passwd]\n",
            "apiVersion: builtin\nkind: ReplacementTransformer\nmetadata: {name: r}\nreplacements: [{path: ../../../etc/passwd}]\n",
        ] {
            let err = refused(&root, &inline("transformers", config));
            assert!(
                matches!(err, RenderError::InvalidPath(ref m) if m.starts_with("app/kustomization.yaml: transformers[0].")),
                "{config}: {err:?}"
            );
        }
        // A config file's paths are the kustomization's (kustomize loads them from its directory).
        std::fs::write(
            root.join("base/p.yaml"),
            "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: ../../etc/passwd\n",
        )
        .unwrap();
        assert!(matches!(
            refused(&root, "transformers:\n- ../base/p.yaml\n"),
            RenderError::InvalidPath(_)
        ));
        let removed = [("app/gone.yaml".to_string(), LinkProblem::Escapes)];
        std::fs::write(
            root.join("app/kustomization.yaml"),
            inline(
                "transformers",
                "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: gone.yaml\n",
            ),
        )
        .unwrap();
        assert!(matches!(
            check_local_only(&root, &root.join("app"), &removed),
            Err(RenderError::SymlinkEscapes(l)) if l == "app/gone.yaml"
        ));
    }

    #[test]
    fn merge_keys_hide_no_field() {
        let (_t, root) = repo();
        assert!(matches!(
            refused(&root, "<<: {resources: [../../outside]}\n"),
            RenderError::InvalidPath(_)
        ));
        assert!(matches!(
            refused(
                &root,
                "<<: {<<: {configMapGenerator: [{name: c, files: [../../../etc/passwd]}]}}\n"
            ),
            RenderError::InvalidPath(_)
        ));
        let (_, what) = unsupported(refused(
            &root,
            "<<: {helmCharts: [{name: cache, releaseName: --post-renderer=/bin/sh}]}\n",
        ));
        assert!(what.contains("helmCharts[0]"), "{what}");
        assert!(matches!(
            refused(
                &root,
                &inline(
                    "transformers",
                    "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\n<<: {path: ../../../etc/passwd}\n"
                )
            ),
            RenderError::InvalidPath(_)
        ));
    }

    #[test]
    fn helm_is_enabled_only_for_vendored_charts() {
        let (_t, root) = repo();
        std::fs::write(root.join("app/kustomization.yaml"), "resources: []\nhelmCharts: []\n").unwrap();
        assert!(!check_local_only(&root, &root.join("app"), &[]).unwrap().uses_helm);
        std::fs::create_dir_all(root.join("base/charts/cache")).unwrap();
        std::fs::write(root.join("base/charts/cache/Chart.yaml"), "name: cache\n").unwrap();
        std::fs::write(root.join("base/kustomization.yaml"), "helmCharts:\n- name: cache\n").unwrap();
        std::fs::write(root.join("app/kustomization.yaml"), "resources:\n- ../base\n").unwrap();
        let checked = check_local_only(&root, &root.join("app"), &[]).unwrap();
        assert!(checked.uses_helm);
        assert_eq!(checked.dirs, vec![root.join("app"), root.join("base")]);
        let helm = Path::new("/usr/local/bin/helm");
        assert_eq!(kustomize_args(Path::new("/r/app"), None), ["build", "/r/app"]);
        assert_eq!(
            kustomize_args(Path::new("/r/app"), Some(helm)),
            [
                "build",
                "/r/app",
                "--enable-helm",
                "--helm-command",
                "/usr/local/bin/helm"
            ]
        );
        // kustomize writes a chart's values to a file named after it.
        std::fs::create_dir_all(root.join("app/charts/cache")).unwrap();
        std::fs::write(root.join("app/charts/cache/Chart.yaml"), "name: cache\n").unwrap();
        let (_, what) = unsupported(refused(&root, "helmCharts:\n- name: ../charts/cache\n"));
        assert!(what.contains("'..'"), "{what}");
    }

    #[test]
    fn without_the_field_checks_only_paths_are_checked() {
        let (_t, root) = repo();
        for k in [
            inline("generators", HELM_CONFIG),
            "resources:\n- https://example.com/x.yaml\nhelmCharts:\n- name: redis\n  repo: https://charts.example.com\n".to_string(),
        ] {
            std::fs::write(root.join("app/kustomization.yaml"), &k).unwrap();
            check(&root, &root.join("app"), &[], true).expect_err(&k);
            assert!(check(&root, &root.join("app"), &[], false).expect(&k).uses_helm);
        }
        for k in [
            "resources:\n- ../../outside\n".to_string(),
            inline("transformers", "apiVersion: x/v1\nkind: Y\npath: ../../../etc/passwd\n"),
        ] {
            std::fs::write(root.join("app/kustomization.yaml"), &k).unwrap();
            assert!(matches!(
                check(&root, &root.join("app"), &[], false),
                Err(RenderError::InvalidPath(_))
            ));
        }
        // The switch is for debug builds only; a test run does not set it.
        assert_eq!(field_checks_on(), std::env::var_os(SKIP_CHECKS_VAR).is_none());
    }

    #[test]
    fn generator_sources_of_the_kustomization_stay_inside_the_repository() {
        let (_t, root) = repo();
        for k in [
            "configMapGenerator:\n- name: c\n  files: [../../../etc/passwd]\n",
            "secretGenerator:\n- name: s\n  envs: [../../../etc/environment]\n",
        ] {
            assert!(matches!(refused(&root, k), RenderError::InvalidPath(_)), "{k}");
        }
    }
}
