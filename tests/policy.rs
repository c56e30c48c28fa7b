//! RegistryPolicy end to end on the real control plane (with kwok, so Deployments become healthy and
//! verification Jobs finish): Deny stops a whole revision before the dry run, Audit applies and warns, prefixes
//! match at path boundaries only, the verification Job's image is checked, a Promotion into a denied
//! Environment fails with the same reason, and a malformed policy fails closed and says why. Every policy
//! selects only its test's namespace (RegistryPolicies are cluster-scoped; tests run in parallel).

mod common;

use common::*;
use ferry::api::{Environment, Promotion, PromotionPhase, RegistryPolicy, RevisionPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

const DIGEST: &str = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

/// A Deployment `web` whose containers (`app`, `side`) and initContainer (`init`) use these images.
fn deployment(app: &str, side: &str, init: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      initContainers:\n      - {{name: init, image: \"{init}\"}}\n      containers:\n      - {{name: app, image: \"{app}\"}}\n      - {{name: side, image: \"{side}\"}}\n"
    )
}

/// Writes `apps/<dir>/` with a ConfigMap at `version` and the Deployment; returns the revision.
fn push(t: &TestEnv, dir: &str, version: &str, deployment: &str) -> String {
    let config = config_map("app", &[("version", version)]);
    let commit = push_files(
        t,
        version,
        &[
            (&format!("apps/{dir}/app.yaml"), &config),
            (&format!("apps/{dir}/web.yaml"), deployment),
        ],
    );
    main_revision(&commit)
}

/// A RegistryPolicy named `<namespace>-<suffix>` selecting this test's namespace, with `spec` merged in.
async fn create_policy(t: &TestEnv, suffix: &str, spec: Value) -> String {
    let name = format!("{}-{suffix}", t.namespace);
    let mut full = json!({"environmentSelector": {"namespaces": [t.namespace]}});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        full[k] = v;
    }
    t.apply_json(&json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RegistryPolicy",
        "metadata": {"name": name}, "spec": full}))
        .await;
    name
}

fn policies(t: &TestEnv) -> Api<RegistryPolicy> {
    Api::all(t.client.clone())
}

async fn wait_ready_reason(t: &TestEnv, env: &str, status: &str, reason: &str) -> Environment {
    wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == status && r == reason)
    })
    .await
}

async fn configmap_version(t: &TestEnv, namespace: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), namespace);
    cms.get_opt("app").await.ok()??.data?.get("version").cloned()
}

#[tokio::test]
async fn deny_applies_nothing_of_the_revision_and_names_every_violation() {
    let t = TestEnv::with_workloads("policy-deny").await;
    let policy = create_policy(
        &t,
        "deny",
        json!({"allowedRegistries": ["prod.example.io/team/"], "enforcement": "Deny"}),
    )
    .await;
    let good = "prod.example.io/team/app:1";
    let v1 = push(&t, "app", "v1", &deployment(good, good, good));
    t.config_source("1h").await;
    t.config_env("app", "apps/app", "1h").await;
    wait_ready_reason(&t, "app", "True", "Succeeded").await;
    assert_eq!(configmap_version(&t, &t.namespace).await.as_deref(), Some("v1"));

    // v2: a look-alike domain, a sibling path that only shares a string prefix, and a Docker Hub image.
    let evil = "prod.example.io.evil.com/team/app:2";
    let sibling = "prod.example.io/teamx/app:2";
    let worker = deployment("busybox", good, good)
        .replace("name: web", "name: worker")
        .replace("app: web", "app: worker");
    t.repo.write("apps/app/worker.yaml", &worker);
    let v2 = push(&t, "app", "v2", &deployment(evil, good, sibling));
    request_fetch(&t, "config", "v2").await;
    let env = wait_ready_reason(&t, "app", "False", "PolicyViolation").await;
    let (_, _, message) = env_ready(&env).expect("Ready");
    assert!(
        message.starts_with(&format!("{v2} was not applied: 3 image policy violations")),
        "{message}"
    );
    for needle in [
        "Deployment web, container app: image \"prod.example.io.evil.com/team/app:2\"",
        "Deployment web, initContainer init: image \"prod.example.io/teamx/app:2\"",
        "Deployment worker, container app: image \"busybox\"",
        "UntrustedRegistry",
        &policy,
    ] {
        assert!(message.contains(needle), "{needle:?} missing from {message}");
    }
    assert!(
        !message.contains("container side"),
        "the allowed image is not named: {message}"
    );
    assert!(
        message.contains(&format!("the cluster keeps revision {v1}")),
        "{message}"
    );
    // Nothing of v2 reached the cluster: not the ConfigMap, not the new Deployment.
    assert_eq!(configmap_version(&t, &t.namespace).await.as_deref(), Some("v1"));
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = t.api();
    assert!(deployments.get_opt("worker").await.expect("get").is_none());
    let found = env
        .status
        .as_ref()
        .and_then(|s| s.policy_violations.clone())
        .expect("policyViolations");
    assert_eq!((found.revision.as_str(), found.total), (v2.as_str(), 3));
    let events = t.wait_event("app", "Warning", "PolicyViolation").await;
    assert!(events.iter().any(|(_, _, note)| note.contains(evil)), "{events:?}");

    // The policy counts the Environment's violations; `kubectl get` shows the count.
    let p = wait_for(&policies(&t), &policy, |p: &RegistryPolicy| {
        p.status.as_ref().is_some_and(|s| s.total_violations == 3)
    })
    .await;
    let status = p.status.expect("status");
    assert_eq!(status.violating_environments, 1);
    assert_eq!(
        (status.environments[0].name.as_str(), status.environments[0].violations),
        ("app", 3)
    );
    let rv = p.metadata.resource_version.clone();
    let out = std::process::Command::new(t.bin_dir.join("kubectl"))
        .args(["get", "registrypolicies", &policy])
        .env("KUBECONFIG", &t.kubeconfig)
        .output()
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ENFORCEMENT", "VIOLATIONS", "ENVIRONMENTS", "READY", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..5], [policy.as_str(), "Deny", "3", "1", "True"], "{table}");

    // Fixed in Git: applied, and the counts go back to zero.
    t.repo.remove("apps/app/worker.yaml");
    let v3 = push(
        &t,
        "app",
        "v3",
        &deployment(good, good, &format!("prod.example.io/team/init@{DIGEST}")),
    );
    request_fetch(&t, "config", "v3").await;
    wait_for(&t.api::<Environment>(), "app", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(v3.as_str())
            && env_ready(e).is_some_and(|(s, _, _)| s == "True")
            && e.status.as_ref().is_some_and(|s| s.policy_violations.is_none())
    })
    .await;
    assert_eq!(configmap_version(&t, &t.namespace).await.as_deref(), Some("v3"));
    let p = wait_for(&policies(&t), &policy, |p: &RegistryPolicy| {
        p.status
            .as_ref()
            .is_some_and(|s| s.total_violations == 0 && s.environments.is_empty())
    })
    .await;
    assert_ne!(p.metadata.resource_version, rv);
    // No churn: a reconcile that finds the same nothing writes nothing.
    t.reconciled("app", "again").await;
    let again = policies(&t).get(&policy).await.expect("policy");
    assert_eq!(again.metadata.resource_version, p.metadata.resource_version);
}

#[tokio::test]
async fn audit_applies_and_reports_with_a_warning() {
    let t = TestEnv::with_workloads("policy-audit").await;
    let policy = create_policy(
        &t,
        "audit",
        json!({"allowedRegistries": ["docker.io/library/", "prod.example.io/"], "requireDigest": true, "enforcement": "Audit"}),
    )
    .await;
    let pinned = format!("nginx:1.27@{DIGEST}");
    let v1 = push(
        &t,
        "app",
        "v1",
        &deployment(&pinned, "nginx:1.27", "evil.example.com/x:1"),
    );
    t.config_source("1h").await;
    t.config_env("app", "apps/app", "1h").await;
    let env = wait_for(&t.api::<Environment>(), "app", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(v1.as_str())
            && env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(configmap_version(&t, &t.namespace).await.as_deref(), Some("v1"));
    let found = env.status.and_then(|s| s.policy_violations).expect("policyViolations");
    let rules: Vec<(String, String, String)> = found
        .violations
        .iter()
        .map(|v| (v.container.clone(), v.rule.clone(), v.image.clone()))
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                "container side".to_string(),
                "DigestRequired".to_string(),
                "nginx:1.27".to_string()
            ),
            (
                "initContainer init".to_string(),
                "DigestRequired".to_string(),
                "evil.example.com/x:1".to_string()
            ),
            (
                "initContainer init".to_string(),
                "UntrustedRegistry".to_string(),
                "evil.example.com/x:1".to_string()
            ),
        ]
    );
    assert!(
        found
            .violations
            .iter()
            .all(|v| v.policy == policy && v.object == "Deployment web")
    );
    let events = t.wait_event("app", "Warning", "PolicyViolation").await;
    assert!(
        events
            .iter()
            .any(|(_, _, n)| n.contains("(Audit)") && n.contains("evil.example.com/x:1")),
        "{events:?}"
    );
    wait_for(&policies(&t), &policy, |p: &RegistryPolicy| {
        p.status
            .as_ref()
            .is_some_and(|s| s.total_violations == 3 && s.violating_environments == 1)
    })
    .await;
}

#[tokio::test]
async fn the_verification_jobs_image_is_checked_before_anything_is_applied() {
    let t = TestEnv::with_workloads("policy-verify").await;
    create_policy(&t, "deny", json!({"allowedRegistries": ["prod.example.io/"]})).await;
    let good = "prod.example.io/app:1";
    push(&t, "app", "v1", &deployment(good, good, good));
    t.config_source("1h").await;
    let job = json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "test", "image": "curlimages/curl:8"}]}}}});
    t.config_env_with(
        "app",
        "apps/app",
        "1h",
        json!({"verification": {"jobTemplate": job, "timeout": "1m"}}),
    )
    .await;
    let env = wait_ready_reason(&t, "app", "False", "PolicyViolation").await;
    let (_, _, message) = env_ready(&env).expect("Ready");
    assert!(
        message.contains("Job spec.verification.jobTemplate, container test: image \"curlimages/curl:8\""),
        "{message}"
    );
    assert!(message.contains("1 image policy violation:"), "{message}");
    assert_eq!(configmap_version(&t, &t.namespace).await, None, "nothing applied");
    let jobs = t.api::<Job>().list(&ListParams::default()).await.expect("jobs");
    assert!(jobs.items.is_empty(), "no verification Job ran");
}

#[tokio::test]
async fn a_promotion_into_a_denied_environment_fails_with_policy_violation() {
    let t = TestEnv::with_workloads("policy-promo").await;
    // Only production (by label) is fenced; staging runs the nonprod image.
    let prod_ns = format!("{}-prod", t.namespace);
    t.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": prod_ns}}))
        .await;
    create_policy(
        &t,
        "prod",
        json!({"environmentSelector": {"namespaces": [t.namespace], "matchLabels": {"tier": "prod"}},
               "allowedRegistries": ["prod.example.io/team/"]}),
    )
    .await;
    let image = "nonprod.example.io/team/app:1";
    let v1 = push(&t, "app", "v1", &deployment(image, image, image));
    t.config_source("1h").await;
    t.config_env("staging", "apps/app", "1h").await;
    let production: Environment = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "production", "namespace": t.namespace, "labels": {"tier": "prod"}},
        "spec": {"sourceRef": {"name": "config"}, "path": "apps/app", "interval": "1h", "targetNamespace": prod_ns,
                 "promotion": {"from": "staging"}}
    }))
    .expect("environment");
    t.api::<Environment>()
        .create(&Default::default(), &production)
        .await
        .expect("production");

    wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.record(&v1))
            .is_some_and(|r| r.phase == RevisionPhase::Verified)
    })
    .await;
    let promotion = eventually("a Promotion into production", || async {
        let list = t.api::<Promotion>().list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|p| p.spec.environment == "production")
    })
    .await;
    let name = promotion.metadata.name.expect("name");
    let failed = wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.phase() == PromotionPhase::Failed
    })
    .await;
    let (_, reason, message) = failed
        .status
        .as_ref()
        .and_then(|s| ready_of(&s.conditions))
        .expect("Ready");
    assert_eq!(reason, "PolicyViolation", "{message}");
    assert!(message.contains("nonprod.example.io/team/app:1"), "{message}");
    let env = wait_ready_reason(&t, "production", "False", "PolicyViolation").await;
    assert_eq!(env.status.and_then(|s| s.last_applied_revision), None);
    assert_eq!(
        configmap_version(&t, &prod_ns).await,
        None,
        "nothing reached production"
    );
    assert_eq!(
        configmap_version(&t, &t.namespace).await.as_deref(),
        Some("v1"),
        "staging is not fenced"
    );
}

#[tokio::test]
async fn a_malformed_policy_is_reported_and_fails_closed() {
    let t = TestEnv::with_workloads("policy-malformed").await;
    let empty = create_policy(&t, "empty", json!({"allowedRegistries": []})).await;
    let hostless = create_policy(
        &t,
        "hostless",
        json!({"allowedRegistries": ["prod.example.io/", "team/"]}),
    )
    .await;
    for (name, needle) in [
        (&empty, "allowedRegistries is empty"),
        (&hostless, "allowedRegistries[1]"),
    ] {
        let p = wait_for(&policies(&t), name, |p: &RegistryPolicy| {
            p.status
                .as_ref()
                .and_then(|s| ready_of(&s.conditions))
                .is_some_and(|(s, _, _)| s == "False")
        })
        .await;
        let (_, reason, message) = p.status.as_ref().and_then(|s| ready_of(&s.conditions)).expect("Ready");
        assert_eq!(reason, "InvalidSpec");
        assert!(message.contains(needle), "{message}");
    }
    let good = "prod.example.io/app:1";
    push(&t, "app", "v1", &deployment(good, good, good));
    t.config_source("1h").await;
    t.config_env("app", "apps/app", "1h").await;
    let env = wait_ready_reason(&t, "app", "False", "PolicyViolation").await;
    let (_, _, message) = env_ready(&env).expect("Ready");
    assert!(
        message.contains("InvalidPolicy") && message.contains(&hostless) && message.contains(&empty),
        "{message}"
    );
    assert_eq!(
        configmap_version(&t, &t.namespace).await,
        None,
        "a broken Deny policy lets nothing through"
    );

    // Fixed: the Environment applies.
    create_policy(&t, "empty", json!({"allowedRegistries": ["prod.example.io/"]})).await;
    create_policy(&t, "hostless", json!({"allowedRegistries": ["prod.example.io/"]})).await;
    wait_ready_reason(&t, "app", "True", "Succeeded").await;
    assert_eq!(configmap_version(&t, &t.namespace).await.as_deref(), Some("v1"));
}

#[tokio::test]
async fn render_and_diff_report_violations_before_a_merge() {
    let t = TestEnv::with_workloads("policy-cli").await;
    create_policy(&t, "deny", json!({"allowedRegistries": ["prod.example.io/"]})).await;
    let good = "prod.example.io/app:1";
    push(&t, "app", "v1", &deployment("evil.io/app:1", good, good));
    t.config_source("1h").await;
    t.config_env("app", "apps/app", "1h").await;
    wait_ready_reason(&t, "app", "False", "PolicyViolation").await;
    let line = "deny: Deployment web, container app: image \"evil.io/app:1\" is not from an allowed registry";

    // The Environment as the controller sees it: policies from the cluster, selected by its namespace.
    let (code, _, stderr) = t.ferry_cli(&["diff", "--environment", &format!("{}/app", t.namespace)]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains(line), "{stderr}");

    // A local checkout against the cluster.
    let work = t.repo.work.path().to_str().expect("path").to_string();
    let (code, _, stderr) = t.ferry_cli(&["diff", &work, "--path", "apps/app", "--namespace", &t.namespace]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains(line), "{stderr}");

    // Offline: policies from a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    let write = |registries: &str| {
        std::fs::write(
            &file,
            format!("apiVersion: ferry.dev/v1alpha1\nkind: RegistryPolicy\nmetadata: {{name: prod}}\nspec:\n  allowedRegistries: [{registries}]\n"),
        )
        .expect("policy file");
    };
    write("prod.example.io/");
    let policy_file = file.to_str().expect("path");
    let (code, stdout, stderr) =
        t.ferry_cli(&["render", &work, "--path", "apps/app", "--registry-policy", policy_file]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stdout.contains("kind: Deployment"),
        "the render is still printed: {stdout}"
    );
    assert!(
        stderr.contains("deny: Deployment web, container app: image \"evil.io/app:1\""),
        "{stderr}"
    );
    write("prod.example.io/, evil.io/");
    let (code, _, stderr) = t.ferry_cli(&["render", &work, "--path", "apps/app", "--registry-policy", policy_file]);
    assert_eq!((code, stderr.as_str()), (0, ""));
}
