//! Promotion benchmark on the local control plane with workloads (controller-manager, scheduler and kwok's
//! simulated node, so Deployments become healthy), with `ferry run` (release build) as its own process.
//! N pipelines (default 50) from one GitRepository, all Environments in one namespace: `staging-<i>` applies
//! one ConfigMap and one Deployment (1 replica) into namespace `stg-<i>`, and `production-<i>`, promoted from
//! it without approval, applies the same into `prd-<i>`. Verification is health only (no acceptance Job).
//! Prints: the cold start until every production Environment verified its first promoted revision; one commit
//! touching every pipeline (until all staging and all production verified, and staging → production per
//! pipeline); approval → Succeeded on one extra pipeline with `requireApproval`; controller RSS; API requests
//! per promotion. `cargo bench --bench promotion` (FERRY_BENCH_PIPELINES=N to change N). Asserts nothing about
//! the figures, only that everything completes before a generous deadline.

#[allow(dead_code)]
#[path = "../tests/common/git.rs"]
mod git;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;
use ferry::api::{Environment, GitRepository, Promotion, PromotionPhase, RevisionPhase};
use ferry_testenv::{ControlPlane, Options};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{create, ms, percentile, request_counts, rss_kib};

const NS: &str = "bench";
const REPO: &str = "config";
/// The extra pipeline whose production Environment requires approval.
const GATED: &str = "gated";
const APPROVAL_ROUNDS: u32 = 5;
/// How often the bench lists Environments or Promotions while waiting for many of them.
const POLL: Duration = Duration::from_millis(200);
/// How often it reads the one Promotion whose approval it times.
const FAST_POLL: Duration = Duration::from_millis(10);
/// Quiet time the background request rate is measured over.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Like `support::control_plane`, but running workloads: Deployments only become healthy (and so verified)
/// when controller-manager, scheduler and kwok run.
async fn control_plane_with_workloads() -> anyhow::Result<(ControlPlane, kube::Client)> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cp = ControlPlane::start(Options {
        bin_dir: ferry_testenv::bin_dir_from_env_or_build(&root)?,
        workloads: true,
        dir: None,
    })
    .await?;
    let client = cp.client().await?;
    ferry_testenv::install_crds(&client).await?;
    Ok((cp, client))
}

/// One ConfigMap and one Deployment; `round` changes both the data and the pod template (so a new revision
/// rolls the Deployment out, and verification waits for the new pod).
fn app(round: u32) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app}}\ndata: {{round: \"{round}\"}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  selector:\n    \
         matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n      annotations: \
         {{bench-round: \"{round}\"}}\n    spec:\n      containers:\n      - {{name: app, image: example.com/app:1}}\n"
    )
}

fn write_pipeline(repo: &git::GitRepo, id: &str, round: u32) {
    for stage in ["staging", "production"] {
        repo.write(&format!("pipelines/{id}/{stage}/app.yaml"), &app(round));
    }
}

fn staging(id: &str) -> String {
    format!("staging-{id}")
}

fn production(id: &str) -> String {
    format!("production-{id}")
}

async fn create_pipeline(envs: &Api<Environment>, id: &str, require_approval: bool) {
    create(
        envs,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment", "metadata": {"name": staging(id)},
               "spec": {"sourceRef": {"name": REPO}, "path": format!("pipelines/{id}/staging"), "interval": "1h",
                        "targetNamespace": format!("stg-{id}")}}),
    )
    .await;
    create(
        envs,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment", "metadata": {"name": production(id)},
               "spec": {"sourceRef": {"name": REPO}, "path": format!("pipelines/{id}/production"), "interval": "1h",
                        "targetNamespace": format!("prd-{id}"),
                        "promotion": {"from": staging(id), "requireApproval": require_approval}}}),
    )
    .await;
}

fn short(revision: &str) -> &str {
    let commit = revision.rsplit(':').next().unwrap_or(revision);
    &commit[..commit.len().min(10)]
}

/// `Some(finishedAt in Unix seconds)` once the Environment applied `revision` and its newest record of it is
/// Verified.
fn verified(env: &Environment, revision: &str) -> Option<Option<i64>> {
    let status = env.status.as_ref()?;
    let newest = status.history.first()?;
    (status.last_applied_revision.as_deref() == Some(revision)
        && newest.revision == revision
        && newest.phase == RevisionPhase::Verified)
        .then(|| newest.finished_at.as_ref().map(|t| t.0.as_second()))
}

/// One line on where an Environment stands, for deadline messages.
fn describe(env: &Environment) -> String {
    let name = env.metadata.name.clone().unwrap_or_default();
    let Some(status) = env.status.as_ref() else {
        return format!("{name}: no status yet");
    };
    let newest = status
        .history
        .first()
        .map(|r| {
            format!(
                "{} {:?} {}",
                short(&r.revision),
                r.phase,
                r.message.as_deref().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "none".into());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| format!("Ready={} {}: {}", c.status, c.reason, c.message))
        .unwrap_or_default();
    let promotion = status
        .promotion
        .as_ref()
        .map(|p| format!("; promotion {} {}", p.name, p.phase))
        .unwrap_or_default();
    format!(
        "{name}: applied {}; newest record {newest}; {ready}{promotion}",
        status.last_applied_revision.as_deref().map(short).unwrap_or("-")
    )
}

/// When the bench saw a pipeline's staging and production verified (elapsed since the start it was given),
/// and the records' `finishedAt` (Unix seconds).
#[derive(Clone, Copy, Default)]
struct Seen {
    staging: Option<(Duration, Option<i64>)>,
    production: Option<(Duration, Option<i64>)>,
}

/// Total API requests served so far, by "VERB resource[/subresource]" (dry runs marked), from the apiserver's
/// own metrics: the breakdown behind `support::request_counts`.
async fn request_counts_by_resource(client: &kube::Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let labels = labels
            .trim_start_matches("apiserver_request_total{")
            .trim_end_matches('}');
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let (verb, resource, sub) = (label("verb"), label("resource"), label("subresource"));
        let mut key = match (resource.is_empty(), sub.is_empty()) {
            (true, _) => format!("{verb} (non-resource)"),
            (false, true) => format!("{verb} {resource}"),
            (false, false) => format!("{verb} {resource}/{sub}"),
        };
        if labels.contains("dry_run=\"All\"") {
            key.push_str(" (dry run)");
        }
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

/// `after - before - own`, per key, keeping what is at least `min` once divided by `per`.
fn deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    own: &BTreeMap<String, f64>,
    per: f64,
    min: f64,
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .map(|(k, total)| {
            let d = total - before.get(k).copied().unwrap_or(0.0) - own.get(k).copied().unwrap_or(0.0);
            (k.clone(), d / per)
        })
        .filter(|(_, d)| *d >= min)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn join(list: &[(String, f64)]) -> String {
    list.iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Bench {
    client: kube::Client,
    envs: Api<Environment>,
    promotions: Api<Promotion>,
    repos: Api<GitRepository>,
    ferry: Child,
    /// Requests the bench itself made, by verb and by "VERB resource", to take out of the apiserver's counts.
    own_by_verb: BTreeMap<String, f64>,
    own_by_resource: BTreeMap<String, f64>,
}

impl Bench {
    fn count(&mut self, verb: &str, resource: &str) {
        *self.own_by_verb.entry(verb.to_string()).or_default() += 1.0;
        *self.own_by_resource.entry(format!("{verb} {resource}")).or_default() += 1.0;
    }

    fn check_ferry(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.ferry.try_wait()? {
            bail!("`ferry run` exited ({status}); its log went to stderr");
        }
        Ok(())
    }

    /// "Reconcile now" on the GitRepository, as a push webhook would.
    async fn trigger(&mut self, value: &str) -> anyhow::Result<()> {
        let request = json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": value}}});
        self.count("PATCH", "gitrepositories");
        self.repos
            .patch(REPO, &PatchParams::default(), &Patch::Merge(&request))
            .await?;
        Ok(())
    }

    async fn list_envs(&mut self) -> anyhow::Result<BTreeMap<String, Environment>> {
        self.count("LIST", "environments");
        Ok(self
            .envs
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|e| (e.metadata.name.clone().unwrap_or_default(), e))
            .collect())
    }

    /// Polls until every pipeline's staging and production verified `revision`; times are since `start`.
    async fn wait_verified(
        &mut self,
        ids: &[String],
        revision: &str,
        start: Instant,
        limit: Duration,
        what: &str,
    ) -> anyhow::Result<Vec<Seen>> {
        let mut seen = vec![Seen::default(); ids.len()];
        loop {
            self.check_ferry()?;
            let envs = self.list_envs().await?;
            let now = start.elapsed();
            for (id, s) in ids.iter().zip(seen.iter_mut()) {
                if s.staging.is_none() {
                    s.staging = envs
                        .get(&staging(id))
                        .and_then(|e| verified(e, revision))
                        .map(|f| (now, f));
                }
                if s.production.is_none() {
                    s.production = envs
                        .get(&production(id))
                        .and_then(|e| verified(e, revision))
                        .map(|f| (now, f));
                }
            }
            if seen.iter().all(|s| s.staging.is_some() && s.production.is_some()) {
                return Ok(seen);
            }
            if start.elapsed() > limit {
                let stuck: Vec<String> = ids
                    .iter()
                    .zip(&seen)
                    .flat_map(|(id, s)| {
                        [
                            (s.staging.is_none(), staging(id)),
                            (s.production.is_none(), production(id)),
                        ]
                    })
                    .filter(|(missing, _)| *missing)
                    .map(|(_, name)| envs.get(&name).map(describe).unwrap_or(format!("{name}: missing")))
                    .collect();
                bail!(
                    "{what}: {} of {} Environments had not verified {} after {limit:?}; the first of them:\n  {}",
                    stuck.len(),
                    ids.len() * 2,
                    short(revision),
                    stuck.iter().take(8).cloned().collect::<Vec<_>>().join("\n  ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the Promotion of `revision` into each pipeline's production is Succeeded (so its status
    /// writes are done, not only the Environment's).
    async fn wait_promotions_succeeded(
        &mut self,
        ids: &[String],
        revision: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            self.check_ferry()?;
            self.count("LIST", "promotions");
            let promotions = self.promotions.list(&Default::default()).await?.items;
            let missing: Vec<String> = ids
                .iter()
                .map(|id| production(id))
                .filter(|env| {
                    !promotions.iter().any(|p| {
                        &p.spec.environment == env
                            && p.spec.revision == revision
                            && p.phase() == PromotionPhase::Succeeded
                    })
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "{} Promotions of {} not Succeeded after {limit:?}, e.g. into {}",
                    missing.len(),
                    short(revision),
                    missing.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The Promotion of `revision` into `env` once it is WaitingApproval.
    async fn wait_waiting_approval(&mut self, env: &str, revision: &str, limit: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            self.check_ferry()?;
            self.count("LIST", "promotions");
            let promotions = self.promotions.list(&Default::default()).await?.items;
            let found = promotions
                .iter()
                .find(|p| p.spec.environment == env && p.spec.revision == revision && !p.spec.rollback);
            if let Some(p) = found {
                match p.phase() {
                    PromotionPhase::WaitingApproval => return Ok(p.metadata.name.clone().unwrap_or_default()),
                    PromotionPhase::Pending => {}
                    other => bail!(
                        "Promotion {} of {} went to {other} without approval",
                        p.metadata.name.as_deref().unwrap_or_default(),
                        short(revision)
                    ),
                }
            }
            if start.elapsed() > limit {
                let env_state = self
                    .list_envs()
                    .await?
                    .get(env)
                    .map(describe)
                    .unwrap_or(format!("{env}: missing"));
                bail!(
                    "no Promotion of {} into {env} WaitingApproval after {limit:?} (found: {:?}); {env_state}",
                    short(revision),
                    found.map(|p| p.phase())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Approves `name` and times it until Succeeded; returns (approval → phase left WaitingApproval,
    /// approval → Succeeded), both as seen by polling.
    async fn approve_and_time(&mut self, name: &str, limit: Duration) -> anyhow::Result<(Duration, Duration)> {
        let approval = json!({"spec": {"approval": {"decision": "Approved", "by": "bench", "message": "benchmark"}}});
        let start = Instant::now();
        self.count("PATCH", "promotions");
        self.promotions
            .patch(name, &PatchParams::default(), &Patch::Merge(&approval))
            .await?;
        let mut left_waiting = None;
        loop {
            self.count("GET", "promotions");
            let phase = self.promotions.get(name).await?.phase();
            let now = start.elapsed();
            if phase != PromotionPhase::WaitingApproval && left_waiting.is_none() {
                left_waiting = Some(now);
            }
            match phase {
                PromotionPhase::Succeeded => return Ok((left_waiting.unwrap_or(now), now)),
                PromotionPhase::Failed | PromotionPhase::Aborted | PromotionPhase::Superseded => {
                    bail!("approved Promotion {name} ended {phase}")
                }
                _ => {}
            }
            if now > limit {
                self.check_ferry()?;
                bail!("approved Promotion {name} still {phase} after {limit:?}");
            }
            tokio::time::sleep(FAST_POLL).await;
        }
    }
}

/// CPU seconds (user + system) used so far by this process and each process it started (control plane,
/// `ferry run`, git daemon), by command name.
fn cpu_seconds() -> BTreeMap<String, f64> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let me = std::process::id().to_string();
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ... utime stime: fields 14 and 15, counting from pid as 1.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let pid = stat[..open].trim();
        if rest.len() < 13 || (pid != me && rest[1] != me) {
            continue;
        }
        let used: f64 = rest[11].parse::<f64>().unwrap_or(0.0) + rest[12].parse::<f64>().unwrap_or(0.0);
        let name = if pid == me {
            "bench".to_string()
        } else {
            comm.to_string()
        };
        *out.entry(name).or_default() += used / ticks;
    }
    out
}

/// "name seconds" for each process that used at least 0.05 s between `before` and `after`, most first.
fn cpu_between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    let mut used: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v >= 0.05)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used.iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// p50 and p95 of per-pipeline durations.
fn p50_p95(mut values: Vec<Duration>, format: fn(Duration) -> String) -> String {
    values.sort();
    format!(
        "p50 {}, p95 {}",
        format(percentile(&values, 0.5)),
        format(percentile(&values, 0.95))
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("FERRY_BENCH_PIPELINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    anyhow::ensure!(n > 0, "FERRY_BENCH_PIPELINES must be at least 1");
    // Generous: these are far above anything seen; they only turn a hang into a clear failure.
    let limit = Duration::from_secs(600 + 10 * n as u64);
    let step_limit = Duration::from_secs(300);
    let ids: Vec<String> = (0..n).map(|i| format!("{i:03}")).collect();

    let (cp, client) = control_plane_with_workloads().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": NS}})).await;
    for id in ids.iter().map(String::as_str).chain([GATED]) {
        create(&namespaces, json!({"metadata": {"name": format!("stg-{id}")}})).await;
        create(&namespaces, json!({"metadata": {"name": format!("prd-{id}")}})).await;
    }
    let daemon = git::GitDaemon::start()?;
    let repo = daemon.create_repo("config")?;
    for id in ids.iter().map(String::as_str).chain([GATED]) {
        write_pipeline(&repo, id, 0);
    }
    let first = format!("main@sha1:{}", repo.commit_and_push("round 0"));

    let repos: Api<GitRepository> = Api::namespaced(client.clone(), NS);
    let envs: Api<Environment> = Api::namespaced(client.clone(), NS);
    create(
        &repos,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitRepository", "metadata": {"name": REPO},
               "spec": {"url": repo.url, "interval": "1h"}}),
    )
    .await;
    for id in &ids {
        create_pipeline(&envs, id, false).await;
    }

    // 1. Cold start: everything exists, the controller starts now.
    let storage = tempfile::tempdir()?;
    let cpu_before_cold = cpu_seconds();
    let start = Instant::now();
    let (ferry, _) = support::start_ferry(&cp, None, storage.path())?;
    let pid = ferry.id();
    let mut bench = Bench {
        client: client.clone(),
        envs,
        promotions: Api::namespaced(client.clone(), NS),
        repos,
        ferry,
        own_by_verb: BTreeMap::new(),
        own_by_resource: BTreeMap::new(),
    };
    let cold = bench.wait_verified(&ids, &first, start, limit, "cold start").await?;
    let cold_staging = cold
        .iter()
        .filter_map(|s| s.staging.map(|(t, _)| t))
        .max()
        .unwrap_or_default();
    let cold_production = cold
        .iter()
        .filter_map(|s| s.production.map(|(t, _)| t))
        .max()
        .unwrap_or_default();
    bench.wait_promotions_succeeded(&ids, &first, limit).await?;
    let (rss_after_cold, _) = rss_kib(pid);
    let cold_window = start.elapsed();
    let cpu_cold = cpu_between(&cpu_before_cold, &cpu_seconds());

    // The background: what the apiserver serves with nothing to promote (its own controllers, kwok, Ferry idle).
    let idle_before = request_counts(&bench.client).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_after = request_counts(&bench.client).await?;
    let idle_total: f64 = deltas(
        &idle_before,
        &idle_after,
        &BTreeMap::new(),
        IDLE_WINDOW.as_secs_f64(),
        0.0,
    )
    .iter()
    .map(|(_, v)| v)
    .sum();

    // 2. One commit touching every pipeline, announced by "reconcile now".
    for id in &ids {
        write_pipeline(&repo, id, 1);
    }
    let second = format!("main@sha1:{}", repo.commit_and_push("round 1"));
    let own_verb_before = bench.own_by_verb.clone();
    let own_resource_before = bench.own_by_resource.clone();
    let before = request_counts(&bench.client).await?;
    let before_by_resource = request_counts_by_resource(&bench.client).await?;
    let cpu_before_commit = cpu_seconds();
    let start = Instant::now();
    bench.trigger("round-1").await?;
    let commit = bench.wait_verified(&ids, &second, start, limit, "one commit").await?;
    bench.wait_promotions_succeeded(&ids, &second, limit).await?;
    let after = request_counts(&bench.client).await?;
    let after_by_resource = request_counts_by_resource(&bench.client).await?;
    let window = start.elapsed();
    let cpu_commit = cpu_between(&cpu_before_commit, &cpu_seconds());
    let own = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        now.iter()
            .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0.0)))
            .collect()
    };
    // The two /metrics reads after `before` are in `after` too: count them as the bench's.
    let mut own_verbs = own(&bench.own_by_verb, &own_verb_before);
    *own_verbs.entry("GET".into()).or_default() += 2.0;
    let mut own_resources = own(&bench.own_by_resource, &own_resource_before);
    *own_resources.entry("GET (non-resource)".into()).or_default() += 2.0;
    let per_promotion = deltas(&before, &after, &own_verbs, n as f64, 0.05);
    let per_promotion_total: f64 = per_promotion.iter().map(|(_, v)| v).sum();
    let by_resource = deltas(&before_by_resource, &after_by_resource, &own_resources, n as f64, 0.5);
    let background_share = idle_total * window.as_secs_f64() / n as f64;

    let all_staging = commit
        .iter()
        .filter_map(|s| s.staging.map(|(t, _)| t))
        .max()
        .unwrap_or_default();
    let all_production = commit
        .iter()
        .filter_map(|s| s.production.map(|(t, _)| t))
        .max()
        .unwrap_or_default();
    let by_records: Vec<Duration> = commit
        .iter()
        .filter_map(|s| match (s.staging?.1, s.production?.1) {
            (Some(a), Some(b)) => Some(Duration::from_secs(b.saturating_sub(a).max(0) as u64)),
            _ => None,
        })
        .collect();
    anyhow::ensure!(
        by_records.len() == n,
        "only {} of {n} pipelines have finishedAt on both records",
        by_records.len()
    );
    // Where that time goes, from the Promotions' creation and transition times (1 s resolution as well).
    bench.count("LIST", "promotions");
    let promotions = bench.promotions.list(&Default::default()).await?.items;
    let mut timeline: [Vec<Duration>; 4] = Default::default();
    for (id, s) in ids.iter().zip(&commit) {
        let Some(base) = s.staging.and_then(|(_, f)| f) else {
            continue;
        };
        let Some(p) = promotions
            .iter()
            .find(|p| p.spec.environment == production(id) && p.spec.revision == second)
        else {
            continue;
        };
        let since = |t: i64| Duration::from_secs(t.saturating_sub(base).max(0) as u64);
        if let Some(created) = &p.metadata.creation_timestamp {
            timeline[0].push(since(created.0.as_second()));
        }
        let transitions = p.status.as_ref().map(|s| s.transitions.as_slice()).unwrap_or_default();
        for (slot, phase) in [
            (1, PromotionPhase::Applying),
            (2, PromotionPhase::Verifying),
            (3, PromotionPhase::Succeeded),
        ] {
            if let Some(t) = transitions.iter().find(|t| t.phase == phase) {
                timeline[slot].push(since(t.time.0.as_second()));
            }
        }
    }
    let timeline: Vec<String> = timeline
        .into_iter()
        .zip(["Promotion created", "Applying", "Verifying", "Succeeded"])
        .map(|(mut values, what)| {
            values.sort();
            match values.is_empty() {
                true => format!("{what} -"),
                false => format!(
                    "{what} {} / {} s",
                    percentile(&values, 0.5).as_secs(),
                    percentile(&values, 0.95).as_secs()
                ),
            }
        })
        .collect();
    let by_polling: Vec<Duration> = commit
        .iter()
        .filter_map(|s| Some(s.production?.0.saturating_sub(s.staging?.0)))
        .collect();

    // 3. Approval: one more pipeline whose production requires it; each round pushes a commit (changing only
    // that pipeline's files), waits until its Promotion waits for approval and every other pipeline has settled
    // on the commit too, then approves and times it to Succeeded.
    create_pipeline(&bench.envs, GATED, true).await;
    let mut approvals = Vec::new();
    let mut reactions = Vec::new();
    let mut settle = Vec::new();
    for round in 1..=APPROVAL_ROUNDS {
        write_pipeline(&repo, GATED, 100 + round);
        let revision = format!("main@sha1:{}", repo.commit_and_push(&format!("approval round {round}")));
        let start = Instant::now();
        bench.trigger(&format!("approval-{round}")).await?;
        let name = bench
            .wait_waiting_approval(&production(GATED), &revision, step_limit)
            .await?;
        bench
            .wait_verified(&ids, &revision, start, limit, &format!("approval round {round}"))
            .await?;
        bench.wait_promotions_succeeded(&ids, &revision, limit).await?;
        settle.push(start.elapsed());
        let (reaction, done) = bench.approve_and_time(&name, step_limit).await?;
        reactions.push(reaction);
        approvals.push(done);
        let gated = bench.list_envs().await?;
        let env = gated.get(&production(GATED));
        anyhow::ensure!(
            env.and_then(|e| verified(e, &revision)).is_some(),
            "Promotion {name} Succeeded but {} is not verified at {}: {}",
            production(GATED),
            short(&revision),
            env.map(describe).unwrap_or_default()
        );
    }
    approvals.sort();
    reactions.sort();
    settle.sort();

    // 4. The controller at the end.
    let (rss, hwm) = rss_kib(pid);

    println!(
        "\nFerry promotion benchmark: {n} pipelines (staging → production, 1 ConfigMap + 1 Deployment each, \
         health-only verification), one GitRepository, local control plane with workloads, {} cores",
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0)
    );
    println!("| measure | result |");
    println!("|---|---|");
    println!("| cold start: all {n} staging verified | {} |", secs(cold_staging));
    println!(
        "| cold start: all {n} production verified their first promoted revision | {} |",
        secs(cold_production)
    );
    println!(
        "| one commit touching every pipeline: all {n} staging verified | {} |",
        secs(all_staging)
    );
    println!("| … all {n} production verified | {} |", secs(all_production));
    println!(
        "| … staging verified → production verified, per pipeline, from the records' finishedAt (1 s resolution) | {} |",
        p50_p95(by_records, |d| format!("{} s", d.as_secs()))
    );
    println!(
        "| … the same as seen by polling every {} ms | {} |",
        POLL.as_millis(),
        p50_p95(by_polling, ms)
    );
    println!(
        "| … after staging verified, per pipeline, p50 / p95 (1 s resolution) | {} |",
        timeline.join(" → ")
    );
    println!(
        "| approval → Promotion Succeeded, `requireApproval` pipeline, median of {APPROVAL_ROUNDS} (polling every {} ms) | {} |",
        FAST_POLL.as_millis(),
        ms(percentile(&approvals, 0.5))
    );
    println!(
        "| … approval → Promotion left WaitingApproval (median) | {} |",
        ms(percentile(&reactions, 0.5))
    );
    println!(
        "| … each round: push → all {n} other pipelines promoted and the gated one WaitingApproval (median) | {} |",
        secs(percentile(&settle, 0.5))
    );
    println!(
        "| CPU seconds used during the cold start ({} until all Promotions Succeeded, {} cores), by process | {cpu_cold} |",
        secs(cold_window),
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0)
    );
    println!(
        "| CPU seconds used during the one commit ({} until all Promotions Succeeded), by process | {cpu_commit} |",
        secs(window)
    );
    println!(
        "| controller RSS after cold start / at the end / peak | {} / {} / {} MiB |",
        rss_after_cold / 1024,
        rss / 1024,
        hwm / 1024
    );
    println!(
        "| API requests per promotion (the one commit's requests ÷ {n}: a staging sync and a promotion each; all clients but the bench: Ferry, controller-manager, scheduler, kwok), by verb | {per_promotion_total:.0}: {} |",
        join(&per_promotion)
    );
    println!(
        "| … of which the idle background rate ({idle_total:.1} requests/s) over the same {} | {background_share:.1} |",
        secs(window)
    );
    println!("| … by resource (≥ 0.5 per promotion) | {} |", join(&by_resource));
    drop(bench);
    Ok(())
}
