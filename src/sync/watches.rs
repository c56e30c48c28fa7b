//! Metadata-only watches on the objects Ferry applied (selected by its ownership label, one watch per kind), so
//! that a steady state costs no requests and a hand edit or deletion wakes its Environment at once.
//!
//! One [`OwnedObjectWatches`] watches the cluster Ferry runs in, as Ferry; each target cluster has its own, with
//! its kubeconfig's credentials (see [`super::remote`]).
//!
//! Each watch keeps the resourceVersion of every owned object of its kind. An event whose resourceVersion is not
//! the one this process applied (a hand edit, a deletion, another writer) enqueues the owning Environment. A kind
//! Ferry may not list or watch (its RBAC is narrow in multi-tenant installs) is simply not watched: its objects
//! are checked by the dry-run path at every sync, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, info};

use super::applied::{AppliedRecords, EnvKey};
use crate::api::{Environment, InventoryEntry};
use crate::apply::{OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};

/// (apiVersion, kind) as the render names it.
type KindKey = (String, String);
/// (namespace, name) of an object.
type ObjectKey = (Option<String>, String);

#[derive(Default)]
struct KindCache {
    /// The initial list finished: absence from `objects` means the object is gone.
    synced: bool,
    /// The kind cannot be watched (forbidden); nothing is ever known of it.
    unwatchable: bool,
    objects: HashMap<ObjectKey, Seen>,
}

/// An owned object as the watch last saw it.
#[derive(Clone)]
struct Seen {
    version: String,
    owner: Option<EnvKey>,
}

/// The watches of one cluster, with one identity: the cluster Ferry runs in (Ferry's own), or a target cluster
/// (the kubeconfig's). Dropping it stops its watches.
pub struct OwnedObjectWatches {
    client: Client,
    /// A namespaced Ferry only follows its own namespace's Environments.
    namespace: Option<String>,
    kinds: Arc<Mutex<HashMap<KindKey, KindCache>>>,
    records: Arc<AppliedRecords>,
    trigger: mpsc::UnboundedSender<ObjectRef<Environment>>,
    triggers: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<Environment>>>>,
    /// The watch tasks, aborted on drop.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Held by every running watch task: how many still run (`Arc::strong_count` - 1).
    alive: Arc<()>,
}

impl OwnedObjectWatches {
    pub fn new(client: Client, namespace: Option<String>, records: Arc<AppliedRecords>) -> Self {
        let (trigger, triggers) = mpsc::unbounded();
        let mut watches = Self::with_trigger(client, namespace, records, trigger);
        watches.triggers = Mutex::new(Some(triggers));
        watches
    }

    /// Watches that wake Environments through another set's channel (a target cluster's, through the local
    /// one's: the controller listens to one).
    pub fn with_trigger(
        client: Client,
        namespace: Option<String>,
        records: Arc<AppliedRecords>,
        trigger: mpsc::UnboundedSender<ObjectRef<Environment>>,
    ) -> Self {
        OwnedObjectWatches {
            client,
            namespace,
            kinds: Arc::default(),
            records,
            trigger,
            triggers: Mutex::new(None),
            tasks: Mutex::default(),
            alive: Arc::new(()),
        }
    }

    /// Where this set's events go, for sets that share it.
    pub fn trigger(&self) -> mpsc::UnboundedSender<ObjectRef<Environment>> {
        self.trigger.clone()
    }

    /// Watch tasks still running (for tests: none after the set is dropped).
    pub fn running(&self) -> usize {
        Arc::strong_count(&self.alive) - 1
    }

    /// A counter of this set's running watch tasks that outlives the set.
    pub fn liveness(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.alive)
    }

    /// The Environments to reconcile because an object of theirs changed; taken once, by the controller.
    pub fn take_triggers(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<Environment>>> {
        self.triggers.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The object's resourceVersion as the watch last saw it; `None` when it is gone or its kind is not watched
    /// (yet).
    pub fn live_version(&self, entry: &InventoryEntry) -> Option<String> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let cache = kinds.get(&(entry.api_version.clone(), entry.kind.clone()))?;
        if !cache.synced {
            return None;
        }
        cache
            .objects
            .get(&(entry.namespace.clone(), entry.name.clone()))
            .map(|seen| seen.version.clone())
    }

    /// Starts a watch for each kind not watched yet. `resource` maps a kind to its API resource (from discovery).
    pub fn ensure<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a InventoryEntry>,
        resource: impl Fn(&str, &str) -> Option<ApiResource>,
    ) {
        for entry in entries {
            let key = (entry.api_version.clone(), entry.kind.clone());
            {
                let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
                if kinds.contains_key(&key) {
                    continue;
                }
                kinds.insert(key.clone(), KindCache::default());
            }
            let Some(ar) = resource(&entry.api_version, &entry.kind) else {
                continue;
            };
            let task = tokio::spawn(self.watch(key, ar));
            self.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task.abort_handle());
        }
    }

    fn watch(&self, key: KindKey, ar: ApiResource) -> impl std::future::Future<Output = ()> + Send + 'static {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &ar);
        let selector = match &self.namespace {
            Some(ns) => format!("{OWNER_NAMESPACE_LABEL}={ns},{OWNER_NAME_LABEL}"),
            None => OWNER_NAME_LABEL.to_string(),
        };
        let config = watcher::Config::default().labels(&selector);
        let kinds = self.kinds.clone();
        let records = self.records.clone();
        let trigger = self.trigger.clone();
        let alive = self.alive.clone();
        async move {
            let _alive = alive;
            let mut stream = watcher(api, config).default_backoff().boxed();
            let mut buffer = HashMap::new();
            while let Some(event) = stream.next().await {
                let update = |f: &mut dyn FnMut(&mut KindCache)| {
                    let mut kinds = kinds.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(cache) = kinds.get_mut(&key) {
                        f(cache);
                    }
                };
                match event {
                    Ok(watcher::Event::Init) => buffer = HashMap::new(),
                    Ok(watcher::Event::InitApply(o)) => {
                        // Changed while nobody watched (before the first list, or between a lost watch and
                        // this list): wakes its Environment like a live event.
                        if let Some(env) = owner(&o)
                            && let Some(applied) = records.applied_version(&env, &entry_of(&o, &key))
                            && o.resource_version().as_deref() != Some(applied.as_str())
                        {
                            debug!(kind = %key.1, object = %o.name_any(), "owned object changed while not watched");
                            let _ = trigger.unbounded_send(ObjectRef::new(&env.1).within(&env.0));
                        }
                        buffer.insert(object_key(&o), seen(&o));
                    }
                    Ok(watcher::Event::InitDone) => {
                        let objects = std::mem::take(&mut buffer);
                        let mut gone = Vec::new();
                        update(&mut |c| {
                            gone = c
                                .objects
                                .iter()
                                .filter(|(k, _)| !objects.contains_key(*k))
                                .filter_map(|(_, seen)| seen.owner.clone())
                                .collect();
                            c.objects = objects.clone();
                            c.synced = true;
                        });
                        // Deleted while nobody watched.
                        for (namespace, name) in gone {
                            let _ = trigger.unbounded_send(ObjectRef::new(&name).within(&namespace));
                        }
                        debug!(kind = %key.1, "watching owned objects");
                    }
                    Ok(watcher::Event::Apply(o)) => {
                        let version = o.resource_version().unwrap_or_default();
                        update(&mut |c| {
                            c.objects.insert(object_key(&o), seen(&o));
                        });
                        wake_owner(&o, &key, Some(&version), &records, &trigger);
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        update(&mut |c| {
                            c.objects.remove(&object_key(&o));
                        });
                        wake_owner(&o, &key, None, &records, &trigger);
                    }
                    Err(e) if is_forbidden(&e) => {
                        info!(kind = %key.1, "not allowed to watch this kind; its objects are checked at every sync");
                        update(&mut |c| {
                            c.unwatchable = true;
                            c.synced = false;
                        });
                        return;
                    }
                    Err(e) => {
                        // Events may have been missed: nothing is known until the watch has listed again.
                        debug!(kind = %key.1, error = %e, "watch interrupted");
                        update(&mut |c| c.synced = false);
                    }
                }
            }
        }
    }
}

impl Drop for OwnedObjectWatches {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

fn object_key(o: &PartialObjectMeta<DynamicObject>) -> ObjectKey {
    (o.namespace(), o.name_any())
}

fn entry_of(o: &PartialObjectMeta<DynamicObject>, key: &KindKey) -> InventoryEntry {
    InventoryEntry {
        api_version: key.0.clone(),
        kind: key.1.clone(),
        namespace: o.namespace(),
        name: o.name_any(),
    }
}

fn owner(o: &PartialObjectMeta<DynamicObject>) -> Option<EnvKey> {
    let labels = o.labels();
    Some((
        labels.get(OWNER_NAMESPACE_LABEL)?.clone(),
        labels.get(OWNER_NAME_LABEL)?.clone(),
    ))
}

fn seen(o: &PartialObjectMeta<DynamicObject>) -> Seen {
    Seen {
        version: o.resource_version().unwrap_or_default(),
        owner: owner(o),
    }
}

/// Enqueues the object's Environment unless the event is this process's own write (the resourceVersion it
/// recorded for the object).
fn wake_owner(
    o: &PartialObjectMeta<DynamicObject>,
    key: &KindKey,
    version: Option<&str>,
    records: &AppliedRecords,
    trigger: &mpsc::UnboundedSender<ObjectRef<Environment>>,
) {
    let Some(env) = owner(o) else {
        return;
    };
    let (namespace, name) = &env;
    let entry = entry_of(o, key);
    if version.is_some() && records.applied_version(&env, &entry).as_deref() == version {
        return;
    }
    debug!(object = %entry, environment = %format!("{namespace}/{name}"), "owned object changed");
    let _ = trigger.unbounded_send(ObjectRef::new(name).within(namespace));
}

fn is_forbidden(e: &watcher::Error) -> bool {
    let api = match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            e
        }
        _ => return false,
    };
    matches!(api, kube::Error::Api(s) if s.code == 403)
}
