//! Outages of the API server Ferry runs against, and of a cluster it applies to, on real servers:
//!
//! - kube-apiserver killed and started again while Environments apply a commit;
//! - etcd paused (SIGSTOP) for 20 s while Environments apply a commit;
//! - a second cluster (a `kubeConfig` target) cut off behind a proxy that black-holes its traffic (connections
//!   accepted, nothing answered: the nasty case) while a commit is promoted into it, and while a revision
//!   verifies there.
//!
//! The first two start a control plane of their own (pausing it disturbs no other test) and run the real
//! `ferry run` binary against it (so "Ferry kept running" means the same process, pid and all); the `ferry run`
//! spawn helper is this file's own. The cut tests start their own second cluster and run the controller in
//! process (with a 3 s `remote_cluster_timeout`) on the binary's shared control plane. Throughout,
//! every status Ferry writes is watched and checked: Ready=True only ever for the revision applied, no revision
//! going backwards, no failure reason an outage cannot cause.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry::api::{Environment, Promotion, PromotionPhase};
use ferry_testenv::{ControlPlane, Options, bin_dir_from_env_or_build, free_port, install_crds, spawn_guarded};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Environments applying each commit in the control-plane tests, and ConfigMaps each.
const ENVS: usize = 12;
const KEPT: usize = 3;

// ---------------------------------------------------------------------------------------------------------
// A control plane of the test's own, with Ferry's CRDs, a namespace, a git repository and `ferry run`.
// ---------------------------------------------------------------------------------------------------------

struct Private {
    cp: ControlPlane,
    client: Client,
    namespace: String,
    repo: GitRepo,
    bin_dir: PathBuf,
    storage: tempfile::TempDir,
    _git: GitDaemon,
}

impl Private {
    async fn start(name: &str) -> Private {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin_dir = bin_dir_from_env_or_build(&root).expect("control-plane binaries");
        let cp = ControlPlane::start(Options {
            bin_dir: bin_dir.clone(),
            workloads: false,
            dir: None,
        })
        .await
        .expect("starting a control plane");
        let client = cp.client().await.expect("client");
        install_crds(&client).await.expect("CRDs");
        let namespace = name.to_string();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        let git = GitDaemon::start().expect("git daemon");
        let repo = git.create_repo(name).expect("repo");
        Private {
            cp,
            client,
            namespace,
            repo,
            bin_dir,
            storage: tempfile::tempdir().expect("tempdir"),
            _git: git,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The real `ferry run` against this control plane, its log (JSON lines) in `log`.
    fn start_ferry(&self, log: &Path) -> Ferry {
        let port = || free_port().expect("port").to_string();
        let probes = format!("127.0.0.1:{}", port());
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--leader-elect=false",
            "--namespace",
            &self.namespace,
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", port())])
        .args(["--probe-addr", &probes])
        .args(["--webhook-addr", &format!("127.0.0.1:{}", port())])
        .arg("--storage-dir")
        .arg(self.storage.path())
        .arg("--kustomize")
        .arg(self.bin_dir.join("kustomize"))
        .env("KUBECONFIG", &self.cp.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::fs::File::create(log).expect("log file"))
        .stderr(std::fs::File::options().append(true).open(log).expect("log file"));
        Ferry {
            child: spawn_guarded(cmd).expect("starting ferry run"),
            probes,
        }
    }

    /// Writes round `r` of every Environment's files: `KEPT` ConfigMaps whose data changes each round, and one
    /// whose name changes each round (so every round prunes).
    fn write_round(&self, r: usize) {
        for i in 0..ENVS {
            let mut text = String::new();
            for name in names(i, r) {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{round: \"{r}\"}}\n"
                ));
            }
            self.repo.write(&format!("envs/e{i}/cms.yaml"), &text);
        }
    }

    async fn create_environments(&self) {
        let repo = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "config"}, "spec": {"url": self.repo.url, "interval": "1s"}});
        self.api::<ferry::api::GitRepository>()
            .create(&PostParams::default(), &serde_json::from_value(repo).expect("repo"))
            .await
            .expect("GitRepository");
        for i in 0..ENVS {
            let env = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
                "metadata": {"name": format!("e{i}")},
                "spec": {"sourceRef": {"name": "config"}, "path": format!("envs/e{i}"), "interval": "10m", "prune": true}});
            self.api::<Environment>()
                .create(&PostParams::default(), &serde_json::from_value(env).expect("env"))
                .await
                .expect("Environment");
        }
    }

    /// Every Environment Ready at `commit` with exactly round `r`'s objects in its inventory, and the
    /// namespace holding exactly round `r`'s ConfigMaps: nothing of an earlier round, nothing missing or stale.
    async fn converged(&self, commit: &str, r: usize) -> Result<(), String> {
        let envs = self
            .api::<Environment>()
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        for e in &envs {
            let name = e.metadata.name.clone().unwrap_or_default();
            let status = e.status.clone().unwrap_or_default();
            let at = status.last_applied_revision.clone().unwrap_or_default();
            if !at.ends_with(commit) || env_ready(e).map(|(s, _, _)| s).as_deref() != Some("True") {
                return Err(format!("{name} at {at:?}, ready {:?}", env_ready(e)));
            }
            let i: usize = name.trim_start_matches('e').parse().map_err(|_| name.clone())?;
            let inventory: BTreeSet<String> = status.inventory.iter().map(|x| x.name.clone()).collect();
            if inventory != names(i, r).into_iter().collect() {
                return Err(format!("{name}: inventory {inventory:?}"));
            }
        }
        let have: BTreeMap<String, String> = config_map_rounds(&self.api::<ConfigMap>()).await?.into_iter().collect();
        let want: BTreeMap<String, String> = (0..ENVS)
            .flat_map(|i| names(i, r))
            .map(|n| (n, r.to_string()))
            .collect();
        if have != want {
            let extra: Vec<_> = have.iter().filter(|h| want.get(h.0) != Some(h.1)).take(5).collect();
            let missing: Vec<_> = want.iter().filter(|w| have.get(w.0) != Some(w.1)).take(5).collect();
            return Err(format!("objects differ: extra or stale {extra:?}, missing {missing:?}"));
        }
        Ok(())
    }

    async fn wait_converged(&self, commit: &str, r: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.converged(commit, r).await {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    let repo = self.api::<ferry::api::GitRepository>().get("config").await.ok();
                    let repo = repo.and_then(|r| r.status).map(|s| (s.artifact, s.conditions));
                    panic!("round {r} not converged within {within:?}: {why}; the GitRepository: {repo:?}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until some Environment has started on `commit` (its status says it is applying it); returns how
    /// many had not applied it yet at that moment.
    async fn wait_sync_started(&self, commit: &str) -> usize {
        eventually("a sync of the new commit started", || async {
            let envs = self.api::<Environment>().list(&Default::default()).await.ok()?;
            let status = |e: &Environment| e.status.clone().unwrap_or_default();
            let started = envs
                .iter()
                .any(|e| status(e).last_attempted_revision.is_some_and(|r| r.ends_with(commit)));
            let not_applied = envs
                .iter()
                .filter(|e| !status(e).last_applied_revision.is_some_and(|r| r.ends_with(commit)))
                .count();
            started.then_some(not_applied)
        })
        .await
    }

    /// ConfigMaps deleted in the namespace, per the audit log.
    fn deleted_config_maps(&self) -> Vec<String> {
        audited_writes(&self.cp.audit_log(), &self.namespace)
            .into_iter()
            .filter(|(verb, uri, dry)| verb == "delete" && !dry && uri.contains("/configmaps/"))
            .filter_map(|(_, uri, _)| {
                let path = uri.split('?').next().unwrap_or_default();
                path.rsplit('/').next().map(str::to_string)
            })
            .collect()
    }
}

/// The ConfigMaps of Environment `i` in round `r`.
fn names(i: usize, r: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..KEPT).map(|k| format!("c{i}-k{k}")).collect();
    names.push(format!("c{i}-r{r}"));
    names
}

/// Copies Ferry's log next to the test's output when the test fails (`$FERRY_TEST_LOG_DIR`, else the temp dir).
struct KeepLog(PathBuf);

impl Drop for KeepLog {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FERRY_TEST_LOG_DIR").is_some() {
            let dir = std::env::var("FERRY_TEST_LOG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| std::env::temp_dir());
            let kept = dir.join(format!("ferry-outage-{}.log", std::process::id()));
            if std::fs::copy(&self.0, &kept).is_ok() {
                eprintln!("ferry run's log: {}", kept.display());
            }
        }
    }
}

/// One `ferry run` process.
struct Ferry {
    child: std::process::Child,
    /// Address of `/livez` and `/readyz`.
    probes: String,
}

impl Ferry {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `/livez` answers 200: a kubelet would not restart the process.
    async fn live(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(&self.probes).await else {
            return false;
        };
        let request = format!(
            "GET /livez HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.probes
        );
        if conn.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer)).await;
        matches!(read, Ok(Ok(_))) && answer.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The "reconcile failed; retrying" lines of a JSON log: (kind/name, failures, retry in ms).
fn retries(log: &Path) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "reconcile failed; retrying")
        .map(|l| {
            (
                format!(
                    "{}/{}",
                    l["kind"].as_str().unwrap_or("?"),
                    l["name"].as_str().unwrap_or("?")
                ),
                l["failures"].as_u64().unwrap_or_default(),
                l["retry_in_ms"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Ferry retried with backoff, not in a loop: no retry sooner than 2 s; an Environment (interval 10m) retried
/// with delays doubling from 2 s fails at most about log2(outage / 2 s + 1) + 1 times over an outage, each retry
/// waiting longer than the one before. (The GitRepository, interval 1s, is retried every 2 s: never less often
/// than its interval.) Returns (failed reconciles, the most any one Environment failed in a row).
fn check_backoff(log: &Path, outage: Duration) -> (usize, u64) {
    let lines = retries(log);
    let mut per_object: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (object, failures, retry_in) in &lines {
        per_object
            .entry(object.clone())
            .or_default()
            .push((*failures, *retry_in));
    }
    let bound = (outage.as_secs_f64() / 2.0 + 1.0).log2().floor() as u64 + 3;
    let mut most = 0;
    for (object, seen) in &per_object {
        assert!(
            seen.iter().all(|(_, ms)| *ms >= 2000),
            "{object} retried sooner than 2 s: {seen:?}"
        );
        if !object.starts_with("Environment/") {
            continue;
        }
        let max = seen.iter().map(|(f, _)| *f).max().unwrap_or_default();
        most = most.max(max);
        assert!(
            max <= bound,
            "{object} failed {max} times in a row over a {outage:?} outage (bound {bound}): not backing off"
        );
        for pair in seen.windows(2) {
            if pair[1].0 == pair[0].0 + 1 {
                assert!(pair[1].1 > pair[0].1 || pair[1].1 >= 300_000, "{object}: {seen:?}");
            }
        }
    }
    (lines.len(), most)
}

// ---------------------------------------------------------------------------------------------------------
// Every status Ferry writes, checked as it is written.
// ---------------------------------------------------------------------------------------------------------

/// One status version: (Environment, applied revision, Ready status, Ready reason).
type Seen = (String, String, String, String);

/// Watches every Environment of a namespace and checks each status version it sees: Ready=True names the
/// revision recorded as applied, the applied revision never moves back to an older commit, nothing is
/// Stalled, and Ready=False only ever has one of `allowed` reasons.
struct StatusWatch {
    violations: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusWatch {
    /// `order`: commits in the order they are pushed (the applied revision may only move forward along it).
    fn start(api: Api<Environment>, order: Arc<Mutex<Vec<String>>>, allowed: &'static [&'static str]) -> StatusWatch {
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (v, s) = (violations.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut applied: BTreeMap<String, usize> = BTreeMap::new();
            let stream = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(stream));
            while let Some(event) = stream.next().await {
                let env = match event {
                    Ok(kube::runtime::watcher::Event::Apply(e) | kube::runtime::watcher::Event::InitApply(e)) => e,
                    _ => continue,
                };
                let name = env.metadata.name.clone().unwrap_or_default();
                let status = env.status.clone().unwrap_or_default();
                let at = status.last_applied_revision.clone().unwrap_or_default();
                let mut problems = Vec::new();
                if let Some((ready, reason, message)) = env_ready(&env) {
                    s.lock()
                        .unwrap()
                        .push((name.clone(), at.clone(), ready.clone(), reason.clone()));
                    if ready == "True" && (at.is_empty() || !message.contains(&at)) {
                        problems.push(format!(
                            "Ready=True says {message:?} but the applied revision is {at:?}"
                        ));
                    }
                    // Before anything is applied, a missing source revision is what it says; afterwards only
                    // the outage's own reason may show.
                    if ready == "False" && !at.is_empty() && !allowed.contains(&reason.as_str()) {
                        problems.push(format!("Ready=False {reason}: {message}"));
                    }
                }
                if status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
                {
                    problems.push(format!("Stalled: {:?}", status.conditions));
                }
                if !at.is_empty() {
                    let order = order.lock().unwrap().clone();
                    match order.iter().position(|c| at.ends_with(c.as_str())) {
                        None => problems.push(format!("applied revision {at} was never pushed")),
                        Some(idx) => {
                            let before = applied.insert(name.clone(), idx).unwrap_or(0);
                            if idx < before {
                                problems.push(format!("applied revision went back to {at}"));
                            }
                        }
                    }
                }
                for p in problems {
                    v.lock().unwrap().push(format!("{name}: {p}"));
                }
            }
        });
        StatusWatch { violations, seen, task }
    }

    fn assert_clean(&self) {
        let violations = self.violations.lock().unwrap();
        assert!(violations.is_empty(), "wrong statuses written: {violations:#?}");
        assert!(!self.seen.lock().unwrap().is_empty(), "the status watch saw nothing");
    }

    /// Every status version seen.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The pieces the two control-plane tests share: round 0 converged, a status watch running.
async fn converged_start(name: &str, log: &Path) -> (Private, Ferry, StatusWatch, Arc<Mutex<Vec<String>>>) {
    let p = Private::start(name).await;
    p.write_round(0);
    let c0 = p.repo.commit_and_push("round 0");
    let order = Arc::new(Mutex::new(vec![c0.clone()]));
    let watch = StatusWatch::start(p.api::<Environment>(), order.clone(), &[]);
    p.create_environments().await;
    let ferry = p.start_ferry(log);
    p.wait_converged(&c0, 0, DEADLINE).await;
    (p, ferry, watch, order)
}

/// Pushes round `r` and records its commit as the newest.
fn push_round(p: &Private, order: &Mutex<Vec<String>>, r: usize) -> String {
    p.write_round(r);
    let commit = p.repo.commit_and_push(&format!("round {r}"));
    order.lock().unwrap().push(commit.clone());
    commit
}

/// Only objects of earlier rounds that the round dropped were ever deleted.
fn assert_only_stale_deleted(p: &Private, rounds: usize) {
    let allowed: BTreeSet<String> = (0..ENVS)
        .flat_map(|i| (0..rounds).map(move |r| format!("c{i}-r{r}")))
        .collect();
    let deleted = p.deleted_config_maps();
    let wrong: Vec<_> = deleted.iter().filter(|d| !allowed.contains(*d)).collect();
    assert!(wrong.is_empty(), "deleted objects that were not stale: {wrong:?}");
}

#[tokio::test]
async fn kube_apiserver_restarted_mid_sync_ferry_retries_and_converges_without_a_restart() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("ferry.log");
    let _keep = KeepLog(log.clone());
    let (p, mut ferry, watch, order) = converged_start("apiserver-restart", &log).await;
    let pid = ferry.child.id();

    // Killed and started again the moment a sync of the new commit starts; tried over rounds until the kill
    // lands while some Environments have not applied it yet.
    let mut mid_sync = 0;
    let mut outage = Duration::ZERO;
    let mut round = 0;
    for r in 1..=3 {
        round = r;
        let commit = push_round(&p, &order, r);
        let pending = p.wait_sync_started(&commit).await;
        let down = Instant::now();
        p.cp.restart("kube-apiserver").await.expect("restarting kube-apiserver");
        outage = outage.max(down.elapsed());
        eprintln!(
            "round {r}: kube-apiserver restarted ({:.1?}) with {pending} Environments yet to apply",
            down.elapsed()
        );
        assert!(ferry.alive(), "ferry run exited when the API server went away");
        assert!(ferry.live().await, "/livez failed after the API server restarted");
        p.wait_converged(&commit, r, DEADLINE).await;
        if pending > 0 {
            mid_sync += 1;
            break;
        }
    }
    assert!(mid_sync > 0, "the API server never went down mid-sync");
    assert!(ferry.alive(), "ferry run exited");
    assert_eq!(ferry.child.id(), pid, "the same process throughout");
    watch.assert_clean();
    assert_only_stale_deleted(&p, round);
    let (failed, most) = check_backoff(&log, outage);
    eprintln!("{failed} failed reconciles while the API server restarted, at most {most} in a row for one object");

    // And it keeps working: the next commit applies as usual, its GitRepository's change waking the
    // Environments (their watches relisted after the restart's `410 Gone`s without pausing for long).
    let commit = push_round(&p, &order, round + 1);
    let pushed = Instant::now();
    // Measured: ~6 s with the watches' short pause, 20 to over 60 s with kube's default.
    p.wait_converged(&commit, round + 1, Duration::from_secs(15)).await;
    eprintln!("the next commit converged {:.1?} after its push", pushed.elapsed());
    watch.assert_clean();
}

/// Resumes a paused process, however the test ends.
struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the control plane's own etcd child.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

#[tokio::test]
async fn etcd_paused_for_20s_mid_sync_ferry_waits_writes_nothing_wrong_and_converges() {
    let pause: Duration = std::env::var("FERRY_ETCD_PAUSE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(20));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("ferry.log");
    let _keep = KeepLog(log.clone());
    let (p, mut ferry, watch, order) = converged_start("etcd-pause", &log).await;
    let pid = ferry.child.id();
    let etcd = p.cp.pid("etcd").expect("etcd pid") as i32;

    let commit = push_round(&p, &order, 1);
    let pending = p.wait_sync_started(&commit).await;
    // SAFETY: kill(2) on the control plane's own etcd child.
    assert_eq!(unsafe { libc::kill(etcd, libc::SIGSTOP) }, 0);
    let paused = Paused(etcd);
    let stopped_at = Instant::now();
    eprintln!("etcd stopped with {pending} Environments yet to apply");
    while stopped_at.elapsed() < pause {
        assert!(ferry.alive(), "ferry run exited while etcd was stopped");
        assert!(ferry.live().await, "/livez failed while etcd was stopped");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(paused); // SIGCONT
    let resumed = Instant::now();
    p.wait_converged(&commit, 1, DEADLINE).await;
    eprintln!("converged {:.1?} after etcd resumed", resumed.elapsed());
    assert!(ferry.alive(), "ferry run exited");
    assert_eq!(ferry.child.id(), pid);
    watch.assert_clean();
    assert_only_stale_deleted(&p, 1);
    let (failed, most) = check_backoff(&log, pause + resumed.elapsed());
    eprintln!("{failed} failed reconciles while etcd was stopped, at most {most} in a row for one object");
    assert!(pending > 0 || failed > 0, "the pause hit neither a sync nor a request");

    let commit = push_round(&p, &order, 2);
    p.wait_converged(&commit, 2, DEADLINE).await;
    watch.assert_clean();
}

// ---------------------------------------------------------------------------------------------------------
// A second cluster behind a cut network.
// ---------------------------------------------------------------------------------------------------------

/// A TCP proxy that forwards until it is cut; while cut, connections are accepted and nothing is answered,
/// and open connections carry nothing either way (a network partition: packets dropped, not refused). Healed,
/// held traffic flows again.
struct CutProxy {
    addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CutProxy {
    async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(forward(conn, upstream, rx.clone()));
            }
        });
        CutProxy { addr, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn open(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|cut| !*cut).await;
}

async fn forward(conn: TcpStream, upstream: SocketAddr, mut rx: tokio::sync::watch::Receiver<bool>) {
    open(&mut rx).await;
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let (conn_r, conn_w) = conn.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::join!(pump(conn_r, up_w, rx.clone()), pump(up_r, conn_w, rx));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        open(&mut rx).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn push(t: &TestEnv, version: &str) -> String {
    push_overlays(t, version, |_| {
        vec![("cm.yaml", config_map("app", &[("version", version)]))]
    })
}

async fn version_in(client: &Client, namespace: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    cms.get_opt("app").await.ok()??.data?.get("version").cloned()
}

fn promotion_phase(p: &Promotion) -> Option<PromotionPhase> {
    p.status.as_ref().and_then(|s| s.phase)
}

async fn promotion_of(t: &TestEnv, commit: &str) -> Promotion {
    eventually(&format!("a Promotion of {commit}"), || async {
        t.api::<Promotion>()
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| p.spec.environment == "production" && p.spec.revision.ends_with(commit))
    })
    .await
}

/// A second control plane with a namespace named as the test's, reached through a [`CutProxy`] by the
/// kubeconfig in Secret `remote`.
struct Remote {
    cp: ControlPlane,
    client: Client,
    proxy: CutProxy,
    /// The kubeconfig's token: never to be shown.
    token: String,
}

impl Remote {
    async fn behind_proxy(t: &TestEnv) -> Remote {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cp = ControlPlane::start(Options {
            bin_dir: bin_dir_from_env_or_build(&root).expect("binaries"),
            workloads: false,
            dir: None,
        })
        .await
        .expect("starting the second control plane");
        let client = namespace_in(&cp, &t.namespace).await;
        let upstream: SocketAddr = cp
            .server
            .trim_start_matches("https://")
            .parse()
            .expect("server address");
        let proxy = CutProxy::start(upstream).await;
        // The same cluster, reached through the proxy (the serving certificate is for 127.0.0.1, any port).
        let kubeconfig = cp
            .kubeconfig_self_contained()
            .expect("kubeconfig")
            .replace(&cp.server, &format!("https://{}", proxy.addr));
        let token = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token")
            .to_string();
        t.create_secret("remote", &[("value", &kubeconfig)]).await;
        Remote {
            cp,
            client,
            proxy,
            token,
        }
    }
}

/// The remote timeout the cut tests run with (the default is 30 s).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_second_cluster_cut_off_says_cluster_unreachable_others_keep_going_and_its_promotion_resumes() {
    let t = TestEnv::with_settings("cut", |s| s.remote_cluster_timeout = REMOTE_TIMEOUT).await;
    let Remote {
        cp: _remote,
        client: remote_client,
        proxy,
        token,
    } = Remote::behind_proxy(&t).await;

    let order = Arc::new(Mutex::new(Vec::new()));
    let c1 = push(&t, "v1");
    order.lock().unwrap().push(c1.clone());
    let watch = StatusWatch::start(t.api::<Environment>(), order.clone(), &["ClusterUnreachable"]);
    t.config_source("1s").await;
    t.config_env("staging", "apps/staging", "1h").await;
    t.config_env_with(
        "production",
        "apps/production",
        "5s",
        json!({"kubeConfig": {"secretRef": {"name": "remote"}}, "promotion": {"from": "staging"}}),
    )
    .await;
    let p1 = promotion_of(&t, &c1).await;
    let p1_name = p1.metadata.name.clone().unwrap_or_default();
    wait_for(&t.api::<Promotion>(), &p1_name, |p: &Promotion| {
        promotion_phase(p) == Some(PromotionPhase::Succeeded)
    })
    .await;
    assert_eq!(version_in(&remote_client, &t.namespace).await.as_deref(), Some("v1"));

    // The network to the second cluster goes: nothing answers, nothing is refused.
    proxy.set_cut(true);
    let cut_at = Instant::now();
    let production = wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == "ClusterUnreachable")
    })
    .await;
    let noticed = cut_at.elapsed();
    let (_, _, message) = env_ready(&production).expect("Ready");
    eprintln!("production while cut off: {message}");
    assert!(
        message.contains(&proxy.addr.to_string()),
        "names the cluster: {message}"
    );
    assert!(message.contains("remote"), "names the kubeconfig Secret: {message}");
    assert!(message.contains("timed out"), "says why: {message}");
    assert!(!message.contains(&token), "no credentials in the message");
    assert!(message.contains(&c1), "says what the cluster keeps: {message}");
    let events = t.wait_event("production", "Warning", "ClusterUnreachable").await;
    assert!(events.iter().all(|(_, _, note)| !note.contains(&token)));

    // A local Environment keeps going meanwhile: the next commit is applied and verified in staging.
    let c2 = push(&t, "v2");
    order.lock().unwrap().push(c2.clone());
    let staging = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.record(&format!("main@sha1:{c2}")))
            .is_some_and(|r| r.phase == ferry::api::RevisionPhase::Verified)
    })
    .await;
    assert_eq!(env_ready(&staging).map(|r| r.0).as_deref(), Some("True"));
    assert_eq!(version_in(&t.client, &t.namespace).await.as_deref(), Some("v2"));

    // Its promotion into the cut-off cluster waits: Applying, never Failed, the Environment still on v1.
    let p2 = promotion_of(&t, &c2).await;
    let p2_name = p2.metadata.name.clone().unwrap_or_default();
    let held = Instant::now();
    while held.elapsed() < 3 * REMOTE_TIMEOUT {
        let p = t.api::<Promotion>().get(&p2_name).await.expect("promotion");
        let phase = promotion_phase(&p);
        assert!(
            matches!(phase, None | Some(PromotionPhase::Pending | PromotionPhase::Applying)),
            "the promotion into a cut-off cluster moved to {phase:?}: {:?}",
            p.status
        );
        let env = t.api::<Environment>().get("production").await.expect("production");
        let at = env.status.and_then(|s| s.last_applied_revision).unwrap_or_default();
        assert!(at.ends_with(&c1), "production says it applied {at} while cut off");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let p = t.api::<Promotion>().get(&p2_name).await.expect("promotion");
    assert_eq!(promotion_phase(&p), Some(PromotionPhase::Applying));
    let ready = p.status.as_ref().and_then(|s| ready_of(&s.conditions)).expect("Ready");
    assert!(ready.2.contains("cannot reach the target cluster"), "{ready:?}");
    assert_eq!(version_in(&remote_client, &t.namespace).await.as_deref(), Some("v1"));

    // The network comes back: the promotion resumes and succeeds, with v2 in the second cluster.
    proxy.set_cut(false);
    let healed = Instant::now();
    wait_for(&t.api::<Promotion>(), &p2_name, |p: &Promotion| {
        promotion_phase(p) == Some(PromotionPhase::Succeeded)
    })
    .await;
    let resumed = healed.elapsed();
    assert_eq!(version_in(&remote_client, &t.namespace).await.as_deref(), Some("v2"));
    let production = t.api::<Environment>().get("production").await.expect("production");
    assert_eq!(env_ready(&production).map(|r| r.0).as_deref(), Some("True"));
    eprintln!(
        "cut noticed after {noticed:.1?} (timeout {REMOTE_TIMEOUT:?}); promotion Succeeded {resumed:.1?} after the network came back"
    );
    watch.assert_clean();
    // Staging never saw the remote cluster's trouble.
    assert!(
        watch
            .seen()
            .iter()
            .all(|(env, _, _, reason)| env != "staging" || reason != "ClusterUnreachable")
    );
}

#[tokio::test]
async fn a_cluster_cut_off_while_a_revision_verifies_there_says_so_and_the_verification_goes_on() {
    let t = TestEnv::with_settings("cut-verify", |s| s.remote_cluster_timeout = REMOTE_TIMEOUT).await;
    let remote = Remote::behind_proxy(&t).await;
    let c1 = push(&t, "v1");
    let revision = format!("main@sha1:{c1}");
    t.config_source("1h").await;
    // The acceptance Job is created in the second cluster and never finishes there (nothing runs pods): the
    // revision stays Verifying.
    let job = json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "test", "image": "example.com/acceptance:1"}]}}}});
    t.config_env_with(
        "remote",
        "apps/production",
        "1h",
        json!({"kubeConfig": {"secretRef": {"name": "remote"}},
               "verification": {"jobTemplate": job, "timeout": "10m"}}),
    )
    .await;
    let verifying = |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.record(&revision))
            .is_some_and(|r| r.phase == ferry::api::RevisionPhase::Verifying && r.job.is_some())
    };
    wait_for(&t.api::<Environment>(), "remote", |e: &Environment| {
        verifying(e) && env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;

    remote.proxy.set_cut(true);
    let env = wait_for(&t.api::<Environment>(), "remote", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == "ClusterUnreachable")
    })
    .await;
    let (_, _, message) = env_ready(&env).expect("Ready");
    eprintln!("while verifying and cut off: {message}");
    assert!(
        message.contains(&remote.proxy.addr.to_string()) && message.contains("verify") && message.contains("timed out"),
        "{message}"
    );
    assert!(!message.contains(&remote.token));
    assert!(
        verifying(&env),
        "the verification is not failed by the outage: {:?}",
        env.status
    );
    t.wait_event("remote", "Warning", "ClusterUnreachable").await;

    remote.proxy.set_cut(false);
    let env = wait_for(&t.api::<Environment>(), "remote", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert!(verifying(&env), "still verifying the same revision: {:?}", env.status);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(remote.client.clone(), &t.namespace);
    assert_eq!(
        jobs.list(&Default::default()).await.expect("jobs").items.len(),
        1,
        "one Job, not restarted"
    );
}
