//! A real local control plane (etcd + kube-apiserver, optionally controller-manager, scheduler and kwok's
//! simulated node) started from binaries built by `hack/controlplane-build.sh`, on free loopback ports —
//! the way controller-runtime's envtest works. Used by the integration tests, the benches and (through the
//! `ferry-dev-cluster` binary of this crate) the demo. A dev-only crate: the shipped `ferry` does not depend on it.
//!
//! Every process is started with a parent-death signal, so nothing outlives the process that started it,
//! even when that process is killed; `stop` (or drop) shuts them down in order.

mod spawn;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use spawn::spawn_guarded;

#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    #[error("control-plane binary {0} not found; run hack/controlplane-build.sh")]
    MissingBinary(PathBuf),
    #[error("starting {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited early ({status}); see {log}")]
    Exited { name: String, status: String, log: String },
    #[error("{what} not ready after {seconds}s; see logs in {dir}")]
    NotReady { what: String, seconds: u64, dir: String },
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Directory with etcd, kube-apiserver, … (`hack/controlplane-build.sh` prints it).
    pub bin_dir: PathBuf,
    /// Also run controller-manager, scheduler and kwok with one fake node, so workloads become healthy.
    pub workloads: bool,
    /// Where data, certs, logs and the kubeconfig go; a fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
}

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    procs: std::sync::Mutex<Vec<Proc>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Users the API server knows besides admin, with no rights of their own: for tests of who may do what.
pub const TEST_USERS: [&str; 2] = ["alice", "bob"];

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The bin dir from `FERRY_CONTROLPLANE_BIN`, else from running the build script (which reuses its cache).
pub fn bin_dir_from_env_or_build(repo_root: &Path) -> Result<PathBuf, TestEnvError> {
    if let Ok(dir) = std::env::var("FERRY_CONTROLPLANE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let out = Command::new("bash")
        .arg(repo_root.join("hack/controlplane-build.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| TestEnvError::Setup(format!("running hack/controlplane-build.sh: {e}")))?;
    if !out.status.success() {
        return Err(TestEnvError::Setup("hack/controlplane-build.sh failed".into()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(line))
}

const TEMP_PREFIX: &str = "ferry-controlplane-";

/// Deletes temporary control-plane directories whose owning process has exited (etcd data, logs, certificates:
/// ~120 MB each, left behind by every test binary otherwise).
fn remove_abandoned_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(path.join("owner.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl ControlPlane {
    pub async fn start(opts: Options) -> Result<ControlPlane, TestEnvError> {
        let (dir, tmp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| TestEnvError::Setup(e.to_string()))?;
                (d.clone(), None)
            }
            None => {
                remove_abandoned_dirs();
                let t = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempdir()
                    .map_err(|e| TestEnvError::Setup(e.to_string()))?;
                // Whose it is: a control plane kept in a static (one per test binary) is never dropped, so the
                // next start removes the directories of processes that are gone.
                std::fs::write(t.path().join("owner.pid"), std::process::id().to_string())
                    .map_err(|e| TestEnvError::Setup(e.to_string()))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            dir,
            procs: Default::default(),
            _tmp: tmp,
        };
        cp.boot(&opts).await?;
        Ok(cp)
    }

    fn bin(opts: &Options, name: &str) -> Result<PathBuf, TestEnvError> {
        let p = opts.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(TestEnvError::MissingBinary(p))
        }
    }

    fn spawn(&mut self, name: &str, cmd: Command) -> Result<(), TestEnvError> {
        let proc = self.launch(name, Recipe::of(&cmd), cmd, false)?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).push(proc);
        Ok(())
    }

    fn launch(&self, name: &str, recipe: Recipe, mut cmd: Command, append: bool) -> Result<Proc, TestEnvError> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)
            .map_err(|e| TestEnvError::Setup(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| TestEnvError::Setup(e.to_string()))?;
        cmd.stdout(log).stderr(log2).stdin(std::process::Stdio::null());
        let child = spawn_guarded(cmd).map_err(|source| TestEnvError::Spawn {
            name: name.to_string(),
            source,
        })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            recipe,
        })
    }

    fn check_alive(&self) -> Result<(), TestEnvError> {
        for p in self.procs.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(TestEnvError::Exited {
                    name: p.name.clone(),
                    status: status.to_string(),
                    log: self.dir.join(format!("{}.log", p.name)).display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The process id of one of the control plane's processes (`etcd`, `kube-apiserver`, ...), for fault
    /// tests that pause (SIGSTOP) or kill it.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.iter().find(|p| p.name == name).map(|p| p.child.id())
    }

    /// Kills one process (SIGKILL, as a crash) and starts it again with the same arguments; for the API
    /// server, waits until it is ready again.
    pub async fn restart(&self, name: &str) -> Result<(), TestEnvError> {
        let recipe = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(i) = procs.iter().position(|p| p.name == name) else {
                return Err(TestEnvError::Setup(format!("no process {name}")));
            };
            let mut old = procs.remove(i);
            let _ = old.child.kill();
            let _ = old.child.wait();
            old.recipe
        };
        let proc = self.launch(name, recipe.clone(), recipe.command(), true)?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).push(proc);
        if name == "kube-apiserver" {
            self.wait_ready(Instant::now() + Duration::from_secs(90)).await?;
        }
        Ok(())
    }

    async fn boot(&mut self, opts: &Options) -> Result<(), TestEnvError> {
        let setup = |e: std::io::Error| TestEnvError::Setup(e.to_string());
        let d = self.dir.clone();
        for sub in ["etcd", "certs"] {
            std::fs::create_dir_all(d.join(sub)).map_err(setup)?;
        }

        // etcd
        let (client_port, peer_port) = (free_port().map_err(setup)?, free_port().map_err(setup)?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(Self::bin(opts, "etcd")?);
        etcd.args(["--name", "default", "--data-dir"])
            .arg(d.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args([
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                "4294967296",
            ]);
        self.spawn("etcd", etcd)?;

        // service-account keys and the admin token
        let sa_key = d.join("sa.key");
        let sa_pub = d.join("sa.pub");
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&sa_key)
                .arg("2048"),
        )?;
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&sa_key)
                .arg("-out")
                .arg(&sa_pub),
        )?;
        // Every mutating request is audited, so tests can prove a no-op reconcile writes nothing.
        std::fs::write(
            d.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n\
             - level: None\n  verbs: [\"get\", \"list\", \"watch\"]\n- level: Metadata\n",
        )
        .map_err(setup)?;
        let token = format!("ferry-{:x}", rand_u64());
        let mut tokens = format!("{token},admin,admin-uid,\"system:masters\"\n");
        for user in TEST_USERS {
            tokens.push_str(&format!("ferry-{:x},{user},{user}-uid\n", rand_u64()));
        }
        std::fs::write(d.join("tokens.csv"), tokens).map_err(setup)?;

        // kube-apiserver
        let port = free_port().map_err(setup)?;
        self.server = format!("https://127.0.0.1:{port}");
        let mut api = Command::new(Self::bin(opts, "kube-apiserver")?);
        api.args(["--etcd-servers", &etcd_url, "--cert-dir"])
            .arg(d.join("certs"))
            .args(["--secure-port", &port.to_string()])
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args([
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--authorization-mode",
                "RBAC",
            ])
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file")
            .arg(&sa_pub)
            .arg("--service-account-signing-key-file")
            .arg(&sa_key)
            .arg("--token-auth-file")
            .arg(d.join("tokens.csv"))
            .arg("--audit-policy-file")
            .arg(d.join("audit-policy.yaml"))
            .arg("--audit-log-path")
            .arg(d.join("audit.log"))
            .args(["--audit-log-format=json", "--audit-log-mode=blocking"])
            .args(["--allow-privileged=true", "--profiling=false", "--v=1"]);
        self.spawn("kube-apiserver", api)?;

        let ca = d.join("certs/apiserver.crt");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ca.is_file() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(self.not_ready("kube-apiserver serving certificate"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ferry-dev\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: ferry-dev\n  context:\n    cluster: ferry-dev\n    user: admin\n    namespace: default\ncurrent-context: ferry-dev\n",
            server = self.server,
            ca = ca.display(),
        );
        std::fs::write(&self.kubeconfig, kubeconfig).map_err(setup)?;
        self.wait_ready(deadline).await?;

        if opts.workloads {
            self.start_workload_controllers(opts, &sa_key, &ca).await?;
        }
        Ok(())
    }

    fn not_ready(&self, what: &str) -> TestEnvError {
        TestEnvError::NotReady {
            what: what.to_string(),
            seconds: 90,
            dir: self.dir.display().to_string(),
        }
    }

    /// Polls `/readyz` until the apiserver says ok (all post-start hooks done, RBAC bootstrapped).
    async fn wait_ready(&self, deadline: Instant) -> Result<(), TestEnvError> {
        let client = self.client().await?;
        loop {
            self.check_alive()?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| TestEnvError::Setup(e.to_string()));
            if let Ok(text) = client.request_text(req?).await
                && text.trim() == "ok"
            {
                // The default namespace is created by a controller shortly after readiness.
                let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
                if let Ok(Some(_)) = namespaces.get_opt("default").await {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.not_ready("kube-apiserver"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn start_workload_controllers(
        &mut self,
        opts: &Options,
        sa_key: &Path,
        ca: &Path,
    ) -> Result<(), TestEnvError> {
        let kc = self.kubeconfig.clone();
        let mut kcm = Command::new(Self::bin(opts, "kube-controller-manager")?);
        kcm.arg("--kubeconfig")
            .arg(&kc)
            .arg("--service-account-private-key-file")
            .arg(sa_key)
            .arg("--root-ca-file")
            .arg(ca)
            .args([
                "--controllers=*,-nodeipam,-cloud-node-lifecycle",
                "--leader-elect=false",
            ])
            .args(["--secure-port=0", "--use-service-account-credentials=false", "--v=1"]);
        self.spawn("kube-controller-manager", kcm)?;

        let mut sched = Command::new(Self::bin(opts, "kube-scheduler")?);
        sched
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["--leader-elect=false", "--secure-port=0", "--v=1"]);
        self.spawn("kube-scheduler", sched)?;

        let upstream = opts
            .bin_dir
            .parent()
            .map(|p| p.join("kwok-stages.yaml"))
            .filter(|p| p.is_file())
            .ok_or_else(|| TestEnvError::MissingBinary(opts.bin_dir.join("../kwok-stages.yaml")))?;
        let upstream = std::fs::read_to_string(upstream).map_err(|e| TestEnvError::Setup(e.to_string()))?;
        let stages = self.dir.join("kwok-stages.yaml");
        std::fs::write(&stages, with_failing_pods(&upstream)).map_err(|e| TestEnvError::Setup(e.to_string()))?;
        let mut kwok = Command::new(Self::bin(opts, "kwok")?);
        kwok.arg("--kubeconfig")
            .arg(&kc)
            .arg("--config")
            .arg(&stages)
            .args(["--manage-all-nodes=false"])
            .args(["--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"])
            .args(["--cidr=10.0.0.1/24", "--node-ip=10.0.0.1"])
            .arg(format!(
                "--server-address=127.0.0.1:{}",
                free_port().map_err(|e| TestEnvError::Setup(e.to_string()))?
            ));
        self.spawn("kwok", kwok)?;

        let client = self.client().await?;
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "kwok-node-0",
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": "kwok-node-0", "kubernetes.io/os": "linux", "type": "kwok"}
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"}
            }
        }))
        .map_err(|e| TestEnvError::Setup(e.to_string()))?;
        nodes
            .create(&Default::default(), &node)
            .await
            .map_err(|e| TestEnvError::Setup(format!("creating the kwok node: {e}")))?;
        Ok(())
    }

    /// The kubeconfig with the CA certificate embedded, so it works from a Secret (what an Environment's
    /// `kubeConfig.secretRef` holds to reach this control plane).
    pub fn kubeconfig_self_contained(&self) -> Result<String, TestEnvError> {
        use base64::Engine;
        let setup = |e: std::io::Error| TestEnvError::Setup(e.to_string());
        let text = std::fs::read_to_string(&self.kubeconfig).map_err(setup)?;
        let ca = std::fs::read(self.dir.join("certs/apiserver.crt")).map_err(setup)?;
        let data = base64::engine::general_purpose::STANDARD.encode(ca);
        Ok(text
            .lines()
            .map(|l| match l.trim_start().strip_prefix("certificate-authority: ") {
                Some(_) => format!("    certificate-authority-data: {data}"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// A client for one of [`TEST_USERS`]: authenticated, with no rights until a test binds a role.
    pub async fn client_as(&self, user: &str) -> Result<Client, TestEnvError> {
        let setup = |e: &dyn std::fmt::Display| TestEnvError::Setup(format!("client for {user}: {e}"));
        let tokens = std::fs::read_to_string(self.dir.join("tokens.csv")).map_err(|e| setup(&e))?;
        let token = tokens
            .lines()
            .find_map(|l| {
                let mut fields = l.split(',');
                let token = fields.next()?;
                (fields.next()? == user).then(|| token.to_string())
            })
            .ok_or_else(|| setup(&"no such test user"))?;
        Client::try_from(self.config_with_token(&token).await?).map_err(|e| setup(&e))
    }

    /// Connection settings that authenticate with `token` (a test user's, or a ServiceAccount token from a
    /// TokenRequest) instead of the admin's.
    pub async fn config_with_token(&self, token: &str) -> Result<kube::Config, TestEnvError> {
        let setup = |e: &dyn std::fmt::Display| TestEnvError::Setup(format!("config with a token: {e}"));
        let kc = Kubeconfig::from_yaml(&self.kubeconfig_with_token(token)?).map_err(|e| setup(&e))?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| setup(&e))
    }

    /// The kubeconfig (as YAML) with `token` instead of the admin's: for a process started with it.
    pub fn kubeconfig_with_token(&self, token: &str) -> Result<String, TestEnvError> {
        let text = std::fs::read_to_string(&self.kubeconfig).map_err(|e| TestEnvError::Setup(e.to_string()))?;
        let lines: Vec<String> = text
            .lines()
            .map(|l| match l.trim_start().strip_prefix("token: ") {
                Some(_) => format!("    token: {token}"),
                None => l.to_string(),
            })
            .collect();
        Ok(lines.join("\n"))
    }

    /// The API server's audit log: one JSON line per mutating request (reads are not logged).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// A client for the admin user.
    pub async fn client(&self) -> Result<Client, TestEnvError> {
        Client::try_from(self.config().await?).map_err(|e| TestEnvError::Setup(e.to_string()))
    }

    /// The admin user's connection settings.
    pub async fn config(&self) -> Result<kube::Config, TestEnvError> {
        let kc = Kubeconfig::read_from(&self.kubeconfig).map_err(|e| TestEnvError::Setup(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| TestEnvError::Setup(e.to_string()))
    }

    /// Stops every process, newest first: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let procs = self.procs.get_mut().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = procs.pop() {
            spawn::terminate(&mut p.child, Duration::from_secs(5));
        }
    }
}

/// One running process of the control plane, and how to start it again.
struct Proc {
    name: String,
    child: Child,
    recipe: Recipe,
}

/// A command's program, arguments, environment and directory (a `Command` cannot be cloned or reused).
#[derive(Clone)]
struct Recipe {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
    dir: Option<PathBuf>,
}

impl Recipe {
    fn of(cmd: &Command) -> Recipe {
        Recipe {
            program: cmd.get_program().to_owned(),
            args: cmd.get_args().map(|a| a.to_owned()).collect(),
            envs: cmd
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
                .collect(),
            dir: cmd.get_current_dir().map(Path::to_path_buf),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Applies Ferry's CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> Result<(), TestEnvError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let setup = |e: &dyn std::fmt::Display| TestEnvError::Setup(format!("installing CRDs: {e}"));
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let yaml = ferry::api::crds_yaml().map_err(|e| setup(&e))?;
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).map_err(|e| setup(&e))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("ferry-testenv").force(), &Patch::Apply(&crd))
            .await
            .map_err(|e| setup(&e))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let established = crds
                .get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions);
            if established.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True")) {
                break;
            }
            if Instant::now() > deadline {
                return Err(setup(&format!("{name} not Established after 60s")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Label that makes kwok fail a pod instead of completing it: how tests get a failing Job without containers.
pub const KWOK_OUTCOME_LABEL: &str = "ferry.dev/kwok-outcome";

/// kwok's upstream stages, plus one that fails running pods labelled `ferry.dev/kwok-outcome: fail` (which the
/// upstream completion stage is told to leave alone).
fn with_failing_pods(upstream: &str) -> String {
    let key = format!("'.metadata.labels[\"{KWOK_OUTCOME_LABEL}\"]'");
    let mut out = String::new();
    for doc in upstream.split("\n---\n") {
        let doc = doc.trim_start_matches("---\n");
        if doc.contains("name: pod-complete") || doc.contains("name: pod-ready") {
            let exclude =
                format!("    matchExpressions:\n    - key: {key}\n      operator: 'NotIn'\n      values: ['fail']\n");
            out.push_str(&doc.replacen("    matchExpressions:\n", &exclude, 1));
        } else {
            out.push_str(doc);
        }
        out.push_str("\n---\n");
    }
    out.push_str(&format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-fail
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'NotIn'
      values: ['Failed', 'Succeeded']
    - key: {key}
      operator: 'In'
      values: ['fail']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      containerStatuses:
      {{{{ range $index, $item := .spec.containers }}}}
      - image: {{{{ $item.image | Quote }}}}
        name: {{{{ $item.name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 1
            finishedAt: {{{{ $now | Quote }}}}
            reason: Error
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
"#
    ));
    out
}

fn run_ok(cmd: &mut Command) -> Result<(), TestEnvError> {
    let out = cmd.output().map_err(|e| TestEnvError::Setup(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestEnvError::Setup(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Enough randomness for a throw-away local token, without another dependency.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
