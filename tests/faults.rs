//! Faults on the bad day, on real servers: the Git host down, hanging, failing or trickling; a force-push and
//! a deleted branch. The fetch gives up within its timeout, the condition says why, the last good revision stays
//! applied, and everything recovers by itself when the fault ends.

mod common;

use std::net::SocketAddr;

use common::*;
use ferry::api::{Environment, GitRepository};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

fn config_map(v: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app}}\ndata: {{v: \"{v}\"}}\n")
}

async fn value(t: &TestEnv) -> Option<String> {
    let cm = t.api::<ConfigMap>().get_opt("app").await.ok()??;
    cm.data?.get("v").cloned()
}

async fn wait_applied(t: &TestEnv, commit: &str, v: &str) {
    let want = format!("@sha1:{commit}");
    wait_for(&t.api::<Environment>(), "app", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
            .is_some_and(|r| r.ends_with(&want))
    })
    .await;
    assert_eq!(value(t).await.as_deref(), Some(v));
}

/// Waits for the GitRepository to report the fetch failure; returns its (reason, message).
async fn fetch_failure(t: &TestEnv) -> (String, String) {
    let repo = wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        repo_ready(r).is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = repo_ready(&repo).unwrap();
    (reason, message)
}

#[tokio::test]
async fn a_failing_git_host_keeps_the_last_good_revision_and_recovers() {
    let t = TestEnv::new("git-faults").await;
    let upstream = GitHttpServer::start(t.git_root.clone(), HttpAuth::None, false).await;
    let upstream_addr: SocketAddr = upstream.base_url.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultyProxy::start(upstream_addr).await;

    t.repo.write("app/cm.yaml", &config_map("0"));
    let mut applied = t.repo.commit_and_push("v0");
    let url = format!("http://{}/{}", proxy.addr, t.repo.name);
    t.create_gitrepo("config", json!({"url": url, "interval": "1s", "timeout": "3s"}))
        .await;
    t.create_env(
        "app",
        json!({"sourceRef": {"name": "config"}, "path": "app", "interval": "1m"}),
    )
    .await;
    wait_applied(&t, &applied, "0").await;

    let cases = [
        (Fault::Down, "1", "connect"),
        (Fault::Hang, "2", "timed out"),
        (Fault::Error500, "3", "500"),
        (Fault::Slow, "4", "timed out"),
    ];
    for (fault, v, says) in cases {
        eprintln!("fault: {fault:?}");
        proxy.set(fault);
        t.repo.write("app/cm.yaml", &config_map(v));
        let next = t.repo.commit_and_push(&format!("v{v}"));
        let (reason, message) = fetch_failure(&t).await;
        assert_eq!(reason, "FetchFailed", "{fault:?}: {message}");
        assert!(message.to_lowercase().contains(says), "{fault:?}: {message}");
        // The cluster keeps the last good revision, and the Environment says it still runs it.
        let env = t.api::<Environment>().get("app").await.unwrap();
        assert!(
            env.status.unwrap().last_applied_revision.unwrap().ends_with(&applied),
            "{fault:?}"
        );
        assert_ne!(value(&t).await.as_deref(), Some(v), "{fault:?}: nothing new applied");

        proxy.set(Fault::None);
        wait_applied(&t, &next, v).await;
        applied = next;
    }
}

#[tokio::test]
async fn a_force_push_is_followed_and_a_deleted_branch_keeps_what_was_applied() {
    let t = TestEnv::new("git-rewrite").await;
    t.repo.write("app/cm.yaml", &config_map("a"));
    let a = t.repo.commit_and_push("a");
    t.create_gitrepo("config", json!({"url": t.repo.url, "interval": "1s"}))
        .await;
    t.create_env(
        "app",
        json!({"sourceRef": {"name": "config"}, "path": "app", "interval": "1m"}),
    )
    .await;
    wait_applied(&t, &a, "a").await;

    // History rewritten: a commit that does not descend from the applied one replaces the branch.
    let work = t.repo.work.path();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(work)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["checkout", "-q", "--orphan", "rewritten"]);
    t.repo.write("app/cm.yaml", &config_map("b"));
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "rewritten"]);
    git(&["push", "-q", "--force", "origin", "HEAD:refs/heads/main"]);
    let b = git(&["rev-parse", "HEAD"]);
    wait_applied(&t, &b, "b").await;

    // The branch is deleted: the source says so, the cluster keeps b.
    let bare = t.repo.bare.to_string_lossy().into_owned();
    git(&["-C", &bare, "config", "receive.denyDeleteCurrent", "ignore"]);
    git(&["push", "-q", "origin", ":refs/heads/main"]);
    let (reason, message) = fetch_failure(&t).await;
    assert_eq!(reason, "RefNotFound", "{message}");
    assert!(message.contains("main"), "{message}");
    let env = t.api::<Environment>().get("app").await.unwrap();
    assert!(env.status.unwrap().last_applied_revision.unwrap().ends_with(&b));
    assert_eq!(value(&t).await.as_deref(), Some("b"));

    // Back: pushed again, applied again.
    t.repo.write("app/cm.yaml", &config_map("c"));
    let c = t.repo.commit_and_push("c");
    wait_applied(&t, &c, "c").await;
}
