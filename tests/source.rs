//! The source side against real servers: every ref kind, every auth kind (git daemon, git http-backend behind
//! basic/bearer auth and TLS, OpenSSH sshd), the shared fetch, and each bad input.

mod common;

use common::*;
use ferry::api::GitRepository;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";

/// Waits until the GitRepository's Ready condition has `status` and returns (reason, message) and the object.
async fn ready_is(t: &TestEnv, name: &str, status: &str) -> (String, String, GitRepository) {
    let repo = wait_for(&t.api::<GitRepository>(), name, |r: &GitRepository| {
        repo_ready(r).is_some_and(|(s, _, _)| s == status)
    })
    .await;
    let (_, reason, message) = repo_ready(&repo).unwrap();
    (reason, message, repo)
}

fn revision_of(repo: &GitRepository) -> String {
    repo.status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .map(|a| a.revision.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn tag_semver_and_commit_refs_resolve_with_precedence() {
    let t = TestEnv::new("refs").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push("one");
    t.git(&["tag", "v1.2.0"]);
    t.repo.write("a.yaml", &CM.replace("name: c", "name: d"));
    let c2 = t.repo.commit_and_push("two");
    t.git(&["tag", "v1.10.0"]);
    t.git(&["tag", "v2.0.0-rc.1"]);
    t.git(&["push", "-q", "origin", "--tags"]);

    let url = t.repo.url.clone();
    t.create_gitrepo("by-tag", json!({"url": url, "ref": {"tag": "v1.2.0"}}))
        .await;
    t.create_gitrepo("by-semver", json!({"url": url, "ref": {"semver": ">=1.0.0, <2.0.0"}}))
        .await;
    t.create_gitrepo(
        "by-commit",
        json!({"url": url, "ref": {"commit": c1, "tag": "v1.10.0", "branch": "main"}}),
    )
    .await;
    t.create_gitrepo("by-branch", json!({"url": url})).await;
    t.create_gitrepo("bad-semver", json!({"url": url, "ref": {"semver": "not a range"}}))
        .await;

    let (_, _, r) = ready_is(&t, "by-tag", "True").await;
    assert_eq!(revision_of(&r), format!("v1.2.0@sha1:{c1}"));
    let (_, _, r) = ready_is(&t, "by-semver", "True").await;
    assert_eq!(
        revision_of(&r),
        format!("v1.10.0@sha1:{c2}"),
        "highest matching, pre-release excluded"
    );
    let (_, _, r) = ready_is(&t, "by-commit", "True").await;
    assert_eq!(revision_of(&r), format!("sha1:{c1}"), "commit wins over tag and branch");
    let (_, _, r) = ready_is(&t, "by-branch", "True").await;
    assert_eq!(revision_of(&r), format!("main@sha1:{c2}"), "default branch is main");
    let (reason, message, _) = ready_is(&t, "bad-semver", "False").await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("semver"), "{message}");
}

#[tokio::test]
async fn a_deleted_branch_is_reported_and_the_last_good_revision_stays() {
    let t = TestEnv::new("delbranch").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push_to("feature", "one");
    t.create_gitrepo(
        "r",
        json!({"url": t.repo.url, "ref": {"branch": "feature"}, "interval": "1s"}),
    )
    .await;
    ready_is(&t, "r", "True").await;
    t.git(&["push", "-q", "origin", "--delete", "feature"]);
    let (reason, message, repo) = ready_is(&t, "r", "False").await;
    assert_eq!(reason, "RefNotFound");
    assert!(message.contains("branch \"feature\""), "{message}");
    assert_eq!(revision_of(&repo), format!("feature@sha1:{c1}"));
    t.wait_event("r", "Warning", "RefNotFound").await;
}

#[tokio::test]
async fn force_push_and_moved_tags_are_followed_and_reported() {
    let t = TestEnv::new("rewrite").await;
    t.repo.write("a.yaml", CM);
    t.repo.commit_and_push("one");
    t.git(&["tag", "v1"]);
    t.git(&["push", "-q", "origin", "v1"]);
    t.create_gitrepo("branch", json!({"url": t.repo.url, "interval": "1s"}))
        .await;
    t.create_gitrepo(
        "tag",
        json!({"url": t.repo.url, "ref": {"tag": "v1"}, "interval": "1s"}),
    )
    .await;
    ready_is(&t, "branch", "True").await;
    ready_is(&t, "tag", "True").await;

    // Rewrite history: amend the only commit and force-push it; move the tag.
    t.repo.write("a.yaml", &CM.replace("name: c", "name: rewritten"));
    t.git(&["commit", "-q", "-a", "--amend", "-m", "rewritten"]);
    t.git(&["push", "-q", "-f", "origin", "HEAD:main"]);
    t.git(&["tag", "-f", "v1"]);
    t.git(&["push", "-q", "-f", "origin", "v1"]);
    let head = String::from_utf8(
        std::process::Command::new("git")
            .current_dir(t.repo.work.path())
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let head = head.trim();
    for (name, rev) in [
        ("branch", format!("main@sha1:{head}")),
        ("tag", format!("v1@sha1:{head}")),
    ] {
        wait_for(&t.api::<GitRepository>(), name, |r: &GitRepository| {
            revision_of(r) == rev
        })
        .await;
    }
    t.wait_event("branch", "Warning", "HistoryRewritten").await;
    t.wait_event("tag", "Warning", "TagMoved").await;
}

#[tokio::test]
async fn https_basic_auth_works_and_a_wrong_password_is_rejected_without_leaking_it() {
    let t = TestEnv::new("basic").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push("one");
    let (server, url) = t.https_git_server_for_alice().await;
    let ca = server.ca_pem.clone().unwrap();
    t.create_secret(
        "good",
        &[("username", "alice"), ("password", "s3cret-pw"), ("ca.crt", &ca)],
    )
    .await;
    t.create_secret(
        "bad",
        &[("username", "alice"), ("password", "wrong-pw-xyz"), ("ca.crt", &ca)],
    )
    .await;
    t.create_secret("no-password", &[("username", "alice"), ("ca.crt", &ca)])
        .await;
    t.create_secret("ca-only", &[("ca.crt", &ca)]).await;
    t.create_secret("plain-http", &[("username", "alice"), ("password", "s3cret-pw")])
        .await;
    t.create_gitrepo("good", json!({"url": url, "secretRef": {"name": "good"}}))
        .await;
    t.create_gitrepo("bad", json!({"url": url, "secretRef": {"name": "bad"}}))
        .await;
    t.create_gitrepo("anonymous", json!({"url": url, "secretRef": {"name": "ca-only"}}))
        .await;
    t.create_gitrepo("missing-secret", json!({"url": url, "secretRef": {"name": "nope"}}))
        .await;
    t.create_gitrepo("missing-key", json!({"url": url, "secretRef": {"name": "no-password"}}))
        .await;
    let plain = url.replace("https://", "http://");
    t.create_gitrepo("plain-http", json!({"url": plain, "secretRef": {"name": "plain-http"}}))
        .await;

    let (_, _, r) = ready_is(&t, "good", "True").await;
    assert_eq!(revision_of(&r), format!("main@sha1:{c1}"));
    let (reason, message, _) = ready_is(&t, "bad", "False").await;
    assert_eq!(reason, "AuthFailed", "{message}");
    assert!(!message.contains("wrong-pw-xyz"));
    let (reason, _, _) = ready_is(&t, "anonymous", "False").await;
    assert_eq!(reason, "AuthFailed");
    let (reason, message, _) = ready_is(&t, "missing-secret", "False").await;
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("nope"), "{message}");
    let (reason, message, _) = ready_is(&t, "missing-key", "False").await;
    assert_eq!(reason, "AuthFailed");
    assert!(message.contains("no \"password\""), "{message}");
    let (reason, message, _) = ready_is(&t, "plain-http", "False").await;
    assert_eq!(reason, "AuthFailed");
    assert!(message.contains("plain http"), "{message}");

    // No credential in any status or event of the namespace.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = t.api();
    let all = serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap();
    let repos =
        serde_json::to_string(&t.api::<GitRepository>().list(&Default::default()).await.unwrap().items).unwrap();
    for secret in ["s3cret-pw", "wrong-pw-xyz"] {
        assert!(!all.contains(secret) && !repos.contains(secret), "{secret} leaked");
    }
}

#[tokio::test]
async fn bearer_token_and_custom_ca_over_tls() {
    let t = TestEnv::new("tls").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push("one");
    let server = GitHttpServer::start(t.git_root.clone(), HttpAuth::Bearer("tok-123".into()), true).await;
    let url = format!("{}/{}", server.base_url, t.repo.name);
    let ca = server.ca_pem.clone().unwrap();
    t.create_secret("with-ca", &[("bearerToken", "tok-123"), ("ca.crt", &ca)])
        .await;
    t.create_secret("no-ca", &[("bearerToken", "tok-123")]).await;
    t.create_gitrepo("trusted", json!({"url": url, "secretRef": {"name": "with-ca"}}))
        .await;
    t.create_gitrepo("untrusted", json!({"url": url, "secretRef": {"name": "no-ca"}}))
        .await;

    let (_, _, r) = ready_is(&t, "trusted", "True").await;
    assert_eq!(revision_of(&r), format!("main@sha1:{c1}"));
    let (reason, message, _) = ready_is(&t, "untrusted", "False").await;
    assert_eq!(reason, "FetchFailed", "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(!message.contains("tok-123"));
}

#[tokio::test]
async fn ssh_with_a_passphrase_key_and_mandatory_known_hosts() {
    let t = TestEnv::new("ssh").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push("one");
    let sshd = Sshd::start("key-pass").expect("sshd");
    let url = sshd.url(&t.repo.bare);
    let wrong = common::sshd::wrong_known_hosts(sshd.port).unwrap();
    t.create_secret(
        "ssh",
        &[
            ("identity", &sshd.client_key),
            ("password", "key-pass"),
            ("known_hosts", &sshd.known_hosts),
        ],
    )
    .await;
    t.create_secret(
        "wrong-host",
        &[
            ("identity", &sshd.client_key),
            ("password", "key-pass"),
            ("known_hosts", &wrong),
        ],
    )
    .await;
    t.create_secret(
        "no-known-hosts",
        &[("identity", &sshd.client_key), ("password", "key-pass")],
    )
    .await;
    t.create_gitrepo("ssh", json!({"url": url, "secretRef": {"name": "ssh"}}))
        .await;
    t.create_gitrepo("wrong-host", json!({"url": url, "secretRef": {"name": "wrong-host"}}))
        .await;
    t.create_gitrepo(
        "no-known-hosts",
        json!({"url": url, "secretRef": {"name": "no-known-hosts"}}),
    )
    .await;

    let (_, message, r) = ready_is(&t, "ssh", "True").await;
    assert_eq!(revision_of(&r), format!("main@sha1:{c1}"), "{message}");
    let (reason, message, _) = ready_is(&t, "wrong-host", "False").await;
    assert_eq!(reason, "HostKeyMismatch", "{message}");
    assert!(message.contains("not in known_hosts"), "{message}");
    let (reason, message, _) = ready_is(&t, "no-known-hosts", "False").await;
    assert_eq!(reason, "AuthFailed");
    assert!(message.contains("known_hosts"), "{message}");
}

#[tokio::test]
async fn many_gitrepositories_on_one_url_share_one_fetch_until_a_reconcile_is_requested() {
    let t = TestEnv::new("shared").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push("one");
    let server = GitHttpServer::start(t.git_root.clone(), HttpAuth::None, false).await;
    let url = format!("{}/{}", server.base_url, t.repo.name);
    let names: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    for name in &names {
        t.create_gitrepo(name, json!({"url": url, "interval": "1h"})).await;
    }
    for name in &names {
        let (_, _, r) = ready_is(&t, name, "True").await;
        assert_eq!(revision_of(&r), format!("main@sha1:{c1}"));
    }
    assert_eq!(
        server.fetches(&t.repo.name),
        1,
        "one network fetch for 8 GitRepositories: {:?}",
        server.requests()
    );

    // A new commit, then "reconcile now" on one of them: exactly one more fetch, and that one sees the commit.
    t.repo.write("a.yaml", &CM.replace("name: c", "name: d"));
    let c2 = t.repo.commit_and_push("two");
    request_fetch(&t, "r0", "now-1").await;
    wait_for(&t.api::<GitRepository>(), "r0", |r: &GitRepository| {
        revision_of(r) == format!("main@sha1:{c2}")
    })
    .await;
    let r0 = t.api::<GitRepository>().get("r0").await.unwrap();
    assert_eq!(r0.status.unwrap().last_handled_reconcile_at.as_deref(), Some("now-1"));
    assert_eq!(server.fetches(&t.repo.name), 2);
}

#[tokio::test]
async fn oversized_and_empty_repos_fail_clearly() {
    let t = TestEnv::with_settings("limits", |s| s.max_repo_bytes = 256 * 1024).await;
    // Incompressible content well over the limit.
    let mut blob = String::new();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    while blob.len() < 2 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blob.push_str(&format!("{x:016x}"));
    }
    t.repo.write("big.txt", &blob);
    t.repo.commit_and_push("big");
    t.create_gitrepo("big", json!({"url": t.repo.url})).await;
    let (reason, message, _) = ready_is(&t, "big", "False").await;
    assert_eq!(reason, "TooLarge", "{message}");

    let root = t.git_root.join("empty-repo.git");
    std::fs::create_dir_all(&root).unwrap();
    assert!(
        std::process::Command::new("git")
            .args(["init", "-q", "--bare"])
            .arg(&root)
            .status()
            .unwrap()
            .success()
    );
    let url = t.repo.url.replace(&t.repo.name, "empty-repo.git");
    t.create_gitrepo("empty", json!({"url": url})).await;
    let (reason, message, _) = ready_is(&t, "empty", "False").await;
    assert_eq!(reason, "RefNotFound", "{message}");
}

#[tokio::test]
async fn unknown_scheme_is_invalid() {
    let t = TestEnv::new("scheme").await;
    t.create_gitrepo("ftp", json!({"url": "ftp://example.com/repo.git"}))
        .await;
    let (reason, message, _) = ready_is(&t, "ftp", "False").await;
    assert_eq!(reason, "InvalidURL");
    assert!(message.contains("unsupported scheme"), "{message}");
}

#[tokio::test]
async fn a_suspended_gitrepository_is_left_alone_until_resumed() {
    let t = TestEnv::new("suspend").await;
    t.repo.write("a.yaml", CM);
    let c1 = t.repo.commit_and_push("one");
    t.create_gitrepo("active", json!({"url": t.repo.url, "interval": "1h"}))
        .await;
    t.create_gitrepo("paused", json!({"url": t.repo.url, "interval": "1h", "suspend": true}))
        .await;
    // Both are queued together; once the active one is done, the suspended one has been handled too.
    ready_is(&t, "active", "True").await;
    for name in ["active", "paused"] {
        request_fetch(&t, name, "x").await;
    }
    wait_for(&t.api::<GitRepository>(), "active", |r: &GitRepository| {
        r.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("x")
    })
    .await;
    let paused = t.api::<GitRepository>().get("paused").await.unwrap();
    assert!(
        paused.status.is_none(),
        "suspended: no fetch, no status: {:?}",
        paused.status
    );

    t.api::<GitRepository>()
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let (_, _, r) = ready_is(&t, "paused", "True").await;
    assert_eq!(revision_of(&r), format!("main@sha1:{c1}"));
}
