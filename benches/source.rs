//! Source-side benchmark on the local control plane, with `ferry run` (release build) as a separate process:
//!   1. webhook push → GitRepository revision → Environment applied, p50/p99 over N pushes;
//!   2. 200 GitRepositories on 10 URLs: network fetches per interval, counted at the git server, and RSS;
//!   3. git2 fetch vs the `git` CLI on a repository with a few thousand commits.
//!
//! Prints figures; asserts nothing about them. `cargo bench --bench source` (FERRY_BENCH_PUSHES=N to change N).

#[allow(dead_code)]
#[path = "../tests/common/git.rs"]
mod git;
#[allow(dead_code)]
#[path = "../tests/common/git_http.rs"]
mod git_http;
#[path = "../tests/common/http.rs"]
mod http;
#[allow(dead_code)]
mod support;

use support::{create, ms, percentile, rss_kib};

use std::process::Command;
use std::time::{Duration, Instant};

use ferry::api::{Environment, GitRef, GitRepository};
use ferry::source::{Credentials, FetchOptions, MirrorStore};
use kube::Api;
use serde_json::json;

const NS: &str = "bench";

fn git_cmd(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=B", "-c", "user.email=b@ferry.dev"])
        .args(args)
        .status()
        .expect("git")
        .success();
    assert!(ok, "git {args:?}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pushes: usize = std::env::var("FERRY_BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (cp, client) = support::control_plane().await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": NS}})).await;
    let daemon = git::GitDaemon::start()?;

    let storage = tempfile::tempdir()?;
    let (ferry, hook_port) = support::start_ferry(&cp, Some(NS), storage.path())?;
    let pid = ferry.id();

    let repos: Api<GitRepository> = Api::namespaced(client.clone(), NS);
    let envs: Api<Environment> = Api::namespaced(client.clone(), NS);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    create(
        &secrets,
        json!({"metadata": {"name": "hook"}, "stringData": {"token": "bench-token"}}),
    )
    .await;

    // 1. Webhook latency.
    let repo = daemon.create_repo("latency")?;
    repo.write(
        "apps/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {i: \"-1\"}\n",
    );
    let first = repo.commit_and_push("start");
    create(
        &repos,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitRepository", "metadata": {"name": "latency"},
               "spec": {"url": repo.url, "interval": "1h", "webhookSecretRef": {"name": "hook"}}}),
    )
    .await;
    create(
        &envs,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment", "metadata": {"name": "latency"},
               "spec": {"sourceRef": {"name": "latency"}, "path": "apps", "interval": "1h"}}),
    )
    .await;
    let applied = |commit: String| {
        let envs = envs.clone();
        async move {
            let want = format!("main@sha1:{commit}");
            loop {
                let env = envs.get("latency").await.ok();
                if env.and_then(|e| e.status).and_then(|s| s.last_applied_revision) == Some(want.clone()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), applied(first)).await?;
    let hook_url = format!("http://127.0.0.1:{hook_port}/hooks/{NS}/latency");
    let (mut to_source, mut to_applied) = (Vec::new(), Vec::new());
    for i in 0..pushes {
        repo.write(
            "apps/cm.yaml",
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm}}\ndata: {{i: \"{i}\"}}\n"),
        );
        let commit = repo.commit_and_push(&format!("push {i}"));
        let body = json!({"ref": "refs/heads/main", "after": commit}).to_string();
        let start = Instant::now();
        let (code, reply) =
            http::http_post(&hook_url, &[("Authorization", "Bearer bench-token")], body.as_bytes()).await;
        assert_eq!(code, 202, "{reply}");
        let want = format!("main@sha1:{commit}");
        let mut source_at = None;
        loop {
            if source_at.is_none() {
                let r = repos.get("latency").await?;
                if r.status.and_then(|s| s.artifact).map(|a| a.revision) == Some(want.clone()) {
                    source_at = Some(start.elapsed());
                }
            }
            let e = envs.get("latency").await?;
            if e.status.and_then(|s| s.last_applied_revision) == Some(want.clone()) {
                to_applied.push(start.elapsed());
                to_source.push(source_at.unwrap_or_else(|| start.elapsed()));
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("push {i} not applied within 60s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    to_source.sort();
    to_applied.sort();

    // 2. 200 GitRepositories on 10 URLs.
    let http_server =
        git_http::GitHttpServer::start(daemon.base.path().to_path_buf(), git_http::HttpAuth::None, false).await;
    let mut urls = Vec::new();
    for u in 0..10 {
        let r = daemon.create_repo(&format!("fan{u}"))?;
        r.write("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
        r.commit_and_push("one");
        urls.push((format!("{}/{}", http_server.base_url, r.name), r));
    }
    let interval = Duration::from_secs(10);
    let fan_start = Instant::now();
    for i in 0..200 {
        let (url, _) = &urls[i % 10];
        create(
            &repos,
            json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitRepository", "metadata": {"name": format!("fan-{i}")},
                   "spec": {"url": url, "interval": "10s"}}),
        )
        .await;
    }
    loop {
        let ready = repos
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|r| r.metadata.name.as_deref().is_some_and(|n| n.starts_with("fan-")))
            .filter(|r| r.status.as_ref().and_then(|s| s.artifact.as_ref()).is_some())
            .count();
        if ready == 200 {
            break;
        }
        anyhow::ensure!(fan_start.elapsed() < Duration::from_secs(120), "only {ready}/200 ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_ready = fan_start.elapsed();
    let count = || urls.iter().map(|(_, r)| http_server.fetches(&r.name)).sum::<usize>();
    let initial = count();
    let intervals = 3;
    tokio::time::sleep(interval * intervals).await;
    let per_interval = (count() - initial) as f64 / intervals as f64;
    let (rss, hwm) = rss_kib(pid);

    // 3. git2 vs git CLI on a long history.
    let history = daemon.create_repo("history")?;
    let mut stream = String::new();
    let commits = 3000;
    for i in 0..commits {
        let content = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: h}}\ndata: {{i: \"{i}\"}}\n");
        let msg = format!("commit {i}");
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{m}\ncommitter B <b@ferry.dev> {t} +0000\ndata {ml}\n{msg}\n{from}M 644 inline file{f}.yaml\ndata {len}\n{content}\n",
            ml = msg.len(),
            m = i + 1,
            t = 1_700_000_000 + i,
            from = if i == 0 { String::new() } else { format!("from :{i}\n") },
            f = i % 50,
            len = content.len(),
        ));
    }
    let mut fi = Command::new("git")
        .current_dir(history.work.path())
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    fi.stdin.take().expect("stdin").write_all(stream.as_bytes())?;
    anyhow::ensure!(fi.wait()?.success(), "fast-import failed");
    git_cmd(history.work.path(), &["push", "-q", "origin", "main"]);
    let mut cold = (Vec::new(), Vec::new());
    let mut warm = (Vec::new(), Vec::new());
    let git2_fetch = |store: &MirrorStore| {
        store.fetch(
            &history.url,
            &GitRef::default(),
            &Credentials::default(),
            &FetchOptions::default(),
        )
    };
    for round in 0..5 {
        let dir = tempfile::tempdir()?;
        let store = MirrorStore::new(dir.path());
        let t = Instant::now();
        git2_fetch(&store)?;
        cold.0.push(t.elapsed());
        let cli_dir = dir.path().join("cli.git");
        let t = Instant::now();
        let ok = Command::new("git")
            .args(["clone", "-q", "--mirror", &history.url])
            .arg(&cli_dir)
            .status()?
            .success();
        anyhow::ensure!(ok, "git clone failed");
        cold.1.push(t.elapsed());
        // One new commit, then an incremental fetch both ways.
        history.write("new.yaml", &format!("round: {round}\n"));
        history.commit_and_push("one more");
        let t = Instant::now();
        git2_fetch(&store)?;
        warm.0.push(t.elapsed());
        let t = Instant::now();
        let ok = Command::new("git")
            .arg("-C")
            .arg(&cli_dir)
            .args(["fetch", "-q", "origin"])
            .status()?
            .success();
        anyhow::ensure!(ok, "git fetch failed");
        warm.1.push(t.elapsed());
    }
    for v in [&mut cold.0, &mut cold.1, &mut warm.0, &mut warm.1] {
        v.sort();
    }

    println!("\nFerry source benchmark (local control plane, ferry run as a release-build process)");
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| webhook → GitRepository revision ({pushes} pushes) | p50 {}, p99 {} |",
        ms(percentile(&to_source, 0.5)),
        ms(percentile(&to_source, 0.99))
    );
    println!(
        "| webhook → Environment applied ({pushes} pushes) | p50 {}, p99 {} |",
        ms(percentile(&to_applied, 0.5)),
        ms(percentile(&to_applied, 0.99))
    );
    println!(
        "| 200 GitRepositories on 10 URLs: all Ready from creation | {:.1} s |",
        all_ready.as_secs_f64()
    );
    println!("| … network fetches to reach Ready | {initial} |");
    println!("| … network fetches per 10 s interval, steady state (goal 10) | {per_interval:.1} |");
    println!(
        "| … controller RSS now / peak | {} MiB / {} MiB |",
        rss / 1024,
        hwm / 1024
    );
    println!(
        "| cold fetch of {commits} commits: git2 / git CLI (median of 5) | {} / {} |",
        ms(cold.0[2]),
        ms(cold.1[2])
    );
    println!(
        "| incremental fetch of 1 commit: git2 / git CLI (median of 5) | {} / {} |",
        ms(warm.0[2]),
        ms(warm.1[2])
    );
    drop(ferry);
    Ok(())
}
