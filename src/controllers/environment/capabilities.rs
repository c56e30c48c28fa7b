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

/// Discovers `client`'s cluster now.
pub async fn discover(client: &Client) -> Result<Capabilities, kube::Error> {
    let version = client.apiserver_version().await?;
    let discovery = kube::discovery::Discovery::new(client.clone()).run().await?;
    let mut api_versions = std::collections::BTreeSet::new();
    for group in discovery.groups() {
        for version in group.versions() {
            for (resource, _) in group.versioned_resources(version) {
                api_versions.insert(resource.api_version.clone());
                api_versions.insert(format!("{}/{}", resource.api_version, resource.kind));
            }
        }
    }
    Ok(Capabilities {
        kube_version: version.git_version,
        api_versions: api_versions.into_iter().collect(),
    })
}
