//! `ferry events [NAME]`: what the controllers reported about Ferry's objects in a namespace, oldest first,
//! like `flux events`. Events of other kinds (Pods, Deployments, …) are left to `kubectl events`.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::pipeline::{CliError, age, table};
use crate::api::GROUP;

/// One Event as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// When it last happened, if the Event says.
    pub time: Option<Timestamp>,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    /// `Kind/name` of the object it is about.
    pub object: String,
    pub message: String,
}

/// Events about Ferry's kinds in `namespace` (only those about objects named `name`, if given), oldest first.
pub async fn events(client: &Client, namespace: &str, name: Option<&str>) -> Result<Vec<EventRow>, CliError> {
    let list = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    Ok(ferry_events(list, name))
}

/// The Events about Ferry's kinds (and `name`), as rows sorted oldest first.
pub fn ferry_events(list: Vec<Event>, name: Option<&str>) -> Vec<EventRow> {
    let mut rows: Vec<(String, EventRow)> = list
        .into_iter()
        .filter_map(|e| {
            let regarding = e.regarding.as_ref()?;
            let ours = regarding
                .api_version
                .as_deref()
                .is_some_and(|v| v.split('/').next() == Some(GROUP));
            let object_name = regarding.name.clone().unwrap_or_default();
            if !ours || name.is_some_and(|n| n != object_name) {
                return None;
            }
            let time = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let row = EventRow {
                time,
                type_: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                object: format!("{}/{object_name}", regarding.kind.clone().unwrap_or_default()),
                message: e.note.clone().unwrap_or_default(),
            };
            Some((e.name_any(), row))
        })
        .collect();
    // Ferry names Events `<object>.<nanoseconds hex>`: a tie on time keeps creation order within an object.
    rows.sort_by(|(a_name, a), (b_name, b)| (a.time, a_name).cmp(&(b.time, b_name)));
    rows.into_iter().map(|(_, row)| row).collect()
}

/// The rows as a table: LAST SEEN (age at `now`), TYPE, REASON, OBJECT, MESSAGE. Messages are shown whole.
pub fn format_events(rows: &[EventRow], now: Timestamp) -> String {
    if rows.is_empty() {
        return "no events\n".to_string();
    }
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                r.time.map(|t| age(now, t)).unwrap_or_default(),
                r.type_.clone(),
                r.reason.clone(),
                r.object.clone(),
                r.message.replace('\n', " "),
            ]
        })
        .collect();
    table(&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], cells)
}

/// `ferry events`.
pub async fn run(args: crate::cli::args::EventsArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    let rows = events(&client, &namespace, args.name.as_deref()).await?;
    print!("{}", format_events(&rows, Timestamp::now()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, api_version: &str, kind: &str, object: &str, time: &str, reason: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "demo"},
            "eventTime": time,
            "type": "Normal",
            "reason": reason,
            "note": format!("{reason} note"),
            "regarding": {"apiVersion": api_version, "kind": kind, "name": object, "namespace": "demo"},
        }))
        .expect("an Event")
    }

    #[test]
    fn only_ferry_kinds_oldest_first_and_by_name() {
        let list = vec![
            event(
                "b",
                "ferry.dev/v1alpha1",
                "Environment",
                "staging",
                "2026-01-01T00:00:09.000000Z",
                "Applied",
            ),
            event("p", "v1", "Pod", "staging", "2026-01-01T00:00:01.000000Z", "Pulled"),
            event(
                "a",
                "ferry.dev/v1alpha1",
                "GitRepository",
                "config",
                "2026-01-01T00:00:03.000000Z",
                "NewRevision",
            ),
        ];
        let rows = ferry_events(list.clone(), None);
        let shown: Vec<&str> = rows.iter().map(|r| r.object.as_str()).collect();
        assert_eq!(shown, ["GitRepository/config", "Environment/staging"]);
        let only = ferry_events(list, Some("staging"));
        assert_eq!(only.len(), 1, "the Pod of the same name is not Ferry's: {only:?}");
        let now = Timestamp::from_second(1767225612).expect("time"); // 2026-01-01T00:00:12Z
        let text = format_events(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("LAST SEEN") && lines[0].contains("MESSAGE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("9s ") && lines[1].contains("NewRevision note"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("3s ") && lines[2].contains("Environment/staging"),
            "{text}"
        );
    }
}
