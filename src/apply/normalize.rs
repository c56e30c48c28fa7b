//! Pure comparisons for "write only what differs": a server-side dry run of the desired object against the live
//! object, both stripped of what the server owns.

use serde_json::Value;

/// Metadata the server owns or rewrites on every write; never a reason to write.
const SERVER_METADATA: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// The object without server-owned fields: what "the same object" means for Ferry.
pub fn normalized(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for key in SERVER_METADATA {
                meta.remove(key);
            }
            // kubectl's last-applied annotation and the deployment revision counter are written by others.
            if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                annotations.remove("deployment.kubernetes.io/revision");
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    out
}

/// Whether applying would change the live object: the dry-run result (desired merged into live, defaults filled
/// in by the server) differs from the live object outside server-owned fields.
pub fn differs(dry_run: &Value, live: &Value) -> bool {
    normalized(dry_run) != normalized(live)
}

/// A digest of an object (normally a [`normalized`] one) that does not depend on the order of its keys: equal
/// objects have equal digests, so one remembered digest stands for the object it was taken of.
pub fn digest(object: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(v: &Value, h: &mut std::collections::hash_map::DefaultHasher) {
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.to_string()).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(items) => {
                (4u8, items.len()).hash(h);
                items.iter().for_each(|i| feed(i, h));
            }
            Value::Object(map) => {
                (5u8, map.len()).hash(h);
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    k.hash(h);
                    feed(&map[k], h);
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(object, &mut h);
    h.finish()
}

/// Field managers named in a server-side-apply conflict message, e.g.
/// `Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.color`.
pub fn conflicting_managers(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(i) = rest.find("conflict with \"") {
        rest = &rest[i + "conflict with \"".len()..];
        if let Some(end) = rest.find('"') {
            let name = rest[..end].to_string();
            if !out.contains(&name) {
                out.push(name);
            }
            rest = &rest[end..];
        }
    }
    out
}

/// Declarative tools that write with `Update` rather than server-side apply: their fields are theirs to keep.
const DECLARATIVE_UPDATERS: [&str; 8] = [
    "helm",
    "kubectl-client-side-apply",
    "argocd-controller",
    "argocd-application-controller",
    "kustomize-controller",
    "helm-controller",
    "terraform-provider-kubernetes",
    "pulumi-kubernetes",
];

/// Managers that wrote with an imperative `Update` (kubectl edit/patch/scale, a script): their changes are drift
/// to revert. Managers that use `Apply`, and declarative tools that use `Update` (Helm, client-side
/// `kubectl apply`, …), are other owners: a conflict with them is reported instead.
pub fn imperative_managers(live: &Value) -> Vec<String> {
    live["metadata"]["managedFields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter(|f| f["operation"] == "Update")
                .filter_map(|f| f["manager"].as_str().map(str::to_string))
                .filter(|m| !DECLARATIVE_UPDATERS.iter().any(|d| m.starts_with(d)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_owned_fields_are_not_differences() {
        let live = json!({"metadata": {"name": "a", "resourceVersion": "5", "generation": 2, "uid": "u",
            "managedFields": [{"manager": "ferry"}], "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 2}, "status": {"ready": 1}});
        let dry = json!({"metadata": {"name": "a", "resourceVersion": "5", "generation": 2,
            "managedFields": [{"manager": "ferry", "time": "later"}]}, "spec": {"replicas": 2}});
        assert!(!differs(&dry, &live));
        let changed = json!({"metadata": {"name": "a"}, "spec": {"replicas": 3}});
        assert!(differs(&changed, &live));
        let new_label = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"replicas": 2}});
        assert!(differs(&new_label, &live));
    }

    #[test]
    fn digests_tell_objects_apart_whatever_their_key_order() {
        let a = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "data": {"k": "v"}});
        let reordered = json!({"data": {"k": "v"}, "metadata": {"labels": {"y": "2", "x": "1"}, "name": "a"}});
        assert_eq!(digest(&a), digest(&reordered));
        for other in [
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "data": {"k": "w"}}),
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}}),
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "data": {"k": ["v"]}}),
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "data": {"k": null}}),
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": 2}}, "data": {"k": "v"}}),
        ] {
            assert_ne!(digest(&a), digest(&other), "{other}");
        }
        // Only what `differs` looks at counts.
        let live = json!({"metadata": {"name": "a", "resourceVersion": "7", "managedFields": []}, "data": {"k": "v"}});
        let dry = json!({"metadata": {"name": "a", "resourceVersion": "9"}, "data": {"k": "v"}});
        assert!(!differs(&dry, &live));
        assert_eq!(digest(&normalized(&dry)), digest(&normalized(&live)));
    }

    #[test]
    fn conflict_messages_name_their_managers() {
        let msg = r#"Apply failed with 2 conflicts: conflict with "kubectl-edit" using v1: .data.a
conflict with "helm" using v1: .data.b"#;
        assert_eq!(conflicting_managers(msg), ["kubectl-edit", "helm"]);
        assert!(conflicting_managers("not a conflict").is_empty());
    }

    #[test]
    fn imperative_managers_are_those_that_updated() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "ferry", "operation": "Apply"},
            {"manager": "kubectl-edit", "operation": "Update"},
            {"manager": "helm", "operation": "Update"},
            {"manager": "other-gitops", "operation": "Apply"}]}});
        assert_eq!(imperative_managers(&live), ["kubectl-edit"]);
    }
}
