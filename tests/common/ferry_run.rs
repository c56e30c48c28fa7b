//! `ferry run` as a subprocess: the built binary on free loopback ports, for tests of the process itself
//! (kills, leader election, the web view). One place spawns it, so every such test runs it the same way.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde::Deserialize as _;

use super::TestEnv;

/// One `ferry run` process and its ports; killed (SIGKILL) and reaped when dropped.
pub struct FerryRun {
    pub child: Child,
    pub metrics: u16,
    pub probes: u16,
    pub webhook: u16,
}

impl FerryRun {
    /// SIGKILL, as a crash or an OOM kill would: no shutdown, no lease hand-over.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FerryRun {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The args `manifests/deployment.yaml` runs Ferry with (starting with `run`): the test runs what the install
/// runs.
pub fn deployment_args() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/deployment.yaml");
    let text = std::fs::read_to_string(path).expect("deployment.yaml");
    let deployment = serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| serde_yaml_ng::Value::deserialize(d).ok())
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("container args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect::<Vec<_>>();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    args
}

/// Starts `ferry <args>` (`args` begins with `run`) with `KUBECONFIG=kubeconfig`, its metrics, probe and
/// webhook servers on free loopback ports, `storage` as `--storage-dir` and the test's kustomize; `adjust`
/// adds what one test needs (more flags, a log file as stdout). Logs at warn (or `FERRY_TEST_LOG`, which also
/// shows them); stdout is discarded unless `adjust` sets it.
pub fn start_ferry_run(
    t: &TestEnv,
    kubeconfig: &Path,
    storage: &Path,
    args: &[String],
    adjust: impl FnOnce(&mut Command),
) -> FerryRun {
    let port = || ferry_testenv::free_port().expect("port");
    let (metrics, probes, webhook) = (port(), port(), port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--probe-addr", &format!("127.0.0.1:{probes}")])
        .args(["--webhook-addr", &format!("127.0.0.1:{webhook}")])
        .arg("--storage-dir")
        .arg(storage)
        .arg("--kustomize")
        .arg(t.bin_dir.join("kustomize"))
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    if std::env::var("FERRY_TEST_LOG").is_err() {
        cmd.stdout(Stdio::null());
    }
    adjust(&mut cmd);
    FerryRun {
        child: ferry_testenv::spawn_guarded(cmd).expect("starting ferry run"),
        metrics,
        probes,
        webhook,
    }
}
