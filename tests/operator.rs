//! `ferry run` as installed: the real binary, authenticated as the install manifests' ServiceAccount (a
//! TokenRequest token, so a rule missing from `manifests/rbac.yaml` fails here), with the Deployment's own args,
//! leader election, metrics and probes. Two replicas: exactly one applies, the standby takes over when the
//! leader is killed, and a stopped leader hands the Lease over at once.

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::json;

/// One `ferry run` replica and its leader-election identity.
struct Replica {
    identity: String,
    run: FerryRun,
}

impl std::ops::Deref for Replica {
    type Target = FerryRun;
    fn deref(&self) -> &FerryRun {
        &self.run
    }
}

impl std::ops::DerefMut for Replica {
    fn deref_mut(&mut self) -> &mut FerryRun {
        &mut self.run
    }
}

async fn start(t: &TestEnv, kubeconfig: &std::path::Path, identity: &str, lease_duration: &str) -> Replica {
    start_with(t, kubeconfig, identity, lease_duration, None).await
}

/// A replica; with `json_log`, it logs at info level as JSON into that file.
async fn start_with(
    t: &TestEnv,
    kubeconfig: &std::path::Path,
    identity: &str,
    lease_duration: &str,
    json_log: Option<&std::path::Path>,
) -> Replica {
    let storage = std::env::temp_dir().join(format!("ferry-{}-{identity}", t.namespace));
    let mut args = deployment_args();
    args.extend(["--namespace", &t.namespace].map(str::to_string));
    args.extend(["--leader-election-namespace", &t.namespace].map(str::to_string));
    args.extend(["--leader-election-identity", identity].map(str::to_string));
    args.extend(["--leader-election-lease-duration", lease_duration].map(str::to_string));
    let run = start_ferry_run(t, kubeconfig, &storage, &args, |cmd| {
        if let Some(path) = json_log {
            let file = std::fs::File::create(path).expect("log file");
            cmd.args(["--log-format", "json"]).env("RUST_LOG", "info").stdout(file);
        }
    });
    let replica = Replica {
        identity: identity.to_string(),
        run,
    };
    eventually("the replica answers /livez", || async {
        get(replica.probes, "/livez")
            .await
            .filter(|(code, _)| *code == 200)
            .map(|_| ())
    })
    .await;
    replica
}

/// `GET http://127.0.0.1:port/path`: (status, body), or `None` while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A metric's value, by the exact series (`name{labels}`) as exposed.
async fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn lease_holder(t: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(t.client.clone(), &t.namespace);
    leases
        .get_opt("ferry-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

/// A ServiceAccount `deployer` allowed to manage ConfigMaps in the test namespace and to read the webhook Secret,
/// a GitRepository reading its Secrets and an Environment applying `apps/` as that account.
async fn tenant(t: &TestEnv, color: &str, repo_interval: &str) -> String {
    let ns = &t.namespace;
    for o in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "deployer", "namespace": ns},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
                         // The GitRepository's webhook token, read as this account.
                         {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hook"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "deployer", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
               "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]}),
    ] {
        t.apply_json(&o).await;
    }
    t.repo.write("apps/app.yaml", &config_map(color));
    let commit = t.repo.commit_and_push("first");
    t.create_secret("hook", &[("token", "hook-secret")]).await;
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "ref": {"branch": "main"}, "interval": repo_interval,
               "webhookSecretRef": {"name": "hook"}, "serviceAccountName": "deployer"}),
    )
    .await;
    t.config_env_with("app", "./apps", "1m", json!({"serviceAccountName": "deployer"}))
        .await;
    commit
}

fn config_map(color: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  color: {color}\n")
}

async fn applied(t: &TestEnv, commit: &str) {
    wait_applied(t, "app", commit).await;
}

/// Every audited request (dry runs included) on ConfigMaps in the test namespace.
fn config_map_requests(t: &TestEnv) -> usize {
    audited_writes(&t.audit_log, &t.namespace)
        .into_iter()
        .filter(|(_, uri, _)| uri.contains("configmaps"))
        .count()
}

/// User agents of the non-dry-run writes to ConfigMaps in the test namespace (each replica names itself).
fn config_map_writers(t: &TestEnv) -> Vec<String> {
    let text = std::fs::read_to_string(&t.audit_log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["objectRef"]["namespace"] == t.namespace.as_str() && e["objectRef"]["resource"] == "configmaps")
        .filter(|e| e["verb"] == "patch" || e["verb"] == "create" || e["verb"] == "update")
        .filter(|e| !e["requestURI"].as_str().unwrap_or_default().contains("dryRun"))
        .filter_map(|e| e["userAgent"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn ferry_run_as_installed_applies_and_reports_metrics_and_probes() {
    let t = TestEnv::without_controller("installed").await;
    let kubeconfig = t.installed_kubeconfig().await;
    // The opt-in role that lets Ferry watch what it applied (cluster-wide, so for this binary's other test too).
    apply_files(&t.client, &["manifests/optional/watch-applied-objects.yaml"]).await;
    let log = kubeconfig.with_file_name("ferry.json.log");
    let replica = start_with(&t, &kubeconfig, "replica-a", "15s", Some(&log)).await;
    let commit = tenant(&t, "blue", "1s").await;
    applied(&t, &commit).await;
    // --log-format json: every line an object; reconcile lines carry the span's namespace, name and revision.
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let revision = format!("main@sha1:{commit}");
    assert!(
        lines.iter().any(|l| l["namespace"] == t.namespace.as_str()
            && l["kind"] == "GitRepository"
            && l["name"] == "config"
            && l["revision"] == revision.as_str()),
        "a reconcile line with namespace, name and revision: {text}"
    );
    assert_eq!(lease_holder(&t).await.as_deref(), Some("replica-a"));
    // With the opt-in role the installed identity watches the ConfigMap: unchanged reconciles ask nothing of it.
    t.reconciled("app", "settle").await;
    let before = config_map_requests(&t);
    for token in ["one", "two"] {
        t.reconciled("app", token).await;
    }
    assert_eq!(
        config_map_requests(&t),
        before,
        "no request about the ConfigMap in the steady state"
    );

    eventually("/readyz once the caches synced", || async {
        get(replica.probes, "/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    let ready = format!(
        r#"ferry_resource_ready{{kind="Environment",namespace="{}",name="app",reason="Succeeded"}}"#,
        t.namespace
    );
    eventually("the Environment's readiness is exported", || async {
        metric(replica.metrics, &ready).await.filter(|v| *v == 1.0)
    })
    .await;
    assert_eq!(metric(replica.metrics, "ferry_leader").await, Some(1.0));
    let reconciles = r#"ferry_reconcile_total{kind="Environment",result="success"}"#;
    let before = metric(replica.metrics, reconciles).await.unwrap_or(0.0);
    assert!(before >= 1.0, "reconciles are counted");
    let created = metric(replica.metrics, r#"ferry_objects_total{action="created"}"#).await;
    assert_eq!(created, Some(1.0), "the ConfigMap's creation is counted");

    // A change moves the counters on.
    t.repo.write("apps/app.yaml", &config_map("green"));
    let second = t.repo.commit_and_push("green");
    applied(&t, &second).await;
    let configured = metric(replica.metrics, r#"ferry_objects_total{action="configured"}"#).await;
    assert_eq!(configured, Some(1.0));
    assert!(metric(replica.metrics, reconciles).await.unwrap_or(0.0) > before);
    assert!(
        metric(replica.metrics, "ferry_git_fetch_duration_seconds_count")
            .await
            .unwrap_or(0.0)
            >= 2.0
    );
}

#[tokio::test]
async fn two_replicas_one_leader_takeover_on_kill_and_handover_on_stop() {
    let t = TestEnv::without_controller("replicas").await;
    let kubeconfig = t.installed_kubeconfig().await;
    let a = start(&t, &kubeconfig, "replica-a", "4s").await;
    let b = start(&t, &kubeconfig, "replica-b", "4s").await;
    let leader_name = eventually("one replica leads", || lease_holder(&t)).await;
    let (mut leader, standby) = if leader_name == a.identity { (a, b) } else { (b, a) };

    // An hour-long interval: a new commit arrives only through the webhook (or a new leader's first fetch).
    let first = tenant(&t, "blue", "1h").await;
    applied(&t, &first).await;
    // Exactly one applies: every ConfigMap write came from the leader.
    let writers = config_map_writers(&t);
    assert!(!writers.is_empty());
    assert!(
        writers.iter().all(|w| w.contains(&leader.identity)),
        "only {} writes: {writers:?}",
        leader.identity
    );
    // The standby serves (ready: its webhook receiver works) but does not lead.
    assert_eq!(get(standby.probes, "/readyz").await.map(|r| r.0), Some(200));
    assert_eq!(metric(standby.metrics, "ferry_leader").await, Some(0.0));
    assert_eq!(metric(leader.metrics, "ferry_leader").await, Some(1.0));

    // The standby's webhook receiver works: a push sent to it reaches the leader, which applies it.
    t.repo.write("apps/app.yaml", &config_map("red"));
    let pushed = t.repo.commit_and_push("red");
    let (status, _) = http_post(
        &format!("http://127.0.0.1:{}/hooks/{}/config", standby.webhook, t.namespace),
        &[("Authorization", "Bearer hook-secret")],
        b"{}",
    )
    .await;
    assert_eq!(status, 202, "the standby accepts the push");
    applied(&t, &pushed).await;

    // SIGKILL the leader right after a push: the standby takes over once the lease ran out, and finishes.
    t.repo.write("apps/app.yaml", &config_map("green"));
    let second = t.repo.commit_and_push("green");
    leader.kill(); // SIGKILL
    let writes_before = config_map_writers(&t).len();
    eventually("the standby takes the lease", || async {
        (lease_holder(&t).await.as_deref() == Some(standby.identity.as_str())).then_some(())
    })
    .await;
    applied(&t, &second).await;
    let cm = t.api::<ConfigMap>().get("app").await.expect("ConfigMap");
    assert_eq!(
        cm.data.unwrap_or_default().get("color").map(String::as_str),
        Some("green")
    );
    let after: Vec<String> = config_map_writers(&t).into_iter().skip(writes_before).collect();
    assert!(
        after.iter().all(|w| w.contains(&standby.identity)),
        "after the kill only {} writes: {after:?}",
        standby.identity
    );
    assert_eq!(metric(standby.metrics, "ferry_leader").await, Some(1.0));

    // SIGTERM hands the lease over at once: the holder is cleared, not left to expire.
    let pid = i32::try_from(standby.child.id()).expect("pid");
    // SAFETY: signalling a child process this test started and still owns.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    eventually("the stopped leader releases the lease", || async {
        let leases: Api<Lease> = Api::namespaced(t.client.clone(), &t.namespace);
        let lease = leases.get("ferry-leader").await.ok()?;
        let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        holder.is_empty().then_some(())
    })
    .await;
}
