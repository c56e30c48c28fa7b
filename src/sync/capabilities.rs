//! What a target cluster serves, for the `.Capabilities` of charts: its version and every group/version and
//! group/version/Kind, from discovery. Kept a minute per cluster, so many charts on one cluster discover once,
//! and a CRD installed meanwhile (by a dependency, say) is seen at the next render after that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;

use crate::render::Capabilities;

/// How long one discovery is reused.
const TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct CapabilityCache(Mutex<HashMap<String, (Instant, Capabilities)>>);

impl CapabilityCache {
    /// The capabilities of the cluster `key` names (`client` reaches it), discovered at most once a [`TTL`].
    pub async fn get(&self, key: &str, client: &Client) -> Result<Capabilities, kube::Error> {
        if let Some((at, caps)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key)
            && at.elapsed() < TTL
        {
            return Ok(caps.clone());
        }
        let caps = discover(client).await?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (Instant::now(), caps.clone()));
        Ok(caps)
    }
}

/// Discovers `client`'s cluster now. A group whose resources cannot be listed (an aggregated API whose
/// backend is down) is left out rather than failing every chart on the cluster, as helm's own discovery does.
pub async fn discover(client: &Client) -> Result<Capabilities, kube::Error> {
    let version = client.apiserver_version().await?;
    let mut api_versions = std::collections::BTreeSet::new();
    let mut add = |group_version: &str, list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList| {
        api_versions.insert(group_version.to_string());
        for resource in list.resources {
            // Subresources (`deployments/scale`) are not kinds of their own.
            if !resource.name.contains('/') {
                api_versions.insert(format!("{group_version}/{}", resource.kind));
            }
        }
    };
    for v in client.list_core_api_versions().await?.versions {
        if let Ok(list) = client.list_core_api_resources(&v).await {
            add(&v, list);
        }
    }
    for group in client.list_api_groups().await?.groups {
        for v in group.versions {
            if let Ok(list) = client.list_api_group_resources(&v.group_version).await {
                add(&v.group_version, list);
            }
        }
    }
    Ok(Capabilities {
        kube_version: version.git_version,
        api_versions: api_versions.into_iter().collect(),
    })
}
