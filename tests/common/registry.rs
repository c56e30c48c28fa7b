//! OCI registries on loopback for the image tests: distribution's `registry` (anonymous, or behind htpasswd
//! basic auth), filled with `crane` (no Docker): single-arch images with a few layers and multi-arch indexes.
//! The registry's access log tells what a client uploaded, so a test can prove a repeated copy moved nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

/// A user and password for a registry behind basic auth.
pub const REGISTRY_USER: &str = "ferry";
pub const REGISTRY_PASSWORD: &str = "s3cret-registry-pw";

pub struct TestRegistry {
    /// `127.0.0.1:<port>`: the registry host as image references name it.
    pub host: String,
    /// Whether it wants [`REGISTRY_USER`]/[`REGISTRY_PASSWORD`].
    pub basic_auth: bool,
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl TestRegistry {
    /// Starts a registry with an empty filesystem store, waits until it answers, and (with basic auth) logs
    /// crane in.
    pub fn start(bin_dir: &Path, basic_auth: bool) -> TestRegistry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: ferry-test\n",
            dir.path().join("data").display()
        );
        if basic_auth {
            let hash = bcrypt::hash(REGISTRY_PASSWORD, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{REGISTRY_USER}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: ferry-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).expect("registry log");
        let child = Command::new(bin_dir.join("registry"))
            .arg("serve")
            .arg(&config_path)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("starting registry (hack/controlplane-build.sh builds it)");
        let registry = TestRegistry {
            host,
            basic_auth,
            bin_dir: bin_dir.to_path_buf(),
            dir,
            log,
            child: Some(child),
        };
        registry.wait_listening();
        if basic_auth {
            registry.crane(&[
                "auth",
                "login",
                &registry.host,
                "-u",
                REGISTRY_USER,
                "-p",
                REGISTRY_PASSWORD,
            ]);
        }
        registry
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + super::DEADLINE;
        while std::net::TcpStream::connect(&self.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs crane against this registry (plain HTTP, its own docker config); panics with crane's output on
    /// failure. Returns stdout, trimmed.
    pub fn crane(&self, args: &[&str]) -> String {
        let out = Command::new(self.bin_dir.join("crane"))
            .args(args)
            .arg("--insecure")
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .stdin(Stdio::null())
            .output()
            .expect("running crane");
        assert!(
            out.status.success(),
            "crane {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `host/path` for a repository path in this registry.
    pub fn image(&self, path: &str) -> String {
        format!("{}/{path}", self.host)
    }

    /// Pushes a single-arch image at `path` (`team/app:v1`) whose layers hold these files (one layer each);
    /// returns its manifest digest.
    pub fn push_image(&self, path: &str, layers: &[(&str, &[u8])]) -> String {
        let work = tempfile::tempdir().expect("layers dir");
        let mut args: Vec<String> = vec!["append".into()];
        for (i, (name, content)) in layers.iter().enumerate() {
            let files = work.path().join(format!("layer{i}"));
            std::fs::create_dir_all(&files).expect("layer dir");
            std::fs::write(files.join(name), content).expect("layer file");
            let tar = work.path().join(format!("layer{i}.tar"));
            let status = Command::new("tar")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&files)
                .arg(name)
                .status()
                .expect("tar");
            assert!(status.success(), "tar failed");
            args.push("-f".into());
            args.push(tar.display().to_string());
        }
        args.push("-t".into());
        args.push(self.image(path));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.crane(&argv);
        self.digest(path)
    }

    /// Pushes a multi-arch index at `path` (linux/amd64 and linux/arm64, each with two layers of its own plus
    /// `seed`); returns the index digest.
    pub fn push_index(&self, path: &str, seed: &str) -> String {
        let (repo, tag) = path.rsplit_once(':').expect("path:tag");
        let mut children = Vec::new();
        for arch in ["amd64", "arm64"] {
            let base = format!("{repo}:base-{arch}-{tag}");
            let content = format!("{seed} {arch}");
            self.push_image(
                &base,
                &[("arch.txt", content.as_bytes()), ("seed.txt", seed.as_bytes())],
            );
            let platform = format!("{repo}:{arch}-{tag}");
            self.crane(&[
                "mutate",
                "--set-platform",
                &format!("linux/{arch}"),
                &self.image(&base),
                "-t",
                &self.image(&platform),
            ]);
            children.push(self.image(&platform));
        }
        self.crane(&[
            "index",
            "append",
            "-m",
            &children[0],
            "-m",
            &children[1],
            "-t",
            &self.image(path),
        ]);
        self.digest(path)
    }

    /// The digest `path` (`team/app:v1`) points at now.
    pub fn digest(&self, path: &str) -> String {
        self.crane(&["digest", &self.image(path)])
    }

    /// The raw manifest at `path` (`team/app@sha256:…` or `:tag`).
    pub fn manifest(&self, path: &str) -> String {
        self.crane(&["manifest", &self.image(path)])
    }

    /// Completed blob uploads so far (`PUT /v2/<name>/blobs/uploads/…` answered 201).
    pub fn uploads(&self) -> usize {
        self.requests(|line| line.contains("http.request.method=PUT") && line.contains("/blobs/uploads/"))
    }

    /// Manifests written so far.
    pub fn manifest_puts(&self) -> usize {
        self.requests(|line| line.contains("http.request.method=PUT") && line.contains("/manifests/"))
    }

    fn requests(&self, matches: impl Fn(&str) -> bool) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("response completed") && l.contains("http.response.status=201") && matches(l))
            .count()
    }

    /// The registry's log (for a failing assertion's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Flips the last byte of the first layer of `image` (`team/web:v1`) in the registry's storage: its
    /// content no longer matches its digest.
    pub fn corrupt_first_layer(&self, image: &str) {
        let manifest: serde_json::Value = serde_json::from_str(&self.manifest(image)).expect("json");
        let layer = manifest["layers"][0]["digest"].as_str().expect("layer").to_string();
        let file = self.blob_file(&layer);
        let mut bytes = std::fs::read(&file).expect("blob");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).expect("corrupt");
    }

    /// Where the filesystem store keeps a blob's bytes: a test can corrupt it.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A `kubernetes.io/dockerconfigjson` payload for this registry with these credentials.
    pub fn docker_config_json(&self, user: &str, password: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        serde_json::json!({"auths": {self.host.clone(): {"auth": auth}}}).to_string()
    }

    /// Stops the registry: it is down from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A `kubernetes.io/dockerconfigjson` Secret.
pub fn docker_config_secret(name: &str, json: &str) -> k8s_openapi::api::core::v1::Secret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": json},
    }))
    .expect("secret")
}
