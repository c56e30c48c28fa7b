//! Status writes that happen only when something changed, so a steady state makes no writes.

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ReconcileError;

/// Writes `new` as the status subresource unless it equals `old`. Returns whether it wrote.
pub async fn patch_if_changed<K, S>(api: &Api<K>, name: &str, old: Option<&S>, new: &S) -> Result<bool, ReconcileError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    Ok(patched_if_changed(api, name, old, new).await?.is_some())
}

/// [`patch_if_changed`], returning the object as written (`None` when nothing was).
pub async fn patched_if_changed<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<Option<K>, ReconcileError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(None);
    }
    let to_value = |s: &S| serde_json::to_value(s).map_err(|e| ReconcileError::Internal(e.to_string()));
    let old = old.map(to_value).transpose()?;
    let patch = serde_json::json!({ "status": merge_patch(old.as_ref(), to_value(new)?) });
    Ok(Some(
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?,
    ))
}

/// A JSON merge patch from `old` to `new`: fields that `new` omits (empty lists, cleared options) become
/// `null`, so they are removed rather than left behind.
fn merge_patch(old: Option<&Value>, mut new: Value) -> Value {
    if let (Some(Value::Object(old)), Value::Object(new)) = (old, &mut new) {
        for key in old.keys() {
            new.entry(key.clone()).or_insert(Value::Null);
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removed_fields_become_null() {
        let old = json!({"inventory": [1], "lastAppliedRevision": "a"});
        let new = json!({"lastAppliedRevision": "b"});
        assert_eq!(
            merge_patch(Some(&old), new),
            json!({"inventory": null, "lastAppliedRevision": "b"})
        );
    }
}
