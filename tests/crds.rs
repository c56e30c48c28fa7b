//! The checked-in CRDs must be exactly what the code generates, and every field must explain itself to
//! `kubectl explain`.

use kube::CustomResourceExt;
use serde_json::Value;

#[test]
fn checked_in_crds_match_the_code() {
    let generated = ferry::api::crds_yaml().expect("generating CRDs");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/ferry.dev.yaml");
    let checked_in = std::fs::read_to_string(path).expect("reading crds/ferry.dev.yaml");
    assert!(
        generated == checked_in,
        "crds/ferry.dev.yaml is stale; regenerate it with `cargo run -- crds > crds/ferry.dev.yaml`"
    );
}

/// Collects `path` of every property under `schema` that has no (or an empty) description.
fn undescribed(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let here = format!("{path}.{name}");
            let described = property
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                missing.push(here.clone());
            }
            undescribed(property, &here, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), missing);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undescribed(values, &format!("{path}{{}}"), missing);
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for (i, branch) in schema
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            undescribed(branch, &format!("{path}<{combinator}{i}>"), missing);
        }
    }
}

#[test]
fn every_field_of_every_crd_has_a_description() {
    let crds = [
        ferry::api::GitRepository::crd(),
        ferry::api::Environment::crd(),
        ferry::api::Promotion::crd(),
    ];
    let mut missing = Vec::new();
    for crd in crds {
        let kind = crd.spec.names.kind.clone();
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .expect("a schema"),
            )
            .expect("schema as JSON");
            let top = schema.get("description").and_then(Value::as_str).unwrap_or_default();
            if top.trim().is_empty() || top.contains("Auto-generated") {
                missing.push(format!("{kind} (the kind itself: {top:?})"));
            }
            // apiVersion, kind and metadata are Kubernetes' own and described by `kubectl explain` already.
            for field in ["spec", "status"] {
                match schema["properties"].get(field) {
                    Some(sub) => {
                        let described = sub
                            .get("description")
                            .and_then(Value::as_str)
                            .is_some_and(|d| !d.trim().is_empty());
                        if !described {
                            missing.push(format!("{kind}.{field}"));
                        }
                        undescribed(sub, &format!("{kind}.{field}"), &mut missing);
                    }
                    None => missing.push(format!("{kind}.{field} (absent)")),
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} field(s) without a description (add doc comments in src/api/):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}
