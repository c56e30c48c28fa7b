//! Rendering on a real apiserver: kustomize overlays (output equal to `kustomize build`), Flux-style trees (the
//! objects of Flux's generated kustomization), and the render-time refusals (remote bases, escaping symlinks
//! and paths) leaving the cluster untouched. Helm charts: tests/charts.rs.

mod common;

use common::*;
use ferry::api::Environment;
use ferry::render::render_path;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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

/// Each object as compact JSON, for comparing sets of objects.
fn object_set(objects: impl IntoIterator<Item = serde_json::Value>) -> BTreeSet<String> {
    objects.into_iter().map(|o| o.to_string()).collect()
}

fn parse_all(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// What Flux's kustomize-controller generates for a directory without a kustomization (fluxcd/pkg kustomize
/// generator): `resources` listing, in walk order, each `*.yaml`/`*.yml` file and each subdirectory holding a
/// kustomization (not descended into).
fn flux_generated_resources(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let rel = format!("./{}", path.strip_prefix(root).unwrap().display());
        if path.is_dir() {
            if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                .iter()
                .any(|k| path.join(k).is_file())
            {
                out.push(rel);
            } else {
                flux_generated_resources(root, &path, out);
            }
        } else if rel.ends_with(".yaml") || rel.ends_with(".yml") {
            out.push(rel);
        }
    }
}

const FLUX_TREE: &[(&str, &str)] = &[
    (
        "clusters/prod/namespace-config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: top-level}\ndata: {from: plain}\n",
    ),
    (
        "clusters/prod/flux-system/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [gotk-sync.yaml]\nnamePrefix: flux-\nlabels:\n- pairs: {app.kubernetes.io/part-of: flux}\n",
    ),
    (
        "clusters/prod/flux-system/gotk-sync.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sync}\ndata: {from: flux-system}\n",
    ),
    (
        "clusters/prod/infrastructure/kustomization.yaml",
        "configMapGenerator:\n- name: infra-settings\n  literals: [tier=infrastructure]\nresources: [sa.yaml]\n",
    ),
    (
        "clusters/prod/infrastructure/sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: infra}\n",
    ),
    (
        "clusters/prod/apps/podinfo.yml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: apps-podinfo}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: apps-second}\n",
    ),
    ("clusters/prod/apps/notes.md", "not a manifest"),
];

#[tokio::test]
async fn ferry_renders_overlays_exactly_as_kustomize_build() {
    let t = TestEnv::new("kustomize-equal").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config-repo");
    for overlay in ["staging", "production", "base"] {
        let rendered = render_path(&root, overlay, &t.render_settings()).await.unwrap();
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
    t.config_source("1s").await;
    t.config_env("staging", "staging", "1s").await;
    wait_applied_revision(&t, "staging", &commit).await;
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
async fn a_flux_style_tree_renders_the_objects_of_fluxs_generated_kustomization_and_applies() {
    let t = TestEnv::new("flux-tree").await;
    let (_dir, root) = tree(FLUX_TREE);
    let rendered = render_path(&root, "clusters/prod", &t.render_settings()).await.unwrap();
    // Flux's way: a generated kustomization listing the plain files and the kustomize directories, built.
    let mut resources = Vec::new();
    let prod = root.join("clusters/prod");
    flux_generated_resources(&prod, &prod, &mut resources);
    assert_eq!(
        resources,
        [
            "./apps/podinfo.yml",
            "./flux-system",
            "./infrastructure",
            "./namespace-config.yaml"
        ]
    );
    let generated = tempfile::tempdir().unwrap();
    let copy = generated.path().join("prod");
    for (rel, content) in files_below(&prod) {
        let p = copy.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::fs::write(
        copy.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: {}\n",
            serde_json::to_string(&resources).unwrap()
        ),
    )
    .unwrap();
    let flux = std::process::Command::new(t.bin_dir.join("kustomize"))
        .arg("build")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(flux.status.success(), "{}", String::from_utf8_lossy(&flux.stderr));
    let flux_objects = object_set(parse_all(&String::from_utf8(flux.stdout).unwrap()));
    let ferry_objects = object_set(rendered.objects.iter().map(|o| o.object.clone()));
    assert_eq!(
        ferry_objects, flux_objects,
        "the same objects as Flux's generated kustomization"
    );
    assert_eq!(
        ferry_objects,
        object_set(parse_all(&rendered.yaml)),
        "the YAML is the objects"
    );
    assert_eq!(rendered.objects.len(), 6);
    assert!(
        rendered.objects.iter().all(|o| o.kind() != "Kustomization"),
        "a kustomization file is never an object"
    );

    // An object defined both by a plain file and by a kustomize directory: refused, as kustomize refuses it.
    std::fs::write(
        root.join("clusters/prod/apps/dup.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flux-sync}\n",
    )
    .unwrap();
    let err = render_path(&root, "clusters/prod", &t.render_settings())
        .await
        .unwrap_err();
    assert!(matches!(err, ferry::render::RenderError::Duplicate { .. }), "{err}");
    assert!(
        err.to_string().contains("kustomize build clusters/prod/flux-system"),
        "{err}"
    );

    // And on the cluster.
    for (rel, content) in FLUX_TREE {
        t.repo.write(rel, content);
    }
    t.repo.commit_and_push("flux tree");
    t.config_source("1s").await;
    t.config_env_at("prod", "clusters/prod").await;
    let e = wait_for(&t.api::<Environment>(), "prod", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s != "Unknown" && r != "SourceNotReady")
    })
    .await;
    assert_eq!(env_ready(&e).unwrap().0, "True", "{:?}", env_ready(&e));
    let cms = t.api::<ConfigMap>();
    for name in ["top-level", "flux-sync", "apps-podinfo", "apps-second"] {
        assert!(cms.get_opt(name).await.unwrap().is_some(), "{name}");
    }
    let flux_sync = cms.get("flux-sync").await.unwrap();
    assert_eq!(
        flux_sync.metadata.labels.unwrap()["app.kubernetes.io/part-of"],
        "flux",
        "built by kustomize"
    );
    let all = cms.list(&Default::default()).await.unwrap();
    assert!(
        all.items
            .iter()
            .any(|c| c.metadata.name.as_deref().unwrap().starts_with("infra-settings-")),
        "the generator's ConfigMap, with its hash suffix"
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
    t.config_source("1s").await;
    t.create_env("remote", json!({"sourceRef": {"name": "config"}, "path": "remote"}))
        .await;
    t.create_env("linked", json!({"sourceRef": {"name": "config"}, "path": "linked"}))
        .await;
    t.config_env_at("escape", "app/../../outside").await;
    t.config_env_at("missing", "no/such/dir").await;

    for (env, reason, needle) in [
        ("remote", "RenderFailed", "remote resource"),
        ("linked", "RenderFailed", "points outside the repository"),
        ("escape", "PathNotFound", "stay inside the repository"),
        ("missing", "PathNotFound", "does not exist"),
    ] {
        assert_refused(&t, env, reason, needle).await;
    }
    let cms = t.api::<ConfigMap>();
    assert!(cms.get_opt("never").await.unwrap().is_none());
    assert!(
        cms.get_opt("kept").await.unwrap().is_none(),
        "nothing of the remote overlay was applied"
    );
}
