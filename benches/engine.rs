//! Sync-engine benchmark on the local control plane, with `ferry run` (release build) as its own process:
//! N Environments (default 1000) × 10 ConfigMaps from one GitRepository, each into its own namespace.
//! Prints: time until all Ready from a cold start, time for one commit touching all of them, controller RSS,
//! API requests (and writes) per no-op reconcile cycle, counted by the apiserver's own metrics, and how long a
//! hand edit or deletion of one applied object takes to be reverted (p50/p99 over 50).
//! `cargo bench --bench engine` (FERRY_BENCH_ENVS=N to change N, FERRY_BENCH_NOOP_SECS for the no-op window). Asserts nothing about the figures.

#[allow(dead_code)]
#[path = "../tests/common/git.rs"]
mod git;
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use ferry::api::{Environment, GitRepository};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DeleteParams;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{create, ms, percentile, request_counts, rss_kib};

const NS: &str = "bench";

async fn count_at(envs: &Api<Environment>, revision: &str) -> anyhow::Result<usize> {
    Ok(envs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|e| {
            e.status.as_ref().is_some_and(|s| {
                s.last_applied_revision.as_deref() == Some(revision)
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count())
}

async fn wait_all(envs: &Api<Environment>, revision: &str, n: usize, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let ready = count_at(envs, revision).await?;
        if ready == n {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {ready}/{n} Environments at {revision} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Mutating requests by the admin user (Ferry here) that were not dry runs, from the audit log.
fn admin_writes(audit_log: &std::path::Path) -> usize {
    std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == "admin")
        .filter(|e| !e["requestURI"].as_str().unwrap_or_default().contains("dryRun=All"))
        .count()
}

/// Edits (even) or deletes (odd) one applied ConfigMap after another, each time waiting until Ferry has put it
/// back as Git says (`round`); returns how long each took, sorted.
async fn hand_edits(client: &kube::Client, n: usize, round: &str, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut took = Vec::new();
    for k in 0..count {
        let env = (k * 7919) % n;
        let cm = format!("cm-{}", k % 10);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &format!("t-{env:04}"));
        let start = Instant::now();
        if k % 2 == 0 {
            let edit = json!({"data": {"round": "edited by hand"}});
            cms.patch(&cm, &PatchParams::default(), &Patch::Merge(&edit)).await?;
        } else {
            cms.delete(&cm, &DeleteParams::default()).await?;
        }
        loop {
            let live = cms.get_opt(&cm).await?;
            if live
                .and_then(|c| c.data)
                .and_then(|d| d.get("round").cloned())
                .as_deref()
                == Some(round)
            {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "{cm} in t-{env:04} not reverted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(start.elapsed());
    }
    took.sort();
    Ok(took)
}

/// Requests between two counts, by verb, divided by `per`.
fn by_verb(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    per: f64,
) -> Vec<String> {
    after
        .iter()
        .map(|(verb, total)| (verb, (total - before.get(verb).copied().unwrap_or(0.0)) / per))
        .filter(|(_, delta)| *delta >= 0.5)
        .map(|(verb, delta)| format!("{verb} {delta:.0}"))
        .collect()
}

fn configmaps(round: u32) -> String {
    (0..10)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{round: \"{round}\", i: \"{i}\"}}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("FERRY_BENCH_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (cp, client) = support::control_plane().await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": NS}})).await;
    for i in 0..n {
        create(&namespaces, json!({"metadata": {"name": format!("t-{i:04}")}})).await;
    }
    let daemon = git::GitDaemon::start()?;
    let repo = daemon.create_repo("apps")?;
    repo.write("apps/cms.yaml", &configmaps(0));
    let first = repo.commit_and_push("round 0");

    let repos: Api<GitRepository> = Api::namespaced(client.clone(), NS);
    let envs: Api<Environment> = Api::namespaced(client.clone(), NS);
    create(
        &repos,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitRepository", "metadata": {"name": "apps"},
               "spec": {"url": repo.url, "interval": "1h"}}),
    )
    .await;
    for i in 0..n {
        create(
            &envs,
            json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment", "metadata": {"name": format!("e-{i:04}")},
                   "spec": {"sourceRef": {"name": "apps"}, "path": "apps", "interval": "60s",
                            "targetNamespace": format!("t-{i:04}")}}),
        )
        .await;
    }

    // Cold start: everything exists, the controller starts now.
    let at_start = request_counts(&client).await?;
    let storage = tempfile::tempdir()?;
    let (ferry, _) = support::start_ferry(&cp, None, storage.path())?;
    let pid = ferry.id();
    let cold = wait_all(&envs, &format!("main@sha1:{first}"), n, Duration::from_secs(900)).await?;
    let (rss_after_cold, _) = rss_kib(pid);
    eprintln!("cold start: {:.1} s", cold.as_secs_f64());
    let after_cold = request_counts(&client).await?;

    // One commit touching every object of every Environment, announced by "reconcile now".
    repo.write("apps/cms.yaml", &configmaps(1));
    let second = repo.commit_and_push("round 1");
    let request = json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": "round-1"}}});
    let start = Instant::now();
    repos
        .patch("apps", &PatchParams::default(), &Patch::Merge(&request))
        .await?;
    wait_all(&envs, &format!("main@sha1:{second}"), n, Duration::from_secs(900)).await?;
    let commit_all = start.elapsed();
    eprintln!("commit touching all: {:.1} s", commit_all.as_secs_f64());
    let after_commit = request_counts(&client).await?;

    // A no-op cycle: every Environment reconciles once per 60 s interval; count what the apiserver served.
    tokio::time::sleep(Duration::from_secs(20)).await; // let the status writes of round 1 finish
    let before = request_counts(&client).await?;
    let audit_before = admin_writes(&cp.audit_log());
    let window = Duration::from_secs(
        std::env::var("FERRY_BENCH_NOOP_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    tokio::time::sleep(window).await;
    let after = request_counts(&client).await?;
    let audit_after = admin_writes(&cp.audit_log());
    let cycles = window.as_secs_f64() / 60.0;
    let per_cycle = by_verb(&before, &after, cycles);
    let writes = (audit_after - audit_before) as f64 / cycles;
    let (rss_noop, _) = rss_kib(pid);

    // Hand edits and deletions, one at a time, each reverted through the watches.
    let edits = hand_edits(&client, n, "1", 50).await?;
    let (rss, hwm) = rss_kib(pid);

    println!("\nFerry engine benchmark: {n} Environments x 10 ConfigMaps, one GitRepository, local control plane");
    println!("| measure | result |");
    println!("|---|---|");
    println!("| all {n} Ready from a cold start | {:.1} s |", cold.as_secs_f64());
    println!(
        "| one commit touching all {} objects, until all Ready | {:.1} s |",
        n * 10,
        commit_all.as_secs_f64()
    );
    println!(
        "| hand edit or deletion of one object until reverted, p50 / p99 over {} | {} / {} |",
        edits.len(),
        ms(percentile(&edits, 0.5)),
        ms(percentile(&edits, 0.99))
    );
    println!(
        "| controller RSS after cold start / after the no-op cycles / at the end / peak | {} / {} / {} / {} MiB |",
        rss_after_cold / 1024,
        rss_noop / 1024,
        rss / 1024,
        hwm / 1024
    );
    println!(
        "| API requests during the cold start, by verb (the bench's own polling included) | {} |",
        by_verb(&at_start, &after_cold, 1.0).join(", ")
    );
    println!(
        "| API requests during the commit round, by verb | {} |",
        by_verb(&after_cold, &after_commit, 1.0).join(", ")
    );
    println!(
        "| API requests per no-op cycle (all Environments; a few are the apiserver's own), by verb | {} |",
        per_cycle.join(", ")
    );
    println!("| writes by Ferry per no-op cycle (audit log, dry runs excluded) | {writes:.0} |");
    drop(ferry);
    Ok(())
}
