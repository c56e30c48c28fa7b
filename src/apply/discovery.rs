//! Which API serves each kind (discovered once per cluster, shared by every identity applying there), the
//! API to reach an object through, and live objects by inventory entry.

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Applier, ApplyError};
use crate::api::InventoryEntry;

/// Discovered kinds: the same for every identity, so shared by the appliers of one cluster.
pub(super) type Discovered = Arc<Mutex<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>>;

pub(super) fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier {
            client,
            resources: Discovered::default(),
        }
    }

    /// An applier for the same cluster through another client (another identity), sharing discovery.
    pub fn with_client(&self, client: Client) -> Self {
        Applier {
            client,
            resources: self.resources.clone(),
        }
    }

    /// The API resource of a kind this applier has already discovered (no request).
    pub fn discovered(&self, api_version: &str, kind: &str) -> Option<ApiResource> {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&gvk_of(api_version, kind))
            .map(|(ar, _)| ar.clone())
    }

    /// Maps a kind to its API resource. Only hits are cached, so a CRD installed later is found next time.
    pub(super) async fn resource(
        &self,
        gvk: &GroupVersionKind,
        object: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, ApplyError> {
        if let Some(hit) = self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(gvk) {
            return Ok(Some(hit.clone()));
        }
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok(found) => {
                self.resources
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(gvk.clone(), found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(source) => Err(ApplyError::Api {
                object: object.to_string(),
                source,
            }),
        }
    }

    pub(super) fn api_for(
        &self,
        ar: &ApiResource,
        caps: &ApiCapabilities,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        match (caps.scope == Scope::Namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    /// The live object for an inventory entry, as JSON (for health checks and diffs).
    pub async fn get(&self, entry: &InventoryEntry) -> Result<Option<Value>, ApplyError> {
        let label = entry.to_string();
        let Some((ar, caps)) = self.resource(&gvk_of(&entry.api_version, &entry.kind), &label).await? else {
            return Ok(None);
        };
        let api = self.api_for(&ar, &caps, entry.namespace.as_deref());
        match api.get_opt(&entry.name).await {
            Ok(live) => Ok(live.and_then(|l| serde_json::to_value(l).ok())),
            Err(source) => Err(ApplyError::Api { object: label, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gvk_parses_core_and_grouped_versions() {
        assert_eq!(gvk_of("v1", "ConfigMap"), GroupVersionKind::gvk("", "v1", "ConfigMap"));
        assert_eq!(
            gvk_of("apps/v1", "Deployment"),
            GroupVersionKind::gvk("apps", "v1", "Deployment")
        );
    }
}
