//! Prune: deleting what a previous revision applied and Git no longer has, behind guards — only objects
//! labelled as the Environment's, never a Namespace or CRD holding others' objects, never more than
//! `maxPrunePercent` or everything at once, and never what the Environment's account may not delete.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;

use super::{Applier, ApplyError, Owner, api_or_forbidden, gvk_of, owned_by};
use crate::api::InventoryEntry;
use crate::render::apply_rank;

impl Applier {
    /// Deletes `stale` objects, dependents first. An object whose labels do not name `owner`, or that carries
    /// `ferry.dev/prune: disabled`, is left alone: Ferry never deletes what it does not own.
    pub async fn prune(&self, stale: &[InventoryEntry], owner: &Owner) -> Result<Vec<InventoryEntry>, ApplyError> {
        let mut stale: Vec<&InventoryEntry> = stale.iter().collect();
        stale.sort_by_key(|e| std::cmp::Reverse(apply_rank(&e.kind)));
        let mut deleted = Vec::new();
        // Objects the account may not delete are skipped, not a reason to stop deleting the others.
        let mut denied = Vec::new();
        for entry in stale {
            let label = entry.to_string();
            let Some((ar, caps)) = self.resource(&gvk_of(&entry.api_version, &entry.kind), &label).await? else {
                // The kind is gone (its CRD was removed), and with it every object of the kind.
                continue;
            };
            let api = self.api_for(&ar, &caps, entry.namespace.as_deref());
            let live = match api.get_opt(&entry.name).await {
                Ok(Some(live)) => live,
                Ok(None) => continue,
                Err(e) => match api_or_forbidden(label, e) {
                    ApplyError::Forbidden { failures } => {
                        denied.extend(failures);
                        continue;
                    }
                    other => return Err(other),
                },
            };
            if !owned_by(&live, owner) {
                tracing::info!(object = %label, "not pruning an object Ferry does not own");
                continue;
            }
            if live.annotations().get(PRUNE_ANNOTATION).map(String::as_str) == Some("disabled") {
                tracing::info!(object = %label, "not pruning: {PRUNE_ANNOTATION} is disabled");
                continue;
            }
            // Deleting a Namespace or a CRD deletes everything in it or of its kind: only when all of that is ours.
            let foreign = match entry.kind.as_str() {
                "Namespace" => self.foreign_in_namespace(&entry.name, owner).await?,
                "CustomResourceDefinition" => self.foreign_custom_resources(&live, owner).await?,
                _ => Vec::new(),
            };
            if !foreign.is_empty() {
                return Err(ApplyError::Rejected {
                    object: label,
                    message: format!(
                        "not deleted: it holds {} object(s) this Environment does not own, e.g. {}",
                        foreign.len(),
                        foreign.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            match api.delete(&entry.name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(entry.clone()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => match api_or_forbidden(label, e) {
                    ApplyError::Forbidden { failures } => denied.extend(failures),
                    other => return Err(other),
                },
            }
        }
        if !denied.is_empty() {
            tracing::info!(deleted = deleted.len(), "pruned what the account may delete");
            return Err(ApplyError::Forbidden { failures: denied });
        }
        Ok(deleted)
    }
}

impl Applier {
    /// Objects in `namespace` that are neither this Environment's nor derived from something (no owner
    /// references), skipping what Kubernetes puts in every namespace.
    async fn foreign_in_namespace(&self, namespace: &str, owner: &Owner) -> Result<Vec<String>, ApplyError> {
        let api_err = |source| ApplyError::Api {
            object: format!("v1/Namespace {namespace}"),
            source,
        };
        let discovery = kube::discovery::Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(api_err)?;
        let mut foreign = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let listable = caps.operations.iter().any(|v| v == "list");
                if caps.scope != Scope::Namespaced || !listable || IMPLICIT_KINDS.contains(&ar.kind.as_str()) {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
                let Ok(list) = api.list(&Default::default()).await else {
                    continue;
                };
                for item in list.items {
                    let derived = item.metadata.owner_references.as_ref().is_some_and(|r| !r.is_empty());
                    let name = item.name_any();
                    let implicit = (ar.kind == "ServiceAccount" && name == "default")
                        || (ar.kind == "ConfigMap" && name == "kube-root-ca.crt");
                    if !derived && !implicit && !owned_by(&item, owner) {
                        foreign.push(format!("{}/{} {namespace}/{name}", ar.api_version, ar.kind));
                    }
                }
            }
        }
        Ok(foreign)
    }

    /// Custom resources of a CRD's kind, anywhere, that this Environment does not own.
    async fn foreign_custom_resources(&self, crd: &DynamicObject, owner: &Owner) -> Result<Vec<String>, ApplyError> {
        let spec = &crd.data["spec"];
        let (Some(group), Some(kind)) = (spec["group"].as_str(), spec["names"]["kind"].as_str()) else {
            return Ok(Vec::new());
        };
        let version = spec["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["storage"] == true))
            .and_then(|v| v["name"].as_str())
            .unwrap_or("v1");
        let label = format!("{group}/{version}/{kind}");
        let Some((ar, _)) = self
            .resource(&GroupVersionKind::gvk(group, version, kind), &label)
            .await?
        else {
            return Ok(Vec::new());
        };
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let list = api.list(&Default::default()).await.map_err(|source| ApplyError::Api {
            object: label.clone(),
            source,
        })?;
        Ok(list
            .items
            .iter()
            .filter(|item| !owned_by(item, owner))
            .map(|item| format!("{label} {}/{}", item.namespace().unwrap_or_default(), item.name_any()))
            .collect())
    }
}
/// Kinds Kubernetes creates in every namespace by itself, or that record rather than configure.
const IMPLICIT_KINDS: [&str; 5] = [
    "Event",
    "Endpoints",
    "EndpointSlice",
    "Lease",
    "LocalSubjectAccessReview",
];

/// Per-object opt-out of prune (and of deletion with the Environment).
pub const PRUNE_ANNOTATION: &str = "ferry.dev/prune";

/// Why a prune was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PruneBlocked {
    #[error(
        "the render produced no objects; refusing to delete all {0} applied objects (set spec.allowEmpty to allow)"
    )]
    EmptyRender(usize),
    #[error("pruning would delete {stale} of {total} objects, more than maxPrunePercent {max}%")]
    TooMany { stale: usize, total: usize, max: u8 },
}

/// Which objects of `previous` are gone from `current`, unless that crosses a guard.
pub fn plan_prune(
    previous: &[InventoryEntry],
    current: &[InventoryEntry],
    max_percent: u8,
    allow_empty: bool,
) -> Result<Vec<InventoryEntry>, PruneBlocked> {
    // Identity without the version: an object whose apiVersion changed in Git (v1beta1 → v1) is the same object.
    let key = |e: &InventoryEntry| {
        let group = e
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g.to_string())
            .unwrap_or_default();
        (group, e.kind.clone(), e.namespace.clone(), e.name.clone())
    };
    let keep: BTreeSet<_> = current.iter().map(key).collect();
    let stale: Vec<InventoryEntry> = previous.iter().filter(|e| !keep.contains(&key(e))).cloned().collect();
    if current.is_empty() && !previous.is_empty() && !allow_empty {
        return Err(PruneBlocked::EmptyRender(previous.len()));
    }
    if !previous.is_empty() && stale.len() * 100 > previous.len() * usize::from(max_percent) {
        return Err(PruneBlocked::TooMany {
            stale: stale.len(),
            total: previous.len(),
            max: max_percent,
        });
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    #[test]
    fn prune_plans_the_difference_within_guards() {
        let prev = vec![entry("a"), entry("b"), entry("c"), entry("d")];
        assert_eq!(plan_prune(&prev, &prev[..3], 50, false), Ok(vec![entry("d")]));
        assert_eq!(
            plan_prune(&prev, &prev[..1], 50, false),
            Err(PruneBlocked::TooMany {
                stale: 3,
                total: 4,
                max: 50
            })
        );
        assert_eq!(plan_prune(&prev, &prev[..1], 100, false).map(|v| v.len()), Ok(3));
        assert_eq!(plan_prune(&prev, &[], 100, false), Err(PruneBlocked::EmptyRender(4)));
        assert_eq!(plan_prune(&prev, &[], 100, true).map(|v| v.len()), Ok(4));
        assert_eq!(plan_prune(&[], &[], 50, false), Ok(vec![]));
    }

    #[test]
    fn a_version_change_is_not_a_prune() {
        let old = InventoryEntry {
            api_version: "autoscaling/v2beta2".into(),
            kind: "HorizontalPodAutoscaler".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        };
        let new = InventoryEntry {
            api_version: "autoscaling/v2".into(),
            ..old.clone()
        };
        assert_eq!(plan_prune(&[old], &[new], 100, false), Ok(vec![]));
    }
}
