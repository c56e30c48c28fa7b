//! Events, one per status change. kube-runtime's `Recorder` folds events with the same reason into one series
//! and keeps the first note, which would leave "applied revision A" on screen after revision B was applied;
//! Ferry only emits an event when status changed, so each one is created as its own object.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

pub const REPORTING_CONTROLLER: &str = "ferry.dev/controller";

pub struct EventPublisher {
    client: Client,
    instance: String,
    /// Keys (see [`EventPublisher::confirm_once`]) whose once-only Event this process has made sure of.
    confirmed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl EventPublisher {
    pub fn new(client: Client) -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "ferry".to_string());
        EventPublisher {
            client,
            instance,
            confirmed: Default::default(),
        }
    }

    /// Best-effort: failing to record an event must never fail a reconcile.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let name = format!("{}.{:x}", obj.name_any(), Timestamp::now().as_nanosecond());
        self.create(obj, name, warning, reason, note).await;
    }

    /// An Event that must exist once whatever restarts happen around it (a Promotion entering a phase): created
    /// under the deterministic `name`, so creating it again is refused (409) instead of duplicating it.
    pub async fn publish_once<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        name: String,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.create(obj, name, warning, reason, note).await;
    }

    /// Makes sure, once per `key` in this process, that the once-only Event `name` exists, creating it if it
    /// does not: a process killed between a status write and its Event leaves the Event to the next one.
    /// A read that fails is taken as "exists" (best effort: never a duplicate).
    pub async fn confirm_once<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        key: &str,
        name: String,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        if self.confirmed.lock().unwrap_or_else(|e| e.into_inner()).contains(key) {
            return;
        }
        let namespace = obj.namespace().unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(event = %name, "recording an Event a previous process did not");
                self.create(obj, name, warning, reason, note).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check for an event");
                return;
            }
        }
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string());
    }

    async fn create<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        name: String,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let namespace = obj.namespace().unwrap_or_else(|| "default".to_string());
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            reason: Some(reason.to_string()),
            action: Some("Reconcile".to_string()),
            // The API server caps notes at 1 KiB.
            note: Some(truncate(note, 1024)),
            regarding: Some(obj.object_ref(&())),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, "failed to publish event"),
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncates_on_char_boundaries() {
        let s = "é".repeat(600);
        let t = super::truncate(s, 1024);
        assert!(t.len() <= 1024 && t.ends_with("..."));
        assert_eq!(super::truncate("short".into(), 1024), "short");
    }
}
