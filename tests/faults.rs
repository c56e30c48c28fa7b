//! Faults on the bad day, on real servers: the Git host down, hanging, failing or trickling; a force-push and
//! a deleted branch. The fetch gives up within its timeout, the condition says why, the last good revision stays
//! applied, and everything recovers by itself when the fault ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::*;
use ferry::api::{Environment, GitRepository, Promotion, PromotionPhase};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

async fn value(t: &TestEnv) -> Option<String> {
    let cm = t.api::<ConfigMap>().get_opt("app").await.ok()??;
    cm.data?.get("v").cloned()
}

async fn wait_applied(t: &TestEnv, commit: &str, v: &str) {
    wait_applied_revision(t, "app", commit).await;
    assert_eq!(value(t).await.as_deref(), Some(v));
}

/// Waits for the GitRepository to report the fetch failure; returns its (reason, message).
async fn fetch_failure(t: &TestEnv) -> (String, String) {
    let repo = wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        repo_ready(r).is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = repo_ready(&repo).unwrap();
    (reason, message)
}

#[tokio::test]
async fn a_failing_git_host_keeps_the_last_good_revision_and_recovers() {
    // The binary's control plane runs workloads (the kill test's verification Jobs finish on kwok).
    let t = TestEnv::with_workloads("git-faults").await;
    let upstream = GitHttpServer::start(t.git_root.clone(), HttpAuth::None, false).await;
    let upstream_addr: SocketAddr = upstream.base_url.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultyProxy::start(upstream_addr).await;

    t.repo.write("app/cm.yaml", &config_map("app", &[("v", "0")]));
    let mut applied = t.repo.commit_and_push("v0");
    let url = format!("http://{}/{}", proxy.addr, t.repo.name);
    t.create_gitrepo("config", json!({"url": url, "interval": "1s", "timeout": "3s"}))
        .await;
    t.config_env("app", "app", "1m").await;
    wait_applied(&t, &applied, "0").await;

    let cases = [
        (Fault::Down, "1", "connect"),
        (Fault::Hang, "2", "timed out"),
        (Fault::Error500, "3", "500"),
        (Fault::Slow, "4", "timed out"),
    ];
    for (fault, v, says) in cases {
        eprintln!("fault: {fault:?}");
        proxy.set(fault);
        t.repo.write("app/cm.yaml", &config_map("app", &[("v", v)]));
        let next = t.repo.commit_and_push(&format!("v{v}"));
        let (reason, message) = fetch_failure(&t).await;
        assert_eq!(reason, "FetchFailed", "{fault:?}: {message}");
        assert!(message.to_lowercase().contains(says), "{fault:?}: {message}");
        // The cluster keeps the last good revision, and the Environment says it still runs it.
        let env = t.api::<Environment>().get("app").await.unwrap();
        assert!(
            env.status.unwrap().last_applied_revision.unwrap().ends_with(&applied),
            "{fault:?}"
        );
        assert_ne!(value(&t).await.as_deref(), Some(v), "{fault:?}: nothing new applied");

        proxy.set(Fault::None);
        wait_applied(&t, &next, v).await;
        applied = next;
    }
}

#[tokio::test]
async fn a_force_push_is_followed_and_a_deleted_branch_keeps_what_was_applied() {
    let t = TestEnv::with_workloads("git-rewrite").await;
    t.repo.write("app/cm.yaml", &config_map("app", &[("v", "a")]));
    let a = t.repo.commit_and_push("a");
    t.config_source("1s").await;
    t.config_env("app", "app", "1m").await;
    wait_applied(&t, &a, "a").await;

    // History rewritten: a commit that does not descend from the applied one replaces the branch.
    t.git(&["checkout", "-q", "--orphan", "rewritten"]);
    t.repo.write("app/cm.yaml", &config_map("app", &[("v", "b")]));
    t.git(&["add", "-A"]);
    t.git(&["commit", "-q", "-m", "rewritten"]);
    t.git(&["push", "-q", "--force", "origin", "HEAD:refs/heads/main"]);
    let b = t.git(&["rev-parse", "HEAD"]);
    wait_applied(&t, &b, "b").await;

    // The branch is deleted: the source says so, the cluster keeps b.
    let bare = t.repo.bare.to_string_lossy().into_owned();
    t.git(&["-C", &bare, "config", "receive.denyDeleteCurrent", "ignore"]);
    t.git(&["push", "-q", "origin", ":refs/heads/main"]);
    let (reason, message) = fetch_failure(&t).await;
    assert_eq!(reason, "RefNotFound", "{message}");
    assert!(message.contains("main"), "{message}");
    let env = t.api::<Environment>().get("app").await.unwrap();
    assert!(env.status.unwrap().last_applied_revision.unwrap().ends_with(&b));
    assert_eq!(value(&t).await.as_deref(), Some("b"));

    // Back: pushed again, applied again.
    t.repo.write("app/cm.yaml", &config_map("app", &[("v", "c")]));
    let c = t.repo.commit_and_push("c");
    wait_applied(&t, &c, "c").await;
}

/// `ferry run` for this test's namespace, without leader election (one process at a time here).
fn start_ferry(t: &TestEnv, storage: &std::path::Path) -> FerryRun {
    let args = ["run", "--leader-elect=false", "--namespace", &t.namespace].map(str::to_string);
    start_ferry_run(t, &t.kubeconfig, storage, &args, |cmd| {
        // Fifty kills make many warnings (broken watches, retried writes); errors are enough here.
        cmd.env(
            "RUST_LOG",
            std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "error".into()),
        );
    })
}

/// Round `r` of Environment `i`: two objects that stay (their data changes each round) and one whose name
/// changes each round, so every round prunes. Staging and production get a ConfigMap holding the round.
fn round_files(t: &TestEnv, envs: usize, r: usize) {
    for env in ["staging", "production"] {
        t.repo.write(
            &format!("apps/{env}/app.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {env}-app}}\ndata: {{round: \"{r}\"}}\n"),
        );
    }
    for i in 0..envs {
        let dir = t.repo.work.path().join(format!("envs/e{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut text = String::new();
        for name in [format!("c{i}-a"), format!("c{i}-b"), format!("c{i}-r{r}")] {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{round: \"{r}\"}}\n"
            ));
        }
        t.repo.write(&format!("envs/e{i}/cms.yaml"), &text);
    }
}

/// Every Environment applied `commit` and the namespace holds exactly what round `r` renders: nothing of an
/// earlier round left, nothing of this one missing or stale.
async fn converged(t: &TestEnv, envs: usize, commit: &str, r: usize) -> Result<(), String> {
    let want_rev = format!("@sha1:{commit}");
    for e in t
        .api::<Environment>()
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?
    {
        let name = e.metadata.name.clone().unwrap_or_default();
        if !name.starts_with('e') {
            continue; // staging and production: the promotion in flight is checked at the end
        }
        let status = e.status.clone().unwrap_or_default();
        let at = status.last_applied_revision.clone().unwrap_or_default();
        if !at.ends_with(&want_rev) || env_ready(&e).map(|(s, _, _)| s) != Some("True".to_string()) {
            return Err(format!("{name} at {at:?}, ready {:?}", env_ready(&e)));
        }
    }
    let mut have = config_map_rounds(&t.api::<ConfigMap>()).await?;
    have.sort();
    let mut want: Vec<(String, String)> = (0..envs)
        .flat_map(|i| [format!("c{i}-a"), format!("c{i}-b"), format!("c{i}-r{r}")])
        .map(|n| (n, r.to_string()))
        .collect();
    want.sort();
    if have != want {
        let extra: Vec<_> = have.iter().filter(|h| !want.contains(h)).take(5).collect();
        let missing: Vec<_> = want.iter().filter(|w| !have.contains(w)).take(5).collect();
        return Err(format!("objects differ: extra {extra:?}, missing {missing:?}"));
    }
    Ok(())
}

/// The acceptance Job production verifies each promoted revision with (kwok completes its pod).
fn acceptance_job() -> serde_json::Value {
    json!({"spec": {"template": {
        "metadata": {"labels": {"ferry.dev/kwok-outcome": "complete"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "test", "image": "example.com/acceptance:1"}]}
    }}})
}

/// SIGKILLs `ferry run` at random moments while 50 Environments apply a commit that touches (and prunes in)
/// all of them, and while promotions from staging to production (verified by a Job) are in flight; after each
/// restart everything converges exactly. At the end every promotion went through its phases in order, each
/// phase once in its status and once in Events, and each promoted revision was verified by exactly one Job.
/// `FERRY_FAULT_KILLS` sets how many kills.
#[tokio::test]
async fn killed_at_random_moments_ferry_converges_exactly_after_every_restart() {
    const ENVS: usize = 50;
    let kills: usize = std::env::var("FERRY_FAULT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let t = TestEnv::without_controller_with_workloads("kill").await;
    let storage = tempfile::tempdir().unwrap();
    round_files(&t, ENVS, 0);
    let mut commit = t.repo.commit_and_push("round 0");
    t.config_source("1s").await;
    for i in 0..ENVS {
        t.create_env(
            &format!("e{i}"),
            json!({"sourceRef": {"name": "config"}, "path": format!("envs/e{i}"), "interval": "10m", "prune": true}),
        )
        .await;
    }
    // Every commit is a new revision for staging (health-verified), so each round proposes a promotion to
    // production, which applies one at a time and verifies each with a Job: one is nearly always in flight.
    t.config_env("staging", "apps/staging", "10m").await;
    t.config_env_with(
        "production",
        "apps/production",
        "10m",
        json!({"promotion": {"from": "staging"},
               "verification": {"jobTemplate": acceptance_job(), "timeout": "5m"}}),
    )
    .await;
    let mut ferry = start_ferry(&t, storage.path());
    eventually("round 0 converges", || async {
        converged(&t, ENVS, &commit, 0).await.ok()
    })
    .await;

    // A small deterministic generator: the kill moments differ across the run and are the same on every run.
    let mut seed: u64 = 0x5eed_f311;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = std::time::Instant::now();
    for r in 1..=kills {
        round_files(&t, ENVS, r);
        commit = t.repo.commit_and_push(&format!("round {r}"));
        // Somewhere between "not fetched yet" and "applying the last Environments".
        tokio::time::sleep(std::time::Duration::from_millis(next() % 2500)).await;
        ferry.kill();
        ferry = start_ferry(&t, storage.path());
        let deadline = std::time::Instant::now() + 2 * DEADLINE;
        loop {
            match converged(&t, ENVS, &commit, r).await {
                Ok(()) => break,
                Err(why) if std::time::Instant::now() > deadline => {
                    panic!("after kill {r}: not converged within {:?}: {why}", 2 * DEADLINE)
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
    eprintln!("{kills} kills, each converged; {:.1?} in all", started.elapsed());

    // The promotion in flight when the kills stopped finishes: the last revision runs in production.
    let last = format!("main@sha1:{commit}");
    // Up to two promotions (one verifying, the last one queued behind it) each need a Job on a loaded machine.
    let deadline = std::time::Instant::now() + 2 * DEADLINE;
    let promotions = loop {
        let list = t.api::<Promotion>().list(&Default::default()).await.map(|l| l.items);
        if let Ok(list) = list
            && list
                .iter()
                .any(|p| p.spec.revision == last && p.phase() == PromotionPhase::Succeeded)
        {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the last revision not promoted to production within {:?}",
            2 * DEADLINE
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    check_promotions(&t, &promotions).await;

    // A process killed between a phase's status write and its Event: the Event is gone, as if never sent.
    // The next process records it, once.
    let final_promotion = promotions
        .iter()
        .find(|p| p.spec.revision == last)
        .and_then(|p| p.metadata.name.clone())
        .expect("the last promotion");
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = t.api();
    let succeeded = |e: &k8s_openapi::api::events::v1::Event| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(final_promotion.as_str())
            && e.note.as_deref().is_some_and(|n| n.starts_with("Succeeded: "))
    };
    let lost = eventually("the Succeeded Event", || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        list.into_iter().find(|e| succeeded(e))
    })
    .await;
    ferry.kill();
    events
        .delete(lost.metadata.name.as_deref().unwrap_or_default(), &Default::default())
        .await
        .expect("deleting the Event");
    ferry = start_ferry(&t, storage.path());
    eventually("the lost Event recorded by the next process", || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        (list.iter().filter(|e| succeeded(e)).count() == 1).then_some(())
    })
    .await;
    drop(ferry);
}

/// Every Promotion's phases in order, each once, none skipped (status and Events), and exactly one
/// verification Job per promoted revision (the audit log's successful creates).
async fn check_promotions(t: &TestEnv, promotions: &[Promotion]) {
    let rank = |p: PromotionPhase| match p {
        PromotionPhase::Pending | PromotionPhase::WaitingApproval => 0,
        PromotionPhase::Applying => 1,
        PromotionPhase::Verifying => 2,
        _ => 3,
    };
    let events: Vec<k8s_openapi::api::events::v1::Event> = t
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Promotion"))
        .collect();
    // (promotion, reason, phase) -> how many Events say the promotion entered the phase for that reason.
    let mut said: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for e in &events {
        let promotion = e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
        let note = e.note.clone().unwrap_or_default();
        let phase = note.split(':').next().unwrap_or_default().to_string();
        *said
            .entry((promotion, e.reason.clone().unwrap_or_default(), phase))
            .or_default() += 1;
    }
    let duplicated: Vec<_> = said.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "Events recorded twice: {duplicated:?}");
    let mut verified_promotions = 0;
    for p in promotions {
        let name = p.metadata.name.clone().unwrap_or_default();
        let transitions = p.status.as_ref().map(|s| s.transitions.clone()).unwrap_or_default();
        let phases: Vec<PromotionPhase> = transitions.iter().map(|t| t.phase).collect();
        assert!(
            phases.windows(2).all(|w| rank(w[0]) < rank(w[1])),
            "{name}: each phase once, in order: {phases:?}"
        );
        if phases.contains(&PromotionPhase::Verifying) {
            assert!(phases.contains(&PromotionPhase::Applying), "{name}: {phases:?}");
            verified_promotions += 1;
        }
        if phases.contains(&PromotionPhase::Succeeded) {
            assert!(
                phases.ends_with(&[
                    PromotionPhase::Applying,
                    PromotionPhase::Verifying,
                    PromotionPhase::Succeeded
                ]),
                "{name}: no phase skipped: {phases:?}"
            );
        }
        for tr in &transitions {
            let key = (name.clone(), tr.reason.clone(), tr.phase.to_string());
            assert_eq!(said.get(&key), Some(&1), "{name}: one Event for {tr:?}");
        }
    }
    // Jobs are named `production-verify-<commit>-<run>-<attempt>`: one run per promoted revision here, so a
    // second name for the same commit is a duplicate Job.
    let created = audited_creates(&t.audit_log, &t.namespace, "jobs");
    let mut per_commit: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &created {
        let commit = name
            .strip_prefix("production-verify-")
            .and_then(|rest| rest.split('-').next())
            .unwrap_or_default();
        per_commit.entry(commit.to_string()).or_default().push(name.clone());
    }
    let twice: Vec<_> = per_commit.values().filter(|names| names.len() > 1).collect();
    assert!(twice.is_empty(), "one verification Job per revision and run: {twice:?}");
    for p in promotions.iter().filter(|p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.transitions.iter().any(|t| t.phase == PromotionPhase::Verifying))
    }) {
        let commit = p.spec.revision.rsplit(':').next().unwrap_or_default();
        assert!(
            per_commit.contains_key(commit.get(..8).unwrap_or(commit)),
            "a Job verified {}: {created:?}",
            p.spec.revision
        );
    }
    let entered_verifying = said
        .keys()
        .filter(|(_, _, phase)| phase == "Verifying")
        .map(|(promotion, _, _)| promotion)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(
        per_commit.len(),
        entered_verifying,
        "as many Jobs as promotions that entered Verifying (Events, deleted Promotions included)"
    );
    let attempts = audited_writes(&t.audit_log, &t.namespace)
        .into_iter()
        .filter(|(verb, uri, dry)| verb == "create" && !dry && uri.contains("/jobs"))
        .count();
    eprintln!(
        "{} promotions kept ({verified_promotions} verified by a Job), {} Jobs created ({} creates refused as \
         existing after a restart), {} promotion Events",
        promotions.len(),
        created.len(),
        attempts - created.len(),
        events.len()
    );
}
