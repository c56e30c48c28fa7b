//! Push webhooks on a real apiserver: a verified push fetches at once and the Environment applies it; anything
//! unverified, unknown, oversized or malformed is refused and changes nothing, and outsiders cannot tell an
//! unknown repository from a bad signature.

mod common;

use common::*;
use ferry::api::{Environment, GitRepository};
use ferry::receiver::{MAX_BODY_BYTES, REFUSED_BODY, REFUSED_STATUS};
use hmac::{Hmac, Mac};
use serde_json::json;

/// The status every refused call gets, whatever the reason.
const REFUSED: u16 = REFUSED_STATUS.as_u16();

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
    t.config_env("staging", "apps", "1h").await;
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

    wait_applied_revision(&t, "staging", &second).await;
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
        (
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "wrong")],
            REFUSED,
        ),
        (vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", &gitea_sig)], 202),
        (
            vec![("X-Forgejo-Event", "push"), ("X-Forgejo-Signature", &gitea_sig)],
            202,
        ),
        (vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", "00ff")], REFUSED),
        (vec![("Authorization", "Bearer hook-secret")], 202),
        (vec![("Authorization", "Bearer nope")], REFUSED),
        (vec![], REFUSED),
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
    assert_eq!(code, REFUSED);

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
    assert_eq!(code, REFUSED);
    let no_hook = format!("{}/hooks/{}/other-branch", t.webhook_base, t.namespace);
    let (code, _) = http_post(&no_hook, &[("Authorization", "Bearer hook-secret")], b"").await;
    assert_eq!(code, REFUSED, "a GitRepository without webhookSecretRef has no webhook");
    let other_ns = format!("{}/hooks/kube-system/config", t.webhook_base);
    let (code, _) = http_post(&other_ns, &[("Authorization", "Bearer hook-secret")], b"").await;
    assert_eq!(code, REFUSED);

    let after = repos.get("config").await.unwrap();
    assert_eq!(annotation(&after), None);
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    assert_eq!(revision_of(&after), revision_of(&before));
}

/// Every refusal is the same (status and body): a probe for repository names learns nothing from the answer.
/// Each case here has the right token or signature for the repo it names, if that repo had one.
#[tokio::test]
async fn unknown_repositories_and_bad_signatures_get_the_same_answer() {
    let t = TestEnv::new("hook-same").await;
    setup(&t).await;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let good_sig = github_signature("hook-secret", body);
    let bad_sig = github_signature("guess", body);
    let hook = |name: &str| format!("{}/hooks/{}/{name}", t.webhook_base, t.namespace);
    let github = |sig: &str| {
        vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-Hub-Signature-256", sig.to_string()),
        ]
    };
    let cases = [
        ("bad GitHub signature", hook("config"), github(&bad_sig)),
        ("unknown repository", hook("no-such-repo"), github(&good_sig)),
        ("repository without a webhook", hook("other-branch"), github(&good_sig)),
        (
            "namespace not served",
            format!("{}/hooks/kube-system/config", t.webhook_base),
            github(&good_sig),
        ),
        (
            "bad GitLab token",
            hook("config"),
            vec![
                ("X-Gitlab-Event", "Push Hook".to_string()),
                ("X-Gitlab-Token", "guess".to_string()),
            ],
        ),
        ("no credentials", hook("config"), vec![]),
    ];
    let mut answers = Vec::new();
    for (what, url, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = http_post(url, &headers, body).await;
        answers.push((*what, answer));
    }
    for (what, answer) in &answers {
        assert_eq!(
            answer,
            &(REFUSED, REFUSED_BODY.to_string()),
            "{what} is answered like every other refusal: {answers:#?}"
        );
    }
    let config = t.api::<GitRepository>().get("config").await.unwrap();
    assert_eq!(annotation(&config), None, "no refused call triggered a fetch");
}

/// A webhook Secret whose token is empty opens nothing, even to a sender that signs with the empty key (which
/// anyone can) or sends an empty token.
#[tokio::test]
async fn an_empty_token_is_refused() {
    let t = TestEnv::new("hook-empty").await;
    t.repo.write("apps/app.yaml", CM);
    t.repo.commit_and_push("one");
    t.create_secret("empty", &[("token", "")]).await;
    t.create_gitrepo(
        "config",
        json!({"url": t.repo.url, "interval": "1h", "webhookSecretRef": {"name": "empty"}}),
    )
    .await;
    let url = format!("{}/hooks/{}/config", t.webhook_base, t.namespace);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let empty_key_sig = github_signature("", body);
    let gitea_sig = empty_key_sig.replace("sha256=", "");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &empty_key_sig)],
        vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", &gitea_sig)],
        vec![("X-Signature-256", &empty_key_sig)],
        vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "")],
        vec![("Authorization", "Bearer ")],
    ];
    for headers in cases {
        let answer = http_post(&url, &headers, body).await;
        assert_eq!(answer, (REFUSED, REFUSED_BODY.to_string()), "{headers:?}");
    }
    let config = t.api::<GitRepository>().get("config").await.unwrap();
    assert_eq!(annotation(&config), None, "nothing was triggered");
}

/// A push payload of `len` bytes (valid JSON naming `refs/heads/main`), padded with spaces inside a string.
fn push_body_of_len(len: usize) -> Vec<u8> {
    let head = br#"{"ref":"refs/heads/main","pad":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.resize(len - tail.len(), b' ');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    body
}

/// The receiver reads at most [`MAX_BODY_BYTES`] (1 MiB): one byte more is refused with 413 before anything is
/// looked up, even when correctly signed, and triggers nothing; exactly 1 MiB is still accepted.
#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413_and_triggers_nothing() {
    assert_eq!(MAX_BODY_BYTES, 1024 * 1024);
    let t = TestEnv::new("hook-large").await;
    setup(&t).await;
    let url = format!("{}/hooks/{}/config", t.webhook_base, t.namespace);
    let repos = t.api::<GitRepository>();

    let too_large = push_body_of_len(MAX_BODY_BYTES + 1);
    let sig = github_signature("hook-secret", &too_large);
    let (code, reply) = http_post(
        &url,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &too_large,
    )
    .await;
    assert_eq!(code, 413, "{reply}");
    // Without a Content-Length the limit holds too, counted as the body streams in.
    let (code, reply) = http_post_chunked(
        &url,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &too_large,
    )
    .await;
    assert_eq!(code, 413, "chunked: {reply}");
    assert_eq!(
        annotation(&repos.get("config").await.unwrap()),
        None,
        "nothing was triggered"
    );

    let largest = push_body_of_len(MAX_BODY_BYTES);
    let sig = github_signature("hook-secret", &largest);
    let (code, reply) = http_post(
        &url,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &largest,
    )
    .await;
    assert_eq!(code, 202, "{reply}");
    assert!(annotation(&repos.get("config").await.unwrap()).is_some());
}
