//! Apply: rendered objects → the cluster, by server-side apply under one stable field manager. By concern:
//! which API serves each kind in [`discovery`], the dry run of the whole set (and `ferry diff`) in [`plan`],
//! the staged write in [`write`], ownership labels in [`ownership`], prune and its guards in [`prune`], the
//! comparison of dry-run results with live objects in [`normalize`], and how the API server's refusals become
//! [`ApplyError`]s in [`error`].

use kube::Client;
use serde_json::Value;

mod discovery;
mod error;
mod normalize;
mod ownership;
mod plan;
mod prune;
mod write;

pub use error::{ApplyError, with_causes};

pub use normalize::{conflicting_managers, differs, digest, imperative_managers, normalized};
pub use ownership::{OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL, Owner, owned_by, owned_by_other, prepare};
pub use prune::{PRUNE_ANNOTATION, PruneBlocked, plan_prune};

use crate::api::InventoryEntry;
use discovery::{Discovered, gvk_of};
use error::{api_or_forbidden, client_error, forbidden};

/// The field manager for every server-side apply, so ownership is stable across versions and replicas.
pub const FIELD_MANAGER: &str = "ferry";

/// How to apply one set.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The Environment the objects are labelled for; `None` (a local `ferry diff`) adds no labels and claims
    /// nothing.
    pub owner: Option<Owner>,
    /// Overrides every namespaced object's namespace.
    pub target_namespace: Option<String>,
    /// For namespaced objects that name no namespace.
    pub default_namespace: String,
    /// Take fields over from other declarative appliers.
    pub force: bool,
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub inventory: Vec<InventoryEntry>,
    pub created: Vec<String>,
    pub configured: Vec<String>,
    pub unchanged: usize,
    /// Each applied object's resourceVersion after the apply (what a later sync compares with).
    pub versions: std::collections::BTreeMap<InventoryEntry, String>,
    /// Each applied object's [`digest`] at that resourceVersion: what it is, for as long as it keeps it.
    pub digests: std::collections::BTreeMap<InventoryEntry, u64>,
}

/// What the caller knows of objects it applied before: each one's resourceVersion and [`digest`] then. An object
/// whose dry run still shows that resourceVersion is that object, so it need not be read to be compared.
pub type Known = std::collections::BTreeMap<InventoryEntry, (String, u64)>;

/// Requests one Environment's sync has in flight at once (dry runs; writes of objects of one apply step).
const PARALLEL_REQUESTS: usize = 4;

impl ApplyReport {
    pub fn changed(&self) -> bool {
        !self.created.is_empty() || !self.configured.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} created, {} configured, {} unchanged",
            self.created.len(),
            self.configured.len(),
            self.unchanged
        )
    }
}

/// One object that applying would change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDiff {
    pub object: String,
    /// `None` when the object would be created.
    pub live: Option<Value>,
    pub desired: Value,
}

/// Annotation ordering objects within a stage (lower first), like Argo CD's sync waves.
pub const APPLY_ORDER_ANNOTATION: &str = "ferry.dev/apply-order";

/// Applies and prunes with a discovery cache shared across reconciles.
pub struct Applier {
    client: Client,
    resources: Discovered,
}
