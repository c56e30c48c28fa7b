//! Approvals that cannot be forged: `manifests/approval-policy.yaml`, as shipped, applied to a real API server
//! with RBAC. A user allowed to create and patch Promotions can neither create one already approved nor record
//! an approval in someone else's name; `ferry approve` still works and records the real caller.
//!
//! The policy is cluster-wide, so these tests live in their own test binary (their own control plane): the
//! other binaries create Promotions freely.

mod common;

use common::*;
use ferry::api::{Decision, Environment, Promotion, PromotionPhase};
use kube::Api;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

const POLICY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/approval-policy.yaml");
const POLICY_NAME: &str = "ferry-promotion-approval";

/// The YAML documents of a file in the repository, as JSON.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("reading manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A Promotion as a client would send it: `approval` is whatever the caller chooses.
fn promotion(t: &TestEnv, name: &str, approval: Option<Value>) -> Promotion {
    let mut spec =
        json!({"environment": "production", "revision": "main@sha1:0123456789abcdef0123456789abcdef01234567"});
    if let Some(a) = approval {
        spec["approval"] = a;
    }
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Promotion",
        "metadata": {"name": name, "namespace": t.namespace},
        "spec": spec,
    }))
    .expect("promotion")
}

/// Applies the shipped policy file as it is (server-side apply of each document) and waits until the API
/// server enforces it: policies load asynchronously, so until a forged create (dry run) is refused, a passing
/// test would prove nothing.
async fn install_policy(t: &TestEnv) {
    let docs = documents(POLICY_FILE);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"],
        "{POLICY_FILE}"
    );
    for doc in &docs {
        let api_version = doc["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.split_once('/').expect("group/version");
        let kind = doc["kind"].as_str().expect("kind");
        let name = doc["metadata"]["name"].as_str().expect("name");
        let (ar, _) = kube::discovery::pinned_kind(&t.client, &GroupVersionKind::gvk(group, version, kind))
            .await
            .expect("discovery");
        Api::<DynamicObject>::all_with(t.client.clone(), &ar)
            .patch(name, &PatchParams::apply("ferry-tests").force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }
    let promotions = t.api::<Promotion>();
    let forged = promotion(t, "probe", Some(json!({"decision": "Approved", "by": "admin"})));
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the approval policy is enforced", || async {
        let refused = promotions.create(&dry_run, &forged).await;
        matches!(refused, Err(kube::Error::Api(s)) if s.message.contains(POLICY_NAME)).then_some(())
    })
    .await;
}

/// The refusal came from the approval policy (not RBAC, not the CRD): 403 naming the policy.
fn assert_refused_by_policy<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(POLICY_NAME) => {}
        other => panic!("{what}: expected a 403 from {POLICY_NAME}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_promotion_cannot_be_created_already_approved_or_rejected() {
    let t = TestEnv::new("approval-create").await;
    install_policy(&t).await;
    t.grant_release_manager("alice").await;
    let alice: Api<Promotion> = Api::namespaced(t.client_as("alice").await, &t.namespace);

    for (name, approval) in [
        ("self-approved", json!({"decision": "Approved", "by": "alice"})),
        ("approved-for-bob", json!({"decision": "Approved", "by": "bob"})),
        ("anonymous", json!({"decision": "Approved"})),
        ("self-rejected", json!({"decision": "Rejected", "by": "alice"})),
    ] {
        let forged = promotion(&t, name, Some(approval));
        assert_refused_by_policy(
            alice.create(&PostParams::default(), &forged).await,
            &format!("alice creating {name}"),
        );
        assert_refused_by_policy(
            t.api::<Promotion>().create(&PostParams::default(), &forged).await,
            &format!("a cluster admin creating {name}"),
        );
        assert!(t.api::<Promotion>().get_opt(name).await.expect("get").is_none());
    }
    // The same user may create a Promotion that waits for a decision: the refusals above are the policy's.
    alice
        .create(&PostParams::default(), &promotion(&t, "undecided", None))
        .await
        .expect("alice creates an undecided Promotion");
}

/// A staging Environment that applies and verifies a ConfigMap, and `production` promoting from it with
/// `requireApproval`; returns the name of the Promotion Ferry proposed (once WaitingApproval) and its revision.
async fn promotion_waiting_for_approval(t: &TestEnv) -> (String, String) {
    t.repo.write(
        "apps/staging/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: staging-app}\ndata: {v: \"1\"}\n",
    );
    t.repo.write(
        "apps/production/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: production-app}\ndata: {v: \"1\"}\n",
    );
    let revision = format!("main@sha1:{}", t.repo.commit_and_push("one"));
    t.config_source("1h").await;
    t.config_env("staging", "apps/staging", "1h").await;
    t.approved_production("apps/production", "1h").await;
    let promotions = t.api::<Promotion>();
    let waiting = eventually("a Promotion into production waiting for approval", || async {
        promotions
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| p.spec.revision == revision && p.phase() == PromotionPhase::WaitingApproval)
    })
    .await;
    (waiting.metadata.name.expect("name"), revision)
}

#[tokio::test]
async fn an_approval_names_its_real_caller_and_ferry_approve_still_works() {
    let t = TestEnv::new("approval-by").await;
    install_policy(&t).await;
    t.grant_release_manager("alice").await;
    let (name, revision) = promotion_waiting_for_approval(&t).await;
    let promotions = t.api::<Promotion>();

    let alice_client = t.client_as("alice").await;
    let alice: Api<Promotion> = Api::namespaced(alice_client.clone(), &t.namespace);
    for approval in [
        json!({"decision": "Approved", "by": "bob"}),
        json!({"decision": "Approved", "by": "admin"}),
        json!({"decision": "Approved"}),
        json!({"decision": "Rejected", "by": "bob"}),
    ] {
        let patch = json!({"spec": {"approval": approval}});
        assert_refused_by_policy(
            alice.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await,
            &format!("alice patching {approval}"),
        );
    }
    let admin_forgery = json!({"spec": {"approval": {"decision": "Approved", "by": "alice"}}});
    assert_refused_by_policy(
        promotions
            .patch(&name, &PatchParams::default(), &Patch::Merge(&admin_forgery))
            .await,
        "a cluster admin approving in alice's name",
    );
    let unchanged = promotions.get(&name).await.expect("promotion");
    assert_eq!(unchanged.spec.approval, None, "no forged approval was recorded");
    assert_eq!(unchanged.phase(), PromotionPhase::WaitingApproval);

    let approved = ferry::cli::approve(&alice_client, &t.namespace, &name, Some("ship it"))
        .await
        .expect("ferry approve as alice");
    let approval = approved.spec.approval.expect("approval");
    assert_eq!(approval.decision, Decision::Approved);
    assert_eq!(approval.by.as_deref(), Some("alice"), "by names the real caller");

    // Once decided, nobody (the approver included) can rewrite who decided: the CRD keeps it final.
    let rewrite = json!({"spec": {"approval": {"decision": "Approved", "by": "bob"}}});
    assert!(
        alice
            .patch(&name, &PatchParams::default(), &Patch::Merge(&rewrite))
            .await
            .is_err(),
        "an approval cannot be rewritten"
    );

    // The controller's own writes (proposal, labels, status) pass the policy: the promotion runs to the end.
    let done = wait_for(&promotions, &name, |p: &Promotion| p.phase().is_final()).await;
    assert_eq!(done.phase(), PromotionPhase::Succeeded, "{:?}", done.status);
    let production = wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(revision.as_str())
    })
    .await;
    assert!(production.status.is_some());
}

/// `ferry reject` passes the policy too and records the real caller; the controller then aborts the promotion.
#[tokio::test]
async fn ferry_reject_records_the_real_caller() {
    let t = TestEnv::new("approval-reject").await;
    install_policy(&t).await;
    t.grant_release_manager("alice").await;
    let (name, _) = promotion_waiting_for_approval(&t).await;
    let alice = t.client_as("alice").await;
    let rejected = ferry::cli::reject(&alice, &t.namespace, &name, Some("not today"))
        .await
        .expect("ferry reject as alice");
    let approval = rejected.spec.approval.expect("approval");
    assert_eq!(approval.decision, Decision::Rejected);
    assert_eq!(approval.by.as_deref(), Some("alice"), "by names the real caller");
    let done = wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| p.phase().is_final()).await;
    assert_eq!(done.phase(), PromotionPhase::Aborted, "{:?}", done.status);
}
