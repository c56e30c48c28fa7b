//! What the benchmarks share: figures, object creation, and running `ferry run` as its own process.

use std::process::{Child, Command};
use std::time::Duration;

use ferry_testenv::{ControlPlane, free_port, spawn_guarded};
use kube::Api;
use kube::api::PostParams;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj).await.expect("create");
}

/// A local control plane with Ferry's CRDs installed, and an admin client for it.
pub async fn control_plane() -> anyhow::Result<(ControlPlane, kube::Client)> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cp = ControlPlane::start(ferry_testenv::Options {
        bin_dir: ferry_testenv::bin_dir_from_env_or_build(&root)?,
        workloads: false,
        dir: None,
    })
    .await?;
    let client = cp.client().await?;
    ferry_testenv::install_crds(&client).await?;
    Ok((cp, client))
}

/// Starts `ferry run` (the release build cargo bench made) against `cp`, watching `namespace` (all if `None`).
/// Returns the process and its webhook port.
pub fn start_ferry(
    cp: &ControlPlane,
    namespace: Option<&str>,
    storage: &std::path::Path,
) -> anyhow::Result<(Child, u16)> {
    let hook_port = free_port()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("run")
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("FERRY_STORAGE_DIR", storage)
        .env("FERRY_WEBHOOK_ADDR", format!("127.0.0.1:{hook_port}"))
        .env("RUST_LOG", "warn")
        .env("FERRY_LEADER_ELECT", "false")
        .env("FERRY_METRICS_ADDR", format!("127.0.0.1:{}", free_port()?))
        .env("FERRY_PROBE_ADDR", format!("127.0.0.1:{}", free_port()?))
        .stdout(std::process::Stdio::null());
    if let Some(ns) = namespace {
        cmd.env("FERRY_NAMESPACE", ns);
    }
    Ok((spawn_guarded(cmd)?, hook_port))
}

/// Total API requests served so far, by verb, from the apiserver's own metrics.
pub async fn request_counts(client: &kube::Client) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let verb = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("verb=\"").or_else(|| kv.strip_prefix("{verb=\"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default();
        let dry = labels.contains("dry_run=\"All\"");
        let key = if dry { format!("{verb} (dry run)") } else { verb };
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}
