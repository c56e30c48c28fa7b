//! What each Environment last applied, as the API server answered it: the resourceVersion of every object. A
//! sync of the same revision and spec whose objects all still carry those resourceVersions (as the watches see
//! them) has nothing to do and asks the API server nothing. Pure bookkeeping and decisions; the watches that
//! feed live resourceVersions are in [`super::watches`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::InventoryEntry;

/// (namespace, name) of an Environment.
pub type EnvKey = (String, String);

/// One Environment's last successful full sync.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRecord {
    /// The revision and generation that sync applied: any other is a new sync.
    pub fingerprint: String,
    /// Every applied object and the resourceVersion it had when the sync ended.
    pub versions: BTreeMap<InventoryEntry, String>,
    /// Every applied object's digest at that resourceVersion (see [`crate::apply::digest`]).
    pub digests: BTreeMap<InventoryEntry, u64>,
    /// The Ready message that sync ended with, repeated by skipped syncs so status does not change.
    pub message: String,
    /// When the dry-run path last ran for it.
    pub full_sync_at: Instant,
}

impl AppliedRecord {
    /// What the next full sync needs not read again: each object at the resourceVersion it was left at, with
    /// its digest (objects without a digest are read).
    pub fn known(&self) -> crate::apply::Known {
        self.versions
            .iter()
            .filter_map(|(entry, version)| Some((entry.clone(), (version.clone(), *self.digests.get(entry)?))))
            .collect()
    }
}

/// Why a sync cannot be skipped (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MustSync {
    /// Nothing was applied by this process yet (a start, a failure, a change of spec or revision).
    NoRecord,
    Changed,
    /// The periodic full check is due (admission webhooks and defaulting can change without an event).
    FullSyncDue,
    /// An object changed or went away since it was applied (or its kind is not watched).
    Drifted(InventoryEntry),
}

/// Whether a sync at `fingerprint` may be skipped: only when everything `record` applied still carries the
/// resourceVersion it had then. `live` answers from the watches' caches; `None` (deleted, or a kind the watches
/// cannot see) means the object must be checked.
pub fn must_sync(
    record: Option<&AppliedRecord>,
    fingerprint: &str,
    live: impl Fn(&InventoryEntry) -> Option<String>,
    now: Instant,
    full_sync_interval: Duration,
) -> Option<MustSync> {
    let Some(record) = record else {
        return Some(MustSync::NoRecord);
    };
    if record.fingerprint != fingerprint {
        return Some(MustSync::Changed);
    }
    if now.saturating_duration_since(record.full_sync_at) >= full_sync_interval {
        return Some(MustSync::FullSyncDue);
    }
    for (entry, version) in &record.versions {
        if live(entry).as_deref() != Some(version.as_str()) {
            return Some(MustSync::Drifted(entry.clone()));
        }
    }
    None
}

/// The fingerprint of a sync: the revision at the Environment's generation (the spec, path and target included).
pub fn fingerprint(revision: &str, generation: Option<i64>) -> String {
    format!("{revision}@{}", generation.unwrap_or_default())
}

/// Every Environment's record, in memory: after a restart the first sync of each takes the full path.
#[derive(Default)]
pub struct AppliedRecords {
    records: Mutex<HashMap<EnvKey, AppliedRecord>>,
}

impl AppliedRecords {
    pub fn get(&self, env: &EnvKey) -> Option<AppliedRecord> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).get(env).cloned()
    }

    pub fn set(&self, env: EnvKey, record: AppliedRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(env, record);
    }

    /// Forgets an Environment's record (a failed sync, a deletion): its next sync takes the full path.
    pub fn forget(&self, env: &EnvKey) {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).remove(env);
    }

    /// How long until the Environment's periodic full check is due (`None` without a record: its next sync
    /// takes the full path anyway).
    pub fn full_sync_due_in(&self, env: &EnvKey, full_sync_interval: Duration, now: Instant) -> Option<Duration> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(env)
            .map(|r| full_sync_interval.saturating_sub(now.saturating_duration_since(r.full_sync_at)))
    }

    /// The resourceVersion this process last applied `entry` at, for the Environment that owns it.
    pub fn applied_version(&self, env: &EnvKey, entry: &InventoryEntry) -> Option<String> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(env)
            .and_then(|r| r.versions.get(entry).cloned())
    }
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

    fn record(at: Instant) -> AppliedRecord {
        AppliedRecord {
            fingerprint: fingerprint("main@sha1:abc", Some(2)),
            versions: [(entry("a"), "10".to_string()), (entry("b"), "11".to_string())].into(),
            digests: [(entry("a"), 1)].into(),
            message: "applied revision main@sha1:abc (2 objects)".into(),
            full_sync_at: at,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn an_unchanged_sync_is_skipped() {
        let now = Instant::now();
        let live = |e: &InventoryEntry| Some(if e.name == "a" { "10" } else { "11" }.to_string());
        let fp = fingerprint("main@sha1:abc", Some(2));
        assert_eq!(must_sync(Some(&record(now)), &fp, live, now, HOUR), None);
    }

    #[test]
    fn anything_new_or_changed_takes_the_full_path() {
        let now = Instant::now();
        let same = |e: &InventoryEntry| Some(if e.name == "a" { "10" } else { "11" }.to_string());
        let fp = fingerprint("main@sha1:abc", Some(2));
        assert_eq!(must_sync(None, &fp, same, now, HOUR), Some(MustSync::NoRecord));
        for other in [
            fingerprint("main@sha1:def", Some(2)),
            fingerprint("main@sha1:abc", Some(3)),
        ] {
            assert_eq!(
                must_sync(Some(&record(now)), &other, same, now, HOUR),
                Some(MustSync::Changed)
            );
        }
        // Edited by hand (a new resourceVersion), deleted, or of a kind no watch sees.
        let edited = |e: &InventoryEntry| Some(if e.name == "a" { "10" } else { "12" }.to_string());
        assert_eq!(
            must_sync(Some(&record(now)), &fp, edited, now, HOUR),
            Some(MustSync::Drifted(entry("b")))
        );
        let gone = |e: &InventoryEntry| (e.name == "b").then(|| "11".to_string());
        assert_eq!(
            must_sync(Some(&record(now)), &fp, gone, now, HOUR),
            Some(MustSync::Drifted(entry("a")))
        );
    }

    #[test]
    fn what_is_known_pairs_each_version_with_its_digest() {
        let known = record(Instant::now()).known();
        assert_eq!(known, [(entry("a"), ("10".to_string(), 1))].into());
    }

    #[test]
    fn the_full_check_comes_round_after_the_interval() {
        let then = Instant::now();
        let same = |e: &InventoryEntry| Some(if e.name == "a" { "10" } else { "11" }.to_string());
        let fp = fingerprint("main@sha1:abc", Some(2));
        let later = then + HOUR;
        assert_eq!(
            must_sync(Some(&record(then)), &fp, same, later, HOUR),
            Some(MustSync::FullSyncDue)
        );
        assert_eq!(
            must_sync(Some(&record(then)), &fp, same, later - Duration::from_secs(1), HOUR),
            None
        );
    }
}
