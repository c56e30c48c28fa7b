//! A config repo written to attack the controller, on a real control plane: one Environment per attack next to
//! a good one that keeps syncing. Each attack ends in a clear condition and a Warning Event, nothing of it is
//! applied, and the controller's memory (this test process: the controllers run in it) stays within 50 MiB of
//! where it started. What code inside a render could do once it runs is shown on its own in tests/sandbox.rs;
//! the SOPS-hidden workload under a Deny policy is in tests/policy.rs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use ferry::api::Environment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One hostile path: (path, files, the reason the Environment must end with, a word its message must hold).
type Attack = (&'static str, Vec<(String, String)>, &'static str, &'static str);

fn attacks() -> Vec<Attack> {
    let chart = |dir: &str| {
        vec![
            (format!("{dir}/charts/c/Chart.yaml"), "apiVersion: v2\nname: c\nversion: 0.1.0\n".to_string()),
            (format!("{dir}/charts/c/values.yaml"), "{}\n".to_string()),
            (
                format!("{dir}/charts/c/templates/cm.yaml"),
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-chart\ndata:\n  run: |\n    touch /tmp/ferry-hostile-ran\n".to_string(),
            ),
        ]
    };
    let with = |mut files: Vec<(String, String)>, more: &[(&str, &str)]| {
        files.extend(more.iter().map(|(p, c)| (p.to_string(), c.to_string())));
        files
    };
    let inline_generator = "generators:\n- |\n  apiVersion: builtin\n  kind: HelmChartInflationGenerator\n  metadata: {name: x}\n  name: c\n  releaseName: --post-renderer=/bin/sh\n";
    let mut bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n  a: &a \"{}\"\n",
        "x".repeat(1 << 20)
    );
    for i in 0..1500 {
        bomb.push_str(&format!("  k{i}: *a\n"));
    }
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {}{}\n",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    vec![
        (
            "post-renderer",
            with(chart("post-renderer"), &[("post-renderer/kustomization.yaml", inline_generator)]),
            "RenderFailed",
            "HelmChartInflationGenerator",
        ),
        (
            "generator-file",
            with(
                chart("generator-file"),
                &[
                    ("generator-file/kustomization.yaml", "generators: [gen.yaml]\n"),
                    (
                        "generator-file/gen.yaml",
                        "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata: {name: x}\nname: c\nreleaseName: --post-renderer=/bin/sh\n",
                    ),
                ],
            ),
            "RenderFailed",
            "HelmChartInflationGenerator",
        ),
        (
            "exec-function",
            vec![(
                "exec-function/kustomization.yaml".to_string(),
                "transformers:\n- |\n  apiVersion: example.com/v1\n  kind: Run\n  metadata:\n    name: x\n    annotations:\n      config.kubernetes.io/function: |\n        exec: {path: /bin/sh}\n".to_string(),
            )],
            "RenderFailed",
            "exec-function/kustomization.yaml",
        ),
        (
            "release-name-flag",
            with(
                chart("release-name-flag"),
                &[("release-name-flag/kustomization.yaml", "helmCharts:\n- name: c\n  releaseName: --post-renderer=/bin/sh\n")],
            ),
            "RenderFailed",
            "releaseName",
        ),
        (
            "read-token",
            vec![(
                "read-token/kustomization.yaml".to_string(),
                "resources: [/var/run/secrets/kubernetes.io/serviceaccount/token]\n".to_string(),
            )],
            "PathNotFound",
            "outside the repository",
        ),
        ("alias-bomb", vec![("alias-bomb/bomb.yaml".to_string(), bomb)], "RenderLimitExceeded", "memory"),
        ("deep-nesting", vec![("deep-nesting/deep.yaml".to_string(), deep)], "RenderFailed", "deep.yaml"),
    ]
}

#[tokio::test]
async fn a_hostile_config_repo_gets_a_condition_and_nothing_else() {
    let t = TestEnv::new("hostile").await;
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    t.repo.write("good/cm.yaml", &config_map("good", &[("value", "one")]));
    let attacks = attacks();
    for (_, files, _, _) in &attacks {
        for (path, content) in files {
            t.repo.write(path, content);
        }
    }
    t.repo.commit_and_push("a good path and hostile ones");
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "ref": {"branch": "main"}, "interval": "2s"}),
    )
    .await;
    let env = |path: &str| json!({"sourceRef": {"name": "config"}, "path": format!("./{path}"), "interval": "2s"});
    t.create_env("good", env("good")).await;
    for (path, _, _, _) in &attacks {
        t.create_env(path, env(path)).await;
    }
    let envs = t.api::<Environment>();
    for (path, _, reason, word) in &attacks {
        let e = wait_for(&envs, path, |e: &Environment| {
            env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == *reason)
        })
        .await;
        let (_, _, message) = env_ready(&e).unwrap_or_default();
        println!("{path}: {reason}: {message}");
        assert!(message.contains(word), "{path}: {message}");
        t.wait_event(path, "Warning", reason).await;
        assert!(
            e.status.unwrap_or_default().inventory.is_empty(),
            "{path}: nothing applied"
        );
    }
    let cms = t.api::<ConfigMap>();
    for name in ["from-chart", "bomb", "deep", "x"] {
        assert!(cms.get_opt(name).await.unwrap().is_none(), "{name} was applied");
    }
    assert!(!std::path::Path::new("/tmp/ferry-hostile-ran").exists(), "a shell ran");

    // The good Environment next to them applied, and takes the next commit.
    wait_for(&envs, "good", |e: &Environment| {
        env_ready(e).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    t.repo.write("good/cm.yaml", &config_map("good", &[("value", "two")]));
    t.repo.commit_and_push("the good path changes");
    eventually("the good ConfigMap takes the new commit", || async {
        cms.get_opt("good")
            .await
            .ok()
            .flatten()
            .filter(|c| c.data.as_ref().and_then(|d| d.get("value")).map(String::as_str) == Some("two"))
    })
    .await;
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "controller RSS: baseline {} MiB, peak {} MiB (+{} MiB)",
        baseline / 1024,
        peak / 1024,
        peak.saturating_sub(baseline) / 1024
    );
    assert!(
        peak < baseline + 50 * 1024,
        "the controller's memory moved: {baseline} → {peak} KiB"
    );
}
