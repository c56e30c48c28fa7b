//! RegistryPolicy status: whether the spec is valid (Ready), and how many violations each Environment's last
//! evaluated revision has (read from the Environments' `status.policyViolations`, which the Environment
//! controller writes). Written only when it changes, so a steady state makes no writes.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::status::patch_if_changed;
use super::{Context, ReconcileError};
use crate::api::{
    Environment, EnvironmentViolations, READY, Reason, RegistryPolicy, RegistryPolicyStatus, set_condition,
};

/// Every policy: a change to any Environment's violations may change any policy's counts.
pub fn all(policies: &Store<RegistryPolicy>) -> Vec<ObjectRef<RegistryPolicy>> {
    policies
        .state()
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The status `policy` should have, given the Environments. Pure.
pub fn desired_status(
    policy: &RegistryPolicy,
    envs: &[Arc<Environment>],
    old: Option<&RegistryPolicyStatus>,
    now: Timestamp,
) -> RegistryPolicyStatus {
    let name = policy.name_any();
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = policy.metadata.generation;
    let generation = status.observed_generation;
    match crate::policy::compile(&name, &policy.spec) {
        Ok(_) => set_condition(
            &mut status.conditions,
            READY,
            true,
            Reason::Succeeded,
            format!(
                "{} registr{} allowed, enforcement {}",
                policy.spec.allowed_registries.len(),
                if policy.spec.allowed_registries.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                policy.spec.enforcement
            ),
            generation,
            now,
        ),
        Err(e) => set_condition(
            &mut status.conditions,
            READY,
            false,
            Reason::InvalidSpec,
            format!("{e}; selected Environments fail closed (InvalidPolicy violations)"),
            generation,
            now,
        ),
    }
    let mut environments: Vec<EnvironmentViolations> = envs
        .iter()
        .filter_map(|env| {
            let found = env.status.as_ref()?.policy_violations.as_ref()?;
            let count: u32 = found
                .policies
                .iter()
                .filter(|p| p.policy == name)
                .map(|p| p.violations)
                .sum();
            (count > 0).then(|| EnvironmentViolations {
                namespace: env.namespace().unwrap_or_default(),
                name: env.name_any(),
                revision: Some(found.revision.clone()),
                violations: count,
            })
        })
        .collect();
    environments.sort();
    status.total_violations = environments
        .iter()
        .map(|e| e.violations)
        .fold(0u32, u32::saturating_add);
    status.violating_environments = u32::try_from(environments.len()).unwrap_or(u32::MAX);
    status.environments = environments;
    status
}

/// Whether this Ferry keeps `policy`'s status: one watching every namespace keeps all; one watching a single
/// namespace only those that select exactly that namespace (several such Ferrys would otherwise each write
/// their own partial counts).
pub fn owns(policy: &RegistryPolicy, scope: Option<&str>) -> bool {
    match scope {
        None => true,
        Some(ns) => policy.spec.environment_selector.namespaces == [ns],
    }
}

pub async fn reconcile(
    policy: Arc<RegistryPolicy>,
    ctx: Arc<Context>,
    scope: Option<String>,
) -> Result<Action, ReconcileError> {
    if !owns(&policy, scope.as_deref()) {
        return Ok(Action::await_change());
    }
    let name = policy.name_any();
    let span = info_span!("reconcile", kind = "RegistryPolicy", name = %name);
    async move {
        let api: Api<RegistryPolicy> = Api::all(ctx.client.clone());
        let Some(policy) = api.get_opt(&name).await? else {
            return Ok(Action::await_change());
        };
        let envs = ctx.environments();
        let old = policy.status.as_ref();
        let status = desired_status(&policy, &envs, old, Timestamp::now());
        let was_valid = old.and_then(|s| crate::api::condition_status(&s.conditions, READY)) == Some("True");
        if patch_if_changed(&api, &name, old, &status).await?
            && let Some(ready) = status.conditions.iter().find(|c| c.type_ == READY)
            && ready.status == "False"
            && (was_valid || old.is_none_or(|o| o.observed_generation != status.observed_generation))
        {
            ctx.event(&policy, true, Reason::InvalidSpec.as_str(), ready.message.clone())
                .await;
        }
        Ok(Action::await_change())
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Enforcement, EnvironmentStatus, PolicyViolationCount, PolicyViolations, RegistryPolicySpec};

    fn env(ns: &str, name: &str, counts: &[(&str, u32)]) -> Arc<Environment> {
        let mut e: Environment = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"sourceRef": {"name": "r"}}
        }))
        .unwrap();
        if !counts.is_empty() {
            e.status = Some(EnvironmentStatus {
                policy_violations: Some(PolicyViolations {
                    revision: "main@sha1:abc".into(),
                    total: counts.iter().map(|c| c.1).sum(),
                    policies: counts
                        .iter()
                        .map(|(p, n)| PolicyViolationCount {
                            policy: p.to_string(),
                            enforcement: Enforcement::Deny,
                            violations: *n,
                        })
                        .collect(),
                    violations: vec![],
                }),
                ..Default::default()
            });
        }
        Arc::new(e)
    }

    fn policy(registries: &[&str]) -> RegistryPolicy {
        let mut p = RegistryPolicy::new(
            "prod",
            RegistryPolicySpec {
                environment_selector: Default::default(),
                allowed_registries: registries.iter().map(|s| s.to_string()).collect(),
                require_digest: false,
                enforcement: Enforcement::Deny,
            },
        );
        p.metadata.generation = Some(1);
        p
    }

    #[test]
    fn counts_per_environment_and_does_not_churn() {
        let envs = vec![
            env("b", "prod", &[("prod", 2), ("other", 5)]),
            env("a", "staging", &[("prod", 1)]),
            env("a", "clean", &[]),
        ];
        let p = policy(&["prod.example.io/"]);
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let s = desired_status(&p, &envs, None, t0);
        assert_eq!(s.total_violations, 3);
        assert_eq!(s.violating_environments, 2);
        assert_eq!(s.environments[0].namespace, "a");
        assert_eq!(s.environments[1].violations, 2);
        assert_eq!(crate::api::condition_status(&s.conditions, READY), Some("True"));
        let t1 = Timestamp::from_second(1_700_000_100).unwrap();
        assert_eq!(desired_status(&p, &envs, Some(&s), t1), s, "same inputs, same status");
    }

    #[test]
    fn a_malformed_list_is_reported_on_the_policy() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        for registries in [&[][..], &["no-host/"][..]] {
            let s = desired_status(&policy(registries), &[], None, t0);
            let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
            assert!(ready.message.contains("allowedRegistries"), "{}", ready.message);
        }
    }
}
