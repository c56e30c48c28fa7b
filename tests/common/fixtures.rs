//! Fixtures the integration tests share: manifest builders, the usual GitRepository and Environments on the
//! test's repository, waits on what an Environment applied, RBAC for tenants and users, render settings and
//! file trees. Each binary uses some of them (the module allows dead code, as `common` does).

use std::path::{Path, PathBuf};

use ferry::api::{Environment, GitRepository, Promotion};
use ferry::render::RenderSettings;
use ferry_testenv::ControlPlane;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{GitHttpServer, HttpAuth, TestEnv, env_ready, eventually, second_cluster, wait_for};

/// A ConfigMap manifest `name` (in no namespace: the Environment's) with `data` as string values, quoted.
pub fn config_map(name: &str, data: &[(&str, &str)]) -> String {
    let mut out = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
    if !data.is_empty() {
        out.push_str("data:\n");
        for (key, value) in data {
            out.push_str(&format!("  {key}: \"{value}\"\n"));
        }
    }
    out
}

/// The revision Ferry names for `commit` on the test repository's `main` branch: `main@sha1:<commit>`.
pub fn main_revision(commit: &str) -> String {
    format!("main@sha1:{commit}")
}

/// The value of `key` in ConfigMap `name` of `namespace`, if both exist.
pub async fn config_map_value(client: &kube::Client, namespace: &str, name: &str, key: &str) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    cms.get_opt(name).await.ok()??.data?.get(key).cloned()
}

/// Waits until Environment `env` has last applied `commit` of `main` and is Ready.
pub async fn wait_applied(t: &TestEnv, env: &str, commit: &str) -> Environment {
    let want = main_revision(commit);
    wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(want.as_str())
            && env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await
}

/// Waits until Environment `env` has last applied `commit` of `main`, Ready or not.
pub async fn wait_applied_revision(t: &TestEnv, env: &str, commit: &str) -> Environment {
    let want = main_revision(commit);
    wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(want.as_str())
    })
    .await
}

/// A finished process's exit code (-1 when killed by a signal), stdout and stderr.
pub fn exit_stdout_stderr(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until Environment `env` is not Ready for a reason other than `SourceNotReady`, and asserts that the
/// reason is `reason` and the message holds `needle`; returns the Environment.
pub async fn assert_refused(t: &TestEnv, env: &str, reason: &str, needle: &str) -> Environment {
    let e = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r != "SourceNotReady")
    })
    .await;
    let (_, r, message) = env_ready(&e).unwrap();
    assert_eq!(r, reason, "{env}: {message}");
    assert!(message.contains(needle), "{env}: {message}");
    e
}

/// Waits until Environment `env` is not Ready for `reason`; returns the Ready condition's message.
pub async fn wait_not_ready(t: &TestEnv, env: &str, reason: &str) -> String {
    let env = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == reason)
    })
    .await;
    env_ready(&env).map(|(_, _, m)| m).unwrap_or_default()
}

/// Writes `files` (path, content) into the test's repository and pushes them as one commit; returns the commit.
pub fn push_files(t: &TestEnv, message: &str, files: &[(&str, &str)]) -> String {
    for (path, content) in files {
        t.repo.write(path, content);
    }
    t.repo.commit_and_push(message)
}

/// Writes the files `files(env)` gives (name, content) into both overlays, `apps/staging/` and
/// `apps/production/`, and pushes them as one commit; returns the commit.
pub fn push_overlays(t: &TestEnv, message: &str, files: impl Fn(&str) -> Vec<(&'static str, String)>) -> String {
    for env in ["staging", "production"] {
        for (name, content) in files(env) {
            t.repo.write(&format!("apps/{env}/{name}"), &content);
        }
    }
    t.repo.commit_and_push(message)
}

/// Asks the GitRepository `name` to fetch now (the `ferry.dev/reconcile-requested-at` annotation, set to `at`).
pub async fn request_fetch(t: &TestEnv, name: &str, at: &str) {
    let patch = json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": at}}});
    t.api::<GitRepository>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating the GitRepository");
}

impl TestEnv {
    /// Creates the GitRepository `config` on the test's repository, fetched every `interval`.
    pub async fn config_source(&self, interval: &str) -> GitRepository {
        self.create_gitrepo("config", json!({"url": self.repo.url, "interval": interval}))
            .await
    }

    /// Creates Environment `name` applying `path` of the GitRepository `config` every `interval`.
    pub async fn config_env(&self, name: &str, path: &str, interval: &str) -> Environment {
        self.config_env_with(name, path, interval, json!({})).await
    }

    /// Creates Environment `name` applying `path` of the GitRepository `config` at the default interval.
    pub async fn config_env_at(&self, name: &str, path: &str) -> Environment {
        self.create_env(name, json!({"sourceRef": {"name": "config"}, "path": path}))
            .await
    }

    /// As [`TestEnv::config_env`], with the fields of the JSON object `extra` added to the spec.
    pub async fn config_env_with(&self, name: &str, path: &str, interval: &str, extra: Value) -> Environment {
        let mut spec = json!({"sourceRef": {"name": "config"}, "path": path, "interval": interval});
        let fields = spec.as_object_mut().expect("an object");
        for (k, v) in extra.as_object().expect("extra spec fields: a JSON object") {
            fields.insert(k.clone(), v.clone());
        }
        self.create_env(name, spec).await
    }

    /// A Role `role` with `rules` in the test's namespace, bound to its ServiceAccount `account`.
    pub async fn grant_account(&self, role: &str, account: &str, rules: Value) {
        let ns = &self.namespace;
        self.apply_json(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": role, "namespace": ns}, "rules": rules}))
            .await;
        self.apply_json(
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": role, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]}),
        )
        .await;
    }

    /// A ServiceAccount `name` in the test's namespace with a Role (also `name`) allowing every verb on
    /// `resources` of the core and `batch` groups there.
    pub async fn account_with_role(&self, name: &str, resources: &[&str]) {
        self.apply_json(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": self.namespace}}))
            .await;
        self.grant_account(
            name,
            name,
            json!([{"apiGroups": ["", "batch"], "resources": resources, "verbs": ["*"]}]),
        )
        .await;
    }

    /// Applies `ferry-release-manager` from manifests/rbac.yaml, binds it to `user` in the test's namespace and
    /// waits until RBAC (read from an informer) lets the user list Promotions.
    pub async fn grant_release_manager(&self, user: &str) {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/rbac.yaml")).expect("rbac.yaml");
        let role: ClusterRole = serde_yaml_ng::Deserializer::from_str(&text)
            .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
            .find(|v: &Value| v["kind"] == "ClusterRole" && v["metadata"]["name"] == "ferry-release-manager")
            .map(|v| serde_json::from_value(v).expect("ClusterRole"))
            .expect("ferry-release-manager in manifests/rbac.yaml");
        Api::<ClusterRole>::all(self.client.clone())
            .patch(
                "ferry-release-manager",
                &PatchParams::apply("ferry-tests").force(),
                &Patch::Apply(&role),
            )
            .await
            .expect("apply ClusterRole");
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{user}-releases"), "namespace": self.namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ferry-release-manager"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .expect("binding");
        self.api::<RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await
            .expect("RoleBinding");
        let as_user: Api<Promotion> = Api::namespaced(self.client_as(user).await, &self.namespace);
        eventually(&format!("{user} may list Promotions"), || async {
            as_user.list(&ListParams::default()).await.ok().map(|_| ())
        })
        .await;
    }

    /// Creates Environment `production` applying `path` every `interval`, promoted from `staging` once approved.
    pub async fn approved_production(&self, path: &str, interval: &str) -> Environment {
        let promotion = json!({"promotion": {"from": "staging", "requireApproval": true}});
        self.config_env_with("production", path, interval, promotion).await
    }

    /// Waits for an Event `type_`/`reason` about `name` and asserts that one of that reason has a note containing
    /// `needle`; returns every (type, reason, note) for `name`.
    pub async fn assert_event_noted(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        needle: &str,
    ) -> Vec<(String, String, String)> {
        let events = self.wait_event(name, type_, reason).await;
        assert!(
            events.iter().any(|(_, r, n)| r == reason && n.contains(needle)),
            "{events:?}"
        );
        events
    }

    /// The second cluster (see [`second_cluster`]) with a namespace named like the test's, and a Secret `secret`
    /// in the test's namespace whose `value` is a kubeconfig reaching it as its admin; returns a client for it.
    pub async fn second_cluster_secret(&self, secret: &str) -> (kube::Client, &'static ControlPlane) {
        let cp = second_cluster().await;
        let client = namespace_in(cp, &self.namespace).await;
        let kubeconfig = cp.kubeconfig_self_contained().expect("kubeconfig");
        self.create_secret(secret, &[("value", &kubeconfig)]).await;
        (client, cp)
    }

    /// Runs the `ferry` CLI with `args` against the test's control plane (and its kustomize); returns its exit
    /// code, stdout and stderr.
    pub fn ferry_cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FERRY_KUSTOMIZE", self.bin_dir.join("kustomize"))
            .env("RUST_LOG", "error")
            .output()
            .expect("running ferry");
        exit_stdout_stderr(out)
    }

    /// The shared git daemon's repositories served over HTTPS (its own CA) to `alice` with password
    /// `s3cret-pw` only; returns the server and this test repository's URL there.
    pub async fn https_git_server_for_alice(&self) -> (GitHttpServer, String) {
        let auth = HttpAuth::Basic("alice".into(), "s3cret-pw".into());
        let server = GitHttpServer::start(self.git_root.clone(), auth, true).await;
        let url = format!("{}/{}", server.base_url, self.repo.name);
        (server, url)
    }

    /// Render settings with the kustomize and helm of the test's binary directory.
    pub fn render_settings(&self) -> RenderSettings {
        RenderSettings {
            kustomize: self.bin_dir.join("kustomize"),
            helm: self.bin_dir.join("helm"),
            ..RenderSettings::default()
        }
    }

    /// Runs `git args` in the test repository's work tree, failing the test if git fails; returns its stdout,
    /// trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(self.repo.work.path())
            .args(["-c", "user.name=T", "-c", "user.email=t@ferry.dev"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Creates namespace `name` in the control plane `cp`; returns an admin client for `cp`.
pub async fn namespace_in(cp: &ControlPlane, name: &str) -> kube::Client {
    let client = cp.client().await.expect("second cluster client");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace in the second cluster");
    client
}

/// Every file below `from`, as (path relative to it, content).
pub fn files_below(from: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(from).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out
}

/// Writes `files` below a fresh temporary directory; returns it (keep it alive) and its canonical path.
pub fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    for (rel, content) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    (dir, root)
}

/// (name, `round` value) of the ConfigMaps in `api` whose names start with `c`: what a multi-round test applied.
pub async fn config_map_rounds(api: &Api<ConfigMap>) -> Result<Vec<(String, String)>, String> {
    Ok(api
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with('c')))
        .map(|c| {
            let round = c.data.and_then(|d| d.get("round").cloned()).unwrap_or_default();
            (c.metadata.name.unwrap_or_default(), round)
        })
        .collect())
}
