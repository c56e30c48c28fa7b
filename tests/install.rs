//! The install manifests and CRDs are accepted by a real API server (server-side dry run).

mod common;

use common::TestEnv;
use ferry::render::render_plain;
use ferry::source::ManifestFile;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;

/// The objects of every YAML file in the given directories of the repository.
fn read_objects(dirs: &[&str]) -> Vec<ferry::render::RenderedObject> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            // kustomization.yaml is kustomize's, not an object.
            if !path.is_file() || path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                continue;
            }
            files.push(ManifestFile {
                path: path.display().to_string(),
                content: std::fs::read(&path).unwrap(),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    render_plain(&files).unwrap()
}

/// Every example resource (auth kinds, the demo's GitRepository and Environment, the chart's Environments) is
/// accepted by the API server with the CRDs of this build, in the test's namespace.
#[tokio::test]
async fn examples_are_valid_on_a_real_apiserver() {
    let t = TestEnv::new("examples").await;
    let objects = read_objects(&[
        "examples/auth",
        "examples/demo/cluster",
        "examples/pipeline",
        "examples/decryption",
        "examples/supply-chain",
        "examples/chart",
    ]);
    assert!(objects.iter().filter(|o| o.kind() == "GitRepository").count() >= 5);
    for o in &objects {
        let (group, version) = o.api_version().rsplit_once('/').unwrap_or(("", o.api_version()));
        let (ar, caps) = kube::discovery::pinned_kind(&t.client, &GroupVersionKind::gvk(group, version, o.kind()))
            .await
            .unwrap();
        let mut object = o.object.clone();
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Cluster => Api::all_with(t.client.clone(), &ar),
            kube::discovery::Scope::Namespaced => {
                object["metadata"]["namespace"] = t.namespace.clone().into();
                Api::namespaced_with(t.client.clone(), &t.namespace, &ar)
            }
        };
        let params = PatchParams::apply("ferry-tests").dry_run();
        if let Err(e) = api.patch(o.name(), &params, &Patch::Apply(&object)).await {
            panic!("{} {} in {} is rejected: {e}", o.kind(), o.name(), o.source);
        }
    }
}

#[tokio::test]
async fn install_manifests_are_valid_on_a_real_apiserver() {
    let t = TestEnv::new("install").await;
    let objects = read_objects(&["manifests", "manifests/single-tenant", "manifests/optional"]);
    let kinds: Vec<_> = objects.iter().map(|o| o.kind()).collect();
    for want in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    ] {
        assert!(kinds.contains(&want), "manifests/ has a {want}: {kinds:?}");
    }
    // The namespace must exist for a dry run of namespaced objects; create it for real first.
    let ns = objects.iter().find(|o| o.kind() == "Namespace").unwrap();
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(t.client.clone());
    ns_api
        .patch(ns.name(), &PatchParams::apply("ferry-tests"), &Patch::Apply(&ns.object))
        .await
        .unwrap();
    for o in &objects {
        let (group, version) = o.api_version().rsplit_once('/').unwrap_or(("", o.api_version()));
        let (ar, caps) = kube::discovery::pinned_kind(&t.client, &GroupVersionKind::gvk(group, version, o.kind()))
            .await
            .unwrap();
        let api: Api<DynamicObject> = match (caps.scope, o.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(t.client.clone(), ns, &ar),
            _ => Api::all_with(t.client.clone(), &ar),
        };
        let params = PatchParams::apply("ferry-tests").dry_run();
        if let Err(e) = api.patch(o.name(), &params, &Patch::Apply(&o.object)).await {
            panic!("{} {} is rejected: {e}", o.kind(), o.name());
        }
    }
}

/// The README's install command, `kubectl apply -k manifests/`, run with the real kubectl on a fresh API server
/// (no CRDs installed beforehand): it succeeds in one go, and every object kustomize renders exists afterwards.
#[tokio::test]
async fn kubectl_apply_k_installs_everything_on_a_fresh_cluster() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = ferry_testenv::bin_dir_from_env_or_build(root).expect("control-plane binaries");
    let mut cp = ferry_testenv::ControlPlane::start(ferry_testenv::Options {
        bin_dir: bin_dir.clone(),
        workloads: false,
        dir: None,
    })
    .await
    .expect("a fresh control plane");
    let kubectl = |args: &[&str]| {
        std::process::Command::new(bin_dir.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .args(args)
            .current_dir(root)
            .output()
            .expect("running kubectl")
    };
    let applied = kubectl(&["apply", "-k", "manifests/"]);
    assert!(
        applied.status.success(),
        "kubectl apply -k manifests/ failed:\n{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let rendered = kubectl(&["kustomize", "manifests/"]);
    assert!(rendered.status.success());
    let objects = render_plain(&[ManifestFile {
        path: "kustomize-output.yaml".into(),
        content: rendered.stdout,
    }])
    .expect("kustomize output parses");
    let client = cp.client().await.expect("client");
    let mut kinds = std::collections::BTreeSet::new();
    for o in &objects {
        let (group, version) = o.api_version().rsplit_once('/').unwrap_or(("", o.api_version()));
        let (ar, caps) = kube::discovery::pinned_kind(&client, &GroupVersionKind::gvk(group, version, o.kind()))
            .await
            .expect("kind served");
        let api: Api<DynamicObject> = match (caps.scope, o.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        let live = api.get_opt(o.name()).await.expect("get");
        assert!(live.is_some(), "{} {} was not installed", o.kind(), o.name());
        kinds.insert(o.kind().to_string());
    }
    for want in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(want), "the install has a {want}: {kinds:?}");
    }
    cp.stop();
}

/// The supply-chain example's copy rules name registries Ferry accepts.
#[test]
fn example_copy_rules_are_valid() {
    let objects = read_objects(&["examples/supply-chain"]);
    let mut rules = 0;
    for o in objects.iter().filter(|o| o.kind() == "Environment") {
        let env: ferry::api::Environment = serde_json::from_value(o.object.clone()).expect("Environment");
        for rule in env.spec.promotion.iter().flat_map(|p| &p.copy_images) {
            ferry::images::pinning::CopyRule::parse(rule).expect("valid copy rule");
            rules += 1;
        }
    }
    assert_eq!(rules, 1);
}

/// The pipeline example's windows and freezes mean what they say (the API server only checks their shape).
#[test]
fn example_promotion_gates_are_valid() {
    let objects = read_objects(&["examples/pipeline", "examples/demo/cluster"]);
    let mut checked = 0;
    for o in objects.iter().filter(|o| o.kind() == "Environment") {
        let env: ferry::api::Environment = serde_json::from_value(o.object.clone()).expect("Environment");
        if let Some(policy) = env.spec.promotion {
            ferry::promotion::validate_gates(&policy.windows, &policy.freezes).expect("valid gates");
            checked += policy.windows.len() + policy.freezes.len();
        }
    }
    assert!(checked >= 2, "the example shows a window and a freeze");
}
