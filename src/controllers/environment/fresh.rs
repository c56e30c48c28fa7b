//! Whether an Environment from the controller's cache is fresh enough to decide on, without reading it again.
//!
//! The cache can lag behind this process's own last write (a status patch, the finalizer): deciding from a copy
//! without that write would re-announce a revision, or write status over it. So the process keeps, per
//! Environment, the newest resourceVersion it knows (the one its last write left, or the last one it read), and
//! reads the Environment from the API server only when the cache shows another one: a lagging cache, or a change
//! by someone else (read once, then known).

use std::collections::HashMap;
use std::sync::Mutex;

/// (namespace, name) of an Environment.
type Key = (String, String);

/// What is known of one Environment's resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// The newest version this process wrote or read.
    At(String),
    /// A write may or may not have happened (it failed on the way back): only a read tells.
    Unsure,
    /// This process wrote over this version without being handed what the write left (kube-runtime's finalizer
    /// helper): a copy still at it lacks the write; any other one is from after it.
    Past(String),
}

/// The newest resourceVersion this process knows of each Environment.
#[derive(Default)]
pub struct Freshness(Mutex<HashMap<Key, Known>>);

/// Whether a cached copy at `cached` is at least as new as what is known. Nothing known (no write by this
/// process since it started, or since the Environment was last forgotten): the cache has all there is.
fn is_current(known: Option<&Known>, cached: Option<&str>) -> bool {
    match known {
        None => true,
        Some(Known::At(version)) => cached == Some(version.as_str()),
        Some(Known::Unsure) => false,
        Some(Known::Past(version)) => cached.is_some_and(|c| c != version),
    }
}

impl Freshness {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Known>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the cached copy, at resourceVersion `cached`, can be decided on.
    pub fn is_current(&self, key: &Key, cached: Option<&str>) -> bool {
        is_current(self.map().get(key), cached)
    }

    /// This process wrote (or read) the Environment at `version`.
    pub fn saw(&self, key: &Key, version: Option<&str>) {
        let known = match version {
            Some(v) if !v.is_empty() => Known::At(v.to_string()),
            _ => Known::Unsure,
        };
        self.map().insert(key.clone(), known);
    }

    /// This process wrote over the Environment at `version` (or tried to) and does not know what the write left.
    pub fn wrote_over(&self, key: &Key, version: Option<&str>) {
        let known = match version {
            Some(v) if !v.is_empty() => Known::Past(v.to_string()),
            _ => Known::Unsure,
        };
        self.map().insert(key.clone(), known);
    }

    /// A write failed: it may have happened all the same.
    pub fn unsure(&self, key: &Key) {
        self.map().insert(key.clone(), Known::Unsure);
    }

    /// The Environment is gone.
    pub fn forget(&self, key: &Key) {
        self.map().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("ns".into(), "env".into())
    }

    #[test]
    fn the_cache_is_trusted_until_this_process_writes() {
        let f = Freshness::default();
        assert!(f.is_current(&key(), Some("5")));
        f.saw(&key(), Some("7"));
        // A cache still without the write, or with a later change by someone else: read again.
        assert!(!f.is_current(&key(), Some("5")));
        assert!(!f.is_current(&key(), Some("9")));
        assert!(!f.is_current(&key(), None));
        assert!(f.is_current(&key(), Some("7")));
        // Read at 9: known from then on.
        f.saw(&key(), Some("9"));
        assert!(f.is_current(&key(), Some("9")));
        // Other Environments are apart.
        assert!(f.is_current(&("ns".into(), "other".into()), Some("1")));
    }

    #[test]
    fn a_failed_write_is_settled_only_by_a_read() {
        let f = Freshness::default();
        f.saw(&key(), Some("7"));
        f.unsure(&key());
        assert!(!f.is_current(&key(), Some("7")));
        f.saw(&key(), None);
        assert!(
            !f.is_current(&key(), Some("7")),
            "a write without a version says nothing"
        );
        f.saw(&key(), Some("8"));
        assert!(f.is_current(&key(), Some("8")));
        f.forget(&key());
        assert!(f.is_current(&key(), Some("1")));
    }

    #[test]
    fn a_write_whose_result_is_not_known_outdates_only_the_copy_it_was_made_over() {
        let f = Freshness::default();
        f.wrote_over(&key(), Some("5"));
        assert!(
            !f.is_current(&key(), Some("5")),
            "the copy the finalizer was added over"
        );
        assert!(!f.is_current(&key(), None));
        assert!(f.is_current(&key(), Some("6")));
        f.wrote_over(&key(), None);
        assert!(!f.is_current(&key(), Some("6")));
    }
}
