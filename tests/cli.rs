//! The `ferry` binary's render and diff against a real apiserver.

mod common;

use std::process::Command;

use common::*;
use ferry::api::Environment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn ferry(t: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", &t.kubeconfig)
        .env("FERRY_KUSTOMIZE", t.bin_dir.join("kustomize"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn render_prints_exactly_what_kustomize_build_prints() {
    let t = TestEnv::new("cli-render").await;
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config-repo");
    let (code, stdout, stderr) = ferry(&t, &["render", repo, "--path", "production"]);
    assert_eq!(code, 0, "{stderr}");
    let kustomize = Command::new(t.bin_dir.join("kustomize"))
        .args(["build", &format!("{repo}/production")])
        .output()
        .unwrap();
    assert_eq!(stdout.as_bytes(), kustomize.stdout.as_slice());
}

#[tokio::test]
async fn diff_shows_drift_of_an_environment_and_of_a_local_checkout() {
    let t = TestEnv::new("cli-diff").await;
    t.repo.write(
        "apps/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata:\n  color: blue\n  size: large\n",
    );
    let commit = t.repo.commit_and_push("one");
    t.create_gitrepo("config", json!({"url": t.repo.url, "interval": "1h"}))
        .await;
    t.create_env(
        "env",
        json!({"sourceRef": {"name": "config"}, "path": "apps", "interval": "1h"}),
    )
    .await;
    let want = format!("main@sha1:{commit}");
    wait_for(&t.api::<Environment>(), "env", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(want.as_str())
    })
    .await;
    let env_arg = format!("{}/env", t.namespace);
    let (code, stdout, stderr) = ferry(&t, &["diff", "--environment", &env_arg]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, ""),
        "in sync: no output, exit 0 ({stderr})"
    );

    // A hand edit (the Environment's hour-long interval leaves it in place for this test).
    t.api::<ConfigMap>()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"color": "hacked"}})),
        )
        .await
        .unwrap();
    let (code, stdout, stderr) = ferry(&t, &["diff", "--environment", &env_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("-  color: hacked") && stdout.contains("+  color: blue"),
        "{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "no colors when not a terminal");

    // The same from a local checkout, plus an object that would be created.
    let work = t.repo.work.path().to_str().unwrap().to_string();
    t.repo.write(
        "apps/new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: brand-new}\n",
    );
    let (code, stdout, stderr) = ferry(&t, &["diff", &work, "--path", "apps", "--namespace", &t.namespace]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("+  color: blue") && stdout.contains("desired/v1/ConfigMap") && stdout.contains("brand-new"),
        "{stdout}"
    );

    let (code, _, stderr) = ferry(&t, &["diff", "--environment", "nope/nothing"]);
    assert_eq!(code, 2, "errors exit 2: {stderr}");
    let cm = t.api::<ConfigMap>().get("app").await.unwrap();
    assert_eq!(cm.data.unwrap()["color"], "hacked", "diff changes nothing");
}
