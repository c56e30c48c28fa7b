//! Push webhooks on a real apiserver: a verified push fetches at once and the Environment applies it; anything
//! unverified or malformed gets 401/400 and changes nothing.

mod common;

use common::*;
use ferry::api::{Environment, GitRepository};
use hmac::{Hmac, Mac};
use serde_json::json;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {v: \"1\"}\n";

fn github_signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn revision_of(repo: &GitRepository) -> Option<String> {
    repo.status.as_ref()?.artifact.as_ref().map(|a| a.revision.clone())
}

async fn setup(t: &TestEnv) -> String {
    t.repo.write("apps/app.yaml", CM);
    let first = t.repo.commit_and_push("one");
    t.create_secret("hook", &[("token", "hook-secret")]).await;
    // Hour-long intervals: only the webhook can make the second commit arrive within the test's deadline.
    let spec = json!({"url": t.repo.url, "interval": "1h", "webhookSecretRef": {"name": "hook"}});
    t.create_gitrepo("config", spec).await;
    t.create_gitrepo(
        "other-branch",
        json!({"url": t.repo.url, "interval": "1h", "ref": {"branch": "dev"}}),
    )
    .await;
    t.create_env(
        "staging",
        json!({"sourceRef": {"name": "config"}, "path": "apps", "interval": "1h"}),
    )
    .await;
    wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.clone()) == Some(format!("main@sha1:{first}"))
    })
    .await;
    first
}

fn annotation(repo: &GitRepository) -> Option<String> {
    repo.metadata
        .annotations
        .as_ref()?
        .get("ferry.dev/reconcile-requested-at")
        .cloned()
}

#[tokio::test]
async fn a_verified_github_push_is_fetched_and_applied_at_once() {
    let t = TestEnv::new("hook-github").await;
    setup(&t).await;
    t.repo.write("apps/app.yaml", &CM.replace("\"1\"", "\"2\""));
    let second = t.repo.commit_and_push("two");
    let body = json!({"ref": "refs/heads/main", "after": second}).to_string();
    let url = format!("{}/hooks/{}/config", t.webhook_base, t.namespace);
    let sig = github_signature("hook-secret", body.as_bytes());
    let (code, reply) = http_post(
        &url,
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(code, 202, "{reply}");
    assert!(reply.contains("config") && !reply.contains("other-branch"), "{reply}");

    let want = format!("main@sha1:{second}");
    wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        e.status.as_ref().and_then(|s| s.last_applied_revision.as_deref()) == Some(want.as_str())
    })
    .await;
    let cm = t
        .api::<k8s_openapi::api::core::v1::ConfigMap>()
        .get("app")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["v"], "2");
    let other = t.api::<GitRepository>().get("other-branch").await.unwrap();
    assert_eq!(
        annotation(&other),
        None,
        "a push to main does not refetch a repo tracking dev"
    );
}

#[tokio::test]
async fn gitlab_gitea_and_generic_calls_are_verified() {
    let t = TestEnv::new("hook-providers").await;
    setup(&t).await;
    let url = format!("{}/hooks/{}/config", t.webhook_base, t.namespace);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let gitea_sig = github_signature("hook-secret", body).replace("sha256=", "");
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "hook-secret")],
            202,
        ),
        (vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "wrong")], 401),
        (vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", &gitea_sig)], 202),
        (
            vec![("X-Forgejo-Event", "push"), ("X-Forgejo-Signature", &gitea_sig)],
            202,
        ),
        (vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", "00ff")], 401),
        (vec![("Authorization", "Bearer hook-secret")], 202),
        (vec![("Authorization", "Bearer nope")], 401),
        (vec![], 401),
    ];
    for (headers, want) in cases {
        let (code, reply) = http_post(&url, &headers, body).await;
        assert_eq!(code, want, "{headers:?}: {reply}");
    }
}

#[tokio::test]
async fn unverified_malformed_and_unknown_calls_change_nothing() {
    let t = TestEnv::new("hook-bad").await;
    setup(&t).await;
    let repos = t.api::<GitRepository>();
    let before = repos.get("config").await.unwrap();
    let url = format!("{}/hooks/{}/config", t.webhook_base, t.namespace);

    let body = br#"{"ref":"refs/heads/main"}"#;
    let bad_sig = github_signature("not-the-secret", body);
    let (code, _) = http_post(
        &url,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &bad_sig)],
        body,
    )
    .await;
    assert_eq!(code, 401);

    let malformed = b"{this is not json";
    let sig = github_signature("hook-secret", malformed);
    let (code, reply) = http_post(
        &url,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        malformed,
    )
    .await;
    assert_eq!(code, 400, "{reply}");

    let ping = br#"{"zen":"hi"}"#;
    let sig = github_signature("hook-secret", ping);
    let (code, _) = http_post(&url, &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)], ping).await;
    assert_eq!(code, 200);

    let unknown = format!("{}/hooks/{}/no-such-repo", t.webhook_base, t.namespace);
    let (code, _) = http_post(&unknown, &[("Authorization", "Bearer hook-secret")], b"").await;
    assert_eq!(code, 404);
    let no_hook = format!("{}/hooks/{}/other-branch", t.webhook_base, t.namespace);
    let (code, _) = http_post(&no_hook, &[("Authorization", "Bearer hook-secret")], b"").await;
    assert_eq!(code, 404, "a GitRepository without webhookSecretRef has no webhook");
    let other_ns = format!("{}/hooks/kube-system/config", t.webhook_base);
    let (code, _) = http_post(&other_ns, &[("Authorization", "Bearer hook-secret")], b"").await;
    assert_eq!(code, 404);

    let after = repos.get("config").await.unwrap();
    assert_eq!(annotation(&after), None);
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    assert_eq!(revision_of(&after), revision_of(&before));
}
