//! End-to-end sync on a real kube-apiserver and a real `git daemon`: push → fetch → render → apply.

mod common;

use common::*;
use ferry::api::{Environment, GitRepository};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

const CM_A: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  color: blue\n";
const MULTI: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nested-one\ndata: {n: \"1\"}\n---\n# comment-only documents are fine\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nested-two\n  namespace: somewhere-else\ndata: {n: \"2\"}\n";

async fn setup_synced(t: &TestEnv, interval: &str) -> String {
    t.repo.write("apps/app.yaml", CM_A);
    t.repo.write("apps/nested/deeper/multi.yml", MULTI);
    t.repo.write("apps/README.md", "not a manifest");
    t.repo.write(
        "other/ignored.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
    );
    let commit = t.repo.commit_and_push("first");
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "ref": {"branch": "main"}, "interval": interval}),
    )
    .await;
    t.create_env(
        "staging",
        json!({"sourceRef": {"name": "config"}, "path": "./apps", "interval": interval, "maxPrunePercent": 100,
               "targetNamespace": t.namespace}),
    )
    .await;
    wait_applied(t, "staging", &commit).await;
    commit
}

#[tokio::test]
async fn a_push_is_applied_with_labels_inventory_and_events() {
    let t = TestEnv::new("push").await;
    let first = setup_synced(&t, "1h").await;

    let env = t.api::<Environment>().get("staging").await.unwrap();
    let status = env.status.clone().unwrap();
    let (_, reason, message) = env_ready(&env).unwrap();
    assert_eq!(reason, "Succeeded");
    assert!(
        message.contains(&main_revision(&first)),
        "Ready message names the revision: {message}"
    );
    let names: Vec<_> = status.inventory.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["app-config", "nested-one", "nested-two"]);
    assert!(
        status
            .inventory
            .iter()
            .all(|e| e.namespace.as_deref() == Some(t.namespace.as_str()))
    );

    let cms = t.api::<ConfigMap>();
    let cm = cms.get("app-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["color"], "blue");
    let labels = cm.metadata.labels.unwrap();
    assert_eq!(labels["ferry.dev/environment"], "staging");
    assert_eq!(labels["ferry.dev/environment-namespace"], t.namespace);
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"ferry".to_string()),
        "server-side applied by ferry: {managers:?}"
    );
    assert!(
        cms.get_opt("ignored").await.unwrap().is_none(),
        "files outside the path are not applied"
    );

    let repo = t.api::<GitRepository>().get("config").await.unwrap();
    assert_eq!(repo.status.unwrap().artifact.unwrap().revision, main_revision(&first));

    // A new commit. The GitRepository's interval is an hour, so only "reconcile now" (what the webhook receiver
    // does) fetches it, and the Environment follows through the watch on its source, not its own interval.
    t.repo.write("apps/app.yaml", &CM_A.replace("blue", "green"));
    let second = t.repo.commit_and_push("second");
    request_fetch(&t, "config", "1").await;
    wait_applied(&t, "staging", &second).await;
    assert_eq!(cms.get("app-config").await.unwrap().data.unwrap()["color"], "green");

    for commit in [&first, &second] {
        eventually(&format!("an Applied event naming {commit}"), || async {
            let events = t.events("staging").await;
            events
                .iter()
                .any(|(ty, reason, note)| ty == "Normal" && reason == "Applied" && note.contains(commit.as_str()))
                .then_some(())
        })
        .await;
    }
    t.wait_event("config", "Normal", "NewRevision").await;
}

#[tokio::test]
async fn a_new_commit_is_picked_up_on_the_next_interval() {
    let t = TestEnv::new("interval").await;
    setup_synced(&t, "1s").await;
    t.repo.write("apps/app.yaml", &CM_A.replace("blue", "red"));
    let second = t.repo.commit_and_push("second");
    wait_applied(&t, "staging", &second).await;
    let cm = t.api::<ConfigMap>().get("app-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["color"], "red");
}

#[tokio::test]
async fn an_object_deleted_by_hand_comes_back() {
    let t = TestEnv::new("drift").await;
    setup_synced(&t, "1s").await;
    let cms = t.api::<ConfigMap>();
    let before = cms.get("app-config").await.unwrap();
    cms.delete("app-config", &Default::default()).await.unwrap();
    let uid = before.metadata.uid.clone();
    let back = eventually("deleted ConfigMap recreated", || async {
        cms.get_opt("app-config")
            .await
            .ok()
            .flatten()
            .filter(|cm| cm.metadata.uid != uid)
    })
    .await;
    assert_eq!(back.data.unwrap()["color"], "blue");
}

#[tokio::test]
async fn objects_removed_from_git_are_pruned() {
    let t = TestEnv::new("prune").await;
    setup_synced(&t, "1s").await;
    t.repo.remove("apps/nested/deeper/multi.yml");
    let second = t.repo.commit_and_push("remove nested");
    let env = wait_applied(&t, "staging", &second).await;
    let names: Vec<_> = env.status.unwrap().inventory.into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["app-config"]);
    let cms = t.api::<ConfigMap>();
    eventually("pruned ConfigMaps gone", || async {
        let one = cms.get_opt("nested-one").await.ok()?;
        let two = cms.get_opt("nested-two").await.ok()?;
        (one.is_none() && two.is_none()).then_some(())
    })
    .await;
    assert!(cms.get_opt("app-config").await.unwrap().is_some());
}

#[tokio::test]
async fn malformed_yaml_fails_clearly_and_leaves_applied_objects_untouched() {
    let t = TestEnv::new("malformed").await;
    let first = setup_synced(&t, "1s").await;
    let cms = t.api::<ConfigMap>();
    let before = cms.get("app-config").await.unwrap();

    t.repo.write("apps/app.yaml", &CM_A.replace("blue", "purple"));
    t.repo.write(
        "apps/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    );
    let bad = t.repo.commit_and_push("broken");
    let env = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_attempted_revision.as_deref()) == Some(main_revision(&bad).as_str())
            && env_ready(e).is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = env_ready(&env).unwrap();
    assert_eq!(reason, "RenderFailed");
    assert!(
        message.contains("apps/broken.yaml"),
        "message names the file: {message}"
    );
    assert!(
        message.contains(&main_revision(&first)),
        "message says what the cluster keeps: {message}"
    );
    let status = env.status.unwrap();
    assert_eq!(status.last_applied_revision, Some(main_revision(&first)));
    assert_eq!(status.inventory.len(), 3, "inventory of the last good revision is kept");

    let after = cms.get("app-config").await.unwrap();
    assert_eq!(
        after.data.unwrap()["color"],
        "blue",
        "nothing from the bad revision was applied"
    );
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    t.wait_event("staging", "Warning", "RenderFailed").await;

    // Fixing the repo recovers.
    t.repo.remove("apps/broken.yaml");
    let fixed = t.repo.commit_and_push("fix");
    wait_applied(&t, "staging", &fixed).await;
    assert_eq!(cms.get("app-config").await.unwrap().data.unwrap()["color"], "purple");
}

#[tokio::test]
async fn a_bad_url_fails_clearly() {
    let t = TestEnv::new("badurl").await;
    t.create_gitrepo("typo", json!({"url": "github.com/no-scheme/repo", "interval": "1s"}))
        .await;
    let closed_port = ferry_testenv::free_port().unwrap();
    t.create_gitrepo(
        "unreachable",
        json!({"url": format!("git://127.0.0.1:{closed_port}/x.git"), "interval": "1s"}),
    )
    .await;
    t.create_env("staging", json!({"sourceRef": {"name": "typo"}, "path": "apps"}))
        .await;

    let repos = t.api::<GitRepository>();
    let typo = wait_for(&repos, "typo", |r: &GitRepository| repo_ready(r).is_some()).await;
    let (status, reason, message) = repo_ready(&typo).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidURL"));
    assert!(message.contains("missing scheme"), "{message}");
    let stalled = typo
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled");
    assert_eq!(stalled.map(|c| c.status), Some("True".to_string()));

    let unreachable = wait_for(&repos, "unreachable", |r: &GitRepository| repo_ready(r).is_some()).await;
    let (status, reason, _) = repo_ready(&unreachable).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "FetchFailed"));

    // The Environment follows its source's state: it ends up saying why the source has no revision.
    let env = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        env_ready(e).is_some_and(|(_, _, m)| m.contains("missing scheme"))
    })
    .await;
    let (status, reason, message) = env_ready(&env).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SourceNotReady"));
    assert!(
        message.contains("missing scheme"),
        "the Environment says why its source is not ready: {message}"
    );
    t.wait_event("typo", "Warning", "InvalidURL").await;
}

#[tokio::test]
async fn a_missing_ref_fails_clearly_and_keeps_the_last_good_revision() {
    let t = TestEnv::new("missingref").await;
    let first = setup_synced(&t, "1s").await;

    t.api::<GitRepository>()
        .patch(
            "config",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"ref": {"branch": "does-not-exist"}}})),
        )
        .await
        .unwrap();
    let repo = wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        repo_ready(r).is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = repo_ready(&repo).unwrap();
    assert_eq!(reason, "RefNotFound");
    assert!(message.contains("does-not-exist"), "{message}");
    assert_eq!(
        repo.status.unwrap().artifact.unwrap().revision,
        main_revision(&first),
        "last good revision kept"
    );

    let env = t.api::<Environment>().get("staging").await.unwrap();
    assert_eq!(env.status.unwrap().last_applied_revision, Some(main_revision(&first)));
    let cm = t.api::<ConfigMap>().get("app-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["color"], "blue");
    t.wait_event("config", "Warning", "RefNotFound").await;
}
