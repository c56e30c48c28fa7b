//! Every file of a config repo is hostile: symlink chains and cycles, remote kustomize references in any
//! field, and renders over the limits each stop the sync with a condition naming the file, before anything is
//! applied; kustomize itself has no way to the network even when a reference slips past the static check.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use ferry::api::Environment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: inside}\ndata: {v: \"1\"}\n";

fn symlink(t: &TestEnv, target: &str, link: &str) {
    let path = t.repo.work.path().join(link);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// Waits for the Environment to fail (past waiting for its source) and returns (reason, message).
async fn failure(t: &TestEnv, env: &str) -> (String, String) {
    let e = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r != "SourceNotReady")
    })
    .await;
    let (_, reason, message) = env_ready(&e).unwrap();
    assert!(
        e.status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
            .is_none(),
        "{env}: nothing applied"
    );
    (reason, message)
}

async fn config_maps(t: &TestEnv) -> Vec<ConfigMap> {
    t.api::<ConfigMap>().list(&Default::default()).await.unwrap().items
}

#[tokio::test]
async fn symlink_chains_and_cycles_never_reach_outside_the_repository() {
    let t = TestEnv::new("symlinks").await;
    // A file outside every repository, as a secret on the controller's disk would be.
    let outside = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    let marker = format!("outside-content-{}", t.namespace);
    std::fs::write(
        outside.path(),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: outside}}\ndata: {{secret: {marker}}}\n"),
    )
    .unwrap();
    let outside_rel = outside.path().strip_prefix("/").unwrap().display().to_string();

    // The chain of the issue: `up` is the root, `x` looks like `a/b` but is two levels above the root.
    symlink(&t, "../../..", "a/b/c/up");
    t.repo.write("chain/cm.yaml", CM);
    symlink(&t, "../a/b/c/up/../..", "chain/x");
    // The same trick, deep enough to reach `/` and name a file there: lexically `d1/<outside file>`.
    let depth = 40;
    let deep: Vec<String> = (1..=depth).map(|i| format!("d{i}")).collect();
    symlink(&t, &vec![".."; depth].join("/"), &format!("{}/up", deep.join("/")));
    t.repo.write("deep/cm.yaml", CM);
    symlink(
        &t,
        &format!(
            "../{}/up/{}/{outside_rel}",
            deep.join("/"),
            vec![".."; depth - 1].join("/")
        ),
        "deep/stolen.yaml",
    );
    // A kustomization whose base holds that link.
    symlink(
        &t,
        &format!(
            "../{}/up/{}/{outside_rel}",
            deep.join("/"),
            vec![".."; depth - 1].join("/")
        ),
        "kbase/stolen.yaml",
    );
    t.repo.write("kbase/kustomization.yaml", "resources:\n- stolen.yaml\n");
    t.repo
        .write("koverlay/kustomization.yaml", "resources:\n- ../kbase\n- cm.yaml\n");
    t.repo.write("koverlay/cm.yaml", CM);
    // Cycles: between files, and of a file with itself.
    t.repo.write("cycle/cm.yaml", CM);
    symlink(&t, "two.yaml", "cycle/one.yaml");
    symlink(&t, "one.yaml", "cycle/two.yaml");
    // Directory links back up the tree are fine, and must not make the walk endless.
    t.repo.write(
        "dirloop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dirloop}\n",
    );
    symlink(&t, "..", "dirloop/sub/l1");
    symlink(&t, "../../dirloop", "dirloop/sub/l2");
    symlink(&t, ".", "dirloop/here");
    t.repo.commit_and_push("hostile links");
    t.config_source("1s").await;
    for env in ["chain", "deep", "koverlay", "cycle", "dirloop"] {
        t.create_env(env, json!({"sourceRef": {"name": "config"}, "path": env}))
            .await;
    }

    for (env, needle) in [
        ("chain", "symlink chain/x points outside the repository"),
        ("deep", "symlink deep/stolen.yaml points outside the repository"),
        ("koverlay", "symlink kbase/stolen.yaml points outside the repository"),
        ("cycle", "symlink cycle/one.yaml is part of a cycle"),
    ] {
        let (reason, message) = failure(&t, env).await;
        assert_eq!(reason, "RenderFailed", "{env}: {message}");
        assert!(message.contains(needle), "{env}: {message}");
        assert!(
            !message.contains(&marker),
            "{env}: the outside file's content is never shown"
        );
    }
    wait_for(&t.api::<Environment>(), "dirloop", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let names: Vec<_> = config_maps(&t)
        .await
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["dirloop"], "nothing of the refused paths was applied");
    for (_, _, note) in t.events("deep").await {
        assert!(!note.contains(&marker), "{note}");
    }
}

/// Counts the connections a loopback HTTP server accepted; answers `GET /cm.yaml` with a ConfigMap and
/// anything else with 404. Listens on every address, so a host name that resolves to this machine reaches it.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start() -> Listener {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let body = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\n";
                    let response = if request.starts_with("GET /cm.yaml ") {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Listener { port, accepted, task }
    }

    /// Connections accepted so far, counted after a connection of our own has been accepted: connections
    /// are accepted in order, so any earlier one (from kustomize) is counted by then. The probe is excluded.
    async fn requests(&self) -> usize {
        let before = self.accepted.load(Ordering::SeqCst);
        let _probe = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        eventually("the probe connection is accepted", || async {
            let now = self.accepted.load(Ordering::SeqCst);
            (now > before).then_some(())
        })
        .await;
        self.accepted.fetch_sub(1, Ordering::SeqCst);
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This machine's host name: not a loopback literal (Go sends those around any proxy), but it resolves to
/// this machine, so the listener is reachable through it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn remote_patches_generators_and_transformers_are_refused_before_kustomize_runs() {
    let t = TestEnv::new("remote-fields").await;
    let server = Listener::start().await;
    let base = format!("http://{}:{}", host_name(), server.port);
    let cases = [
        (
            "patch",
            format!("resources:\n- cm.yaml\npatches:\n- path: {base}/cm.yaml\n"),
            "patch/kustomization.yaml: patches[0].path is a remote resource",
        ),
        (
            "generator",
            format!("resources:\n- cm.yaml\ngenerators:\n- {base}/cm.yaml\n"),
            "generator/kustomization.yaml: generators[0] is a remote resource",
        ),
        (
            "transformer",
            "resources:\n- cm.yaml\ntransformers:\n- github.com/example/repo/transformers?ref=v1\n".to_string(),
            "transformer/kustomization.yaml: transformers[0] is a remote resource",
        ),
        (
            "nested",
            "resources:\n- cm.yaml\n- ../nestedbase\n".to_string(),
            "nestedbase/kustomization.yaml: patchesJson6902[0].path is a remote resource",
        ),
    ];
    t.repo.write(
        "nestedbase/kustomization.yaml",
        &format!("patchesJson6902:\n- target: {{kind: ConfigMap, name: x}}\n  path: {base}/cm.yaml\n"),
    );
    for (dir, kustomization, _) in &cases {
        t.repo.write(&format!("{dir}/kustomization.yaml"), kustomization);
        t.repo.write(&format!("{dir}/cm.yaml"), CM);
    }
    t.repo.commit_and_push("remote references");
    t.config_source("1s").await;
    for (dir, _, _) in &cases {
        t.create_env(dir, json!({"sourceRef": {"name": "config"}, "path": dir}))
            .await;
    }
    for (dir, _, needle) in &cases {
        let (reason, message) = failure(&t, dir).await;
        assert_eq!(reason, "RenderFailed", "{dir}: {message}");
        assert!(message.contains(needle), "{dir}: {message}");
        assert!(
            !message.contains(&base),
            "{dir}: the reference itself is not quoted: {message}"
        );
    }
    assert!(
        config_maps(&t)
            .await
            .iter()
            .all(|c| c.metadata.name.as_deref() != Some("inside"))
    );
    assert_eq!(server.requests().await, 0, "nothing was fetched");
}

#[tokio::test]
async fn kustomize_has_no_way_out_even_for_a_reference_the_check_missed() {
    let t = TestEnv::new("no-way-out").await;
    let server = Listener::start().await;
    let host = host_name();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let http = root.join("http");
    let git = root.join("git");
    std::fs::create_dir_all(&http).unwrap();
    std::fs::create_dir_all(&git).unwrap();
    std::fs::write(
        http.join("kustomization.yaml"),
        format!("resources:\n- http://{host}:{}/cm.yaml\n", server.port),
    )
    .unwrap();
    std::fs::write(
        git.join("kustomization.yaml"),
        format!(
            "resources:\n- http://{host}:{}/org/repo.git//base?ref=main\n",
            server.port
        ),
    )
    .unwrap();

    // Control: the same kustomize with the caller's environment does reach the listener, so a zero below
    // means the sandbox stopped it, not that the reference was unreachable.
    // (tokio's Command: the listener runs on this test's single-threaded runtime.)
    let open = tokio::process::Command::new(t.bin_dir.join("kustomize"))
        .arg("build")
        .arg(&http)
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&open.stdout).contains("name: fetched"),
        "without the sandbox kustomize fetches from {host} (does the host name resolve here?): {}",
        String::from_utf8_lossy(&open.stderr)
    );
    let reached = server.requests().await;
    assert!(reached > 0);

    let settings = ferry::render::RenderSettings {
        kustomize: t.bin_dir.join("kustomize"),
        ..Default::default()
    };
    for d in [&http, &git] {
        let err = ferry::render::run_kustomize_unchecked(&root, d, &settings, true)
            .await
            .expect_err("no way out");
        assert!(matches!(err, ferry::render::RenderError::Kustomize(_)), "{err}");
    }
    assert_eq!(
        server.requests().await,
        reached,
        "the sandboxed kustomize made no request"
    );
}

#[tokio::test]
async fn renders_over_the_object_and_byte_limits_are_refused() {
    let t = TestEnv::with_settings("render-limits", |s| {
        s.render.max_objects = 3;
        s.render.max_bytes = 4096;
    })
    .await;
    for i in 0..4 {
        t.repo.write(
            &format!("objects/cm-{i}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n"),
        );
    }
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{v: {}}}\n",
        "x".repeat(5000)
    );
    t.repo.write("bytes/big.yaml", &big);
    t.repo.write("kbytes/kustomization.yaml", "resources:\n- big.yaml\n");
    t.repo.write("kbytes/big.yaml", &big);
    t.repo.write(
        "fits/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fits}\n",
    );
    t.repo.commit_and_push("over the limits");
    t.config_source("1s").await;
    for env in ["objects", "bytes", "kbytes", "fits"] {
        t.create_env(env, json!({"sourceRef": {"name": "config"}, "path": env}))
            .await;
    }
    for (env, needle) in [
        ("objects", "the render has 4 objects, over the limit of 3"),
        (
            "bytes",
            "the manifests read up to bytes/big.yaml: over the limit of 4096 bytes",
        ),
        ("kbytes", "the kustomize output: over the limit of 4096 bytes"),
    ] {
        let (reason, message) = failure(&t, env).await;
        assert_eq!(reason, "RenderLimitExceeded", "{env}: {message}");
        assert!(message.contains(needle), "{env}: {message}");
    }
    wait_for(&t.api::<Environment>(), "fits", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let names: Vec<_> = config_maps(&t)
        .await
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["fits"], "nothing over the limits was applied");
}

/// A tree object written byte by byte: git's own tools never make entries named `..`, but nothing stops a
/// crafted push (neither `git push` nor a default `receive-pack` checks).
fn raw_tree(repo: &git2::Repository, entries: &[(&str, &str, git2::Oid)]) -> git2::Oid {
    let mut raw = Vec::new();
    for (mode, name, id) in entries {
        raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        raw.extend_from_slice(id.as_bytes());
    }
    repo.odb().unwrap().write(git2::ObjectType::Tree, &raw).unwrap()
}

#[tokio::test]
async fn a_crafted_tree_with_a_dot_dot_entry_is_refused_before_anything_is_written_or_applied() {
    let t = TestEnv::new("crafted-tree").await;
    let work = git2::Repository::open(t.repo.work.path()).unwrap();
    let cm = work.blob(CM.as_bytes()).unwrap();
    let escaping = raw_tree(&work, &[("100644", "escaped.yaml", cm)]);
    let app = raw_tree(&work, &[("100644", "cm.yaml", cm)]);
    let top = raw_tree(&work, &[("40000", "..", escaping), ("40000", "app", app)]);
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    let tree = work.find_tree(top).unwrap();
    work.commit(Some("refs/heads/main"), &sig, &sig, "crafted", &tree, &[])
        .unwrap();
    let push = std::process::Command::new("git")
        .current_dir(t.repo.work.path())
        .args(["push", "-q", "origin", "main"])
        .output()
        .unwrap();
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    t.config_source("1s").await;
    t.create_env("app", json!({"sourceRef": {"name": "config"}, "path": "app"}))
        .await;
    let (reason, message) = failure(&t, "app").await;
    assert_eq!(reason, "ArtifactFailed", "{message}");
    assert!(
        message.contains("an entry of the repository root has an invalid name"),
        "{message}"
    );
    assert!(
        config_maps(&t)
            .await
            .iter()
            .all(|c| c.metadata.name.as_deref() != Some("inside"))
    );
}
