//! Tenancy on a real API server with RBAC: the controller runs as the install manifests' `ferry` ServiceAccount
//! (only the rights `manifests/rbac.yaml` gives it), locked down as the manifests run it, and every request made
//! for an Environment goes through the Environment's own ServiceAccount. Each attack a tenant could try through
//! Ferry fails here as it would with kubectl and that account's token.

mod common;

use common::*;
use ferry::api::{Environment, GitRepository};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  color: blue\n";

/// A Role allowing `get` on exactly the Secrets `names`, bound to ServiceAccount `account`: what a tenant grants
/// for Ferry to use those Secrets as the account.
async fn grant_secrets(t: &TestEnv, account: &str, names: &[&str]) {
    let rules = json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}]);
    t.grant_account(&format!("{account}-secrets"), account, rules).await;
}

async fn repo_ready_with(t: &TestEnv, name: &str, status: &str, reason: &str) -> String {
    let repo = wait_for(&t.api::<GitRepository>(), name, |r: &GitRepository| {
        repo_ready(r).is_some_and(|(s, r, _)| s == status && r == reason)
    })
    .await;
    repo_ready(&repo).map(|(_, _, m)| m).unwrap_or_default()
}

async fn setup(t: &TestEnv, env_spec: serde_json::Value) -> String {
    let commit = t.repo.commit_and_push("tenant config");
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "ref": {"branch": "main"}, "interval": "2s"}),
    )
    .await;
    let mut spec = json!({"sourceRef": {"name": "config"}, "path": "./apps", "interval": "2s", "maxPrunePercent": 100});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), env_spec.as_object()) {
        spec.extend(extra.clone());
    }
    t.create_env("tenant", spec).await;
    commit
}

async fn ready_with(t: &TestEnv, status: &str, reason: &str) -> (Environment, String) {
    let env = wait_for(&t.api::<Environment>(), "tenant", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == status && r == reason)
    })
    .await;
    let message = env_ready(&env).map(|(_, _, m)| m).unwrap_or_default();
    (env, message)
}

/// Audit events in `namespace` of `resource` writes (not dry runs): (authenticated user, impersonated user).
fn writers(t: &TestEnv, namespace: &str, resource: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(&t.audit_log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["objectRef"]["namespace"] == namespace && e["objectRef"]["resource"] == resource)
        .filter(|e| !e["requestURI"].as_str().unwrap_or_default().contains("dryRun"))
        .map(|e| {
            (
                e["user"]["username"].as_str().unwrap_or_default().to_string(),
                e["impersonatedUser"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_tenant_applies_in_its_own_namespace_as_its_service_account() {
    let t = TestEnv::installed("tenant-ok", |_| {}).await;
    t.account_with_role("deployer", &["configmaps", "jobs"]).await;
    t.repo.write("apps/app.yaml", CM);
    setup(
        &t,
        json!({"serviceAccountName": "deployer",
               "verification": {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "check", "image": "busybox"}]}}}}}}),
    )
    .await;
    ready_with(&t, "True", "Succeeded").await;
    let cm = t.api::<ConfigMap>().get("app").await.expect("applied");
    assert_eq!(
        cm.data.unwrap_or_default().get("color").map(String::as_str),
        Some("blue")
    );

    // Every write was Ferry's ServiceAccount acting as the tenant's: the ConfigMap and the verification Job.
    let account = format!("system:serviceaccount:{}:deployer", t.namespace);
    let ferry = "system:serviceaccount:ferry-system:ferry".to_string();
    let cm_writes = writers(&t, &t.namespace, "configmaps");
    assert!(!cm_writes.is_empty());
    assert!(
        cm_writes.iter().all(|w| *w == (ferry.clone(), account.clone())),
        "{cm_writes:?}"
    );
    let job_writes = eventually("the verification Job is created", || async {
        let w = writers(&t, &t.namespace, "jobs");
        (!w.is_empty()).then_some(w)
    })
    .await;
    assert!(
        job_writes.iter().all(|w| *w == (ferry.clone(), account.clone())),
        "{job_writes:?}"
    );
}

#[tokio::test]
async fn what_the_account_may_not_do_is_forbidden_and_nothing_is_applied() {
    let t = TestEnv::installed("tenant-escape", |_| {}).await;
    t.account_with_role("deployer", &["configmaps"]).await;
    // Another team's namespace, with an object the tenant would like to take over (and later prune).
    let victim_ns = format!("{}-victim", t.namespace);
    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": victim_ns}})).expect("ns"),
        )
        .await
        .expect("victim namespace");
    let victims: Api<ConfigMap> = Api::namespaced(t.client.clone(), &victim_ns);
    victims
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"owner": "team-b"}}))
                .expect("cm"),
        )
        .await
        .expect("victim ConfigMap");

    t.repo.write("apps/app.yaml", CM);
    t.repo.write(
        "apps/escalate.yaml",
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {ns}-escalate\n\
             roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
             subjects:\n- kind: ServiceAccount\n  name: deployer\n  namespace: {ns}\n",
            ns = t.namespace
        ),
    );
    t.repo.write(
        "apps/takeover.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {victim_ns}\ndata:\n  owner: team-a\n"
        ),
    );
    t.repo.write(
        "apps/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: x\n",
    );
    setup(&t, json!({"serviceAccountName": "deployer"})).await;

    let (_, message) = ready_with(&t, "False", "Forbidden").await;
    for named in ["ClusterRoleBinding", "clusterrolebindings", "settings", "secrets"] {
        assert!(message.contains(named), "{named} in: {message}");
    }
    let account = format!("system:serviceaccount:{}:deployer", t.namespace);
    assert!(
        message.contains(&account),
        "the refusal names the tenant's account: {message}"
    );
    t.wait_event("tenant", "Warning", "Forbidden").await;
    // Nothing of the revision was applied: not even the ConfigMap the account may write.
    assert!(t.api::<ConfigMap>().get_opt("app").await.expect("get").is_none());
    assert!(t.api::<Secret>().get_opt("creds").await.expect("get").is_none());
    let crbs: Api<ClusterRoleBinding> = Api::all(t.client.clone());
    assert!(
        crbs.get_opt(&format!("{}-escalate", t.namespace))
            .await
            .expect("get")
            .is_none()
    );
    let victim = victims.get("settings").await.expect("victim stays");
    assert_eq!(
        victim.data.unwrap_or_default().get("owner").map(String::as_str),
        Some("team-b")
    );
    assert!(victim.metadata.labels.unwrap_or_default().is_empty(), "not adopted");
}

#[tokio::test]
async fn prune_never_deletes_what_the_account_cannot() {
    let t = TestEnv::installed("tenant-prune", |_| {}).await;
    t.account_with_role("deployer", &["configmaps", "secrets"]).await;
    t.repo.write("apps/app.yaml", CM);
    t.repo.write(
        "apps/old.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old\ndata: {a: b}\n",
    );
    t.repo.write(
        "apps/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: x\n",
    );
    setup(&t, json!({"serviceAccountName": "deployer"})).await;
    ready_with(&t, "True", "Succeeded").await;

    // The team loses the right to Secrets, then removes the Secret and a ConfigMap from Git.
    t.apply_json(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "deployer", "namespace": t.namespace},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}))
        .await;
    let _ = t.api::<Role>().get("deployer").await.expect("role");
    t.repo.remove("apps/secret.yaml");
    t.repo.remove("apps/old.yaml");
    t.repo.commit_and_push("drop the secret and old");

    let (_, message) = ready_with(&t, "False", "Forbidden").await;
    assert!(message.contains("secrets") && message.contains("creds"), "{message}");
    assert!(
        t.api::<Secret>().get_opt("creds").await.expect("get").is_some(),
        "the Secret stays"
    );
    // The other stale object was still pruned: one refusal does not stop the rest.
    eventually("the ConfigMap the account may delete is pruned", || async {
        t.api::<ConfigMap>()
            .get_opt("old")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_environment_naming_no_account_applies_as_the_default_one() {
    let t = TestEnv::installed("tenant-default", |_| {}).await;
    t.repo.write("apps/app.yaml", CM);
    setup(&t, json!({})).await;
    // A fresh install is locked down: the namespace's `default` account may do nothing.
    let (_, message) = ready_with(&t, "False", "Forbidden").await;
    assert!(
        message.contains(&format!("system:serviceaccount:{}:default", t.namespace)),
        "{message}"
    );
    assert!(t.api::<ConfigMap>().get_opt("app").await.expect("get").is_none());

    // Granting the default account the right is all it takes; the Environment retries by itself.
    t.grant_account(
        "apply",
        "default",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
    )
    .await;
    ready_with(&t, "True", "Succeeded").await;
    assert!(t.api::<ConfigMap>().get_opt("app").await.expect("get").is_some());
}

#[tokio::test]
async fn cross_namespace_references_are_refused() {
    let t = TestEnv::installed("tenant-xns", |_| {}).await;
    t.repo.write("apps/app.yaml", CM);
    t.repo.commit_and_push("config");
    t.create_env(
        "tenant",
        json!({"sourceRef": {"name": "private", "namespace": "team-b"}, "path": "./apps", "interval": "1h"}),
    )
    .await;
    let (env, message) = ready_with(&t, "False", "CrossNamespaceRef").await;
    assert!(message.contains("team-b/private"), "{message}");
    let stalled = env
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
        .map(|c| c.status.clone());
    assert_eq!(stalled.as_deref(), Some("True"));

    // Promotion never crosses namespaces, whatever the flags.
    t.config_env_with(
        "production",
        "./apps",
        "1h",
        json!({"promotion": {"from": "team-b/staging"}}),
    )
    .await;
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "ref": {"branch": "main"}, "interval": "1h"}),
    )
    .await;
    let env = wait_for(&t.api::<Environment>(), "production", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == "CrossNamespaceRef")
    })
    .await;
    let message = env_ready(&env).map(|(_, _, m)| m).unwrap_or_default();
    assert!(message.contains("team-b"), "{message}");
}

/// A kubeconfig Secret that turns TLS verification off is refused unless Ferry runs with
/// `--allow-insecure-kubeconfig`; with it, the same Secret works.
#[tokio::test]
async fn insecure_kubeconfigs_are_refused_unless_allowed() {
    let insecure = |kubeconfig: String| -> String {
        kubeconfig
            .lines()
            .map(|l| match l.trim_start().strip_prefix("certificate-authority-data: ") {
                Some(_) => "    insecure-skip-tls-verify: true".to_string(),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for allowed in [false, true] {
        let t = TestEnv::installed("tenant-tls", |s| s.allow_insecure_kubeconfig = allowed).await;
        let kubeconfig = insecure(t.kubeconfig_self_contained());
        assert!(kubeconfig.contains("insecure-skip-tls-verify: true"));
        t.create_secret("remote", &[("value", &kubeconfig)]).await;
        // The kubeconfig Secret is read as the Environment's (default) account.
        grant_secrets(&t, "default", &["remote"]).await;
        t.repo.write("apps/app.yaml", CM);
        setup(
            &t,
            json!({"kubeConfig": {"secretRef": {"name": "remote"}}, "targetNamespace": t.namespace}),
        )
        .await;
        if allowed {
            ready_with(&t, "True", "Succeeded").await;
        } else {
            let (_, message) = ready_with(&t, "False", "InvalidKubeConfig").await;
            assert!(message.contains("insecure-skip-tls-verify"), "{message}");
            assert!(t.api::<ConfigMap>().get_opt("app").await.expect("get").is_none());
        }
    }
}

#[tokio::test]
async fn a_tenants_chart_renders_with_its_own_clusters_capabilities_as_its_service_account() {
    let t = TestEnv::installed("tenant-chart", |_| {}).await;
    t.account_with_role("deployer", &["configmaps"]).await;
    t.repo
        .write("apps/Chart.yaml", "apiVersion: v2\nname: tenant\nversion: 0.1.0\n");
    t.repo.write(
        "apps/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n  color: {{ .Values.color }}\n",
    );
    setup(
        &t,
        json!({"serviceAccountName": "deployer", "helm": {"values": {"color": "green"}}}),
    )
    .await;
    ready_with(&t, "True", "Succeeded").await;
    let data = t.api::<ConfigMap>().get("app").await.expect("applied").data.unwrap();
    assert_eq!(data["color"], "green");
    // Discovery as the tenant's account (the locked-down controller impersonates it) found the real version.
    let version = t.client.apiserver_version().await.unwrap().git_version;
    assert_eq!(data["kube"], version);
}

/// A GitRepository's credentials are read as its ServiceAccount (its own, or the default one): naming a Secret
/// the account may not read is Forbidden, naming the Secret and the account, and the Git host never sees a
/// request, let alone the credentials. The webhook token is read the same way. A Role granting `get` on the
/// Secrets is all it takes.
#[tokio::test]
async fn a_gitrepository_uses_only_the_secrets_its_service_account_may_read() {
    let t = TestEnv::installed("tenant-gitcreds", |_| {}).await;
    let ns = t.namespace.clone();
    t.account_with_role("fetcher", &["configmaps"]).await;
    t.repo.write("apps/app.yaml", CM);
    let commit = t.repo.commit_and_push("private config");
    let (server, url) = t.https_git_server_for_alice().await;
    let ca = server.ca_pem.clone().expect("ca");
    t.create_secret(
        "git",
        &[("username", "alice"), ("password", "s3cret-pw"), ("ca.crt", &ca)],
    )
    .await;
    t.create_secret("hook", &[("token", "hook-secret")]).await;
    t.create_gitrepo(
        "private",
        json!({"url": url, "interval": "2s", "serviceAccountName": "fetcher",
               "secretRef": {"name": "git"}, "webhookSecretRef": {"name": "hook"}}),
    )
    .await;
    t.create_gitrepo(
        "by-default",
        json!({"url": url, "interval": "2s", "secretRef": {"name": "git"}}),
    )
    .await;

    let message = repo_ready_with(&t, "private", "False", "Forbidden").await;
    assert!(message.contains(&format!("{ns}/git")), "names the Secret: {message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{ns}:fetcher")),
        "names the account: {message}"
    );
    let message = repo_ready_with(&t, "by-default", "False", "Forbidden").await;
    assert!(
        message.contains(&format!("{ns}/git")) && message.contains(&format!("system:serviceaccount:{ns}:default")),
        "the default account reads for a repository naming none: {message}"
    );
    t.wait_event("private", "Warning", "Forbidden").await;
    // The webhook token is the account's to read too: refused like any unverified call.
    let hook = format!("{}/hooks/{ns}/private", t.webhook_base);
    let (code, _) = http_post(&hook, &[("Authorization", "Bearer hook-secret")], b"{}").await;
    assert_eq!(code, ferry::receiver::REFUSED_STATUS.as_u16());
    // Several reconciles later, the Git host has still seen nothing: no fetch, so no credentials.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // The tenant grants its account the Secrets: the repository fetches, as retried at its interval.
    grant_secrets(&t, "fetcher", &["git", "hook"]).await;
    repo_ready_with(&t, "private", "True", "Succeeded").await;
    let repo = t.api::<GitRepository>().get("private").await.expect("get");
    let revision = repo.status.and_then(|s| s.artifact).map(|a| a.revision);
    assert_eq!(revision, Some(format!("main@sha1:{commit}")));
    assert!(server.fetches(&t.repo.name) > 0, "{:?}", server.requests());
    let (code, body) = http_post(&hook, &[("Authorization", "Bearer hook-secret")], b"{}").await;
    assert_eq!(code, 202, "{body}");
    // The grant was the fetcher's only: the repository on the default account stays refused.
    let message = repo_ready_with(&t, "by-default", "False", "Forbidden").await;
    assert!(message.contains(&format!("{ns}/git")), "{message}");
}

/// An Environment's age keys are read as its ServiceAccount: a key Secret the account may not read stops the
/// sync (Forbidden, naming the Secret and the account) before anything is applied, and what was applied before
/// stays as it was.
#[tokio::test]
async fn a_decryption_secret_the_account_may_not_read_is_forbidden_and_nothing_is_applied() {
    let t = TestEnv::installed("tenant-sops", |_| {}).await;
    let ns = t.namespace.clone();
    t.account_with_role("deployer", &["configmaps"]).await;
    t.create_secret("sops-age", &[("identity.agekey", "AGE-SECRET-KEY-1NOTAREALKEY")])
        .await;
    t.repo.write("apps/app.yaml", CM);
    setup(
        &t,
        json!({"serviceAccountName": "deployer",
               "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}}),
    )
    .await;
    // Nothing encrypted yet: the key is not needed, and the revision applies.
    ready_with(&t, "True", "Succeeded").await;

    // A revision with an encrypted document (its key is read before anything is decrypted) and a change.
    t.repo.write("apps/app.yaml", &CM.replace("blue", "green"));
    t.repo.write(
        "apps/secret.enc.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]\n\
         sops:\n  mac: ENC[AES256_GCM,data:AAAA,iv:AAAA,tag:AAAA,type:str]\n  version: 3.9.0\n",
    );
    t.repo.commit_and_push("an encrypted secret");
    let (_, message) = ready_with(&t, "False", "Forbidden").await;
    assert!(
        message.contains(&format!("{ns}/sops-age")),
        "names the Secret: {message}"
    );
    assert!(
        message.contains(&format!("system:serviceaccount:{ns}:deployer")),
        "names the account: {message}"
    );
    t.wait_event("tenant", "Warning", "Forbidden").await;
    let cm = t.api::<ConfigMap>().get("app").await.expect("still there");
    assert_eq!(
        cm.data.unwrap_or_default().get("color").map(String::as_str),
        Some("blue"),
        "nothing of the refused revision is applied"
    );
    assert!(t.api::<Secret>().get_opt("db").await.expect("get").is_none());
}

/// A kubeconfig Secret is read as the Environment's ServiceAccount: one it may not read takes the Environment
/// nowhere (Forbidden, naming the Secret and the account).
#[tokio::test]
async fn a_kubeconfig_secret_the_account_may_not_read_is_forbidden() {
    let t = TestEnv::installed("tenant-kubeconfig", |_| {}).await;
    let ns = t.namespace.clone();
    t.create_secret("remote", &[("value", &t.kubeconfig_self_contained())])
        .await;
    t.repo.write("apps/app.yaml", CM);
    setup(
        &t,
        json!({"kubeConfig": {"secretRef": {"name": "remote"}}, "targetNamespace": ns}),
    )
    .await;
    let (_, message) = ready_with(&t, "False", "Forbidden").await;
    assert!(message.contains(&format!("{ns}/remote")), "names the Secret: {message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{ns}:default")),
        "names the account: {message}"
    );
    t.wait_event("tenant", "Warning", "Forbidden").await;
    assert!(t.api::<ConfigMap>().get_opt("app").await.expect("get").is_none());

    // Granted: the kubeconfig's identity applies in its cluster.
    grant_secrets(&t, "default", &["remote"]).await;
    ready_with(&t, "True", "Succeeded").await;
    assert!(t.api::<ConfigMap>().get_opt("app").await.expect("get").is_some());
}
