//! The sync engine on a real apiserver: zero writes when nothing changed (counted in the audit log), drift
//! reverted, conflicts with other appliers, atomic dry run, staged CRDs and Namespaces, prune guards, and
//! deletion policy.

mod common;

use common::*;
use ferry::api::Environment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

fn applied_revision(e: &Environment) -> Option<String> {
    e.status.as_ref()?.last_applied_revision.clone()
}

/// Three ConfigMaps synced every second.
async fn synced(t: &TestEnv, extra_spec: serde_json::Value) -> String {
    for name in ["a", "b", "c"] {
        t.repo
            .write(&format!("apps/{name}.yaml"), &config_map(name, &[("color", "blue")]));
    }
    let commit = t.repo.commit_and_push("three configmaps");
    t.config_source("1s").await;
    let mut spec = json!({"sourceRef": {"name": "config"}, "path": "apps", "interval": "1s"});
    for (k, v) in extra_spec.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    t.create_env("env", spec).await;
    wait_applied(t, "env", &commit).await;
    commit
}

fn config_map_requests(t: &TestEnv) -> Vec<(String, String, bool)> {
    audited_writes(&t.audit_log, &t.namespace)
        .into_iter()
        .filter(|(_, uri, _)| uri.contains("configmaps"))
        .collect()
}

/// The steady state asks the API server nothing about the applied objects: no write, and not even the dry run
/// (the watches on the applied objects say nothing changed).
#[tokio::test]
async fn a_reconcile_where_nothing_changed_makes_no_request_for_the_objects() {
    let t = TestEnv::new("noop").await;
    synced(&t, json!({})).await;
    // One reconcile to settle (the watches list the objects; the first sync records what it applied).
    t.reconciled("env", "settle").await;
    let before = config_map_requests(&t).len();
    for token in ["one", "two", "three"] {
        t.reconciled("env", token).await;
    }
    let window: Vec<_> = config_map_requests(&t).into_iter().skip(before).collect();
    assert!(
        window.is_empty(),
        "no-op reconciles asked about the objects: {window:#?}"
    );
}

/// With a short `--full-sync-interval` the dry-run path comes round even though nothing changed (admission
/// webhooks and server defaults can change what applying means without an event), and still writes nothing.
#[tokio::test]
async fn the_periodic_full_check_dry_runs_again_and_writes_nothing() {
    let t = TestEnv::with_settings("full-check", |s| {
        s.full_sync_interval = std::time::Duration::from_millis(500)
    })
    .await;
    synced(&t, json!({})).await;
    t.reconciled("env", "settle").await;
    let before = config_map_requests(&t).len();
    eventually("a full check dry-runs the three objects again", || async {
        let window: Vec<_> = config_map_requests(&t).into_iter().skip(before).collect();
        (window.iter().filter(|(_, _, dry)| *dry).count() >= 3).then_some(window)
    })
    .await;
    let writes: Vec<_> = config_map_requests(&t)
        .into_iter()
        .skip(before)
        .filter(|(_, _, dry)| !dry)
        .collect();
    assert!(writes.is_empty(), "the full check wrote: {writes:#?}");
}

/// A hand edit or deletion wakes the Environment through the watch: reverted long before its hour-long
/// interval.
#[tokio::test]
async fn drift_is_reverted_at_once_not_at_the_next_interval() {
    let t = TestEnv::new("drift-watch").await;
    synced(&t, json!({"interval": "1h"})).await;
    t.reconciled("env", "settle").await;
    let cms = t.api::<ConfigMap>();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "hacked"}})),
    )
    .await
    .expect("hand edit");
    cms.delete("b", &DeleteParams::default()).await.expect("delete");
    eventually("drift reverted through the watch", || async {
        let a = cms.get("a").await.ok()?;
        let b = cms.get_opt("b").await.ok()??;
        (a.data?.get("color")? == "blue" && b.data?.get("color")? == "blue").then_some(())
    })
    .await;
    t.wait_event("env", "Warning", "DriftCorrected").await;
}

#[tokio::test]
async fn hand_edits_and_deletions_are_reverted_and_reported_as_drift() {
    let t = TestEnv::new("drift-edit").await;
    synced(&t, json!({})).await;
    let cms = t.api::<ConfigMap>();
    // An imperative edit, as `kubectl edit` or `kubectl patch` makes it (operation Update).
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "hacked"}})),
    )
    .await
    .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    eventually("drift reverted", || async {
        let a = cms.get("a").await.ok()?;
        let b = cms.get_opt("b").await.ok()??;
        (a.data?.get("color")? == "blue" && b.data?.get("color")? == "blue").then_some(())
    })
    .await;
    let env = wait_for(&t.api::<Environment>(), "env", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.last_drift_correction.as_ref())
            .is_some()
    })
    .await;
    let drift = env.status.unwrap().last_drift_correction.unwrap();
    assert!(!drift.objects.is_empty(), "{drift:?}");
    t.wait_event("env", "Warning", "DriftCorrected").await;
}

#[tokio::test]
async fn another_appliers_fields_are_reported_until_force_takes_them() {
    let t = TestEnv::new("conflict").await;
    synced(&t, json!({})).await;
    let cms = t.api::<ConfigMap>();
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"color": "other"}});
    cms.patch("a", &PatchParams::apply("other-gitops").force(), &Patch::Apply(&other))
        .await
        .unwrap();
    let message = wait_not_ready(&t, "env", "Conflict").await;
    assert!(
        message.contains("other-gitops") && message.contains("spec.force"),
        "{message}"
    );
    assert_eq!(
        cms.get("a").await.unwrap().data.unwrap()["color"],
        "other",
        "not taken without force"
    );

    t.api::<Environment>()
        .patch(
            "env",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"force": true}})),
        )
        .await
        .unwrap();
    eventually("force takes the field back", || async {
        (cms.get("a").await.ok()?.data?.get("color")? == "blue").then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_invalid_object_means_nothing_of_the_revision_is_applied() {
    let t = TestEnv::new("atomic").await;
    let first = synced(&t, json!({})).await;
    t.repo.write("apps/a.yaml", &config_map("a", &[("color", "green")]));
    t.repo.write(
        "apps/bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 99999}]\n",
    );
    t.repo.write(
        "apps/unknown.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
    );
    t.repo.commit_and_push("one good change, two bad objects");
    let message = wait_not_ready(&t, "env", "ValidationFailed").await;
    assert!(message.contains("Widget"), "the unknown kind is named: {message}");
    let env = t.api::<Environment>().get("env").await.unwrap();
    assert_eq!(applied_revision(&env), Some(format!("main@sha1:{first}")));
    assert_eq!(
        t.api::<ConfigMap>().get("a").await.unwrap().data.unwrap()["color"],
        "blue"
    );

    t.repo.remove("apps/unknown.yaml");
    t.repo.commit_and_push("only the invalid Service left");
    eventually("the Service is named as invalid", || async {
        let env = t.api::<Environment>().get("env").await.ok()?;
        let (_, reason, message) = env_ready(&env)?;
        (reason == "ValidationFailed" && message.contains("Service") && message.contains("bad")).then_some(())
    })
    .await;
    assert_eq!(
        t.api::<ConfigMap>().get("a").await.unwrap().data.unwrap()["color"],
        "blue"
    );
    t.wait_event("env", "Warning", "ValidationFailed").await;
}

#[tokio::test]
async fn crds_and_namespaces_are_applied_first_in_one_revision() {
    let t = TestEnv::new("staged").await;
    let group = format!("{}.example.com", t.namespace);
    let ns = format!("{}-extra", t.namespace);
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    t.repo.write("apps/crd.json", &crd.to_string());
    t.repo.write(
        "apps/gadget.yaml",
        &format!("apiVersion: {group}/v1\nkind: Gadget\nmetadata: {{name: g1}}\nspec: {{size: 3}}\n"),
    );
    t.repo.write(
        "apps/ns.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    );
    t.repo.write(
        "apps/in-ns.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: placed, namespace: {ns}}}\n"),
    );
    let commit = t
        .repo
        .commit_and_push("crd, its object, a namespace and an object in it");
    t.config_source("1s").await;
    t.config_env("env", "apps", "1s").await;
    let env = wait_applied(&t, "env", &commit).await;
    let kinds: Vec<_> = env.status.unwrap().inventory.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    let placed: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    assert!(
        placed.get_opt("placed").await.unwrap().is_some(),
        "an object keeps its own namespace"
    );

    // Deleting the Environment deletes what it applied (deletionPolicy Delete by default).
    t.api::<Environment>()
        .delete("env", &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    eventually("objects deleted with the Environment", || async {
        let env_gone = t.api::<Environment>().get_opt("env").await.ok()?.is_none();
        let ns_gone = namespaces
            .get_opt(&ns)
            .await
            .ok()?
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
        (env_gone && ns_gone).then_some(())
    })
    .await;
}

#[tokio::test]
async fn prune_guards_stop_mass_deletion_and_respect_opt_out() {
    let t = TestEnv::new("guards").await;
    synced(&t, json!({})).await;
    let cms = t.api::<ConfigMap>();

    // Everything removed from Git: refused.
    for name in ["a", "b", "c"] {
        t.repo.remove(&format!("apps/{name}.yaml"));
    }
    t.repo.write("apps/README.md", "nothing here");
    t.repo.commit_and_push("empty");
    let message = wait_not_ready(&t, "env", "PruneBlocked").await;
    assert!(message.contains("no objects"), "{message}");
    // Two of three removed: over the default 50%.
    t.repo.write("apps/a.yaml", &config_map("a", &[("color", "blue")]));
    t.repo.commit_and_push("two of three gone");
    eventually("share guard", || async {
        let env = t.api::<Environment>().get("env").await.ok()?;
        env_ready(&env)?
            .2
            .contains("more than maxPrunePercent 50%")
            .then_some(())
    })
    .await;
    for name in ["a", "b", "c"] {
        assert!(cms.get_opt(name).await.unwrap().is_some(), "{name} kept while blocked");
    }

    // Allowed now, but b opted out: only c goes.
    cms.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"ferry.dev/prune": "disabled"}}})),
    )
    .await
    .unwrap();
    t.api::<Environment>()
        .patch(
            "env",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxPrunePercent": 100}})),
        )
        .await
        .unwrap();
    eventually("c pruned", || async {
        cms.get_opt("c").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cms.get_opt("b").await.unwrap().is_some(), "opted out of prune");
}

#[tokio::test]
async fn orphan_policy_leaves_objects_behind() {
    let t = TestEnv::new("orphan").await;
    synced(&t, json!({"deletionPolicy": "Orphan"})).await;
    t.api::<Environment>()
        .delete("env", &DeleteParams::default())
        .await
        .unwrap();
    eventually("Environment gone", || async {
        t.api::<Environment>()
            .get_opt("env")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    for name in ["a", "b", "c"] {
        assert!(
            t.api::<ConfigMap>().get_opt(name).await.unwrap().is_some(),
            "{name} orphaned, not deleted"
        );
    }
}

#[tokio::test]
async fn two_environments_never_fight_over_one_object() {
    let t = TestEnv::new("two-envs").await;
    synced(&t, json!({})).await;
    // A second Environment rendering the same objects into the same namespace.
    t.config_env("twin", "apps", "1s").await;
    let message = wait_not_ready(&t, "twin", "Conflict").await;
    assert!(
        message.contains(&format!("already applied by Environment {}/env", t.namespace)),
        "{message}"
    );
    let cm = t.api::<ConfigMap>().get("a").await.unwrap();
    assert_eq!(
        cm.metadata.labels.unwrap()["ferry.dev/environment"],
        "env",
        "the first owner keeps it"
    );
}

#[tokio::test]
async fn a_namespace_holding_objects_of_others_is_not_pruned() {
    let t = TestEnv::new("ns-guard").await;
    let ns = format!("{}-owned", t.namespace);
    t.repo.write(
        "apps/ns.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    );
    t.repo.write(
        "apps/cm.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ours, namespace: {ns}}}\n"),
    );
    let commit = t.repo.commit_and_push("namespace and a configmap");
    t.config_source("1s").await;
    t.config_env_with("env", "apps", "1s", json!({"maxPrunePercent": 100}))
        .await;
    wait_applied(&t, "env", &commit).await;
    // Someone else keeps something in that namespace.
    let theirs: Api<ConfigMap> = Api::namespaced(t.client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "theirs"}})).unwrap();
    theirs.create(&Default::default(), &cm).await.unwrap();

    t.repo.remove("apps/ns.yaml");
    t.repo.remove("apps/cm.yaml");
    t.repo.write("apps/other.yaml", &cm_in("keep", &t.namespace));
    t.repo.commit_and_push("namespace removed from git");
    let message = wait_not_ready(&t, "env", "PruneFailed").await;
    assert!(
        message.contains("does not own") && message.contains("theirs"),
        "{message}"
    );
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    let live = namespaces.get(&ns).await.unwrap();
    assert!(
        live.metadata.deletion_timestamp.is_none(),
        "the namespace and what it holds stay"
    );
    assert!(theirs.get_opt("theirs").await.unwrap().is_some());
}

fn cm_in(name: &str, namespace: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\n")
}

#[tokio::test]
async fn an_invalid_object_stops_the_revision_before_its_namespace_is_created() {
    let t = TestEnv::new("precheck").await;
    let first = synced(&t, json!({})).await;
    let ns = format!("{}-new", t.namespace);
    t.repo.write(
        "apps/ns.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    );
    t.repo.write(
        "apps/bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 99999}]\n",
    );
    t.repo.commit_and_push("a new namespace and an invalid Service");
    let message = wait_not_ready(&t, "env", "ValidationFailed").await;
    assert!(message.contains("bad"), "{message}");
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    assert!(
        namespaces.get_opt(&ns).await.unwrap().is_none(),
        "the first stage was not applied either"
    );
    let env = t.api::<Environment>().get("env").await.unwrap();
    assert_eq!(applied_revision(&env), Some(format!("main@sha1:{first}")));
}

/// A MutatingAdmissionPolicy (admissionregistration.k8s.io/v1, served by default since Kubernetes 1.36) that
/// stamps a label on every ConfigMap Ferry owns in the test namespace, at its next write. Returns once the API
/// server enforces it (a dry-run create comes back stamped).
async fn stamp_config_maps_at_their_next_write(t: &TestEnv) {
    let name = format!("{}-stamp", t.namespace);
    t.apply_json(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
            "matchConditions": [{"name": "owned-by-ferry",
                "expression": "has(object.metadata.labels) && 'ferry.dev/environment' in object.metadata.labels"}],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {
                "expression": "Object{metadata: Object.metadata{labels: {\"policy.example.com/stamped\": \"yes\"}}}"}}]
        }
    }))
    .await;
    t.apply_json(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "matchResources": {"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": t.namespace}}}}
    }))
    .await;
    let probe: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "probe", "labels": {"ferry.dev/environment": "probe"}}}))
            .expect("configmap");
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually("the admission policy is enforced", || async {
        let created = t.api::<ConfigMap>().create(&dry_run, &probe).await.ok()?;
        stamped(&created).then_some(())
    })
    .await;
}

fn stamped(cm: &ConfigMap) -> bool {
    cm.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("policy.example.com/stamped"))
        .is_some_and(|v| v == "yes")
}

/// A mutation no watch can see: an admission policy that changes objects only when they are next written. The
/// live objects do not change, so the skip path has no reason to look; the periodic full check (its dry run is
/// admitted like any write) shows the difference, and the apply makes it real and reports it as drift. The
/// Environment's own interval is an hour: the full check comes round on its own schedule.
#[tokio::test]
async fn the_full_check_catches_a_change_an_admission_policy_makes_at_the_next_write() {
    let t = TestEnv::with_settings("admission-full", |s| {
        s.full_sync_interval = std::time::Duration::from_secs(2)
    })
    .await;
    synced(&t, json!({"interval": "1h"})).await;
    t.reconciled("env", "settle").await;
    stamp_config_maps_at_their_next_write(&t).await;
    let cms = t.api::<ConfigMap>();
    eventually("the full check applies what the policy adds", || async {
        let list = cms.list(&Default::default()).await.ok()?;
        let stamped: Vec<_> = list.items.iter().filter(|cm| stamped(cm)).collect();
        (stamped.len() == 3).then_some(())
    })
    .await;
    let env = wait_for(&t.api::<Environment>(), "env", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.last_drift_correction.as_ref())
            .is_some_and(|d| d.objects.len() == 3)
    })
    .await;
    let drift = env.status.unwrap().last_drift_correction.unwrap();
    assert!(drift.objects.iter().all(|o| o.contains("ConfigMap")), "{drift:?}");
    t.wait_event("env", "Warning", "DriftCorrected").await;
}

/// The counterpart: with no full check due, a reconcile of an unchanged Environment asks nothing about its
/// objects even though an admission policy would now change them (so they stay as they are until the check).
#[tokio::test]
async fn before_the_full_check_is_due_an_admission_policy_change_is_not_looked_at() {
    let t = TestEnv::new("admission-skip").await;
    synced(&t, json!({"interval": "1h"})).await;
    t.reconciled("env", "settle").await;
    stamp_config_maps_at_their_next_write(&t).await;
    let before = config_map_requests(&t).len();
    for token in ["one", "two", "three"] {
        t.reconciled("env", token).await;
    }
    let window: Vec<_> = config_map_requests(&t).into_iter().skip(before).collect();
    assert!(window.is_empty(), "reconciles asked about the objects: {window:#?}");
    let list = t.api::<ConfigMap>().list(&Default::default()).await.unwrap();
    assert!(
        list.items.iter().all(|cm| !stamped(cm)),
        "left alone until the full check"
    );
}

fn remote_config_map_requests(cp: &ferry_testenv::ControlPlane, namespace: &str) -> Vec<(String, String, bool)> {
    audited_writes(&cp.audit_log(), namespace)
        .into_iter()
        .filter(|(_, uri, _)| uri.contains("configmaps"))
        .collect()
}

/// Another cluster gets its own watches, with the kubeconfig's credentials: a no-op sync there asks nothing
/// about the objects, a hand edit there is reverted at once (the interval is an hour), a rotated kubeconfig
/// restarts the watches, and they stop when no Environment targets the cluster any more.
#[tokio::test]
async fn another_cluster_is_watched_while_an_environment_targets_it() {
    let t = TestEnv::new("remote-watch").await;
    let (remote, cp) = t.second_cluster_secret("remote-kubeconfig").await;
    synced(
        &t,
        json!({"interval": "1h", "kubeConfig": {"secretRef": {"name": "remote-kubeconfig"}}}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(remote, &t.namespace);
    assert!(
        cms.get_opt("a").await.unwrap().is_some(),
        "applied to the second cluster"
    );
    assert!(t.api::<ConfigMap>().get_opt("a").await.unwrap().is_none());
    t.reconciled("env", "settle").await;

    // No-op syncs: nothing asked about the objects in the second cluster.
    let before = remote_config_map_requests(cp, &t.namespace).len();
    for token in ["one", "two", "three"] {
        t.reconciled("env", token).await;
    }
    let window: Vec<_> = remote_config_map_requests(cp, &t.namespace)
        .into_iter()
        .skip(before)
        .collect();
    assert!(window.is_empty(), "no-op syncs asked about the objects: {window:#?}");
    let sets = t.context().remote_watches().expect("running").sets();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!((sets[0].environments, sets[0].running), (1, 1), "{sets:?}");
    assert_eq!(sets[0].server.trim_end_matches('/'), cp.server);

    // A hand edit and a deletion in the second cluster.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "hacked"}})),
    )
    .await
    .expect("hand edit");
    cms.delete("b", &DeleteParams::default()).await.expect("delete");
    eventually("drift in the second cluster reverted through its watch", || async {
        let a = cms.get("a").await.ok()?;
        let b = cms.get_opt("b").await.ok()??;
        (a.data?.get("color")? == "blue" && b.data?.get("color")? == "blue").then_some(())
    })
    .await;
    t.wait_event("env", "Warning", "DriftCorrected").await;

    // A rotated kubeconfig: the next reconcile moves to watches with the new one, the old ones stop.
    let started = sets[0].started;
    let rotated = format!("{}\n# rotated\n", cp.kubeconfig_self_contained().expect("kubeconfig"));
    t.api::<k8s_openapi::api::core::v1::Secret>()
        .patch(
            "remote-kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"value": rotated}})),
        )
        .await
        .expect("rotating the kubeconfig");
    t.reconciled("env", "rotated").await;
    let sets = eventually("one set, started after the rotation, nothing else running", || async {
        let sets = t.context().remote_watches()?.sets();
        (sets.len() == 1 && sets[0].started > started && sets[0].running == 1).then_some(sets)
    })
    .await;
    assert_eq!(sets[0].environments, 1);
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"color": "hacked"}})),
    )
    .await
    .expect("hand edit");
    eventually("drift reverted through the new watch", || async {
        (cms.get("c").await.ok()?.data?.get("color")? == "blue").then_some(())
    })
    .await;

    // Deleted: its objects go, and so do the watches.
    t.api::<Environment>()
        .delete("env", &DeleteParams::default())
        .await
        .unwrap();
    eventually("no watch left on the second cluster", || async {
        let gone = t.api::<Environment>().get_opt("env").await.ok()?.is_none();
        let sets = t.context().remote_watches()?.sets();
        (gone && sets.is_empty()).then_some(())
    })
    .await;
}

/// A kubeconfig whose account may apply in its namespace but not list or watch across the cluster: its watch
/// gives up, and every sync checks the objects with the dry run, as in the local cluster.
#[tokio::test]
async fn a_kubeconfig_that_may_not_watch_falls_back_to_the_dry_run_at_every_sync() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let t = TestEnv::new("remote-nowatch").await;
    let (remote, cp) = t.second_cluster_secret("remote-kubeconfig").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(remote.clone(), &t.namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "deployer"}})).unwrap();
    accounts.create(&Default::default(), &account).await.expect("account");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "deployer-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": t.namespace}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(remote.clone(), &t.namespace)
        .create(&Default::default(), &binding)
        .await
        .expect("binding");
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let issued: TokenRequest = accounts
        .create_subresource("token", "deployer", &Default::default(), &request)
        .await
        .expect("token");
    let token = issued.status.and_then(|s| s.token).expect("issued");
    let kubeconfig: String = cp
        .kubeconfig_self_contained()
        .expect("kubeconfig")
        .lines()
        .map(|l| match l.trim_start().strip_prefix("token: ") {
            Some(_) => format!("    token: {token}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    t.create_secret("deployer-kubeconfig", &[("value", &kubeconfig)]).await;
    synced(
        &t,
        json!({"interval": "1h", "kubeConfig": {"secretRef": {"name": "deployer-kubeconfig"}}}),
    )
    .await;
    eventually("the watch gave up (forbidden)", || async {
        let sets = t.context().remote_watches()?.sets();
        (sets.len() == 1 && sets[0].environments == 1 && sets[0].running == 0).then_some(())
    })
    .await;
    let before = remote_config_map_requests(cp, &t.namespace).len();
    t.reconciled("env", "one").await;
    let window: Vec<_> = remote_config_map_requests(cp, &t.namespace)
        .into_iter()
        .skip(before)
        .collect();
    // (The reconcile's own status write wakes it once more: a multiple of three.)
    let dry_runs = window.iter().filter(|(_, _, dry)| *dry).count();
    assert!(dry_runs >= 3 && dry_runs % 3 == 0, "each object dry-run: {window:#?}");
    assert!(window.iter().all(|(_, _, dry)| *dry), "nothing written: {window:#?}");
}
