//! Health with `wait: true`, on a control plane that runs workloads (controller-manager, scheduler and kwok's
//! simulated node): Deployments become Available, Jobs complete or fail, and a rollout that cannot finish
//! times out naming the object.

mod common;

use common::*;
use ferry::api::Environment;
use serde_json::json;

fn deployment(name: &str, replicas: u32, node_selector: Option<&str>) -> String {
    let selector = node_selector
        .map(|s| format!("      nodeSelector: {{{s}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n{selector}      containers:\n      - {{name: app, image: example.com/app:1}}\n"
    )
}

fn job(name: &str, outcome: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n      labels: {{ferry.dev/kwok-outcome: {outcome}}}\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: check, image: example.com/check:1}}\n"
    )
}

async fn env_with(t: &TestEnv, files: &[(&str, String)], extra: serde_json::Value) -> String {
    for (path, content) in files {
        t.repo.write(path, content);
    }
    let commit = t.repo.commit_and_push("workloads");
    t.config_source("1h").await;
    let mut spec = json!({"sourceRef": {"name": "config"}, "path": "apps", "interval": "1h", "wait": true});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    t.create_env("env", spec).await;
    commit
}

#[tokio::test]
async fn ready_waits_for_deployments_and_jobs_to_be_healthy() {
    let t = TestEnv::with_workloads("healthy").await;
    let commit = env_with(
        &t,
        &[
            ("apps/web.yaml", deployment("web", 3, None)),
            ("apps/check.yaml", job("check", "complete")),
        ],
        json!({}),
    )
    .await;
    let env = wait_for(&t.api::<Environment>(), "env", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, m)| s == "True" && m.contains("all healthy"))
    })
    .await;
    assert_eq!(
        env.status.unwrap().last_applied_revision,
        Some(format!("main@sha1:{commit}"))
    );
    let deploy = t
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        deploy.status.unwrap().available_replicas,
        Some(3),
        "Ready only once the Deployment is Available"
    );
}

#[tokio::test]
async fn a_failing_job_fails_the_health_check_by_name() {
    let t = TestEnv::with_workloads("failing-job").await;
    env_with(&t, &[("apps/check.yaml", job("acceptance", "fail"))], json!({})).await;
    let message = wait_not_ready(&t, "env", "HealthCheckFailed").await;
    assert!(
        message.contains("Job") && message.contains("acceptance") && message.contains("job failed"),
        "{message}"
    );
    t.wait_event("env", "Warning", "HealthCheckFailed").await;
}

#[tokio::test]
async fn a_rollout_that_cannot_finish_times_out_naming_the_object() {
    let t = TestEnv::with_workloads("timeout").await;
    // No node has this label: the pods stay Pending.
    env_with(
        &t,
        &[("apps/stuck.yaml", deployment("stuck", 1, Some("pool: nowhere")))],
        json!({"healthTimeout": "3s"}),
    )
    .await;
    // First it says what it waits for...
    wait_for(&t.api::<Environment>(), "env", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, m)| s == "Unknown" && r == "Progressing" && m.contains("stuck"))
    })
    .await;
    // ...then it gives up clearly.
    let message = wait_not_ready(&t, "env", "HealthCheckFailed").await;
    assert!(
        message.contains("not healthy within 3s") && message.contains("Deployment") && message.contains("stuck"),
        "{message}"
    );
}
