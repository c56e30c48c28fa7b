//! `spec.dependsOn` on a real API server: a dependent waits (`DependencyNotReady`, naming what it waits for)
//! and goes ahead the moment its dependency is Ready (woken by the watch: every interval here is an hour),
//! cycles stall, and other namespaces are refused under `--no-cross-namespace-refs`.

mod common;

use common::*;
use ferry::api::Environment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn stalled(e: &Environment) -> bool {
    e.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
}

#[tokio::test]
async fn a_dependent_waits_for_its_dependency_and_goes_as_soon_as_it_is_ready() {
    let t = TestEnv::new("depends-on").await;
    t.repo.write("infra/cm.yaml", &config_map("infra", &[]));
    t.repo.write("apps/cm.yaml", &config_map("app", &[]));
    let commit = t.repo.commit_and_push("infra and apps");
    // Hour-long intervals: whatever happens within the test's deadline was woken by a change, not a timer.
    t.config_source("1h").await;
    t.config_env_with("apps", "apps", "1h", json!({"dependsOn": [{"name": "infra"}]}))
        .await;
    let envs = t.api::<Environment>();
    let ns = t.namespace.clone();
    let waiting = |needle: String| {
        move |e: &Environment| {
            env_ready(e).is_some_and(|(s, r, m)| s == "False" && r == "DependencyNotReady" && m.contains(&needle))
        }
    };
    wait_for(&envs, "apps", waiting(format!("Environment {ns}/infra does not exist"))).await;
    t.config_env("infra", "not-yet", "1h").await;
    let e = wait_for(
        &envs,
        "apps",
        waiting(format!("Environment {ns}/infra is not Ready (PathNotFound")),
    )
    .await;
    assert!(!stalled(&e), "waiting is not stalled");
    assert!(
        t.api::<ConfigMap>().get_opt("app").await.unwrap().is_none(),
        "nothing applied while waiting"
    );
    t.wait_event("apps", "Warning", "DependencyNotReady").await;

    envs.patch(
        "infra",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"path": "infra"}})),
    )
    .await
    .unwrap();
    let want = format!("main@sha1:{commit}");
    let e = wait_for(&envs, "apps", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(e.status.unwrap().last_applied_revision.as_deref(), Some(want.as_str()));
    let cms = t.api::<ConfigMap>();
    let (infra, app) = (cms.get("infra").await.unwrap(), cms.get("app").await.unwrap());
    assert!(
        infra.metadata.creation_timestamp.unwrap().0 <= app.metadata.creation_timestamp.unwrap().0,
        "infrastructure before apps"
    );
}

#[tokio::test]
async fn dependency_cycles_are_stalled_and_apply_nothing() {
    let t = TestEnv::new("depends-cycle").await;
    t.repo.write("a/cm.yaml", &config_map("a", &[]));
    t.repo.write("b/cm.yaml", &config_map("b", &[]));
    t.repo.commit_and_push("a and b");
    t.config_source("1h").await;
    t.create_env(
        "a",
        json!({"sourceRef": {"name": "config"}, "path": "a", "dependsOn": [{"name": "b"}]}),
    )
    .await;
    t.create_env(
        "b",
        json!({"sourceRef": {"name": "config"}, "path": "b", "dependsOn": [{"name": "a"}]}),
    )
    .await;
    let ns = &t.namespace;
    for (env, chain) in [
        ("a", format!("{ns}/a -> {ns}/b -> {ns}/a")),
        ("b", format!("{ns}/b -> {ns}/a -> {ns}/b")),
    ] {
        let e = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
            env_ready(e).is_some_and(|(_, r, _)| r == "DependencyCycle")
        })
        .await;
        let (status, _, message) = env_ready(&e).unwrap();
        assert_eq!(status, "False");
        assert!(
            message.contains(&format!("dependsOn forms a cycle: {chain}")),
            "{message}"
        );
        assert!(stalled(&e), "{env}: a cycle only a spec change can break");
        assert!(
            t.api::<ConfigMap>().get_opt(env).await.unwrap().is_none(),
            "{env}: nothing applied"
        );
    }
}

#[tokio::test]
async fn dependencies_in_other_namespaces_are_refused_under_no_cross_namespace_refs() {
    let t = TestEnv::with_settings("depends-cross-ns", |s| s.no_cross_namespace_refs = true).await;
    t.repo.write("app/cm.yaml", &config_map("app", &[]));
    t.repo.commit_and_push("app");
    t.config_source("1h").await;
    t.create_env(
        "app",
        json!({"sourceRef": {"name": "config"}, "path": "app",
               "dependsOn": [{"name": "infra", "namespace": "platform"}]}),
    )
    .await;
    let e = wait_for(&t.api::<Environment>(), "app", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r != "SourceNotReady")
    })
    .await;
    let (_, reason, message) = env_ready(&e).unwrap();
    assert_eq!(reason, "CrossNamespaceRef", "{message}");
    assert!(message.contains("Environment platform/infra"), "{message}");
    assert!(stalled(&e));
    assert!(t.api::<ConfigMap>().get_opt("app").await.unwrap().is_none());
}
