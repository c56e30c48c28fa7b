//! Ownership: the labels that mark an object as an Environment's, and the object as it is sent (namespace
//! set, labels added). Prune and adoption decisions read these labels, never names alone.

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::Value;

/// Labels that mark an object as owned by an Environment; prune only touches objects that carry both.
pub const OWNER_NAME_LABEL: &str = "ferry.dev/environment";
pub const OWNER_NAMESPACE_LABEL: &str = "ferry.dev/environment-namespace";

/// Who owns applied objects.
#[derive(Debug, Clone)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
}

/// The Environment (`namespace/name`) that owns a live object, when it is not `owner`: two Environments that
/// render one object would otherwise overwrite each other on every reconcile.
pub fn owned_by_other(live: &DynamicObject, owner: &Owner) -> Option<String> {
    let labels = live.labels();
    let (name, namespace) = (labels.get(OWNER_NAME_LABEL)?, labels.get(OWNER_NAMESPACE_LABEL)?);
    (name != &owner.name || namespace != &owner.namespace).then(|| format!("{namespace}/{name}"))
}

/// Both ownership labels must name this Environment.
pub fn owned_by(live: &DynamicObject, owner: &Owner) -> bool {
    let labels = live.labels();
    labels.get(OWNER_NAME_LABEL) == Some(&owner.name) && labels.get(OWNER_NAMESPACE_LABEL) == Some(&owner.namespace)
}

/// The object as it is sent: namespace set (or removed for cluster-scoped kinds) and ownership labels added.
pub fn prepare(object: &Value, namespace: Option<&str>, owner: Option<&Owner>) -> Value {
    let mut object = object.clone();
    let metadata = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Default::default())));
    if let Some(Value::Object(metadata)) = metadata {
        match namespace {
            Some(ns) => {
                metadata.insert("namespace".into(), Value::String(ns.to_string()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
        let Some(owner) = owner else {
            return object;
        };
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if !labels.is_object() {
            *labels = Value::Object(Default::default());
        }
        if let Value::Object(labels) = labels {
            labels.insert(OWNER_NAME_LABEL.into(), Value::String(owner.name.clone()));
            labels.insert(OWNER_NAMESPACE_LABEL.into(), Value::String(owner.namespace.clone()));
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ApiResource;
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            name: "staging".into(),
            namespace: "apps".into(),
        }
    }

    #[test]
    fn prepare_sets_namespace_and_labels() {
        let obj = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"other","labels":{"app":"x"}}});
        let out = prepare(&obj, Some("target"), Some(&owner()));
        assert_eq!(out["metadata"]["namespace"], "target");
        assert_eq!(out["metadata"]["labels"]["app"], "x");
        assert_eq!(out["metadata"]["labels"][OWNER_NAME_LABEL], "staging");
        assert_eq!(out["metadata"]["labels"][OWNER_NAMESPACE_LABEL], "apps");
    }

    #[test]
    fn prepare_strips_namespace_from_cluster_scoped_objects() {
        let obj = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a","namespace":"x"}});
        let out = prepare(&obj, None, Some(&owner()));
        assert!(out["metadata"].get("namespace").is_none());
    }

    #[test]
    fn ownership_needs_both_labels() {
        let mut live = DynamicObject::new("a", &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()));
        assert!(!owned_by(&live, &owner()));
        live.labels_mut().insert(OWNER_NAME_LABEL.into(), "staging".into());
        assert!(!owned_by(&live, &owner()));
        live.labels_mut().insert(OWNER_NAMESPACE_LABEL.into(), "apps".into());
        assert!(owned_by(&live, &owner()));
    }
}
