//! The `ferry` binary and its library functions against a real apiserver: render and diff, reconcile,
//! suspend/resume, events, tree, version and completion.

mod common;

use std::process::Command;

use common::*;
use ferry::api::{Environment, GitRepository, Promotion, PromotionPhase};
use ferry::cli::{CliError, Progress};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn render_prints_exactly_what_kustomize_build_prints() {
    let t = TestEnv::new("cli-render").await;
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config-repo");
    let (code, stdout, stderr) = t.ferry_cli(&["render", repo, "--path", "production"]);
    assert_eq!(code, 0, "{stderr}");
    let kustomize = Command::new(t.bin_dir.join("kustomize"))
        .args(["build", &format!("{repo}/production")])
        .output()
        .unwrap();
    assert_eq!(stdout.as_bytes(), kustomize.stdout.as_slice());
}

/// As the image runs it: no `--kustomize`/`--helm`, the binaries on `PATH` (the renderers' own PATH is empty).
#[tokio::test]
async fn render_finds_kustomize_and_helm_on_path_by_default() {
    let t = TestEnv::new("cli-render-path").await;
    let path = format!("{}:{}", t.bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for dir_path in [
        "examples/config-repo --path production",
        ". --path examples/chart/podinfo",
    ] {
        let (dir, rest) = dir_path.split_once(' ').unwrap();
        let mut args = vec!["render", dir];
        args.extend(rest.split(' '));
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("FERRY_KUSTOMIZE")
            .env_remove("FERRY_HELM")
            .env("PATH", &path)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{dir_path}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("kind: Deployment"),
            "{dir_path}"
        );
    }
}

#[tokio::test]
async fn diff_shows_drift_of_an_environment_and_of_a_local_checkout() {
    let mut t = TestEnv::new("cli-diff").await;
    t.repo.write(
        "apps/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata:\n  color: blue\n  size: large\n",
    );
    let commit = t.repo.commit_and_push("one");
    t.config_source("1h").await;
    t.config_env("env", "apps", "1h").await;
    wait_applied_revision(&t, "env", &commit).await;
    let env_arg = format!("{}/env", t.namespace);
    let (code, stdout, stderr) = t.ferry_cli(&["diff", "--environment", &env_arg]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, ""),
        "in sync: no output, exit 0 ({stderr})"
    );

    // A hand edit, with no controller left to revert it (a verification poll or the sync after the verdict
    // would, well before the hour-long interval).
    t.stop_controller();
    t.api::<ConfigMap>()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"color": "hacked"}})),
        )
        .await
        .unwrap();
    let (code, stdout, stderr) = t.ferry_cli(&["diff", "--environment", &env_arg]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("-  color: hacked") && stdout.contains("+  color: blue"),
        "{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "no colors when not a terminal");

    // The same from a local checkout, plus an object that would be created.
    let work = t.repo.work.path().to_str().unwrap().to_string();
    t.repo.write(
        "apps/new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: brand-new}\n",
    );
    let (code, stdout, stderr) = t.ferry_cli(&["diff", &work, "--path", "apps", "--namespace", &t.namespace]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.contains("+  color: blue") && stdout.contains("desired/v1/ConfigMap") && stdout.contains("brand-new"),
        "{stdout}"
    );

    let (code, _, stderr) = t.ferry_cli(&["diff", "--environment", "nope/nothing"]);
    assert_eq!(code, 2, "errors exit 2: {stderr}");
    let cm = t.api::<ConfigMap>().get("app").await.unwrap();
    assert_eq!(cm.data.unwrap()["color"], "hacked", "diff changes nothing");
}

/// The binary, run without blocking the runtime the test's controller runs on (it must act while `ferry`
/// waits).
async fn ferry_async(t: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", &t.kubeconfig)
        .env("FERRY_KUSTOMIZE", t.bin_dir.join("kustomize"))
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    exit_stdout_stderr(out)
}

const WAIT: Option<Duration> = Some(Duration::from_secs(60));

#[tokio::test]
async fn reconcile_with_source_applies_a_new_commit_without_waiting_for_the_intervals() {
    let t = TestEnv::new("cli-reconcile").await;
    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "one")]));
    let first = t.repo.commit_and_push("one");
    // Hour-long intervals: anything that happens within the test happens because it was asked for.
    t.config_source("1h").await;
    t.config_env("env", "apps", "1h").await;
    wait_applied(&t, "env", &first).await;

    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "two")]));
    let second = t.repo.commit_and_push("two");
    let (code, stdout, stderr) = ferry_async(
        &t,
        &[
            "reconcile",
            "environment",
            "env",
            "--with-source",
            "--wait",
            "--timeout",
            "60s",
            "-n",
            &t.namespace,
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let want = format!("main@sha1:{second}");
    assert_eq!(
        stdout,
        format!(
            "✔ GitRepository {ns}/config reconciled: {want}\n✔ Environment {ns}/env reconciled: {want}\n",
            ns = t.namespace
        )
    );
    assert_eq!(stderr, "", "no progress output when stderr is not a terminal");
    // When `--wait` returned, the new commit was already in the cluster.
    assert_eq!(
        config_map_value(&t.client, &t.namespace, "app", "value")
            .await
            .as_deref(),
        Some("two")
    );
    let env = t.api::<Environment>().get("env").await.unwrap();
    let requested = env.metadata.annotations.unwrap_or_default()["ferry.dev/reconcile-requested-at"].clone();
    assert_eq!(
        env.status.and_then(|s| s.last_handled_reconcile_at),
        Some(requested),
        "the Environment acknowledges the request"
    );

    // Without --wait: requested, and handled soon after.
    let (code, stdout, stderr) = ferry_async(&t, &["reconcile", "gitrepo", "config", "-n", &t.namespace]).await;
    assert_eq!(
        (code, stdout.as_str()),
        (
            0,
            format!("► GitRepository {}/config reconcile requested\n", t.namespace).as_str()
        ),
        "{stderr}"
    );
    let repo = t.api::<GitRepository>().get("config").await.unwrap();
    let token = repo.metadata.annotations.unwrap_or_default()["ferry.dev/reconcile-requested-at"].clone();
    wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        r.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(token.as_str())
    })
    .await;

    let (code, _, stderr) = ferry_async(&t, &["reconcile", "env", "nothing", "-n", &t.namespace]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("Environment nothing not found"), "{stderr}");
}

#[tokio::test]
async fn a_reconcile_that_fails_is_reported_not_waited_out() {
    let t = TestEnv::new("cli-reconcile-fail").await;
    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "one")]));
    t.repo.commit_and_push("one");
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "interval": "1h", "secretRef": {"name": "missing"}}),
    )
    .await;
    wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        repo_ready(r).is_some_and(|(status, _, _)| status == "False")
    })
    .await;
    let started = std::time::Instant::now();
    let result = ferry::cli::reconcile_gitrepository(
        &t.client,
        &t.namespace,
        "config",
        Some(Duration::from_secs(30)),
        &mut Progress::quiet(),
    )
    .await;
    assert!(
        matches!(&result, Err(CliError::Failed(m)) if m.contains("Secret") && m.contains("not found")),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "answered, not timed out");
}

#[tokio::test]
async fn a_suspended_environment_applies_no_new_commit_until_resumed() {
    let t = TestEnv::new("cli-suspend").await;
    t.repo.write("held/cm.yaml", &config_map("held", &[("value", "one")]));
    t.repo
        .write("follower/cm.yaml", &config_map("follower", &[("value", "one")]));
    let first = t.repo.commit_and_push("one");
    t.config_source("1h").await;
    t.config_env("held", "held", "1h").await;
    // A witness on the same repository: when it has applied the new commit, so would `held` have.
    t.config_env("follower", "follower", "1h").await;
    wait_applied(&t, "held", &first).await;
    wait_applied(&t, "follower", &first).await;

    ferry::cli::set_suspended::<Environment>(&t.client, &t.namespace, "held", true)
        .await
        .unwrap();
    let held = t.api::<Environment>().get("held").await.unwrap();
    assert!(held.spec.suspend, "spec.suspend flipped");
    let refused = ferry::cli::request_reconcile::<Environment>(&t.client, &t.namespace, "held").await;
    assert!(
        matches!(&refused, Err(CliError::Refused(m)) if m.contains("suspended")),
        "{refused:?}"
    );

    t.repo.write("held/cm.yaml", &config_map("held", &[("value", "two")]));
    t.repo
        .write("follower/cm.yaml", &config_map("follower", &[("value", "two")]));
    let second = t.repo.commit_and_push("two");
    let done = ferry::cli::reconcile_gitrepository(&t.client, &t.namespace, "config", WAIT, &mut Progress::quiet())
        .await
        .unwrap();
    assert_eq!(
        done[0].revision.as_deref(),
        Some(format!("main@sha1:{second}").as_str())
    );
    wait_applied(&t, "follower", &second).await;
    let held = t.api::<Environment>().get("held").await.unwrap();
    assert_eq!(
        held.status.and_then(|s| s.last_applied_revision),
        Some(format!("main@sha1:{first}")),
        "suspended: still at the first commit"
    );
    assert_eq!(
        config_map_value(&t.client, &t.namespace, "held", "value")
            .await
            .as_deref(),
        Some("one")
    );

    let (code, stdout, stderr) = ferry_async(
        &t,
        &[
            "resume",
            "environment",
            "held",
            "--wait",
            "--timeout",
            "60s",
            "-n",
            &t.namespace,
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "✔ Environment {}/held resumed and reconciled: main@sha1:{second}\n",
            t.namespace
        )
    );
    assert!(!t.api::<Environment>().get("held").await.unwrap().spec.suspend);
    assert_eq!(
        config_map_value(&t.client, &t.namespace, "held", "value")
            .await
            .as_deref(),
        Some("two")
    );

    // GitRepositories suspend too.
    let (code, stdout, _) = ferry_async(&t, &["suspend", "gitrepository", "config", "-n", &t.namespace]).await;
    assert_eq!(
        (code, stdout),
        (0, format!("► GitRepository {}/config suspended\n", t.namespace))
    );
    assert!(t.api::<GitRepository>().get("config").await.unwrap().spec.suspend);
}

#[tokio::test]
async fn events_lists_what_the_controller_emitted_about_ferry_objects_oldest_first() {
    let t = TestEnv::new("cli-events").await;
    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "one")]));
    let first = t.repo.commit_and_push("one");
    t.config_source("1h").await;
    t.config_env("env", "apps", "1h").await;
    wait_applied(&t, "env", &first).await;
    t.wait_event("env", "Normal", "Applied").await;
    // An Event about something that is not Ferry's, with the same name: not shown.
    let foreign: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "env.foreign"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "test", "reportingInstance": "test", "action": "Test",
        "type": "Normal", "reason": "Foreign", "note": "not ferry's",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "env", "namespace": t.namespace},
    }))
    .unwrap();
    t.api::<k8s_openapi::api::events::v1::Event>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let all = ferry::cli::events(&t.client, &t.namespace, None).await.unwrap();
    let new_revision = all
        .iter()
        .position(|r| r.object == "GitRepository/config" && r.reason == "NewRevision")
        .expect("the GitRepository's NewRevision event");
    let applied = all
        .iter()
        .position(|r| r.object == "Environment/env" && r.reason == "Applied")
        .expect("the Environment's Applied event");
    assert!(all.iter().all(|r| r.reason != "Foreign"), "{all:?}");
    assert!(all.windows(2).all(|w| w[0].time <= w[1].time), "oldest first: {all:?}");
    assert!(all[applied].message.contains(&first), "{all:?}");
    assert!(new_revision != applied);

    let (code, stdout, stderr) = ferry_async(&t, &["events", "env", "-n", &t.namespace]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("LAST SEEN"), "{stdout}");
    assert!(
        stdout.contains("Applied") && stdout.contains("Environment/env"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("GitRepository/config"),
        "only the named object: {stdout}"
    );
}

#[tokio::test]
async fn tree_shows_the_inventory_grouped_with_each_object_s_health() {
    let mut t = TestEnv::new("cli-tree").await;
    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "one")]));
    t.repo.write("apps/gone.yaml", &config_map("gone", &[("value", "one")]));
    t.repo.write(
        "apps/web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  \
         template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n",
    );
    let first = t.repo.commit_and_push("one");
    t.config_source("1h").await;
    t.config_env("env", "apps", "1h").await;
    wait_applied(&t, "env", &first).await;
    // Deleted by hand, with no controller to put it back (its verification polls would).
    t.stop_controller();
    t.api::<ConfigMap>().delete("gone", &Default::default()).await.unwrap();

    let config = t_config(&t).await;
    let text = ferry::cli::tree(&t.client, &config, &t.namespace, "env").await.unwrap();
    let short = &first[..12];
    let want = format!(
        "Environment/{ns}/env  main@sha1:{short}  Ready=True\n\
         └── {ns}\n\
         \x20   ├── ConfigMap\n\
         \x20   │   ├── app   Current\n\
         \x20   │   └── gone  NotFound\n\
         \x20   └── Deployment\n\
         \x20       └── web  InProgress: ",
        ns = t.namespace
    );
    assert!(text.starts_with(&want), "{text}\nwanted it to start with\n{want}");

    let (code, stdout, stderr) = ferry_async(&t, &["tree", "env", "env", "-n", &t.namespace]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&want), "{stdout}");
}

#[tokio::test]
async fn diff_of_a_promoted_environment_shows_what_it_would_apply_not_the_repository_head() {
    let t = TestEnv::new("cli-diff-promoted").await;
    t.repo
        .write("staging/cm.yaml", &config_map("staging", &[("value", "one")]));
    t.repo
        .write("production/cm.yaml", &config_map("production", &[("value", "one")]));
    let first = t.repo.commit_and_push("one");
    t.config_source("1h").await;
    t.config_env("staging", "staging", "1h").await;
    t.approved_production("production", "1h").await;
    let waiting = |commit: String| {
        let want = format!("main@sha1:{commit}");
        move |e: &Environment| {
            e.status
                .as_ref()
                .and_then(|s| s.promotion.as_ref())
                .is_some_and(|p| p.revision == want && p.phase == PromotionPhase::WaitingApproval)
        }
    };
    let production = wait_for(&t.api::<Environment>(), "production", waiting(first.clone())).await;
    let promotion = production.status.and_then(|s| s.promotion).unwrap().name;
    ferry::cli::approve(&t.client, &t.namespace, &promotion, None)
        .await
        .unwrap();
    wait_applied(&t, "production", &first).await;

    // Staging moves on; production's promotion of the new commit waits for an approval nobody gives.
    t.repo
        .write("staging/cm.yaml", &config_map("staging", &[("value", "two")]));
    t.repo
        .write("production/cm.yaml", &config_map("production", &[("value", "two")]));
    let second = t.repo.commit_and_push("two");
    ferry::cli::reconcile_gitrepository(&t.client, &t.namespace, "config", WAIT, &mut Progress::quiet())
        .await
        .unwrap();
    wait_for(&t.api::<Environment>(), "production", waiting(second.clone())).await;
    let _: Promotion = t
        .api::<Promotion>()
        .get(&format!("production-{}", &second[..12]))
        .await
        .unwrap();

    let config = t_config(&t).await;
    let settings = render_settings(&t);
    let (revision, diffs) =
        ferry::cli::diff_environment(t.client.clone(), &config, &t.namespace, "production", &settings)
            .await
            .unwrap();
    assert_eq!(
        revision,
        format!("main@sha1:{first}"),
        "what the controller keeps applying"
    );
    assert!(diffs.is_empty(), "production runs what it would apply: {diffs:?}");
    let (revision, diffs) = ferry::cli::diff_environment(t.client.clone(), &config, &t.namespace, "staging", &settings)
        .await
        .unwrap();
    assert_eq!((revision, diffs.len()), (format!("main@sha1:{second}"), 0));
}

#[tokio::test]
async fn diff_fetches_with_the_url_and_credentials_the_controller_uses() {
    let mut t = TestEnv::new("cli-diff-auth").await;
    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "one")]));
    let first = t.repo.commit_and_push("one");
    let (server, url) = t.https_git_server_for_alice().await;
    let ca = server.ca_pem.clone().unwrap();
    // The password is in the URL (status only ever shows it redacted); the Secret holds the CA.
    let url = url.replacen("https://", "https://alice:s3cret-pw@", 1);
    t.create_secret("git", &[("ca.crt", &ca)]).await;
    t.create_gitrepo(
        "config",
        json!({"url": url, "interval": "1h", "secretRef": {"name": "git"}}),
    )
    .await;
    t.config_env("env", "apps", "1h").await;
    wait_applied(&t, "env", &first).await;
    let repo = t.api::<GitRepository>().get("config").await.unwrap();
    assert!(!repo.status.unwrap().artifact.unwrap().url.contains("s3cret"));

    // A hand edit, with no controller left to revert it before the diff looks.
    t.stop_controller();
    t.api::<ConfigMap>()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"value": "hacked"}})),
        )
        .await
        .unwrap();
    let (revision, diffs) = ferry::cli::diff_environment(
        t.client.clone(),
        &t_config(&t).await,
        &t.namespace,
        "env",
        &render_settings(&t),
    )
    .await
    .unwrap();
    assert_eq!(revision, format!("main@sha1:{first}"));
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    let text = ferry::cli::unified(&diffs[0], false);
    assert!(
        text.contains("-  value: hacked") && text.contains("+  value: one"),
        "{text}"
    );
}

#[tokio::test]
async fn diff_looks_at_the_environment_s_target_cluster() {
    let mut t = TestEnv::new("cli-diff-remote").await;
    let remote = second_cluster().await;
    let remote_client = remote.client().await.unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": t.namespace}})).unwrap();
    Api::<Namespace>::all(remote_client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    t.create_secret("remote", &[("value", &remote.kubeconfig_self_contained().unwrap())])
        .await;
    t.repo.write("apps/cm.yaml", &config_map("app", &[("value", "one")]));
    let first = t.repo.commit_and_push("one");
    t.config_source("1h").await;
    t.config_env_with(
        "env",
        "apps",
        "1h",
        json!({"kubeConfig": {"secretRef": {"name": "remote"}}}),
    )
    .await;
    wait_applied(&t, "env", &first).await;
    assert_eq!(
        config_map_value(&t.client, &t.namespace, "app", "value").await,
        None,
        "not in this cluster"
    );

    let config = t_config(&t).await;
    let settings = render_settings(&t);
    let (_, diffs) = ferry::cli::diff_environment(t.client.clone(), &config, &t.namespace, "env", &settings)
        .await
        .unwrap();
    assert!(diffs.is_empty(), "in sync in the target cluster: {diffs:?}");
    // A hand edit there, with no controller left to revert it before the diff looks.
    t.stop_controller();
    Api::<ConfigMap>::namespaced(remote_client, &t.namespace)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"value": "hacked"}})),
        )
        .await
        .unwrap();
    let (_, diffs) = ferry::cli::diff_environment(t.client.clone(), &config, &t.namespace, "env", &settings)
        .await
        .unwrap();
    assert_eq!(diffs.len(), 1, "the drift in the target cluster: {diffs:?}");
    assert!(diffs[0].live.is_some(), "compared with the live object there");
}

#[tokio::test]
async fn version_reads_the_controller_s_image_tag() {
    let t = TestEnv::new("cli-version").await;
    assert_eq!(
        ferry::cli::controller_version(&t.client, &t.namespace, "ferry")
            .await
            .unwrap(),
        None
    );
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "ferry"},
        "spec": {"selector": {"matchLabels": {"app": "ferry"}},
                 "template": {"metadata": {"labels": {"app": "ferry"}},
                              "spec": {"containers": [
                                  {"name": "sidecar", "image": "busybox:1.36"},
                                  {"name": "ferry", "image": "registry.local:5000/ferry:v9.8.7"}]}}},
    }))
    .unwrap();
    t.api::<k8s_openapi::api::apps::v1::Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let (code, stdout, stderr) = ferry_async(&t, &["version", "--controller-namespace", &t.namespace]).await;
    assert_eq!(code, 0, "{stderr}");
    let (versions, sandbox) = stdout.split_at(stdout.find("render sandbox").unwrap_or(stdout.len()));
    assert_eq!(
        versions,
        format!(
            "client: {}\ncontroller: v9.8.7 (Deployment {}/ferry)\n",
            env!("CARGO_PKG_VERSION"),
            t.namespace
        )
    );
    // Which walls this machine's kernel allows a render worker (tests/sandbox.rs checks them).
    assert!(
        sandbox.starts_with("render sandbox (this machine): landlock"),
        "{sandbox}"
    );
}

#[test]
fn completion_scripts_know_the_subcommands() {
    for (shell, marker) in [
        ("bash", "_ferry()"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["completion", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("reconcile") && script.contains("suspend"), "{shell}");
    }
}

/// Connection settings for the test's control plane, as the CLI builds them from KUBECONFIG.
async fn t_config(t: &TestEnv) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(&t.kubeconfig).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap()
}

fn render_settings(t: &TestEnv) -> ferry::render::RenderSettings {
    ferry::render::RenderSettings {
        kustomize: t.bin_dir.join("kustomize"),
        ..Default::default()
    }
}
