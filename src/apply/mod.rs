//! Apply: rendered objects → the cluster, by server-side apply under one stable field manager, plus prune of
//! what a previous revision applied and Git no longer has.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::api::InventoryEntry;
use crate::render::{RenderedObject, apply_rank};

/// The field manager for every server-side apply, so ownership is stable across versions and replicas.
pub const FIELD_MANAGER: &str = "ferry";
/// Labels that mark an object as owned by an Environment; prune only touches objects that carry both.
pub const OWNER_NAME_LABEL: &str = "ferry.dev/environment";
pub const OWNER_NAMESPACE_LABEL: &str = "ferry.dev/environment-namespace";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{object}: kind {kind} is not served by the cluster ({api_version})")]
    UnknownKind {
        object: String,
        kind: String,
        api_version: String,
    },
    #[error("{object} was rejected: {message}")]
    Rejected { object: String, message: String },
    #[error("talking to the API server failed for {object}: {source}")]
    Api {
        object: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Failures that need a change in Git; the others are the API server's and are retried with backoff.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, ApplyError::Api { .. })
    }
}

/// Who owns applied objects.
#[derive(Debug, Clone)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
}

/// Applies and prunes with a discovery cache shared across reconciles.
pub struct Applier {
    client: Client,
    resources: Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

fn describe(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> String {
    InventoryEntry {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
    }
    .to_string()
}

fn api_error_message(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429 => {
            Some(status.message.clone())
        }
        _ => None,
    }
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier {
            client,
            resources: Mutex::default(),
        }
    }

    /// Maps a kind to its API resource. Only hits are cached, so a CRD installed later is found next time.
    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
        object: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
        let gvk = gvk_of(api_version, kind);
        if let Some(hit) = self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(&gvk) {
            return Ok(hit.clone());
        }
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => {
                self.resources
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(gvk, found.clone());
                Ok(found)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Err(ApplyError::UnknownKind {
                object: object.to_string(),
                kind: kind.to_string(),
                api_version: api_version.to_string(),
            }),
            Err(kube::Error::Discovery(_)) => Err(ApplyError::UnknownKind {
                object: object.to_string(),
                kind: kind.to_string(),
                api_version: api_version.to_string(),
            }),
            Err(source) => Err(ApplyError::Api {
                object: object.to_string(),
                source,
            }),
        }
    }

    fn api_for(&self, ar: &ApiResource, caps: &ApiCapabilities, namespace: Option<&str>) -> Api<DynamicObject> {
        match (caps.scope == Scope::Namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Applies every object (dependencies first) and returns the inventory of what is now applied.
    /// Stops at the first failure; objects already applied in this pass stay applied and are in the cluster
    /// at the new revision, which status reports as the attempted (not applied) revision.
    pub async fn apply_all(
        &self,
        objects: &[RenderedObject],
        owner: &Owner,
        target_namespace: &str,
    ) -> Result<Vec<InventoryEntry>, ApplyError> {
        let mut ordered: Vec<&RenderedObject> = objects.iter().collect();
        ordered.sort_by_key(|o| apply_rank(o.kind()));
        let mut inventory = Vec::with_capacity(ordered.len());
        for rendered in ordered {
            let (api_version, kind, name) = (rendered.api_version(), rendered.kind(), rendered.name());
            let label = describe(api_version, kind, rendered.namespace(), name);
            let (ar, caps) = self.resource(api_version, kind, &label).await?;
            let namespaced = caps.scope == Scope::Namespaced;
            let namespace = namespaced.then(|| target_namespace.to_string());
            let object = prepare(&rendered.object, namespace.as_deref(), owner);
            let api = self.api_for(&ar, &caps, namespace.as_deref());
            let label = describe(api_version, kind, namespace.as_deref(), name);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            if let Err(e) = api.patch(name, &params, &Patch::Apply(&object)).await {
                return Err(match api_error_message(&e) {
                    Some(message) => ApplyError::Rejected { object: label, message },
                    None => ApplyError::Api {
                        object: label,
                        source: e,
                    },
                });
            }
            inventory.push(InventoryEntry {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                namespace,
                name: name.to_string(),
            });
        }
        inventory.sort();
        Ok(inventory)
    }

    /// Deletes objects of `previous` that are not in `current`, dependents first. An object whose labels do
    /// not name `owner` is left alone: Ferry never deletes what it does not own.
    pub async fn prune(
        &self,
        previous: &[InventoryEntry],
        current: &[InventoryEntry],
        owner: &Owner,
    ) -> Result<Vec<InventoryEntry>, ApplyError> {
        let keep: BTreeSet<&InventoryEntry> = current.iter().collect();
        let mut stale: Vec<&InventoryEntry> = previous.iter().filter(|e| !keep.contains(e)).collect();
        stale.sort_by_key(|e| std::cmp::Reverse(apply_rank(&e.kind)));
        let mut deleted = Vec::new();
        for entry in stale {
            let label = entry.to_string();
            let (ar, caps) = match self.resource(&entry.api_version, &entry.kind, &label).await {
                Ok(found) => found,
                // The kind is gone (its CRD was removed), and with it every object of the kind.
                Err(ApplyError::UnknownKind { .. }) => continue,
                Err(e) => return Err(e),
            };
            let api = self.api_for(&ar, &caps, entry.namespace.as_deref());
            let live = match api.get_opt(&entry.name).await {
                Ok(Some(live)) => live,
                Ok(None) => continue,
                Err(source) => {
                    return Err(ApplyError::Api { object: label, source });
                }
            };
            if !owned_by(&live, owner) {
                tracing::info!(object = %label, "not pruning an object Ferry does not own");
                continue;
            }
            match api.delete(&entry.name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(entry.clone()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError::Api { object: label, source });
                }
            }
        }
        Ok(deleted)
    }
}

/// Both ownership labels must name this Environment.
pub fn owned_by(live: &DynamicObject, owner: &Owner) -> bool {
    let labels = live.labels();
    labels.get(OWNER_NAME_LABEL) == Some(&owner.name) && labels.get(OWNER_NAMESPACE_LABEL) == Some(&owner.namespace)
}

/// The object as it is sent: namespace set (or removed for cluster-scoped kinds) and ownership labels added.
pub fn prepare(object: &Value, namespace: Option<&str>, owner: &Owner) -> Value {
    let mut object = object.clone();
    let metadata = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Default::default())));
    if let Some(Value::Object(metadata)) = metadata {
        match namespace {
            Some(ns) => {
                metadata.insert("namespace".into(), Value::String(ns.to_string()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if !labels.is_object() {
            *labels = Value::Object(Default::default());
        }
        if let Value::Object(labels) = labels {
            labels.insert(OWNER_NAME_LABEL.into(), Value::String(owner.name.clone()));
            labels.insert(OWNER_NAMESPACE_LABEL.into(), Value::String(owner.namespace.clone()));
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            name: "staging".into(),
            namespace: "apps".into(),
        }
    }

    #[test]
    fn prepare_sets_namespace_and_labels() {
        let obj = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"other","labels":{"app":"x"}}});
        let out = prepare(&obj, Some("target"), &owner());
        assert_eq!(out["metadata"]["namespace"], "target");
        assert_eq!(out["metadata"]["labels"]["app"], "x");
        assert_eq!(out["metadata"]["labels"][OWNER_NAME_LABEL], "staging");
        assert_eq!(out["metadata"]["labels"][OWNER_NAMESPACE_LABEL], "apps");
    }

    #[test]
    fn prepare_strips_namespace_from_cluster_scoped_objects() {
        let obj = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a","namespace":"x"}});
        let out = prepare(&obj, None, &owner());
        assert!(out["metadata"].get("namespace").is_none());
    }

    #[test]
    fn ownership_needs_both_labels() {
        let mut live = DynamicObject::new("a", &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()));
        assert!(!owned_by(&live, &owner()));
        live.labels_mut().insert(OWNER_NAME_LABEL.into(), "staging".into());
        assert!(!owned_by(&live, &owner()));
        live.labels_mut().insert(OWNER_NAMESPACE_LABEL.into(), "apps".into());
        assert!(owned_by(&live, &owner()));
    }

    #[test]
    fn gvk_parses_core_and_grouped_versions() {
        assert_eq!(gvk_of("v1", "ConfigMap"), GroupVersionKind::gvk("", "v1", "ConfigMap"));
        assert_eq!(
            gvk_of("apps/v1", "Deployment"),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
    }
}
