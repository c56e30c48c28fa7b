//! The hostile-input corpus: every case in `tests/corpus/` (and the generated ones below) ends in a clear
//! condition naming what is wrong, with nothing of it applied, while the controller stays alive, keeps serving
//! a good Environment next to them, and stays bounded in memory.

mod common;

use std::path::Path;

use common::*;
use ferry::api::Environment;
use ferry::render::{RenderSettings, render_path};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use serde_json::json;

/// Where a case is refused: by Ferry's render (before any request), or by the API server's dry run (before
/// anything of the revision is written).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Render,
    DryRun,
}

struct Case {
    name: &'static str,
    stage: Stage,
    reason: &'static str,
    /// A fragment the condition message must contain: the file, or what the API server refused.
    message: &'static str,
}

const fn case(name: &'static str, stage: Stage, reason: &'static str, message: &'static str) -> Case {
    Case {
        name,
        stage,
        reason,
        message,
    }
}

use Stage::{DryRun, Render};

const CASES: &[Case] = &[
    // YAML itself
    case(
        "yaml-bomb-anchors",
        Render,
        "RenderFailed",
        "bomb.yaml: document 1: invalid YAML: repetition limit",
    ),
    case(
        "deep-nesting-flow",
        Render,
        "RenderFailed",
        "deep.yaml: document 1: invalid YAML: recursion limit",
    ),
    case(
        "deep-nesting-block",
        Render,
        "RenderFailed",
        "deep.yaml: document 1: invalid YAML: recursion limit",
    ),
    case(
        "duplicate-keys",
        Render,
        "RenderFailed",
        "dup.yaml: document 1: invalid YAML: metadata: duplicate key",
    ),
    case(
        "invalid-utf8",
        Render,
        "RenderFailed",
        "bad.yaml: document 1: invalid YAML: invalid leading UTF-8",
    ),
    case(
        "binary-file",
        Render,
        "RenderFailed",
        "image.yaml: document 1: invalid YAML",
    ),
    case(
        "nul-bytes",
        Render,
        "RenderFailed",
        "nul.yaml: document 1: invalid YAML: control characters",
    ),
    case(
        "tab-indentation",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: invalid YAML",
    ),
    case(
        "unclosed-quote",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: invalid YAML",
    ),
    case(
        "json-trailing-garbage",
        Render,
        "RenderFailed",
        "cm.json: document 2: invalid YAML",
    ),
    // documents that are not objects
    case(
        "scalar-document",
        Render,
        "RenderFailed",
        "scalar.yaml: document 1: not a mapping",
    ),
    case(
        "sequence-document",
        Render,
        "RenderFailed",
        "seq.yaml: document 1: not a mapping",
    ),
    case(
        "list-with-scalar-items",
        Render,
        "RenderFailed",
        "list.yaml: document 1: missing or empty apiVersion",
    ),
    case(
        "missing-kind",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: missing or empty kind",
    ),
    case(
        "missing-api-version",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: missing or empty apiVersion",
    ),
    case(
        "missing-name",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: missing or empty metadata.name",
    ),
    case(
        "name-not-a-string",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: missing or empty metadata.name",
    ),
    case(
        "metadata-not-a-mapping",
        Render,
        "RenderFailed",
        "cm.yaml: document 1: missing or empty metadata.name",
    ),
    case("duplicate-objects", Render, "RenderFailed", "is defined twice"),
    // objects the API server refuses
    case(
        "wrong-api-version",
        DryRun,
        "ValidationFailed",
        "kind ConfigMap is not served by the cluster",
    ),
    case(
        "unknown-kind",
        DryRun,
        "ValidationFailed",
        "kind NoSuchKind is not served by the cluster",
    ),
    case(
        "unknown-group",
        DryRun,
        "ValidationFailed",
        "nowhere.example.com/v1/Thing nope: kind Thing is not served",
    ),
    case(
        "name-with-dot-dot",
        Render,
        "RenderFailed",
        "metadata.name \"../../etc/passwd\" is not a Kubernetes name",
    ),
    case(
        "name-too-long",
        DryRun,
        "ValidationFailed",
        "must be no more than 253 characters",
    ),
    case("name-homoglyph", Render, "RenderFailed", "is not a Kubernetes name"),
    case(
        "namespace-object-bad-name",
        DryRun,
        "ValidationFailed",
        "Namespace \"UPPER_case\" is invalid",
    ),
    case(
        "file-named-like-a-path",
        Render,
        "RenderFailed",
        "%2e%2e%2fescape.yaml: document 1: metadata.name \"bad name\"",
    ),
    case(
        "schema-violation",
        DryRun,
        "ValidationFailed",
        "bad-schema: failed to create typed patch object",
    ),
    case(
        "number-overflow",
        DryRun,
        "ValidationFailed",
        ".spec.replicas: expected numeric",
    ),
    case(
        "secret-non-string-data",
        DryRun,
        "ValidationFailed",
        ".stringData.a: expected string",
    ),
    case(
        "yaml-language-tags",
        DryRun,
        "ValidationFailed",
        ".data.x: expected string",
    ),
    case(
        "crd-and-invalid-cr",
        DryRun,
        "ValidationFailed",
        "Widget.corpus.ferry.dev \"w\" is invalid: spec.size",
    ),
    case(
        "generator-bad-env-file",
        DryRun,
        "ValidationFailed",
        "a valid config key must consist of",
    ),
    // kustomize
    case("kustomization-cycle", Render, "RenderFailed", "cycle detected"),
    case("kustomization-missing-resource", Render, "RenderFailed", "nothere.yaml"),
    case(
        "kustomization-escapes-repo",
        Render,
        "PathNotFound",
        "resources[0] is outside the repository",
    ),
    case(
        "kustomization-not-yaml",
        Render,
        "RenderFailed",
        "kustomization.yaml: document 1: invalid YAML",
    ),
    case(
        "kustomization-remote-base",
        Render,
        "RenderFailed",
        "resources[0] is a remote resource",
    ),
    case(
        "kustomization-unknown-field",
        Render,
        "RenderFailed",
        "unknown field \"thisIsNotAField\"",
    ),
    case("generator-missing-file", Render, "RenderFailed", "missing.txt"),
    case(
        "generator-reads-outside",
        Render,
        "PathNotFound",
        "secretGenerator[0].envs[0] is outside the repository",
    ),
    case(
        "patch-target-missing",
        Render,
        "RenderFailed",
        "no resource matches strategic merge patch",
    ),
    // generated (see `generate`)
    case(
        "gen-100k-documents",
        Render,
        "RenderLimitExceeded",
        "over the limit of 5000",
    ),
    case(
        "gen-oversized-file",
        Render,
        "RenderFailed",
        "big.yaml is 5242880 bytes, over the size limit",
    ),
    case(
        "gen-huge-string",
        DryRun,
        "ValidationFailed",
        "huge: Request entity too large",
    ),
    case(
        "gen-symlink-to-etc-passwd",
        Render,
        "RenderFailed",
        "passwd.yaml points outside the repository",
    ),
    case("gen-symlink-loop", Render, "RenderFailed", "is part of a cycle"),
];

const GENERATED: &[&str] = &[
    "gen-100k-documents",
    "gen-oversized-file",
    "gen-huge-string",
    "gen-symlink-to-etc-passwd",
    "gen-symlink-loop",
];

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The cases too big or too odd to keep in git as files.
fn generate(root: &Path) {
    let dir = |name: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // 100,000 documents in four files, each under the per-file limit: the object limit refuses the render.
    let d = dir("gen-100k-documents");
    for f in 0..4 {
        let mut text = String::new();
        for i in 0..25_000 {
            text.push_str(&format!(
                "---\n{{apiVersion: v1, kind: ConfigMap, metadata: {{name: c{f}-{i}}}}}\n"
            ));
        }
        std::fs::write(d.join(format!("part{f}.yaml")), text).unwrap();
    }
    std::fs::write(dir("gen-oversized-file").join("big.yaml"), vec![b'#'; 5 << 20]).unwrap();
    // 3 MiB in one value: inside the file limit, over what the API server stores in a ConfigMap.
    std::fs::write(
        dir("gen-huge-string").join("cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: huge}}\ndata: {{x: \"{}\"}}\n",
            "x".repeat(3 << 20)
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir("gen-symlink-to-etc-passwd").join("passwd.yaml")).unwrap();
    let d = dir("gen-symlink-loop");
    std::os::unix::fs::symlink("b.yaml", d.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink("a.yaml", d.join("b.yaml")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn case_of(name: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("tests/corpus/{name} has no entry in CASES"))
}

#[test]
fn the_corpus_has_at_least_30_cases_and_each_has_an_expectation() {
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    on_disk.extend(GENERATED.iter().map(|g| g.to_string()));
    for name in &on_disk {
        case_of(name);
    }
    for c in CASES {
        assert!(
            on_disk.iter().any(|n| n == c.name),
            "{} is listed but has no directory",
            c.name
        );
    }
    assert!(on_disk.len() >= 30, "only {} cases", on_disk.len());
}

/// Ferry's own render refuses each render-stage case with the expected message, without a cluster; the
/// dry-run cases render (their refusal is the API server's, checked below).
#[tokio::test]
async fn each_case_fails_at_the_stage_it_should() {
    let root = tempfile::tempdir().unwrap();
    copy_dir(&corpus_dir(), root.path());
    generate(root.path());
    let bin_dir = ferry_testenv::bin_dir_from_env_or_build(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    // Through the render sandbox, as the controller renders.
    let settings = RenderSettings {
        kustomize: bin_dir.join("kustomize"),
        sandbox: ferry::render::Sandbox::Worker(ferry::render::WorkerSettings {
            program: env!("CARGO_BIN_EXE_ferry").into(),
            limits: Default::default(),
            allow_unconfined: false,
        }),
        ..RenderSettings::default()
    };
    let mut wrong = Vec::new();
    for c in CASES {
        match (render_path(root.path(), c.name, &settings).await, c.stage) {
            (Err(e), Render) if e.reason().as_str() == c.reason && e.to_string().contains(c.message) => {}
            (Ok(_), DryRun) => {}
            (outcome, stage) => wrong.push(format!("{}: expected {stage:?}, got {outcome:?}", c.name)),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Each case as an Environment of one repository, next to a good one, on the real API server.
#[tokio::test]
async fn no_case_applies_anything_and_the_controller_stays_alive() {
    let t = TestEnv::new("corpus").await;
    let work = t.repo.work.path();
    copy_dir(&corpus_dir(), work);
    generate(work);
    std::fs::remove_file(work.join("README.md")).ok();
    t.repo.write(
        "good/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\ndata: {v: \"1\"}\n",
    );
    t.repo.commit_and_push("the corpus");
    t.create_gitrepo("corpus", json!({"url": t.repo.url, "interval": "2s"}))
        .await;
    for c in CASES {
        t.create_env(
            c.name,
            json!({"sourceRef": {"name": "corpus"}, "path": c.name, "interval": "1h", "prune": true}),
        )
        .await;
    }
    t.create_env(
        "good",
        json!({"sourceRef": {"name": "corpus"}, "path": "good", "interval": "1h", "prune": true}),
    )
    .await;

    let envs = t.api::<Environment>();
    let settled = |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r != "SourceNotReady" && r != "Progressing")
    };
    // All cases at once, with one deadline: on a timeout, the message shows where every case stands.
    let deadline = std::time::Instant::now() + 3 * DEADLINE;
    let all = loop {
        let all = envs.list(&Default::default()).await.unwrap().items;
        let pending: Vec<String> = all
            .iter()
            .filter(|e| e.metadata.name.as_deref() != Some("good") && !settled(e))
            .map(|e| format!("{}: {:?}", e.metadata.name.as_deref().unwrap_or_default(), env_ready(e)))
            .collect();
        if pending.is_empty() {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not settled:\n{}",
            pending.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut wrong = Vec::new();
    for c in CASES {
        let e = all.iter().find(|e| e.metadata.name.as_deref() == Some(c.name)).unwrap();
        let (_, reason, message) = env_ready(e).unwrap();
        if reason != c.reason || !message.contains(c.message) {
            wrong.push(format!("{}: {reason}: {message}", c.name));
        }
        let status = e.status.clone().unwrap_or_default();
        // The one exception, said in its message: a CRD of the revision is applied before objects of its kind
        // can be dry-run at all. It is tracked (inventory), so a fixed revision or a deletion prunes it.
        let first_stage_only =
            c.name == "crd-and-invalid-cr" && status.inventory.iter().all(|i| i.kind == "CustomResourceDefinition");
        if status.last_applied_revision.is_some() || !(status.inventory.is_empty() || first_stage_only) {
            wrong.push(format!("{}: something was applied: {:?}", c.name, status.inventory));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Each refusal is also an Event (written just after the status, so every one exists by now or shortly).
    for c in CASES {
        let events = t.events(c.name).await;
        if !events.iter().any(|(ty, r, _)| ty == "Warning" && r == c.reason) {
            wrong.push(format!("{}: no Warning {} event: {events:?}", c.name, c.reason));
        }
    }
    // The sync that wrote the CRD said so (later syncs find it in place and refuse the Widget up front).
    let crd_events = t.events("crd-and-invalid-cr").await;
    assert!(
        crd_events.iter().any(
            |(_, _, note)| note.contains("the first stage was applied before they could be checked")
                && note.contains("CustomResourceDefinition widgets.corpus.ferry.dev")
        ),
        "{crd_events:?}"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Nothing of any case reached the cluster: the good ConfigMap is the only one Ferry wrote.
    wait_for(&envs, "good", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let ours = |labels: &Option<std::collections::BTreeMap<String, String>>| {
        labels
            .as_ref()
            .is_some_and(|l| l.keys().any(|k| k.starts_with("ferry.dev/")))
    };
    let cms: Vec<String> = t
        .api::<ConfigMap>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| ours(&o.metadata.labels))
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(cms, ["good"]);
    for s in t.api::<Secret>().list(&Default::default()).await.unwrap().items {
        assert!(!ours(&s.metadata.labels), "{:?} was applied", s.metadata.name);
    }
    let deployments = t.api::<Deployment>().list(&Default::default()).await.unwrap().items;
    assert!(deployments.is_empty(), "{} Deployment(s) applied", deployments.len());
    let widgets =
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("corpus.ferry.dev", "v1", "Widget"));
    let widgets: Api<kube::api::DynamicObject> = Api::namespaced_with(t.client.clone(), &t.namespace, &widgets);
    assert!(widgets.list(&Default::default()).await.unwrap().items.is_empty());
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    for ns in namespaces.list(&Default::default()).await.unwrap().items {
        assert!(
            !ours(&ns.metadata.labels),
            "namespace {:?} was applied",
            ns.metadata.name
        );
    }

    // Alive: a new commit to the good path is still applied after all of that.
    t.repo.write(
        "good/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\ndata: {v: \"2\"}\n",
    );
    t.repo.commit_and_push("good changes");
    eventually("the good Environment applies the next commit", || async {
        t.api::<ConfigMap>()
            .get("good")
            .await
            .ok()
            .filter(|cm| cm.data.as_ref().and_then(|d| d.get("v")).map(String::as_str) == Some("2"))
    })
    .await;

    // Bounded: the whole test process (controller, client, the corpus itself) peaked well under 1 GiB.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 1 << 20, "peak RSS {peak_kib} KiB");
}
