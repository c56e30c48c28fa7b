//! Formatting shared by the command line and the web view, pure: short revisions, the pipeline's order, the
//! inventory grouped as a tree, an object's diff with Secret values masked.

use std::collections::{BTreeMap, HashSet};

use kube::ResourceExt;
use similar::TextDiff;

use crate::api::{Environment, InventoryEntry};
use crate::apply::ObjectDiff;
use crate::source::Revision;

/// Commit ids are shown at this length, as short enough to read and long enough to be unique in practice.
pub const SHORT_COMMIT: usize = 12;

/// Label of the group holding cluster-scoped objects.
pub const CLUSTER_SCOPED: &str = "(cluster-scoped)";

/// `main@sha1:<12 hex>`: enough to recognise a commit without the table running off the screen.
pub fn short_revision(revision: &str) -> String {
    match Revision::parse(revision) {
        Some(r) => {
            let short = Revision {
                commit: r.commit.chars().take(SHORT_COMMIT).collect(),
                ..r
            };
            short.render()
        }
        None => revision.to_string(),
    }
}

/// The pipeline table: Environments without `spec.promotion` first, each followed by those promoting from it
/// (depth first, so a chain reads top to bottom); names order siblings. Environments whose upstream is missing
/// start chains too, and those in a cycle come last, once each.
pub fn promotion_order(envs: &[Environment]) -> Vec<&Environment> {
    let from = |e: &Environment| e.spec.promotion.as_ref().map(|p| p.from.clone());
    let mut sorted: Vec<&Environment> = envs.iter().collect();
    sorted.sort_by_key(|e| e.name_any());
    let names: HashSet<String> = sorted.iter().map(|e| e.name_any()).collect();
    let is_root = |e: &Environment| from(e).is_none_or(|f| !names.contains(&f));
    let mut order: Vec<&Environment> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let starts = sorted
        .iter()
        .filter(|e| is_root(e))
        .chain(sorted.iter().filter(|e| !is_root(e)));
    for start in starts {
        let mut stack = vec![*start];
        while let Some(env) = stack.pop() {
            if !seen.insert(env.name_any()) {
                continue;
            }
            order.push(env);
            let name = env.name_any();
            // Reversed so that the stack pops children in name order.
            stack.extend(
                sorted
                    .iter()
                    .rev()
                    .filter(|c| from(c).as_deref() == Some(name.as_str())),
            );
        }
    }
    order
}

/// One group of the tree: a namespace (or [`CLUSTER_SCOPED`]) and its kinds, each with its objects' names
/// and `T` (their health), all sorted.
pub type Group<T> = (String, Vec<(String, Vec<(String, T)>)>);

/// The objects grouped by namespace (cluster-scoped last), then kind, then name: the tree's shape, shared by
/// `ferry tree` and the web view.
pub fn group_inventory<T: Clone>(objects: &[(InventoryEntry, T)]) -> Vec<Group<T>> {
    type Kinds<T> = BTreeMap<String, Vec<(String, T)>>;
    let mut groups: BTreeMap<(bool, String), Kinds<T>> = BTreeMap::new();
    for (entry, health) in objects {
        let group = match &entry.namespace {
            Some(ns) => (false, ns.clone()),
            None => (true, CLUSTER_SCOPED.to_string()),
        };
        groups
            .entry(group)
            .or_default()
            .entry(entry.kind.clone())
            .or_default()
            .push((entry.name.clone(), health.clone()));
    }
    groups
        .into_iter()
        .map(|((_, group), kinds)| {
            let kinds = kinds
                .into_iter()
                .map(|(kind, mut names)| {
                    names.sort_by(|a, b| a.0.cmp(&b.0));
                    (kind, names)
                })
                .collect();
            (group, kinds)
        })
        .collect()
}

/// A Secret's values replaced by a short keyed digest: a diff shows *that* a value changed, never the value.
/// The key is random per process, so equal values look equal within one diff (or one web view process) while
/// a mask cannot be checked against guesses offline, as a plain SHA-256 of a weak password could be.
pub fn mask_secret(object: &serde_json::Value) -> serde_json::Value {
    use hmac::Mac;
    let mut out = object.clone();
    if object["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(map) = out.get_mut(field).and_then(|d| d.as_object_mut()) {
                for value in map.values_mut() {
                    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(mask_key())
                        .expect("HMAC takes a key of any length");
                    mac.update(value.to_string().as_bytes());
                    let digest = mac.finalize().into_bytes();
                    *value = format!("<secret {}>", &hex::encode(digest)[..12]).into();
                }
            }
        }
    }
    out
}

/// This process's masking key, drawn once from the operating system.
fn mask_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        // Without the OS generator there is no safe key; a fixed one would be the unsalted hash again.
        getrandom::fill(&mut key).expect("the operating system's random generator");
        key
    })
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
            text.contains("-  password: <secret ") && text.contains("+  password: <secret "),
            "{text}"
        );
        // Equal values mask equally within a process; the mask is not the value's plain SHA-256.
        use sha2::Digest as _;
        let value = serde_json::Value::from("aHVudGVyMg==");
        let plain = hex::encode(sha2::Sha256::digest(value.to_string().as_bytes()));
        let secret = json!({"kind": "Secret", "data": {"a": value.clone(), "b": value}});
        let masked = mask_secret(&secret);
        assert_eq!(masked["data"]["a"], masked["data"]["b"]);
        assert!(!masked.to_string().contains(&plain[..12]), "{masked}");
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
