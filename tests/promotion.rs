//! Promotion end to end on real control planes: staging in the cluster Ferry runs in, production in a second
//! cluster reached through a kubeconfig Secret. Jobs and Deployments run on kwok's simulated nodes; a pod
//! labelled `ferry.dev/kwok-outcome: fail` fails, which is how an acceptance test fails here.

mod common;

use common::*;
use ferry::api::{Environment, Promotion, PromotionPhase, RevisionPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

fn deployment(extra_pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 5\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n{extra_pod_spec}      containers:\n      - {{name: app, image: example.com/app:1}}\n"
    )
}

/// Writes both overlays at `version` and pushes; returns the revision as Ferry names it.
fn push(t: &TestEnv, version: &str) -> String {
    let commit = push_overlays(t, version, |_| {
        vec![
            ("app.yaml", config_map("app", &[("version", version)])),
            ("web.yaml", deployment("")),
        ]
    });
    main_revision(&commit)
}

fn acceptance_job(outcome: &str) -> Value {
    json!({
        "metadata": {"labels": {"suite": "acceptance"}},
        "spec": {"template": {
            "metadata": {"labels": {"ferry.dev/kwok-outcome": outcome}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "test", "image": "example.com/acceptance:1"}]}
        }}
    })
}

async fn reconcile_source_now(t: &TestEnv) {
    request_fetch(t, "config", &format!("{:?}", std::time::Instant::now())).await;
}

/// The newest record of `revision` in the Environment's history.
fn record_of(env: &Environment, revision: &str) -> ferry::api::RevisionRecord {
    env.status
        .as_ref()
        .and_then(|s| s.record(revision))
        .cloned()
        .unwrap_or_else(|| panic!("no record of {revision} in {:?}", env.metadata.name))
}

fn record_phase(env: &Environment, revision: &str) -> Option<RevisionPhase> {
    env.status.as_ref()?.record(revision).map(|r| r.phase)
}

async fn wait_record(t: &TestEnv, env: &str, revision: &str, phase: RevisionPhase) -> Environment {
    wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        record_phase(e, revision) == Some(phase)
    })
    .await
}

async fn wait_phase(t: &TestEnv, name: &str, phase: PromotionPhase) -> Promotion {
    wait_for(&t.api::<Promotion>(), name, |p: &Promotion| p.phase() == phase).await
}

/// The one Promotion of `revision` into `env` (waiting until Ferry created it).
async fn promotion_of(t: &TestEnv, env: &str, revision: &str) -> Promotion {
    eventually(&format!("a Promotion of {revision} into {env}"), || async {
        let list = t.api::<Promotion>().list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|p| p.spec.environment == env && p.spec.revision == revision && !p.spec.rollback)
    })
    .await
}

/// The Promotion of `revision` into `env`, once its Ready condition has `reason`.
async fn wait_reason(t: &TestEnv, env: &str, revision: &str, reason: &str) -> Promotion {
    let name = promotion_of(t, env, revision).await.metadata.name.expect("name");
    wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.status
            .as_ref()
            .and_then(|s| ready_of(&s.conditions))
            .is_some_and(|(_, r, _)| r == reason)
    })
    .await
}

fn phases(p: &Promotion) -> Vec<PromotionPhase> {
    p.status
        .as_ref()
        .map(|s| s.transitions.iter().map(|t| t.phase).collect())
        .unwrap_or_default()
}

/// A namespace of the same name in the production cluster, and the Secret that reaches it.
async fn production_cluster(t: &TestEnv) -> Client {
    t.second_cluster_secret("production-kubeconfig").await.0
}

/// `<test namespace>-<suffix>`, created: where a promoted Environment applies.
async fn create_namespace(t: &TestEnv, suffix: &str) -> String {
    let name = format!("{}-{suffix}", t.namespace);
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(t.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    name
}

/// Pushes v1 and creates the GitRepository and a staging Environment without verification Job; returns v1.
async fn source_and_staging(t: &TestEnv) -> String {
    let c1 = push(t, "v1");
    t.config_source("1h").await;
    t.config_env("staging", "apps/staging", "1h").await;
    c1
}

/// The `production` Environment (path `apps/production`) with `spec` merged over the common fields.
async fn create_production(t: &TestEnv, spec: Value) {
    let mut full = json!({"sourceRef": {"name": "config"}, "path": "apps/production", "interval": "1h"});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        full[k] = v;
    }
    t.create_env("production", full).await;
}

async fn configmap_version(client: &Client, namespace: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    cms.get_opt("app").await.ok()??.data?.get("version").cloned()
}

#[tokio::test]
async fn a_revision_moves_from_staging_to_production_in_another_cluster_only_when_verified_and_approved() {
    let t = TestEnv::with_workloads("pipeline").await;
    let prod = production_cluster(&t).await;
    let c1 = push(&t, "v1");
    t.config_source("1h").await;
    t.config_env_with(
        "staging",
        "apps/staging",
        "1h",
        json!({"verification": {"jobTemplate": acceptance_job("complete"), "timeout": "1m"}}),
    )
    .await;
    create_production(
        &t,
        json!({"kubeConfig": {"secretRef": {"name": "production-kubeconfig"}},
               "promotion": {"from": "staging", "requireApproval": true},
               "verification": {"jobTemplate": acceptance_job("complete"), "timeout": "1m"}}),
    )
    .await;

    // Staging applies, the Deployment becomes healthy and the acceptance Job succeeds.
    let staging = wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;
    let record = record_of(&staging, &c1);
    assert_eq!(record.attempts, 1);
    let job_name = record.job.clone().expect("job name recorded");
    let job = t.api::<Job>().get(&job_name).await.expect("the staging acceptance Job");
    let labels = job.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("ferry.dev/revision").map(String::as_str),
        c1.strip_prefix("main@sha1:")
    );
    assert_eq!(labels.get("suite").map(String::as_str), Some("acceptance"));
    t.wait_event("staging", "Normal", "Verified").await;

    // Ferry proposes the promotion; it waits for approval, and nothing reaches production before it.
    let p1 = promotion_of(&t, "production", &c1).await;
    let p1_name = p1.metadata.name.clone().expect("name");
    let waiting = wait_phase(&t, &p1_name, PromotionPhase::WaitingApproval).await;
    assert_eq!(phases(&waiting), vec![PromotionPhase::WaitingApproval]);
    assert_eq!(configmap_version(&prod, &t.namespace).await, None);
    let production = wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.promotion.as_ref())
            .is_some_and(|p| p.phase == PromotionPhase::WaitingApproval)
    })
    .await;
    assert_eq!(
        production.status.as_ref().and_then(|s| s.last_applied_revision.clone()),
        None
    );
    let (ready, reason, message) = env_ready(&production).expect("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("Unknown", "WaitingForPromotion"));
    assert!(
        message.contains(&p1_name) && message.contains("WaitingApproval"),
        "{message}"
    );

    // Approval moves it through Applying and Verifying to Succeeded, in the production cluster.
    let approved = ferry::cli::approve(&t.client, &t.namespace, &p1_name, Some("ship it"))
        .await
        .expect("approve");
    assert_eq!(
        approved.spec.approval.as_ref().and_then(|a| a.by.clone()).as_deref(),
        Some("admin")
    );
    let done = wait_phase(&t, &p1_name, PromotionPhase::Succeeded).await;
    assert_eq!(
        phases(&done),
        vec![
            PromotionPhase::WaitingApproval,
            PromotionPhase::Applying,
            PromotionPhase::Verifying,
            PromotionPhase::Succeeded
        ]
    );
    assert_eq!(configmap_version(&prod, &t.namespace).await.as_deref(), Some("v1"));
    let prod_jobs: Api<Job> = Api::namespaced(prod.clone(), &t.namespace);
    let prod_job = prod_jobs
        .list(&ListParams::default().labels("suite=acceptance"))
        .await
        .expect("jobs");
    assert_eq!(
        prod_job.items.len(),
        1,
        "production ran its own acceptance Job, in its own cluster"
    );
    t.wait_event(&p1_name, "Normal", "Verified").await;

    // The acceptance suite now fails: the next revision is applied in staging and never reaches production.
    let failing = json!({"spec": {"verification": {"jobTemplate": acceptance_job("fail")}}});
    t.api::<Environment>()
        .patch("staging", &PatchParams::default(), &Patch::Merge(&failing))
        .await
        .expect("patch staging");
    let c2 = push(&t, "v2");
    reconcile_source_now(&t).await;
    let staging = wait_record(&t, "staging", &c2, RevisionPhase::Failed).await;
    let message = staging
        .status
        .as_ref()
        .and_then(|s| s.record(&c2))
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    assert!(message.contains("failed"), "{message}");
    t.wait_event("staging", "Warning", "VerificationFailed").await;
    let refused = ferry::cli::promote(&t.client, &t.namespace, "production", &c2).await;
    assert!(
        matches!(refused, Err(ferry::cli::CliError::Refused(_))),
        "the CLI refuses to promote an unverified revision: {refused:?}"
    );
    let by_hand: Promotion = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Promotion",
        "metadata": {"name": "by-hand", "namespace": t.namespace},
        "spec": {"environment": "production", "revision": c2}
    }))
    .expect("promotion");
    t.api::<Promotion>()
        .create(&PostParams::default(), &by_hand)
        .await
        .expect("create");
    let by_hand = wait_phase(&t, "by-hand", PromotionPhase::Failed).await;
    assert_eq!(
        by_hand
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("ferry.dev/environment"))
            .map(String::as_str),
        Some("production"),
        "a Promotion written by hand is labelled with its Environment, so Environments list it by label"
    );
    let (_, reason, _) = ready_of(&by_hand.status.unwrap().conditions).expect("Ready");
    assert_eq!(reason, "RevisionNotVerified");
    let production = t.api::<Environment>().get("production").await.expect("production");
    assert_eq!(
        production.status.and_then(|s| s.last_applied_revision),
        Some(c1.clone())
    );
    assert_eq!(configmap_version(&prod, &t.namespace).await.as_deref(), Some("v1"));

    // The suite is fixed: the next revision goes through.
    let passing = json!({"spec": {"verification": {"jobTemplate": acceptance_job("complete")}}});
    t.api::<Environment>()
        .patch("staging", &PatchParams::default(), &Patch::Merge(&passing))
        .await
        .expect("patch staging");
    let c3 = push(&t, "v3");
    reconcile_source_now(&t).await;
    wait_record(&t, "staging", &c3, RevisionPhase::Verified).await;
    let p3 = promotion_of(&t, "production", &c3).await;
    let p3_name = p3.metadata.name.clone().expect("name");
    wait_phase(&t, &p3_name, PromotionPhase::WaitingApproval).await;
    ferry::cli::approve(&t.client, &t.namespace, &p3_name, None)
        .await
        .expect("approve");
    wait_phase(&t, &p3_name, PromotionPhase::Succeeded).await;
    assert_eq!(configmap_version(&prod, &t.namespace).await.as_deref(), Some("v3"));
    assert!(
        t.api::<Promotion>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .all(|p| p.spec.revision != c2 || p.metadata.name.as_deref() == Some("by-hand")),
        "Ferry never proposed the failed revision"
    );

    // Rollback returns production to the last other revision that succeeded there.
    let rollback = ferry::cli::rollback(&t.client, &t.namespace, "production", None)
        .await
        .expect("rollback");
    assert_eq!(rollback.spec.revision, c1);
    let rollback_name = rollback.metadata.name.clone().expect("name");
    wait_phase(&t, &rollback_name, PromotionPhase::Succeeded).await;
    assert_eq!(configmap_version(&prod, &t.namespace).await.as_deref(), Some("v1"));
    let runs = prod_jobs
        .list(&ListParams::default().labels("suite=acceptance"))
        .await
        .expect("jobs")
        .items
        .len();
    assert_eq!(
        runs, 3,
        "the rollback ran the acceptance test again rather than reuse v1's old verdict"
    );
    let production = wait_record(&t, "production", &c1, RevisionPhase::Verified).await;
    let history: Vec<_> = production
        .status
        .as_ref()
        .expect("status")
        .history
        .iter()
        .map(|r| (r.revision.clone(), r.phase))
        .collect();
    assert_eq!(
        history,
        vec![
            (c1.clone(), RevisionPhase::Verified),
            (c3.clone(), RevisionPhase::Verified),
            (c1.clone(), RevisionPhase::Verified)
        ]
    );

    // What a user sees.
    let table = ferry::cli::pipeline(&t.client, &t.namespace).await.expect("ferry get");
    let staging_line = table
        .lines()
        .position(|l| l.starts_with("staging"))
        .expect("staging row");
    let production_line = table
        .lines()
        .position(|l| l.starts_with("production"))
        .expect("production row");
    assert!(staging_line < production_line, "{table}");
    assert!(table.contains(&c1[..22]), "{table}");
}

#[tokio::test]
async fn failed_verification_in_production_rolls_back_to_the_previous_revision() {
    let t = TestEnv::with_workloads("rollback").await;
    let prod_ns = create_namespace(&t, "prod").await;
    let c1 = source_and_staging(&t).await;
    create_production(
        &t,
        json!({"targetNamespace": prod_ns,
               "promotion": {"from": "staging", "rollbackOnFailure": true},
               "verification": {"timeout": "1m"}}),
    )
    .await;
    let p1 = promotion_of(&t, "production", &c1).await;
    wait_phase(
        &t,
        p1.metadata.name.as_deref().expect("name"),
        PromotionPhase::Succeeded,
    )
    .await;

    // v2 is healthy in staging but cannot run in production (no node matches there).
    t.repo
        .write("apps/staging/app.yaml", &config_map("app", &[("version", "v2")]));
    t.repo
        .write("apps/production/app.yaml", &config_map("app", &[("version", "v2")]));
    t.repo.write(
        "apps/production/web.yaml",
        &deployment("      nodeSelector: {pool: missing}\n"),
    );
    let c2 = format!("main@sha1:{}", t.repo.commit_and_push("v2"));
    reconcile_source_now(&t).await;
    let p2 = promotion_of(&t, "production", &c2).await;
    let p2_name = p2.metadata.name.clone().expect("name");
    let failed = wait_phase(&t, &p2_name, PromotionPhase::Failed).await;
    let status = failed.status.expect("status");
    let (_, reason, message) = ready_of(&status.conditions).expect("Ready");
    assert_eq!(reason, "VerificationFailed");
    assert!(message.contains("Deployment"), "names the unhealthy object: {message}");
    let rollback_name = status.rollback_promotion.expect("a rollback was started");
    let rollback = wait_phase(&t, &rollback_name, PromotionPhase::Succeeded).await;
    assert!(rollback.spec.rollback);
    assert_eq!(rollback.spec.revision, c1);
    assert_eq!(configmap_version(&t.client, &prod_ns).await.as_deref(), Some("v1"));
    t.wait_event(&p2_name, "Warning", "RolledBack").await;
}

#[tokio::test]
async fn a_controller_restart_in_any_phase_resumes_without_repeating_or_skipping() {
    let mut t = TestEnv::with_workloads("restart").await;
    let prod_ns = create_namespace(&t, "prod").await;
    let c1 = source_and_staging(&t).await;
    // Production's acceptance Job can never be scheduled: it stays running until the verification timeout.
    let stuck = json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "missing"},
        "containers": [{"name": "test", "image": "example.com/acceptance:1"}]}}}});
    create_production(
        &t,
        json!({"targetNamespace": prod_ns,
               "promotion": {"from": "staging", "requireApproval": true},
               "verification": {"jobTemplate": stuck, "timeout": "20s"}}),
    )
    .await;
    let p1 = promotion_of(&t, "production", &c1).await;
    let name = p1.metadata.name.clone().expect("name");

    // WaitingApproval survives a restart as it was: no second transition, nothing applied.
    wait_phase(&t, &name, PromotionPhase::WaitingApproval).await;
    t.restart_controller();
    t.restart_controller();
    ferry::cli::approve(&t.client, &t.namespace, &name, None)
        .await
        .expect("approve");

    // Verifying: the Job is running; a restart finds it instead of starting another.
    wait_phase(&t, &name, PromotionPhase::Verifying).await;
    let audit = t.audit_log.clone();
    let polls_dry_runs = || {
        audited_writes(&audit, &prod_ns)
            .into_iter()
            .filter(|(_, _, dry)| *dry)
            .count()
    };
    let dry_runs_before = polls_dry_runs();
    let late = ferry::cli::reject(&t.client, &t.namespace, &name, None).await;
    assert!(
        matches!(late, Err(ferry::cli::CliError::Refused(_))),
        "too late to reject: {late:?}"
    );
    let jobs: Api<Job> = Api::namespaced(t.client.clone(), &prod_ns);
    eventually("the acceptance Job", || async {
        let list = jobs.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await;
    t.restart_controller();
    let failed = wait_phase(&t, &name, PromotionPhase::Failed).await;
    // About ten polls over the 20 s: a full sync on each would dry-run both objects every time (~20). The
    // window also catches the full syncs that follow the verdict (the record's write and the Promotion's
    // each wake the Environment once): two objects each, so at most 4.
    assert!(
        polls_dry_runs() - dry_runs_before <= 4,
        "verification polls health and the Job, not the whole sync: {} dry runs",
        polls_dry_runs() - dry_runs_before
    );
    assert_eq!(
        phases(&failed),
        vec![
            PromotionPhase::WaitingApproval,
            PromotionPhase::Applying,
            PromotionPhase::Verifying,
            PromotionPhase::Failed
        ],
        "each phase entered once"
    );
    let (_, _, message) = ready_of(&failed.status.expect("status").conditions).expect("Ready");
    assert!(message.contains("did not finish within 20s"), "{message}");
    // Created, that is: a restart between the Job's create and the record's write creates it again by the same
    // name, which the API server refuses (409); counting every create request saw that as a second Job.
    let created = audited_creates(&t.audit_log, &prod_ns, "jobs");
    assert_eq!(created.len(), 1, "one Job, not one per restart: {created:?}");
    eventually(
        "the timed-out Job is deleted, so it stops acting on the cluster",
        || async {
            let list = jobs.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|j| j.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    let production = t.api::<Environment>().get("production").await.expect("production");
    let record = record_of(&production, &c1);
    assert_eq!(record.attempts, 1);
    let applied = t
        .events("production")
        .await
        .into_iter()
        .filter(|(_, r, _)| r == "Applied")
        .count();
    assert_eq!(applied, 1, "the revision was applied once");

    // Settled: a restart writes nothing. Two reconciles of production after the restart are seen as two
    // rounds of dry-run applies in its namespace (one object-by-object reconcile finishes, status write
    // included, before the next starts); neither may write the Environment or the Promotion.
    wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        e.status.as_ref().is_some_and(|s| s.promotion.is_none())
    })
    .await;
    let before = t
        .api::<Promotion>()
        .get(&name)
        .await
        .expect("promotion")
        .metadata
        .resource_version;
    let (audit_log, namespace) = (t.audit_log.clone(), t.namespace.clone());
    let status_writes = || {
        audited_writes(&audit_log, &namespace)
            .into_iter()
            .filter(|(_, uri, dry)| !dry && uri.contains("/environments/production/status"))
            .count()
    };
    let writes_before = status_writes();

    let dry_runs = || {
        audited_writes(&audit_log, &prod_ns)
            .into_iter()
            .filter(|(_, _, dry)| *dry)
            .count()
    };
    let start = dry_runs();
    t.restart_controller();
    // After a restart nothing is remembered: the first sync takes the dry-run path.
    eventually("production reconciled after the restart", || async {
        (dry_runs() > start).then_some(())
    })
    .await;
    // A second reconcile, asked for explicitly: its only status write is the acknowledgement of the request
    // (an unchanged sync no longer dry-runs anything, so the request is how to know it ran).
    let settled = |e: Environment| {
        let mut status = e.status.unwrap_or_default();
        status.last_handled_reconcile_at = None;
        status
    };
    let status_before = settled(t.api::<Environment>().get("production").await.expect("production"));
    t.reconciled("production", "poke").await;
    assert_eq!(
        settled(t.api::<Environment>().get("production").await.expect("production")),
        status_before,
        "the second reconcile changed nothing but the acknowledgement"
    );
    let after = t
        .api::<Promotion>()
        .get(&name)
        .await
        .expect("promotion")
        .metadata
        .resource_version;
    assert_eq!(before, after);
    assert_eq!(
        status_writes(),
        writes_before + 1,
        "no status write after the restart but the request's acknowledgement"
    );
}

#[tokio::test]
async fn bad_input_ends_with_a_clear_condition() {
    let t = TestEnv::with_workloads("bad-input").await;
    let c1 = push(&t, "v1");
    t.config_source("1h").await;
    let spec = |from: &str| json!({"sourceRef": {"name": "config"}, "path": "apps/production", "interval": "1h", "promotion": {"from": from}});
    t.create_env("a", spec("b")).await;
    t.create_env("b", spec("a")).await;
    t.create_env("orphan", spec("nowhere")).await;
    // A Job template the API server refuses (a Job's pods may not restart Always).
    let invalid = json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "t", "image": "x"}]}}}});
    t.config_env_with(
        "staging",
        "apps/staging",
        "1h",
        json!({"verification": {"jobTemplate": invalid}}),
    )
    .await;

    for name in ["a", "b"] {
        let env = wait_for(&t.api::<Environment>(), name, |e: &Environment| {
            env_ready(e).is_some_and(|(_, reason, _)| reason == "PromotionCycle")
        })
        .await;
        let (status, _, message) = env_ready(&env).expect("Ready");
        assert_eq!(status, "False");
        assert!(
            message.contains("a → b → a") || message.contains("b → a → b"),
            "{message}"
        );
        t.wait_event(name, "Warning", "PromotionCycle").await;
    }
    let orphan = wait_for(&t.api::<Environment>(), "orphan", |e: &Environment| {
        env_ready(e).is_some_and(|(_, reason, _)| reason == "UpstreamNotFound")
    })
    .await;
    assert!(env_ready(&orphan).expect("Ready").2.contains("nowhere"));

    let staging = wait_record(&t, "staging", &c1, RevisionPhase::Failed).await;
    let verified = staging
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "Verified")
        .cloned()
        .expect("Verified");
    assert_eq!(verified.status, "False");
    assert!(
        verified.message.contains("verification.jobTemplate is invalid"),
        "{}",
        verified.message
    );
    assert_eq!(
        env_ready(&staging).expect("Ready").0,
        "True",
        "the sync itself stays Ready"
    );
    t.wait_event("staging", "Warning", "VerificationFailed").await;

    // Promotions that cannot be: into an Environment that follows Git, into none, and approval of one that
    // is not waiting.
    for (name, env, revision) in [
        ("into-staging", "staging", c1.as_str()),
        ("into-nothing", "missing", c1.as_str()),
    ] {
        let p: Promotion = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Promotion",
            "metadata": {"name": name, "namespace": t.namespace},
            "spec": {"environment": env, "revision": revision}
        }))
        .expect("promotion");
        t.api::<Promotion>()
            .create(&PostParams::default(), &p)
            .await
            .expect("create");
    }
    let p = wait_phase(&t, "into-staging", PromotionPhase::Failed).await;
    assert_eq!(
        ready_of(&p.status.expect("status").conditions).expect("Ready").1,
        "NotPromoted"
    );
    let p = wait_phase(&t, "into-nothing", PromotionPhase::Failed).await;
    assert_eq!(
        ready_of(&p.status.expect("status").conditions).expect("Ready").1,
        "EnvironmentNotFound"
    );
    t.wait_event("into-nothing", "Warning", "EnvironmentNotFound").await;
    for (patch, what) in [
        (
            json!({"spec": {"revision": "main@sha1:0000000000000000000000000000000000000000"}}),
            "revision",
        ),
        (json!({"spec": {"environment": "production"}}), "environment"),
    ] {
        let err = t
            .api::<Promotion>()
            .patch("into-staging", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        assert!(
            err.is_err_and(|e| e.to_string().contains("immutable")),
            "spec.{what} cannot change"
        );
    }
    let refused = ferry::cli::approve(&t.client, &t.namespace, "into-nothing", None).await;
    let message = refused
        .expect_err("approving a failed promotion is refused")
        .to_string();
    assert!(message.contains("Failed"), "{message}");
}

#[tokio::test]
async fn a_newer_verified_revision_supersedes_one_waiting_for_approval() {
    let t = TestEnv::with_workloads("supersede").await;
    let prod_ns = create_namespace(&t, "prod").await;
    let c1 = source_and_staging(&t).await;
    create_production(
        &t,
        json!({"targetNamespace": prod_ns,
               "promotion": {"from": "staging", "requireApproval": true, "historyLimit": 1}}),
    )
    .await;
    let p1 = promotion_of(&t, "production", &c1).await;
    let p1_name = p1.metadata.name.clone().expect("name");
    wait_phase(&t, &p1_name, PromotionPhase::WaitingApproval).await;
    let c2 = push(&t, "v2");
    reconcile_source_now(&t).await;
    let p2 = promotion_of(&t, "production", &c2).await;
    let p2_name = p2.metadata.name.clone().expect("name");
    let superseded = wait_phase(&t, &p1_name, PromotionPhase::Superseded).await;
    let (_, _, message) = ready_of(&superseded.status.expect("status").conditions).expect("Ready");
    assert!(message.contains(&p2_name), "{message}");
    wait_phase(&t, &p2_name, PromotionPhase::WaitingApproval).await;
    let refused = ferry::cli::approve(&t.client, &t.namespace, &p1_name, None).await;
    assert!(
        matches!(refused, Err(ferry::cli::CliError::Refused(_))),
        "a superseded promotion cannot be approved: {refused:?}"
    );
    ferry::cli::approve(&t.client, &t.namespace, &p2_name, None)
        .await
        .expect("approve");
    wait_phase(&t, &p2_name, PromotionPhase::Succeeded).await;
    assert_eq!(configmap_version(&t.client, &prod_ns).await.as_deref(), Some("v2"));
    let production = t.api::<Environment>().get("production").await.expect("production");
    assert!(
        production.status.expect("status").record(&c1).is_none(),
        "v1 never reached production"
    );
    // historyLimit 1: the superseded promotion goes; the one of staging's newest verified revision stays.
    eventually("the older finished Promotion is deleted", || async {
        t.api::<Promotion>()
            .get_opt(&p1_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    t.api::<Promotion>().get(&p2_name).await.expect("the newest stays");
}

#[tokio::test]
async fn soak_time_and_freezes_hold_a_verified_revision() {
    let t = TestEnv::with_workloads("gates").await;
    let c1 = source_and_staging(&t).await;
    t.config_env_with(
        "soaked",
        "apps/production",
        "1h",
        json!({"promotion": {"from": "staging", "soakTime": "1h"}}),
    )
    .await;
    t.config_env_with("frozen", "apps/production", "1h", json!({"promotion": {"from": "staging", "freezes": [{"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z", "reason": "forever"}]}})).await;
    let soaking = wait_reason(&t, "soaked", &c1, "Soaking").await;
    assert_eq!(soaking.phase(), PromotionPhase::Pending);
    let frozen = wait_reason(&t, "frozen", &c1, "Frozen").await;
    let (_, _, message) = ready_of(&frozen.status.expect("status").conditions).expect("Ready");
    assert!(message.contains("forever"), "{message}");
    for env in ["soaked", "frozen"] {
        let e = t.api::<Environment>().get(env).await.expect("env");
        assert_eq!(
            e.status.and_then(|s| s.last_applied_revision),
            None,
            "{env} applied nothing"
        );
    }
}

#[tokio::test]
async fn a_chain_of_three_with_rbac_rejection_and_a_manual_promotion() {
    let t = TestEnv::with_workloads("chain").await;
    let stg = create_namespace(&t, "stg").await;
    let prd = create_namespace(&t, "prd").await;
    let c1 = push(&t, "v1");
    t.config_source("1h").await;
    t.config_env("dev", "apps/staging", "1h").await;
    t.config_env_with(
        "staging",
        "apps/production",
        "1h",
        json!({"targetNamespace": stg, "promotion": {"from": "dev"}}),
    )
    .await;
    create_production(
        &t,
        json!({"targetNamespace": prd,
               "promotion": {"from": "staging", "requireApproval": true}}),
    )
    .await;

    // dev → staging without a gate; staging → production waits for a person.
    let to_staging = promotion_of(&t, "staging", &c1).await;
    wait_phase(
        &t,
        to_staging.metadata.name.as_deref().expect("name"),
        PromotionPhase::Succeeded,
    )
    .await;
    wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;
    let to_production = promotion_of(&t, "production", &c1).await;
    let name = to_production.metadata.name.clone().expect("name");
    wait_phase(&t, &name, PromotionPhase::WaitingApproval).await;

    // RBAC decides who may decide; the decision records who it was.
    let bob = t.client_as("bob").await;
    let denied = ferry::cli::approve(&bob, &t.namespace, &name, None).await;
    assert!(
        matches!(&denied, Err(ferry::cli::CliError::Kube(kube::Error::Api(s))) if s.code == 403),
        "a user without rights cannot approve: {denied:?}"
    );
    t.grant_release_manager("alice").await;
    let alice = t.client_as("alice").await;
    let rejected = ferry::cli::reject(&alice, &t.namespace, &name, Some("not before the demo"))
        .await
        .expect("reject");
    assert_eq!(rejected.spec.approval.and_then(|a| a.by).as_deref(), Some("alice"));
    let overturn = json!({"spec": {"approval": {"decision": "Approved", "by": "alice"}}});
    let err = t
        .api::<Promotion>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&overturn))
        .await;
    assert!(
        err.is_err_and(|e| e.to_string().contains("final")),
        "a decision cannot be overturned"
    );
    let aborted = wait_phase(&t, &name, PromotionPhase::Aborted).await;
    let (_, reason, message) = ready_of(&aborted.status.expect("status").conditions).expect("Ready");
    assert_eq!(reason, "Rejected");
    assert_eq!(message, "rejected by alice: not before the demo");
    t.wait_event(&name, "Warning", "Rejected").await;

    // Ferry does not propose the rejected revision again; a person can, by commit prefix.
    let commit = c1.strip_prefix("main@sha1:").expect("sha1 revision");
    let again = ferry::cli::promote(&alice, &t.namespace, "production", &commit[..8])
        .await
        .expect("promote");
    assert_eq!(again.spec.revision, c1);
    let again_name = again.metadata.name.clone().expect("name");
    wait_phase(&t, &again_name, PromotionPhase::WaitingApproval).await;
    ferry::cli::approve(&alice, &t.namespace, &again_name, None)
        .await
        .expect("approve");
    wait_phase(&t, &again_name, PromotionPhase::Succeeded).await;
    assert_eq!(configmap_version(&t.client, &prd).await.as_deref(), Some("v1"));
    let history = ferry::cli::history(&t.client, &t.namespace, "production")
        .await
        .expect("history");
    assert!(history.contains(&again_name) && history.contains(&name), "{history}");
}

#[tokio::test]
async fn a_failing_acceptance_job_is_retried_then_fails_the_revision() {
    let t = TestEnv::with_workloads("retries").await;
    let c1 = push(&t, "v1");
    t.config_source("1h").await;
    t.config_env_with(
        "staging",
        "apps/staging",
        "1h",
        json!({"verification": {"jobTemplate": acceptance_job("fail"), "retries": 1, "timeout": "1m"}}),
    )
    .await;
    let staging = wait_record(&t, "staging", &c1, RevisionPhase::Failed).await;
    let record = record_of(&staging, &c1);
    assert_eq!(record.attempts, 2);
    let message = record.message.unwrap_or_default();
    assert!(message.contains("-2 failed"), "names the last attempt's Job: {message}");
    let jobs = t
        .api::<Job>()
        .list(&ListParams::default().labels("suite=acceptance"))
        .await
        .expect("jobs");
    let mut attempts: Vec<String> = jobs
        .items
        .iter()
        .filter_map(|j| {
            j.metadata
                .labels
                .as_ref()?
                .get("ferry.dev/verification-attempt")
                .cloned()
        })
        .collect();
    attempts.sort();
    assert_eq!(attempts, vec!["1", "2"]);
}

#[tokio::test]
async fn a_newer_revision_cancels_the_verification_job_of_the_one_it_supersedes() {
    let t = TestEnv::with_workloads("cancel").await;
    let stuck = json!({"metadata": {"labels": {"suite": "acceptance"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "missing"},
        "containers": [{"name": "test", "image": "example.com/acceptance:1"}]}}}});
    let c1 = push(&t, "v1");
    t.config_source("1h").await;
    t.config_env_with(
        "staging",
        "apps/staging",
        "1h",
        json!({"verification": {"jobTemplate": stuck, "timeout": "5m"}}),
    )
    .await;
    let staging = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.record(&c1))
            .is_some_and(|r| r.job.is_some())
    })
    .await;
    let first_job = staging
        .status
        .and_then(|s| s.record(&c1).and_then(|r| r.job.clone()))
        .expect("job");
    t.api::<Job>()
        .get(&first_job)
        .await
        .expect("the first revision's Job runs");
    // Drift while the Job runs: a deleted object comes back, and the same run goes on.
    let cms: Api<ConfigMap> = t.api();
    cms.delete("app", &Default::default()).await.expect("delete");
    eventually("the deleted ConfigMap is put back during verification", || async {
        cms.get_opt("app")
            .await
            .ok()?
            .filter(|c| c.metadata.deletion_timestamp.is_none())
    })
    .await;
    let staging = t.api::<Environment>().get("staging").await.expect("staging");
    let record = record_of(&staging, &c1);
    assert_eq!(
        (record.phase, record.job.as_deref()),
        (RevisionPhase::Verifying, Some(first_job.as_str()))
    );
    let c2 = push(&t, "v2");
    reconcile_source_now(&t).await;
    let staging = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.record(&c2))
            .is_some_and(|r| r.job.is_some())
    })
    .await;
    assert_eq!(record_phase(&staging, &c1), Some(RevisionPhase::Superseded));
    eventually("the superseded revision's Job is deleted", || async {
        let job = t.api::<Job>().get_opt(&first_job).await.ok()?;
        job.is_none_or(|j| j.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_restart_while_applying_resumes_once_the_target_cluster_can_be_reached() {
    let mut t = TestEnv::with_workloads("applying").await;
    let prod_ns = create_namespace(&t, "prod").await;
    let c1 = source_and_staging(&t).await;
    // The kubeconfig Secret does not exist yet: the promotion starts applying and cannot finish.
    create_production(
        &t,
        json!({"targetNamespace": prod_ns, "kubeConfig": {"secretRef": {"name": "later"}},
               "promotion": {"from": "staging"}}),
    )
    .await;
    let p1 = promotion_of(&t, "production", &c1).await;
    let name = p1.metadata.name.clone().expect("name");
    wait_phase(&t, &name, PromotionPhase::Applying).await;
    let production = wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        env_ready(e).is_some_and(|(_, reason, _)| reason == "InvalidKubeConfig")
    })
    .await;
    assert!(
        env_ready(&production).expect("Ready").2.contains("later"),
        "names the Secret"
    );
    t.restart_controller();
    t.create_secret("later", &[("value", &t.kubeconfig_self_contained())])
        .await;
    // Nothing triggers the Environment but its retry: a Secret is not watched. Poke it, as a user would.
    let poke = json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": "secret created"}}});
    t.api::<Environment>()
        .patch("production", &PatchParams::default(), &Patch::Merge(&poke))
        .await
        .expect("poke");
    let done = wait_phase(&t, &name, PromotionPhase::Succeeded).await;
    assert_eq!(
        phases(&done),
        vec![
            PromotionPhase::Applying,
            PromotionPhase::Verifying,
            PromotionPhase::Succeeded
        ]
    );
    assert_eq!(configmap_version(&t.client, &prod_ns).await.as_deref(), Some("v1"));
}

#[tokio::test]
async fn a_verification_that_finished_between_two_looks_is_still_a_verifying_phase() {
    let mut t = TestEnv::with_workloads("between-looks").await;
    let prod_ns = create_namespace(&t, "prod").await;
    let c1 = source_and_staging(&t).await;
    // The kubeconfig Secret does not exist: the promotion is Applying, and production cannot apply.
    create_production(
        &t,
        json!({"targetNamespace": prod_ns, "kubeConfig": {"secretRef": {"name": "missing"}},
               "promotion": {"from": "staging"}}),
    )
    .await;
    let p1 = promotion_of(&t, "production", &c1).await;
    let name = p1.metadata.name.clone().expect("name");
    wait_phase(&t, &name, PromotionPhase::Applying).await;
    // While Ferry is down, production's record moves from Applying to Verified: what a verification that
    // finishes between two looks of the Promotion controller shows it (the race, made certain).
    t.stop_controller();
    let uid = p1.metadata.uid.clone().expect("uid");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let record = json!({"revision": c1, "phase": "Verified", "promotion": name, "promotionUid": uid,
                        "appliedAt": now, "finishedAt": now, "message": "all objects healthy"});
    t.api::<Environment>()
        .patch_status(
            "production",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"history": [record]}})),
        )
        .await
        .expect("status");
    t.restart_controller();
    let done = wait_phase(&t, &name, PromotionPhase::Succeeded).await;
    assert_eq!(
        phases(&done),
        vec![
            PromotionPhase::Applying,
            PromotionPhase::Verifying,
            PromotionPhase::Succeeded
        ],
        "the phase it passed through is recorded"
    );
    let events = t.events(&name).await;
    for phase in ["Applying", "Verifying", "Succeeded"] {
        let n = events
            .iter()
            .filter(|(_, _, note)| note.starts_with(&format!("{phase}: ")))
            .count();
        assert_eq!(n, 1, "one {phase} Event: {events:?}");
    }
}
