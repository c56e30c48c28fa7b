//! `ferry-dev-cluster`: a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) kept
//! running until interrupted, with a kubeconfig at `<dir>/kubeconfig`. For the demo and your own experiments
//! (`cargo run -p ferry-testenv --bin ferry-dev-cluster`); not part of the shipped `ferry`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Start a local control plane and keep it running until interrupted")]
struct Args {
    /// Directory for data, logs and the kubeconfig.
    #[arg(long, default_value = ".ferry-dev")]
    dir: PathBuf,
    /// Directory of the control-plane binaries (default: build or reuse them with hack/controlplane-build.sh).
    #[arg(long, env = "FERRY_CONTROLPLANE_BIN")]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { dir, bin_dir } = Args::parse();
    let bin_dir = match bin_dir {
        Some(b) => b,
        None => ferry_testenv::bin_dir_from_env_or_build(&std::env::current_dir()?)?,
    };
    let dir = std::path::absolute(dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
    }
    let mut cp = ferry_testenv::ControlPlane::start(ferry_testenv::Options {
        bin_dir,
        workloads: true,
        dir: Some(dir),
    })
    .await?;
    println!("control plane ready at {}", cp.server);
    println!("export KUBECONFIG={}", cp.kubeconfig.display());
    shutdown_signal().await;
    cp.stop();
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
