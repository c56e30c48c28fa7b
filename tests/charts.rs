//! Helm charts on a real apiserver that runs workloads: output equal to `helm template` byte for byte (hooks
//! left out), values per Environment, a vendored dependency, CRDs from `crds/` applied first, the target's
//! capabilities, healthy workloads; kustomize `helmCharts:` with a vendored chart; bad charts refused with
//! nothing applied. (Every test here runs workloads: the first TestEnv of a binary decides.)

mod common;

use common::*;
use ferry::api::Environment;
use ferry::render::{Capabilities, HelmInputs, render_path, render_path_with};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;
use std::path::Path;

/// Copies examples/chart/podinfo into the test's git repo at `to`.
fn copy_chart(t: &TestEnv, to: &str) {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chart/podinfo");
    for (rel, content) in files_below(&chart) {
        t.repo.write(&format!("{to}/{rel}"), &content);
    }
}

/// `helm template` run by hand, with the test's own empty helm home.
fn helm_cli(t: &TestEnv, args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(t.bin_dir.join("helm"))
        .args(args)
        .env("HOME", home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_chart_renders_byte_for_byte_as_helm_template_without_its_hooks() {
    let t = TestEnv::with_workloads("helm-equal").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inputs = HelmInputs {
        release_name: "web".into(),
        namespace: "shop".into(),
        values_files: vec!["values-production.yaml".into()],
        values: Some(json!({"message": "inline wins", "cache": {"maxMemory": "1gb"}})),
        include_crds: true,
        capabilities: Some(Capabilities {
            kube_version: "v1.36.3".into(),
            api_versions: vec!["ferry.dev/v1alpha1".into(), "ferry.dev/v1alpha1/Environment".into()],
        }),
    };
    let rendered = render_path_with(root, "examples/chart/podinfo", &t.render_settings(), &inputs)
        .await
        .unwrap();
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        serde_json::to_vec(inputs.values.as_ref().unwrap()).unwrap(),
    )
    .unwrap();
    let chart = root.join("examples/chart/podinfo");
    let production = chart.join("values-production.yaml");
    let common = [
        "template",
        "web",
        chart.to_str().unwrap(),
        "--namespace",
        "shop",
        "--include-crds",
        "--values",
        production.to_str().unwrap(),
        "--values",
        values.path().to_str().unwrap(),
        "--kube-version",
        "v1.36.3",
        "--api-versions",
        "ferry.dev/v1alpha1",
        "--api-versions",
        "ferry.dev/v1alpha1/Environment",
    ];
    let no_hooks = helm_cli(&t, &[&common[..], &["--no-hooks"]].concat());
    assert_eq!(
        rendered.yaml, no_hooks,
        "equal to helm template --no-hooks, byte for byte"
    );
    let with_hooks = helm_cli(&t, &common);
    assert!(with_hooks.contains("web-test-connection") && !rendered.yaml.contains("web-test-connection"));
    assert_eq!(
        rendered.notes,
        [
            "helm hooks are not applied (Ferry renders charts as `helm template --no-hooks`): Pod/web-test-connection (test)"
        ]
    );
    let find = |kind: &str, name: &str| {
        rendered
            .objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
            .unwrap_or_else(|| panic!("{kind}/{name}"))
            .object
            .clone()
    };
    assert_eq!(
        find("ConfigMap", "web-cache")["data"]["maxmemory"],
        "1gb",
        "inline values last"
    );
    assert_eq!(
        find("Deployment", "web-podinfo")["spec"]["replicas"],
        2,
        "the values file"
    );
    let info = find("ConfigMap", "web-cluster-info");
    assert_eq!(info["data"]["kubeVersion"], "v1.36.3");
    assert_eq!(info["data"]["ferryInstalled"], "true");
    assert_eq!(info["metadata"]["namespace"], "shop");
    assert!(rendered.objects.iter().any(|o| o.kind() == "CustomResourceDefinition"));
    // Objects name the template they came from, for error messages.
    assert!(
        rendered
            .objects
            .iter()
            .any(|o| o.source == "examples/chart/podinfo: podinfo/templates/deployment.yaml"),
        "{:?}",
        rendered.objects.iter().map(|o| &o.source).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn release_names_and_namespaces_that_look_like_flags_stay_values() {
    let t = TestEnv::with_workloads("helm-flags").await;
    let (_dir, root) = tree(&[
        ("chart/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n"),
        (
            "chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: {{ .Release.Namespace }}\n",
        ),
    ]);
    // A post-renderer that leaves a mark: it must never run.
    let mark = root.join("ran");
    let script = root.join("post-render.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n/usr/bin/touch {}\nexec /usr/bin/cat\n", mark.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hostile = format!("--post-renderer={}", script.display());
    for inputs in [
        HelmInputs {
            release_name: hostile.clone(),
            ..HelmInputs::default()
        },
        HelmInputs {
            namespace: hostile.clone(),
            ..HelmInputs::default()
        },
    ] {
        let result = render_path_with(&root, "chart", &t.render_settings(), &inputs).await;
        assert!(!mark.exists(), "the post-renderer ran: {result:?}");
        // helm refuses the release name; the namespace is only a string to it, which the render then refuses
        // as no namespace name.
        let e = result.expect_err("a flag-like release name or namespace is refused");
        assert!(
            e.to_string().contains("invalid release name") || e.to_string().contains("is not a namespace name"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn kustomize_helm_charts_render_a_vendored_chart_with_the_pinned_helm() {
    let t = TestEnv::with_workloads("kustomize-helm").await;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chart/podinfo/charts/cache");
    let mut files: Vec<(String, String)> = files_below(&chart)
        .into_iter()
        .map(|(rel, c)| (format!("app/charts/cache/{rel}"), c))
        .collect();
    files.push((
        "app/kustomization.yaml".into(),
        "helmCharts:\n- name: cache\n  releaseName: shop\n  repo: https://charts.example.com\n  valuesInline: {maxMemory: 2gb}\n  valuesFile: values-shop.yaml\n".into(),
    ));
    files.push(("app/values-shop.yaml".into(), "maxMemory: 1gb\n".into()));
    files.push((
        "pulled/kustomization.yaml".into(),
        "helmCharts:\n- name: redis\n  repo: https://charts.example.com\n  version: 1.0.0\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (_dir, root) = tree(&refs);
    let rendered = render_path(&root, "app", &t.render_settings()).await.unwrap();
    let cli = std::process::Command::new(t.bin_dir.join("kustomize"))
        .args(["build", "--enable-helm", "--helm-command"])
        .arg(t.bin_dir.join("helm"))
        .arg(root.join("app"))
        .env("HOME", root.join("app"))
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(
        rendered.yaml.as_bytes(),
        cli.stdout.as_slice(),
        "equal to kustomize build --enable-helm"
    );
    assert_eq!(rendered.objects[0].name(), "shop-cache");
    assert_eq!(rendered.objects[0].object["data"]["maxmemory"], "2gb");
    // A chart that is not vendored would be pulled: refused, naming the entry.
    let err = render_path(&root, "pulled", &t.render_settings()).await.unwrap_err();
    assert!(err.to_string().contains("helmCharts[0].name"), "{err}");
    assert!(err.to_string().contains("not vendored"), "{err}");
}

#[tokio::test]
async fn charts_apply_with_values_per_environment_crds_first_hooks_left_out() {
    let t = TestEnv::with_workloads("helm-apply").await;
    copy_chart(&t, "charts/podinfo");
    t.repo.commit_and_push("chart");
    t.config_source("1s").await;
    // production brings the CRD (includeCRDs, the default); staging leaves it out and depends on production.
    t.create_env(
        "production",
        json!({"sourceRef": {"name": "config"}, "path": "charts/podinfo", "wait": true,
               "helm": {"valuesFiles": ["values-production.yaml"]}}),
    )
    .await;
    t.create_env(
        "staging",
        json!({"sourceRef": {"name": "config"}, "path": "charts/podinfo", "wait": true,
               "dependsOn": [{"name": "production"}],
               "helm": {"releaseName": "stage", "valuesFiles": ["values-staging.yaml"], "includeCRDs": false,
                        "values": {"cache": {"maxMemory": "8mb"}}}}),
    )
    .await;
    for env in ["production", "staging"] {
        let e = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
            env_ready(e).is_some_and(|(s, r, _)| s == "True" || (s == "False" && !r.ends_with("NotReady")))
        })
        .await;
        assert_eq!(env_ready(&e).unwrap().0, "True", "{env}: {:?}", env_ready(&e));
        assert!(
            env_ready(&e).unwrap().2.contains("all healthy"),
            "{env}: {:?}",
            env_ready(&e)
        );
    }
    let deployments = t.api::<Deployment>();
    assert_eq!(
        deployments
            .get("production-podinfo")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
    assert_eq!(
        deployments.get("stage-podinfo").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    let cms = t.api::<ConfigMap>();
    let cache = |name: &'static str| {
        let cms = cms.clone();
        async move { cms.get(name).await.unwrap().data.unwrap()["maxmemory"].clone() }
    };
    assert_eq!(
        cache("production-cache").await,
        "256mb",
        "the vendored dependency, production values"
    );
    assert_eq!(cache("stage-cache").await, "8mb", "inline values");
    // The target's own version and APIs reached .Capabilities.
    let version = t.client.apiserver_version().await.unwrap().git_version;
    let info = cms.get("production-cluster-info").await.unwrap().data.unwrap();
    assert_eq!(info["kubeVersion"], version);
    assert_eq!(info["ferryInstalled"], "true", "Ferry's own CRD, found by discovery");
    // The custom resources of the chart's CRD.
    let widgets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        t.client.clone(),
        &t.namespace,
        &kube::api::ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
    );
    assert_eq!(
        widgets.get("production-widget").await.unwrap().data["spec"]["size"],
        "large"
    );
    assert_eq!(widgets.get("stage-widget").await.unwrap().data["spec"]["size"], "small");
    // The test hook is not applied, and a Warning says so.
    let pods = t.api::<k8s_openapi::api::core::v1::Pod>();
    assert!(pods.get_opt("production-test-connection").await.unwrap().is_none());
    t.assert_event_noted(
        "production",
        "Warning",
        "HooksSkipped",
        "Pod/production-test-connection (test)",
    )
    .await;
}

#[tokio::test]
async fn bad_charts_fail_to_render_naming_the_file_and_nothing_is_applied() {
    let t = TestEnv::with_workloads("helm-bad").await;
    let chart = |dir: &str, extra: &[(&str, &str)]| {
        t.repo.write(
            &format!("{dir}/Chart.yaml"),
            "apiVersion: v2\nname: bad\nversion: 0.1.0\n",
        );
        t.repo.write(
            &format!("{dir}/templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-applied\n",
        );
        for (rel, content) in extra {
            t.repo.write(&format!("{dir}/{rel}"), content);
        }
    };
    chart(
        "template-error",
        &[("templates/broken.yaml", "value: {{ .Values.missing.field }}\n")],
    );
    chart(
        "missing-dependency",
        &[(
            "Chart.yaml",
            "apiVersion: v2\nname: bad\nversion: 0.1.0\ndependencies:\n- name: redis\n  version: 1.0.0\n  repository: https://charts.example.com\n",
        )],
    );
    chart(
        "schema",
        &[
            ("values.yaml", "replicas: 1\n"),
            (
                "values.schema.json",
                "{\"type\": \"object\", \"properties\": {\"replicas\": {\"type\": \"integer\"}}}",
            ),
            ("values-bad.yaml", "replicas: two\n"),
        ],
    );
    t.repo.commit_and_push("bad charts");
    t.config_source("1s").await;
    t.config_env_at("template-error", "template-error").await;
    t.config_env_at("missing-dependency", "missing-dependency").await;
    t.create_env(
        "schema",
        json!({"sourceRef": {"name": "config"}, "path": "schema", "helm": {"valuesFiles": ["values-bad.yaml"]}}),
    )
    .await;
    t.create_env(
        "escaping-values",
        json!({"sourceRef": {"name": "config"}, "path": "schema", "helm": {"valuesFiles": ["../../../etc/passwd"]}}),
    )
    .await;
    for (env, reason, needle) in [
        ("template-error", "RenderFailed", "templates/broken.yaml"),
        (
            "missing-dependency",
            "RenderFailed",
            "missing in charts/ directory: redis",
        ),
        ("schema", "RenderFailed", "schema/values.schema.json"),
        (
            "escaping-values",
            "PathNotFound",
            "spec.helm.valuesFiles: ../../../etc/passwd",
        ),
    ] {
        let e = assert_refused(&t, env, reason, needle).await;
        let stalled = e
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled");
        assert!(stalled, "{env}: only a new revision can fix it");
        assert!(
            t.api::<ConfigMap>()
                .get_opt(&format!("{env}-applied"))
                .await
                .unwrap()
                .is_none(),
            "{env}: nothing applied"
        );
    }
    t.wait_event("template-error", "Warning", "RenderFailed").await;
}
