//! `environmentSelector`: label-selector semantics (as in Kubernetes) plus a namespace list.

use std::collections::BTreeMap;

use crate::api::EnvironmentSelector;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchExpressions[{index}]: operator {operator:?} is not one of In, NotIn, Exists, DoesNotExist")]
    Operator { index: usize, operator: String },
    #[error("matchExpressions[{index}]: {operator} needs at least one value")]
    NoValues { index: usize, operator: String },
    #[error("matchExpressions[{index}]: {operator} takes no values")]
    UnexpectedValues { index: usize, operator: String },
}

/// Checks the operators and values, as the API server does for label selectors.
pub fn validate(selector: &EnvironmentSelector) -> Result<(), SelectorError> {
    for (index, e) in selector.match_expressions.iter().enumerate() {
        let values = e.values.as_deref().unwrap_or_default();
        let operator = e.operator.clone();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(SelectorError::NoValues { index, operator }),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues { index, operator });
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => return Err(SelectorError::Operator { index, operator }),
        }
    }
    Ok(())
}

/// Whether the selector picks an Environment in `namespace` with `labels`. An empty selector picks every
/// Environment. `labels: None` (a render with no Environment, `ferry diff` of a local checkout) ignores the
/// label part and picks by namespace only: the check then errs towards reporting.
pub fn selects(
    selector: &EnvironmentSelector,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, SelectorError> {
    validate(selector)?;
    if !selector.namespaces.is_empty() && !selector.namespaces.iter().any(|n| n == namespace) {
        return Ok(false);
    }
    let Some(labels) = labels else {
        return Ok(true);
    };
    for (k, v) in &selector.match_labels {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for e in &selector.match_expressions {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            _ => value.is_none(),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
