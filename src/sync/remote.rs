//! Watch sets for target clusters (Environments with `spec.kubeConfig`): one [`OwnedObjectWatches`] per cluster
//! identity — the kubeconfig as the Secret holds it, so its server *and* its credentials — shared by every
//! Environment whose Secret holds the same kubeconfig, and stopped when none does any more. The watches use the
//! kubeconfig's credentials, the identity the Environment's objects are applied with: what those may not list
//! and watch is simply not watched (checked by the dry run at every sync, as locally). A rotated kubeconfig is
//! another identity: its Environments move to a new set at their next reconcile, and the old set stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures::channel::mpsc;
use kube::Client;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::applied::{AppliedRecords, EnvKey};
use super::watches::OwnedObjectWatches;
use crate::api::Environment;
use crate::cluster::ClusterIdentity;

struct WatchSet {
    watches: Arc<OwnedObjectWatches>,
    /// The API server's URL, for logs and tests.
    server: String,
    started: std::time::Instant,
}

#[derive(Default)]
struct State {
    sets: HashMap<ClusterIdentity, WatchSet>,
    /// Which set each Environment's last reconcile used.
    users: HashMap<EnvKey, ClusterIdentity>,
    /// Running-task counters of stopped sets, until their tasks are gone.
    stopped: Vec<Weak<()>>,
}

/// Every target cluster's watch set.
pub struct RemoteWatches {
    namespace: Option<String>,
    records: Arc<AppliedRecords>,
    trigger: mpsc::UnboundedSender<ObjectRef<Environment>>,
    state: Mutex<State>,
}

/// One target cluster's watch set, as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSetInfo {
    pub server: String,
    /// When the set started (a rotated kubeconfig starts a new one).
    pub started: Option<std::time::Instant>,
    pub environments: usize,
    /// Watch tasks running (one per kind).
    pub running: usize,
}

impl RemoteWatches {
    /// `trigger` is the local watches' channel: events wake Environments through the same controller stream.
    pub fn new(
        namespace: Option<String>,
        records: Arc<AppliedRecords>,
        trigger: mpsc::UnboundedSender<ObjectRef<Environment>>,
    ) -> Self {
        RemoteWatches {
            namespace,
            records,
            trigger,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watch set for `env`, which targets the cluster `identity` with `client`: started if none runs for
    /// that identity. A set `env` used before under another identity stops when nobody else uses it.
    pub fn for_environment(
        &self,
        env: &EnvKey,
        identity: &ClusterIdentity,
        server: &str,
        client: &Client,
    ) -> Arc<OwnedObjectWatches> {
        let identity = identity.clone();
        let mut state = self.state();
        let previous = state.users.insert(env.clone(), identity.clone());
        let watches = match state.sets.get(&identity) {
            Some(set) => set.watches.clone(),
            None => {
                let server = server.to_string();
                info!(%server, "watching the objects applied to a target cluster");
                let watches = Arc::new(OwnedObjectWatches::with_trigger(
                    client.clone(),
                    self.namespace.clone(),
                    self.records.clone(),
                    self.trigger.clone(),
                ));
                state.sets.insert(
                    identity.clone(),
                    WatchSet {
                        watches: watches.clone(),
                        server,
                        started: std::time::Instant::now(),
                    },
                );
                watches
            }
        };
        if let Some(previous) = previous
            && previous != identity
        {
            stop_unused(&mut state, &previous);
        }
        watches
    }

    /// `env` no longer targets a cluster through a kubeconfig (it was deleted, targets the local cluster, or its
    /// kubeconfig cannot be read): its set stops when nobody else uses it.
    pub fn release(&self, env: &EnvKey) {
        let mut state = self.state();
        if let Some(previous) = state.users.remove(env) {
            stop_unused(&mut state, &previous);
        }
    }

    /// Releases every Environment `keep` says is gone (deleted without this process seeing it finalized).
    pub fn retain(&self, keep: impl Fn(&EnvKey) -> bool) {
        let mut state = self.state();
        let gone: Vec<EnvKey> = state.users.keys().filter(|k| !keep(k)).cloned().collect();
        for env in gone {
            if let Some(previous) = state.users.remove(&env) {
                stop_unused(&mut state, &previous);
            }
        }
    }

    /// The running sets, and the watch tasks of stopped sets that still run (one entry without `started`; a
    /// stopped set a reconcile still holds counts one more until it is dropped).
    pub fn sets(&self) -> Vec<WatchSetInfo> {
        let mut state = self.state();
        let mut out: Vec<WatchSetInfo> = state
            .sets
            .iter()
            .map(|(identity, set)| WatchSetInfo {
                server: set.server.clone(),
                started: Some(set.started),
                environments: state.users.values().filter(|i| *i == identity).count(),
                running: set.watches.running(),
            })
            .collect();
        state.stopped.retain(|w| w.strong_count() > 0);
        let lingering: usize = state.stopped.iter().map(Weak::strong_count).sum();
        if lingering > 0 {
            out.push(WatchSetInfo {
                server: String::new(),
                started: None,
                environments: 0,
                running: lingering,
            });
        }
        out
    }
}

/// Stops the set of `identity` when no Environment uses it any more.
fn stop_unused(state: &mut State, identity: &ClusterIdentity) {
    if state.users.values().any(|i| i == identity) {
        return;
    }
    if let Some(set) = state.sets.remove(identity) {
        info!(server = %set.server, "no Environment targets this cluster any more; its watches stop");
        state.stopped.push(set.watches.liveness());
        // Dropped here, or by the reconcile still holding it: either aborts its tasks.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("url"));
        Client::try_from(config).expect("client")
    }

    fn env(name: &str) -> EnvKey {
        ("team".to_string(), name.to_string())
    }

    #[tokio::test]
    async fn one_set_per_identity_stopped_when_nobody_targets_it() {
        let (trigger, _triggers) = mpsc::unbounded();
        let remote = RemoteWatches::new(None, Arc::default(), trigger);
        let (old, new) = (
            ClusterIdentity::of_kubeconfig("kubeconfig one"),
            ClusterIdentity::of_kubeconfig("kubeconfig two"),
        );
        let a = remote.for_environment(&env("a"), &old, "https://one", &client());
        let b = remote.for_environment(&env("b"), &old, "https://one", &client());
        assert!(Arc::ptr_eq(&a, &b), "the same kubeconfig shares one set");
        assert_eq!(remote.sets().len(), 1);
        assert_eq!(remote.sets()[0].environments, 2);
        drop((a, b));

        // `a` moves to a rotated kubeconfig: a second set; the first stays for `b`.
        remote.for_environment(&env("a"), &new, "https://one", &client());
        assert_eq!(remote.sets().len(), 2);
        // `b` goes: its set stops.
        remote.release(&env("b"));
        let sets = remote.sets();
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert_eq!(sets[0].environments, 1);
        // `a` is no longer in the cluster's cache: gone too.
        remote.retain(|e| e != &env("a"));
        assert!(remote.sets().is_empty());
        // Releasing what is not there is a no-op.
        remote.release(&env("a"));
    }
}
