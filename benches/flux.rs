//! Flux beside Ferry: the workload of `benches/engine.rs`, run by Flux's source-controller and
//! kustomize-controller (built from their pinned Go modules by `hack/bench-flux.sh`) on the same local control
//! plane binaries. One GitRepository served over smart HTTP (`git http-backend`; Flux does not speak `git://`),
//! N Kustomizations (default 1000) × 10 ConfigMaps, each with its own `targetNamespace`, all created before the
//! controllers start. Prints: time until all Ready from a cold start, time for one commit touching all of them,
//! RSS of both controllers, and API requests (and writes) per 60 s interval of no-op reconciles, counted by the
//! apiserver's own metrics. `cargo bench --bench flux` (FERRY_BENCH_ENVS=N to change N; extra kustomize-controller
//! flags in FERRY_BENCH_FLUX_KC_ARGS, e.g. `--concurrent=16`). Asserts nothing about the figures.

#[allow(dead_code)]
#[path = "../tests/common/git.rs"]
mod git;
#[allow(dead_code)]
#[path = "../tests/common/git_http.rs"]
mod git_http;
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ferry_testenv::{ControlPlane, free_port, spawn_guarded};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;
use support::{create, request_counts, rss_kib};

const NS: &str = "bench";

fn kustomization_resource() -> ApiResource {
    ApiResource {
        group: "kustomize.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "kustomize.toolkit.fluxcd.io/v1".into(),
        kind: "Kustomization".into(),
        plural: "kustomizations".into(),
    }
}

fn gitrepository_resource() -> ApiResource {
    ApiResource {
        group: "source.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "source.toolkit.fluxcd.io/v1".into(),
        kind: "GitRepository".into(),
        plural: "gitrepositories".into(),
    }
}

async fn create_dynamic(api: &Api<DynamicObject>, value: serde_json::Value) -> anyhow::Result<()> {
    let obj: DynamicObject = serde_json::from_value(value)?;
    api.create(&Default::default(), &obj).await?;
    Ok(())
}

/// Adds to `seen` every Kustomization that is Ready at `revision` now.
async fn mark_ready(
    kustomizations: &Api<DynamicObject>,
    revision: &str,
    seen: &mut std::collections::HashSet<String>,
) -> anyhow::Result<()> {
    for k in kustomizations.list(&Default::default()).await?.items {
        let status = &k.data["status"];
        let ready = status["lastAppliedRevision"] == revision
            && status["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if ready {
            seen.insert(k.metadata.name.unwrap_or_default());
        }
    }
    Ok(())
}

/// Until every Kustomization has been seen Ready at `revision`. Not "all Ready at once", as in engine.rs: Flux
/// sets Ready=Unknown while it reconciles, and when a 60 s interval is shorter than a pass over all
/// Kustomizations a few are always in progress (re-applying the revision they already reached), so all N are
/// rarely Ready in the same instant.
async fn wait_all(
    kustomizations: &Api<DynamicObject>,
    revision: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut seen = std::collections::HashSet::new();
    loop {
        mark_ready(kustomizations, revision, &mut seen).await?;
        if seen.len() == n {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {}/{n} Kustomizations seen Ready at {revision} after {limit:?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Mutating requests by the admin user (both Flux controllers here) that were not dry runs, from the audit log.
fn admin_writes(audit_log: &Path) -> usize {
    std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == "admin")
        .filter(|e| !e["requestURI"].as_str().unwrap_or_default().contains("dryRun=All"))
        .count()
}

/// The same writes as `admin_writes`, the `from`th to the `to`th, by verb and resource.
fn admin_writes_by_resource(audit_log: &Path, from: usize, to: usize) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    for e in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == "admin")
        .filter(|e| !e["requestURI"].as_str().unwrap_or_default().contains("dryRun=All"))
        .skip(from)
        .take(to.saturating_sub(from))
    {
        let r = &e["objectRef"];
        let mut resource = r["resource"].as_str().unwrap_or("?").to_string();
        if let Some(sub) = r["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        *out.entry(format!("{} {resource}", e["verb"].as_str().unwrap_or("?")))
            .or_default() += 1;
    }
    out
}

fn configmaps(round: u32) -> String {
    (0..10)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{round: \"{round}\", i: \"{i}\"}}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Runs `hack/bench-flux.sh` (builds once, then reuses the cache) and returns the directory with bin/ and crds/.
fn flux_dir() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("hack/bench-flux.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running hack/bench-flux.sh")?;
    if !out.status.success() {
        bail!("hack/bench-flux.sh failed");
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    anyhow::ensure!(
        dir.join("bin/source-controller").is_file(),
        "no Flux build in {}",
        dir.display()
    );
    Ok(dir)
}

fn kubectl(bin_dir: &Path, cp: &ControlPlane, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Metrics and health on free loopback ports, no leader election, every namespace, logs to a file.
fn flux_command(binary: &Path, cp: &ControlPlane, log: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(binary);
    cmd.env("KUBECONFIG", &cp.kubeconfig)
        .env("RUNTIME_NAMESPACE", NS)
        .arg("--enable-leader-election=false")
        .arg("--watch-all-namespaces=true")
        .arg("--log-level=info")
        .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()?))
        .arg(format!("--health-addr=127.0.0.1:{}", free_port()?))
        .stdout(std::fs::File::create(log)?)
        .stderr(std::process::Stdio::null());
    Ok(cmd)
}

fn start_flux(flux: &Path, cp: &ControlPlane, work: &Path) -> anyhow::Result<(Child, Child, u16)> {
    let storage = work.join("storage");
    std::fs::create_dir_all(&storage)?;
    let storage_addr = format!("127.0.0.1:{}", free_port()?);
    let mut sc = flux_command(
        &flux.join("bin/source-controller"),
        cp,
        &work.join("source-controller.log"),
    )?;
    sc.arg(format!("--storage-path={}", storage.display()))
        .arg(format!("--storage-addr={storage_addr}"))
        .arg(format!("--storage-adv-addr={storage_addr}"));
    let kc_metrics = free_port()?;
    let mut kc = flux_command(
        &flux.join("bin/kustomize-controller"),
        cp,
        &work.join("kustomize-controller.log"),
    )?;
    kc.arg(format!("--metrics-addr=127.0.0.1:{kc_metrics}"));
    if let Ok(extra) = std::env::var("FERRY_BENCH_FLUX_KC_ARGS") {
        kc.args(extra.split_whitespace());
    }
    Ok((spawn_guarded(sc)?, spawn_guarded(kc)?, kc_metrics))
}

/// Reconciles the kustomize-controller has finished so far (controller-runtime's own counter).
fn reconciles(metrics_port: u16) -> f64 {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) else {
        return f64::NAN;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("controller_runtime_reconcile_total{") && l.contains("controller=\"kustomization\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("FERRY_BENCH_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let flux = flux_dir()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = ferry_testenv::bin_dir_from_env_or_build(&root)?;
    let cp = ControlPlane::start(ferry_testenv::Options {
        bin_dir: bin_dir.clone(),
        workloads: false,
        dir: None,
    })
    .await?;
    let client = cp.client().await?;
    let crds = flux.join("crds");
    kubectl(
        &bin_dir,
        &cp,
        &["apply", "--server-side", "-f", &crds.to_string_lossy()],
    )?;
    kubectl(
        &bin_dir,
        &cp,
        &["wait", "--for=condition=Established", "crd", "--all", "--timeout=120s"],
    )?;

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": NS}})).await;
    for i in 0..n {
        create(&namespaces, json!({"metadata": {"name": format!("t-{i:04}")}})).await;
    }
    let daemon = git::GitDaemon::start()?;
    let repo = daemon.create_repo("apps")?;
    repo.write("apps/cms.yaml", &configmaps(0));
    let first = repo.commit_and_push("round 0");
    let http = git_http::GitHttpServer::start(daemon.base.path().to_path_buf(), git_http::HttpAuth::None, false).await;
    let url = format!("{}/{}", http.base_url, repo.name);

    let repos: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &gitrepository_resource());
    let kustomizations: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &kustomization_resource());
    create_dynamic(
        &repos,
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "apps"},
               "spec": {"url": url, "interval": "1h", "ref": {"branch": "main"}}}),
    )
    .await?;
    for i in 0..n {
        create_dynamic(
            &kustomizations,
            json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                   "metadata": {"name": format!("e-{i:04}")},
                   "spec": {"sourceRef": {"kind": "GitRepository", "name": "apps"}, "path": "./apps",
                            "interval": "60s", "prune": true, "targetNamespace": format!("t-{i:04}")}}),
        )
        .await?;
    }

    // Cold start: everything exists, the controllers start now.
    let work = tempfile::tempdir()?;
    let (mut sc, mut kc, kc_metrics) = start_flux(&flux, &cp, work.path())?;
    let (sc_pid, kc_pid) = (sc.id(), kc.id());
    let cold = wait_all(
        &kustomizations,
        &format!("main@sha1:{first}"),
        n,
        Duration::from_secs(1800),
    )
    .await;
    let cold = match cold {
        Ok(d) => d,
        Err(e) => {
            eprintln!("logs in {}", work.keep().display());
            return Err(e);
        }
    };
    let rss_after_cold = rss_kib(sc_pid).0 + rss_kib(kc_pid).0;

    // One commit touching every object of every Kustomization, announced by Flux's "reconcile now".
    repo.write("apps/cms.yaml", &configmaps(1));
    let second = repo.commit_and_push("round 1");
    let request = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "round-1"}}});
    let start = Instant::now();
    repos
        .patch("apps", &PatchParams::default(), &Patch::Merge(&request))
        .await?;
    wait_all(
        &kustomizations,
        &format!("main@sha1:{second}"),
        n,
        Duration::from_secs(1800),
    )
    .await?;
    let commit_all = start.elapsed();

    // No-op reconciles: every Kustomization is due once per 60 s interval; count what the apiserver served.
    tokio::time::sleep(Duration::from_secs(20)).await; // let the status writes of round 1 finish
    let before = request_counts(&client).await?;
    let audit_before = admin_writes(&cp.audit_log());
    let reconciles_before = reconciles(kc_metrics);
    let window = Duration::from_secs(120);
    tokio::time::sleep(window).await;
    let after = request_counts(&client).await?;
    let audit_after = admin_writes(&cp.audit_log());
    let reconciles_after = reconciles(kc_metrics);
    let cycles = window.as_secs_f64() / 60.0;
    let mut per_cycle = Vec::new();
    for (verb, total) in &after {
        let delta = (total - before.get(verb).copied().unwrap_or(0.0)) / cycles;
        if delta >= 0.5 {
            per_cycle.push(format!("{verb} {delta:.0}"));
        }
    }
    let writes = (audit_after - audit_before) as f64 / cycles;
    let writes_by = admin_writes_by_resource(&cp.audit_log(), audit_before, audit_after)
        .iter()
        .map(|(what, count)| format!("{what} {:.0}", *count as f64 / cycles))
        .collect::<Vec<_>>()
        .join(", ");
    let reconciled = (reconciles_after - reconciles_before) / cycles;
    let (sc_rss, sc_hwm) = rss_kib(sc_pid);
    let (kc_rss, kc_hwm) = rss_kib(kc_pid);

    println!(
        "\nFlux benchmark: {n} Kustomizations x 10 ConfigMaps, one GitRepository (smart HTTP), local control plane"
    );
    println!("| measure | result |");
    println!("|---|---|");
    println!("| all {n} Ready from a cold start | {:.1} s |", cold.as_secs_f64());
    println!(
        "| one commit touching all {} objects, until all Ready | {:.1} s |",
        n * 10,
        commit_all.as_secs_f64()
    );
    println!(
        "| controllers' RSS (source + kustomize) after cold start / at the end / peak | {} / {} / {} MiB |",
        rss_after_cold / 1024,
        (sc_rss + kc_rss) / 1024,
        (sc_hwm + kc_hwm) / 1024
    );
    println!(
        "| … at the end: source-controller / kustomize-controller (peak) | {} ({}) / {} ({}) MiB |",
        sc_rss / 1024,
        sc_hwm / 1024,
        kc_rss / 1024,
        kc_hwm / 1024
    );
    println!(
        "| API requests per 60 s no-op interval (all Kustomizations are due once; a few are the apiserver's own), by verb | {} |",
        per_cycle.join(", ")
    );
    println!("| writes by Flux per 60 s no-op interval (audit log, dry runs excluded) | {writes:.0} ({writes_by}) |");
    println!("| Kustomization reconciles per 60 s no-op interval (kustomize-controller's metrics) | {reconciled:.0} |");
    for child in [&mut kc, &mut sc] {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(())
}
