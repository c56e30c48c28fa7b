//! Rendering on a real apiserver: kustomize overlays (output equal to `kustomize build`), and the render-time
//! refusals (remote bases, escaping symlinks and paths) leaving the cluster untouched.

mod common;

use common::*;
use ferry::api::Environment;
use ferry::render::{RenderSettings, render_path};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

/// Copies the example config repo (base + staging + production overlays) into the test's git repo.
fn copy_example(t: &TestEnv) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config-repo");
    for dir in ["base", "staging", "production"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            t.repo
                .write(&format!("{dir}/{name}"), &std::fs::read_to_string(&path).unwrap());
        }
    }
}

fn settings(t: &TestEnv) -> RenderSettings {
    RenderSettings {
        kustomize: t.bin_dir.join("kustomize"),
        ..RenderSettings::default()
    }
}

#[tokio::test]
async fn ferry_renders_overlays_exactly_as_kustomize_build() {
    let t = TestEnv::new("kustomize-equal").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config-repo");
    for overlay in ["staging", "production", "base"] {
        let rendered = render_path(&root, overlay, &settings(&t)).await.unwrap();
        assert!(rendered.kustomize);
        let cli = std::process::Command::new(t.bin_dir.join("kustomize"))
            .arg("build")
            .arg(root.join(overlay))
            .output()
            .unwrap();
        assert!(cli.status.success());
        assert_eq!(
            rendered.yaml.as_bytes(),
            cli.stdout.as_slice(),
            "{overlay} differs from kustomize build"
        );
        assert!(rendered.objects.iter().any(|o| o.kind() == "Deployment"));
    }
}

#[tokio::test]
async fn an_overlay_is_applied_through_kustomize() {
    let t = TestEnv::new("kustomize-apply").await;
    copy_example(&t);
    let commit = t.repo.commit_and_push("overlays");
    t.create_gitrepo("config", json!({"url": t.repo.url, "interval": "1s"}))
        .await;
    t.create_env(
        "staging",
        json!({"sourceRef": {"name": "config"}, "path": "staging", "interval": "1s"}),
    )
    .await;
    let want = format!("main@sha1:{commit}");
    wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(want.as_str())
    })
    .await;
    let deploy = t.api::<Deployment>().get("podinfo").await.unwrap();
    assert_eq!(
        deploy.spec.unwrap().replicas,
        Some(2),
        "the staging overlay's replica count"
    );
    let cms = t.api::<ConfigMap>().list(&Default::default()).await.unwrap();
    assert!(
        cms.items.iter().any(|c| c
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("podinfo-config-"))),
        "the generated ConfigMap with its hash suffix"
    );
}

#[tokio::test]
async fn remote_bases_escaping_symlinks_and_paths_are_refused_before_anything_is_applied() {
    let t = TestEnv::new("refusals").await;
    t.repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept}\ndata: {v: \"1\"}\n",
    );
    t.repo.write(
        "remote/kustomization.yaml",
        "resources:\n- https://github.com/example/repo//base?ref=v1\n- ../app\n",
    );
    t.repo.write(
        "remote/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: never}\n",
    );
    std::fs::create_dir_all(t.repo.work.path().join("linked")).unwrap();
    std::os::unix::fs::symlink("../../../../etc/hostname", t.repo.work.path().join("linked/host.yaml")).unwrap();
    t.repo.commit_and_push("bad inputs");
    t.create_gitrepo("config", json!({"url": t.repo.url, "interval": "1s"}))
        .await;
    t.create_env("remote", json!({"sourceRef": {"name": "config"}, "path": "remote"}))
        .await;
    t.create_env("linked", json!({"sourceRef": {"name": "config"}, "path": "linked"}))
        .await;
    t.create_env(
        "escape",
        json!({"sourceRef": {"name": "config"}, "path": "app/../../outside"}),
    )
    .await;
    t.create_env(
        "missing",
        json!({"sourceRef": {"name": "config"}, "path": "no/such/dir"}),
    )
    .await;

    for (env, reason, needle) in [
        ("remote", "RenderFailed", "remote resource"),
        ("linked", "RenderFailed", "points outside the repository"),
        ("escape", "PathNotFound", "stay inside the repository"),
        ("missing", "PathNotFound", "does not exist"),
    ] {
        let e = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
            env_ready(e).is_some_and(|(s, r, _)| s == "False" && r != "SourceNotReady")
        })
        .await;
        let (_, r, message) = env_ready(&e).unwrap();
        assert_eq!(r, reason, "{env}: {message}");
        assert!(message.contains(needle), "{env}: {message}");
    }
    let cms = t.api::<ConfigMap>();
    assert!(cms.get_opt("never").await.unwrap().is_none());
    assert!(
        cms.get_opt("kept").await.unwrap().is_none(),
        "nothing of the remote overlay was applied"
    );
}
