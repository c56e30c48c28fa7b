//! Web view render benchmark: the pages as pure functions of API objects (no cluster, no HTTP), for a namespace
//! of N Environments (default 100) in promotion chains of four, each with a full history (10 revisions), an
//! inventory of 20 objects, a few Promotions and their transitions. Prints the median and p99 time to render
//! the pipeline page, one Environment page and one Promotion page, and the pipeline page's size.
//! `cargo bench --bench ui` (FERRY_BENCH_ENVIRONMENTS=N to change N). Asserts nothing about the figures.

use std::time::{Duration, Instant};

use ferry::api::{Environment, InventoryEntry, Promotion};
use ferry::health::Health;
use ferry::ui::pages::{self, Cell, Chrome, Commit, Commits, Live};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

const CHAIN: [&str; 4] = ["dev", "staging", "canary", "production"];

fn commit(i: usize) -> String {
    format!("{i:040x}")
}

fn revision(i: usize) -> String {
    format!("main@sha1:{}", commit(i))
}

fn environment(i: usize) -> Environment {
    let stage = CHAIN[i % CHAIN.len()];
    let name = format!("{stage}-{}", i / CHAIN.len());
    let mut spec = json!({"sourceRef": {"kind": "GitRepository", "name": "config"}, "path": format!("./apps/{name}")});
    if !i.is_multiple_of(CHAIN.len()) {
        let from = format!("{}-{}", CHAIN[i % CHAIN.len() - 1], i / CHAIN.len());
        spec["promotion"] = json!({"from": from, "requireApproval": stage == "production", "soakTime": "10m"});
    }
    let history: Vec<_> = (0..10)
        .map(|r| {
            json!({"revision": revision(r), "phase": if r == 0 { "Verifying" } else { "Verified" },
                   "promotion": format!("{name}-{r:012x}"), "appliedAt": "2026-11-25T10:00:00Z",
                   "finishedAt": "2026-11-25T10:01:00Z", "attempts": 1, "job": format!("{name}-verify-{r}"),
                   "message": "Job succeeded"})
        })
        .collect();
    let inventory: Vec<_> = (0..20)
        .map(|o| {
            json!({"apiVersion": "v1", "kind": if o % 2 == 0 { "ConfigMap" } else { "Service" },
                        "namespace": name, "name": format!("object-{o}")})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": spec,
        "status": {
            "lastAppliedRevision": revision(1),
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Succeeded", "message": format!("applied revision {}", revision(1)),
                 "lastTransitionTime": "2026-11-25T10:00:00Z"},
                {"type": "Verified", "status": "True", "reason": "Verified", "message": "verified",
                 "lastTransitionTime": "2026-11-25T10:01:00Z"}],
            "history": history,
            "inventory": inventory,
            "promotion": if !i.is_multiple_of(CHAIN.len()) { json!({"name": format!("{name}-{:012x}", 0), "revision": revision(0), "phase": "WaitingApproval"}) } else { json!(null) },
        },
    }))
    .expect("environment")
}

fn promotions(env: &Environment) -> Vec<Promotion> {
    let name = env.metadata.name.clone().unwrap_or_default();
    (0..3)
        .map(|r| {
            let phase = if r == 0 { "WaitingApproval" } else { "Succeeded" };
            serde_json::from_value(json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "Promotion",
                "metadata": {"name": format!("{name}-{r:012x}"), "namespace": "bench", "creationTimestamp": "2026-11-25T10:00:00Z"},
                "spec": {"environment": name, "revision": revision(r)},
                "status": {"phase": phase,
                    "conditions": [{"type": "Ready", "status": "False", "reason": "WaitingApproval", "message": "waiting for approval",
                                    "lastTransitionTime": "2026-11-25T10:00:00Z"}],
                    "transitions": [
                        {"phase": "Pending", "reason": "Soaking", "message": "soaking until 10:10", "time": "2026-11-25T10:00:00Z"},
                        {"phase": "WaitingApproval", "reason": "WaitingApproval", "message": "waiting", "time": "2026-11-25T10:10:00Z"}]},
            }))
            .expect("promotion")
        })
        .collect()
}

/// Median and p99 of `runs` renders.
fn time(runs: usize, mut render: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut samples = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        size = std::hint::black_box(render());
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples[runs / 2], samples[(runs * 99 / 100).min(runs - 1)], size)
}

fn main() {
    let n: usize = std::env::var("FERRY_BENCH_ENVIRONMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let envs: Vec<Environment> = (0..n).map(environment).collect();
    let all_promotions: Vec<Promotion> = envs.iter().flat_map(promotions).collect();
    let commits: Commits = (0..10)
        .map(|r| {
            (
                commit(r),
                Commit {
                    summary: format!("Change number {r}: bump the web tier"),
                    author: "Release Bot".into(),
                },
            )
        })
        .collect();
    let chrome = Chrome {
        user: Some("alice".into()),
        live: Some("bench".into()),
        crumbs: vec![("bench".into(), "/ns/bench".into())],
    };
    let now: Timestamp = "2026-11-25T12:00:00Z".parse().expect("time");
    let runs = 200;
    let (median, p99, size) = time(runs, || {
        pages::pipeline_page(&chrome, "bench", &envs, Some(&all_promotions), &commits, now)
            .into_string()
            .len()
    });
    println!(
        "pipeline page, {n} Environments, {} Promotions: median {:.2} ms, p99 {:.2} ms, {} KiB of HTML",
        all_promotions.len(),
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        size / 1024
    );
    let env = &envs[n - 1];
    let own: Vec<Promotion> = promotions(env);
    let tree: Vec<(InventoryEntry, Live)> = env
        .status
        .as_ref()
        .map(|s| {
            s.inventory
                .iter()
                .map(|e| {
                    let live = Live {
                        cell: Cell::Health(Health::Current),
                        images: vec!["registry.example/web:1.2.3".into()],
                    };
                    (e.clone(), live)
                })
                .collect()
        })
        .unwrap_or_default();
    let (median, p99, _) = time(runs, || {
        pages::environment_page(
            &chrome,
            "bench",
            env,
            Some(&own),
            pages::Inventory::Live(&tree),
            Some(&[]),
            &commits,
            now,
        )
        .into_string()
        .len()
    });
    println!(
        "Environment page (20 objects, 10 revisions): median {:.2} ms, p99 {:.2} ms",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    let (median, p99, _) = time(runs, || {
        pages::promotion_page(&chrome, "bench", &own[0], Some(&[]), &commits, now)
            .into_string()
            .len()
    });
    println!(
        "Promotion page: median {:.3} ms, p99 {:.3} ms",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}
