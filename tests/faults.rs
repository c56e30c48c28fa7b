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

/// One `ferry run` process: the real binary, killed with SIGKILL (no shutdown, no lease hand-over).
struct Ferry {
    child: std::process::Child,
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ferry(t: &TestEnv, storage: &std::path::Path) -> Ferry {
    let port = || ferry_testenv::free_port().expect("port").to_string();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["run", "--leader-elect=false", "--namespace", &t.namespace])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", port())])
        .args(["--probe-addr", &format!("127.0.0.1:{}", port())])
        .args(["--webhook-addr", &format!("127.0.0.1:{}", port())])
        .arg("--storage-dir")
        .arg(storage)
        .arg("--kustomize")
        .arg(t.bin_dir.join("kustomize"))
        .env("KUBECONFIG", &t.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(std::process::Stdio::null());
    Ferry {
        child: ferry_testenv::spawn_guarded(cmd).expect("starting ferry run"),
    }
}

/// Round `r` of Environment `i`: two objects that stay (their data changes each round) and one whose name
/// changes each round, so every round prunes.
fn round_files(t: &TestEnv, envs: usize, r: usize) {
    for i in 0..envs {
        let dir = t.repo.work.path().join(format!("envs/e{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut text = String::new();
        for name in [format!("c{i}-a"), format!("c{i}-b"), format!("c{i}-r{r}")] {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{round: \"{r}\"}}\n"
            ));
        }
        t.repo.write(&format!("envs/e{i}/cms.yaml"), &text);
    }
}

/// Every Environment applied `commit` and the namespace holds exactly what round `r` renders: nothing of an
/// earlier round left, nothing of this one missing or stale.
async fn converged(t: &TestEnv, envs: usize, commit: &str, r: usize) -> Result<(), String> {
    let want_rev = format!("@sha1:{commit}");
    for e in t
        .api::<Environment>()
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
    {
        let name = e.metadata.name.clone().unwrap_or_default();
        let status = e.status.clone().unwrap_or_default();
        let at = status.last_applied_revision.clone().unwrap_or_default();
        if !at.ends_with(&want_rev) || env_ready(&e).map(|(s, _, _)| s) != Some("True".to_string()) {
            return Err(format!("{name} at {at:?}, ready {:?}", env_ready(&e)));
        }
    }
    let mut have: Vec<(String, String)> = t
        .api::<ConfigMap>()
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with('c')))
        .map(|c| {
            let round = c.data.and_then(|d| d.get("round").cloned()).unwrap_or_default();
            (c.metadata.name.unwrap_or_default(), round)
        })
        .collect();
    have.sort();
    let mut want: Vec<(String, String)> = (0..envs)
        .flat_map(|i| [format!("c{i}-a"), format!("c{i}-b"), format!("c{i}-r{r}")])
        .map(|n| (n, r.to_string()))
        .collect();
    want.sort();
    if have != want {
        let extra: Vec<_> = have.iter().filter(|h| !want.contains(h)).take(5).collect();
        let missing: Vec<_> = want.iter().filter(|w| !have.contains(w)).take(5).collect();
        return Err(format!("objects differ: extra {extra:?}, missing {missing:?}"));
    }
    Ok(())
}

/// SIGKILLs `ferry run` at random moments while 50 Environments apply a commit that touches (and prunes in)
/// all of them; after each restart everything converges exactly. `FERRY_FAULT_KILLS` sets how many kills.
#[tokio::test]
async fn killed_at_random_moments_ferry_converges_exactly_after_every_restart() {
    const ENVS: usize = 50;
    let kills: usize = std::env::var("FERRY_FAULT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let t = TestEnv::without_controller("kill").await;
    let storage = tempfile::tempdir().unwrap();
    round_files(&t, ENVS, 0);
    let mut commit = t.repo.commit_and_push("round 0");
    t.create_gitrepo("config", json!({"url": t.repo.url, "interval": "1s"}))
        .await;
    for i in 0..ENVS {
        t.create_env(
            &format!("e{i}"),
            json!({"sourceRef": {"name": "config"}, "path": format!("envs/e{i}"), "interval": "10m", "prune": true}),
        )
        .await;
    }
    let mut ferry = start_ferry(&t, storage.path());
    eventually("round 0 converges", || async {
        converged(&t, ENVS, &commit, 0).await.ok()
    })
    .await;

    // A small deterministic generator: the kill moments differ across the run and are the same on every run.
    let mut seed: u64 = 0x5eed_f311;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = std::time::Instant::now();
    for r in 1..=kills {
        round_files(&t, ENVS, r);
        commit = t.repo.commit_and_push(&format!("round {r}"));
        // Somewhere between "not fetched yet" and "applying the last Environments".
        tokio::time::sleep(std::time::Duration::from_millis(next() % 2500)).await;
        let _ = ferry.child.kill(); // SIGKILL
        let _ = ferry.child.wait();
        ferry = start_ferry(&t, storage.path());
        let deadline = std::time::Instant::now() + 2 * DEADLINE;
        loop {
            match converged(&t, ENVS, &commit, r).await {
                Ok(()) => break,
                Err(why) if std::time::Instant::now() > deadline => {
                    panic!("after kill {r}: not converged within {:?}: {why}", 2 * DEADLINE)
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
    eprintln!("{kills} kills, each converged; {:.1?} in all", started.elapsed());
    drop(ferry);
}
