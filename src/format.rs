//! Formatting shared by the command line and the web view, pure: short revisions, the pipeline's order, the
//! inventory grouped as a tree.

use std::collections::{BTreeMap, HashSet};

use kube::ResourceExt;

use crate::api::{Environment, InventoryEntry};
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
