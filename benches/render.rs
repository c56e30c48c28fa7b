//! What the render sandbox costs: the same renders in this process and in a confined `ferry render-worker`
//! (release build), for plain YAML, a kustomize overlay and a helm chart. Prints the time per render both ways,
//! the worker's start cost (the difference) and the peak RSS of a render's processes (the largest child this
//! process reaped, descendants included). `cargo bench --bench render` (FERRY_BENCH_RENDERS=N, default 30).
//! Asserts nothing about the figures.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry::render::{RenderSettings, Sandbox, WorkerSettings, render_path};

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

fn tree(root: &Path) {
    for i in 0..10 {
        write(
            root,
            &format!("plain/cm-{i}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\ndata: {{k: v{i}}}\n"),
        );
    }
    write(
        root,
        "overlay/kustomization.yaml",
        "resources: [../plain-k]\nnamePrefix: prod-\n",
    );
    let resources: Vec<String> = (0..10).map(|i| format!("cm-{i}.yaml")).collect();
    write(
        root,
        "plain-k/kustomization.yaml",
        &format!("resources: [{}]\n", resources.join(", ")),
    );
    for i in 0..10 {
        write(
            root,
            &format!("plain-k/cm-{i}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n"),
        );
    }
    write(root, "chart/Chart.yaml", "apiVersion: v2\nname: app\nversion: 1.0.0\n");
    write(root, "chart/values.yaml", "replicas: 2\n");
    write(
        root,
        "chart/templates/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ .Release.Name }}}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: a, image: nginx}]}\n",
    );
}

fn max_child_rss_kib() -> i64 {
    // SAFETY: a zeroed rusage for the kernel to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss
}

async fn time(root: &Path, path: &str, settings: &RenderSettings, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        render_path(root, path, settings).await.expect("renders");
    }
    start.elapsed() / n as u32
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("FERRY_BENCH_RENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let bin = ferry_testenv::bin_dir_from_env_or_build(Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let dir = tempfile::tempdir()?;
    tree(dir.path());
    let in_process = RenderSettings {
        kustomize: bin.join("kustomize"),
        helm: bin.join("helm"),
        ..RenderSettings::default()
    };
    let worker = WorkerSettings {
        program: env!("CARGO_BIN_EXE_ferry").into(),
        ..WorkerSettings::this_binary()?
    };
    let walls = ferry::render::sandbox::probe(&worker).await?;
    println!("render sandbox: {} ({n} renders each)", walls.summary());
    let sandboxed = RenderSettings {
        sandbox: Sandbox::Worker(worker),
        ..in_process.clone()
    };
    println!(
        "{:<28} {:>12} {:>12} {:>14}",
        "render", "in process", "sandboxed", "worker cost"
    );
    for (what, path) in [
        ("plain YAML, 10 objects", "plain"),
        ("kustomize overlay, 10", "overlay"),
        ("helm chart, 1 Deployment", "chart"),
    ] {
        let a = time(dir.path(), path, &in_process, n).await;
        let b = time(dir.path(), path, &sandboxed, n).await;
        println!(
            "{what:<28} {:>10.1}ms {:>10.1}ms {:>12.1}ms",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            (b.as_secs_f64() - a.as_secs_f64()) * 1e3
        );
    }
    println!(
        "peak RSS of a render's processes (worker, kustomize or helm): {} MiB",
        max_child_rss_kib() / 1024
    );
    Ok(())
}
