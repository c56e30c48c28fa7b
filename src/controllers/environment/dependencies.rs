//! `spec.dependsOn`: whether the Environments one depends on let it apply a revision now. Pure decisions over
//! Environments already read; the reconcile fetches them and the controller wakes dependents (see
//! [`dependents_of`]).

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{Environment, READY};

/// (namespace, name) of an Environment.
pub type Key = (String, String);

/// The Environments `env` depends on, each with its namespace resolved (default: `env`'s).
pub fn dependencies(env: &Environment) -> Vec<Key> {
    let own = env.namespace().unwrap_or_default();
    env.spec
        .depends_on
        .iter()
        .map(|d| (d.namespace.clone().unwrap_or_else(|| own.clone()), d.name.clone()))
        .collect()
}

fn key_of(env: &Environment) -> Key {
    (env.namespace().unwrap_or_default(), env.name_any())
}

/// `ns/name`, as messages name Environments.
pub fn show(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}

/// A cycle through `start`, as the chain of Environments from it back to it, found by following `edges`
/// (each Environment's dependencies). Cycles that do not pass through `start` are the business of their
/// members: `start` simply waits for them.
pub fn cycle_through(start: &Key, edges: impl Fn(&Key) -> Vec<Key>) -> Option<Vec<Key>> {
    // Depth-first, iteratively, with the current chain kept for the message.
    let mut seen = std::collections::BTreeSet::new();
    let mut chain: Vec<(Key, Vec<Key>)> = vec![(start.clone(), edges(start))];
    while let Some((_, next)) = chain.last_mut() {
        let Some(dep) = next.pop() else {
            chain.pop();
            continue;
        };
        if dep == *start {
            let mut cycle: Vec<Key> = chain.iter().map(|(k, _)| k.clone()).collect();
            cycle.push(dep);
            return Some(cycle);
        }
        if seen.insert(dep.clone()) {
            let further = edges(&dep);
            chain.push((dep, further));
        }
    }
    None
}

/// Why the dependency `dep` (None: it does not exist) does not let `dependent` apply `revision` yet, or None
/// when it does: it is Ready for its current generation, it applied what it last attempted, and, when both
/// follow the same GitRepository, it applied `revision` itself (so a new commit reaches the dependency first).
pub fn not_ready(dependent: &Environment, revision: &str, key: &Key, dep: Option<&Environment>) -> Option<String> {
    let name = show(key);
    let Some(dep) = dep else {
        return Some(format!("Environment {name} does not exist"));
    };
    let status = dep.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let Some(ready) = ready.filter(|c| c.status == "True") else {
        // The reason only, not the dependency's message: that message changes with every step of its progress
        // ("3/10 objects ready"), and quoting it would rewrite this Environment's status each time.
        let why = ready.map(|c| format!(" ({})", c.reason)).unwrap_or_default();
        return Some(format!("Environment {name} is not Ready{why}"));
    };
    if ready.observed_generation != dep.metadata.generation
        || status.and_then(|s| s.observed_generation) != dep.metadata.generation
    {
        return Some(format!("Environment {name} has not reconciled its latest spec yet"));
    }
    let applied = status.and_then(|s| s.last_applied_revision.as_deref());
    let attempted = status.and_then(|s| s.last_attempted_revision.as_deref());
    if applied.is_none() || applied != attempted {
        return Some(format!(
            "Environment {name} is applying revision {}",
            attempted.unwrap_or("(none)")
        ));
    }
    let source = |e: &Environment| {
        let ns = e
            .spec
            .source_ref
            .namespace
            .clone()
            .unwrap_or_else(|| e.namespace().unwrap_or_default());
        (ns, e.spec.source_ref.name.clone())
    };
    let same_source =
        source(dep) == source(dependent) && dep.spec.promotion.is_none() && dependent.spec.promotion.is_none();
    if same_source && applied != Some(revision) {
        return Some(format!(
            "Environment {name} has not applied revision {revision} yet (it is at {})",
            applied.unwrap_or("(none)")
        ));
    }
    None
}

/// Environments that name `dep` in their `dependsOn`: reconciled as soon as it changes, so they go ahead
/// the moment it is Ready rather than at their next interval.
pub fn dependents_of(envs: &Store<Environment>, dep: &Environment) -> Vec<ObjectRef<Environment>> {
    let key = key_of(dep);
    envs.state()
        .iter()
        .filter(|env| dependencies(env).contains(&key))
        .map(|env| ObjectRef::from_obj(env.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DependencyReference, EnvironmentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn env(name: &str, deps: &[&str]) -> Environment {
        let mut e: Environment = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name, "namespace": "team", "generation": 2},
            "spec": {"sourceRef": {"name": "config"}},
        }))
        .unwrap();
        e.spec.depends_on = deps
            .iter()
            .map(|d| match d.split_once('/') {
                Some((ns, n)) => DependencyReference {
                    name: n.into(),
                    namespace: Some(ns.into()),
                },
                None => DependencyReference {
                    name: d.to_string(),
                    namespace: None,
                },
            })
            .collect();
        e
    }

    fn ready(mut e: Environment, status: &str, generation: i64, applied: &str, attempted: &str) -> Environment {
        e.status = Some(EnvironmentStatus {
            observed_generation: Some(generation),
            last_applied_revision: Some(applied.into()),
            last_attempted_revision: Some(attempted.into()),
            conditions: vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: if status == "True" { "Succeeded" } else { "ApplyFailed" }.into(),
                message: "m".into(),
                observed_generation: Some(generation),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        e
    }

    fn key(n: &str) -> Key {
        ("team".into(), n.into())
    }

    #[test]
    fn namespaces_default_to_the_dependents() {
        assert_eq!(
            dependencies(&env("apps", &["infra", "other/crds"])),
            [key("infra"), ("other".into(), "crds".into())]
        );
    }

    #[test]
    fn a_dependency_is_ready_only_when_ready_current_and_at_the_same_revision() {
        let apps = env("apps", &["infra"]);
        let k = key("infra");
        let infra = |s, g, a, t| ready(env("infra", &[]), s, g, a, t);
        assert!(not_ready(&apps, "r2", &k, None).unwrap().contains("does not exist"));
        let why = not_ready(&apps, "r2", &k, Some(&infra("False", 2, "r2", "r2"))).unwrap();
        assert!(why.ends_with("team/infra is not Ready (ApplyFailed)"), "{why}");
        // Its status must not churn with the dependency's progress messages.
        let mut progressing = infra("False", 2, "r2", "r2");
        let again = not_ready(&apps, "r2", &k, Some(&progressing));
        if let Some(c) = progressing.status.as_mut().and_then(|s| s.conditions.first_mut()) {
            c.message = "7/10 objects ready".into();
        }
        assert_eq!(not_ready(&apps, "r2", &k, Some(&progressing)), again);
        let why = not_ready(&apps, "r2", &k, Some(&infra("True", 1, "r2", "r2"))).unwrap();
        assert!(why.contains("latest spec"), "{why}");
        let why = not_ready(&apps, "r2", &k, Some(&infra("True", 2, "r1", "r2"))).unwrap();
        assert!(why.contains("applying revision r2"), "{why}");
        // Same GitRepository: the dependency must have applied the revision the dependent is about to.
        let why = not_ready(&apps, "r2", &k, Some(&infra("True", 2, "r1", "r1"))).unwrap();
        assert!(why.contains("has not applied revision r2 yet (it is at r1)"), "{why}");
        assert_eq!(not_ready(&apps, "r2", &k, Some(&infra("True", 2, "r2", "r2"))), None);
        // Another source: its own current revision is what counts.
        let mut other = infra("True", 2, "x9", "x9");
        other.spec.source_ref.name = "platform".into();
        assert_eq!(not_ready(&apps, "r2", &k, Some(&other)), None);
    }

    #[test]
    fn cycles_through_the_environment_are_found_with_their_chain() {
        let graph = |k: &Key| -> Vec<Key> {
            match k.1.as_str() {
                "a" => vec![key("b")],
                "b" => vec![key("x"), key("c")],
                "c" => vec![key("a")],
                "d" => vec![key("e")],
                "e" => vec![key("e")],
                _ => vec![],
            }
        };
        let cycle = cycle_through(&key("a"), graph).unwrap();
        let names: Vec<&str> = cycle.iter().map(|k| k.1.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "a"]);
        // d waits on a cycle it is not part of: not its own cycle.
        assert_eq!(cycle_through(&key("d"), graph), None);
        assert!(cycle_through(&key("e"), graph).is_some(), "depending on itself");
        assert_eq!(cycle_through(&key("x"), graph), None);
    }
}
