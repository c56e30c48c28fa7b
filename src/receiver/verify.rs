//! Push-webhook verification, pure: which provider sent a call, whether its signature or token is right, and
//! which ref it pushed. Comparisons of secrets are constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::GitRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Generic,
}

/// What a verified call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A push (or a generic call): fetch now. `pushed_ref` is e.g. `refs/heads/main` when the payload says.
    Push { pushed_ref: Option<String> },
    /// A ping or another event: acknowledged, nothing to do.
    Ignore(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing or invalid signature or token")]
    Unauthorized,
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// Case-insensitive header lookup over (name, value) pairs.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

pub fn provider<H: Headers + ?Sized>(headers: &H) -> Provider {
    if headers.get("x-github-event").is_some() {
        Provider::GitHub
    } else if headers.get("x-gitlab-event").is_some() {
        Provider::GitLab
    } else if headers.get("x-gitea-event").is_some() || headers.get("x-forgejo-event").is_some() {
        Provider::Gitea
    } else {
        Provider::Generic
    }
}

fn hmac_hex_matches(key: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn token_matches(expected: &[u8], given: &str) -> bool {
    // HMAC both sides with a fixed key so the comparison time does not depend on where they differ.
    let digest = |v: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"ferry-token-compare").expect("any key length works");
        mac.update(v);
        mac.finalize().into_bytes()
    };
    !expected.is_empty() && digest(expected) == digest(given.as_bytes())
}

/// Verifies a call with the shared `secret` and decides what it asks for.
///
/// An empty `secret` refuses every call: as a token it would match an empty header, and as an HMAC key it
/// would let anyone compute a valid signature, so an empty Secret value must mean "no webhook", not "open".
pub fn verify<H: Headers + ?Sized>(headers: &H, body: &[u8], secret: &[u8]) -> Result<Verdict, VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::Unauthorized);
    }
    let provider = provider(headers);
    let authentic = match provider {
        Provider::GitHub => headers
            .get("x-hub-signature-256")
            .and_then(|s| s.strip_prefix("sha256="))
            .is_some_and(|sig| hmac_hex_matches(secret, body, sig)),
        Provider::Gitea => headers
            .get("x-gitea-signature")
            .or_else(|| headers.get("x-forgejo-signature"))
            .is_some_and(|sig| hmac_hex_matches(secret, body, sig)),
        Provider::GitLab => headers.get("x-gitlab-token").is_some_and(|t| token_matches(secret, t)),
        Provider::Generic => {
            headers
                .get("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| token_matches(secret, t))
                || headers
                    .get("x-signature-256")
                    .and_then(|s| s.strip_prefix("sha256="))
                    .is_some_and(|sig| hmac_hex_matches(secret, body, sig))
        }
    };
    if !authentic {
        return Err(VerifyError::Unauthorized);
    }
    let event = match provider {
        Provider::GitHub => headers.get("x-github-event").unwrap_or_default(),
        Provider::GitLab => headers.get("x-gitlab-event").unwrap_or_default(),
        Provider::Gitea => headers
            .get("x-gitea-event")
            .or_else(|| headers.get("x-forgejo-event"))
            .unwrap_or_default(),
        Provider::Generic => "push",
    };
    let is_push = matches!(event, "push" | "Push Hook" | "Tag Push Hook");
    if !is_push {
        return Ok(Verdict::Ignore(format!("{event:?} event acknowledged")));
    }
    let pushed_ref = if body.iter().all(u8::is_ascii_whitespace) && provider == Provider::Generic {
        None
    } else {
        let payload: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if !payload.is_object() {
            return Err(VerifyError::Malformed("expected a JSON object".to_string()));
        }
        payload.get("ref").and_then(|r| r.as_str()).map(str::to_string)
    };
    Ok(Verdict::Push { pushed_ref })
}

/// Whether a push of `pushed_ref` can change what a GitRepository with `reference` resolves to.
pub fn push_affects(reference: &GitRef, pushed_ref: Option<&str>) -> bool {
    let Some(pushed) = pushed_ref else {
        return true;
    };
    if reference.commit.is_some() {
        return false;
    }
    if let Some(tag) = &reference.tag {
        return pushed == format!("refs/tags/{tag}");
    }
    if reference.semver.is_some() {
        return pushed.starts_with("refs/tags/");
    }
    let branch = reference.branch.as_deref().unwrap_or("main");
    pushed == format!("refs/heads/{branch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    #[test]
    fn github_signature() {
        let sig = format!("sha256={}", sign(b"k", BODY));
        let h: &[(&str, &str)] = &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)];
        assert_eq!(
            verify(h, BODY, b"k"),
            Ok(Verdict::Push {
                pushed_ref: Some("refs/heads/main".into())
            })
        );
        assert_eq!(verify(h, BODY, b"other"), Err(VerifyError::Unauthorized));
        assert_eq!(
            verify(h, b"{\"ref\":\"x\"}", b"k"),
            Err(VerifyError::Unauthorized),
            "body was changed"
        );
        let ping: &[(&str, &str)] = &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)];
        assert!(matches!(verify(ping, BODY, b"k"), Ok(Verdict::Ignore(_))));
        let unsigned: &[(&str, &str)] = &[("X-GitHub-Event", "push")];
        assert_eq!(verify(unsigned, BODY, b"k"), Err(VerifyError::Unauthorized));
    }

    #[test]
    fn gitea_and_forgejo_signatures() {
        let sig = sign(b"k", BODY);
        for (event, signature) in [
            ("X-Gitea-Event", "X-Gitea-Signature"),
            ("X-Forgejo-Event", "X-Forgejo-Signature"),
        ] {
            let h: &[(&str, &str)] = &[(event, "push"), (signature, &sig)];
            assert!(matches!(verify(h, BODY, b"k"), Ok(Verdict::Push { .. })));
            assert_eq!(verify(h, BODY, b"nope"), Err(VerifyError::Unauthorized));
        }
    }

    #[test]
    fn gitlab_token() {
        let h: &[(&str, &str)] = &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "tok")];
        assert!(matches!(verify(h, BODY, b"tok"), Ok(Verdict::Push { .. })));
        assert_eq!(verify(h, BODY, b"tok2"), Err(VerifyError::Unauthorized));
    }

    #[test]
    fn generic_bearer_or_signature_and_malformed_bodies() {
        let h: &[(&str, &str)] = &[("Authorization", "Bearer tok")];
        assert_eq!(verify(h, b"", b"tok"), Ok(Verdict::Push { pushed_ref: None }));
        assert_eq!(
            verify(h, b"", b""),
            Err(VerifyError::Unauthorized),
            "an empty secret never matches"
        );
        assert!(matches!(
            verify(h, b"{not json", b"tok"),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(verify(h, b"[1]", b"tok"), Err(VerifyError::Malformed(_))));
        let sig = format!("sha256={}", sign(b"k", BODY));
        let h: &[(&str, &str)] = &[("X-Signature-256", &sig)];
        assert!(matches!(verify(h, BODY, b"k"), Ok(Verdict::Push { .. })));
    }

    /// Each provider, called with exactly what it would send if the key were empty (an HMAC with the empty
    /// key, an empty token), is refused: an empty Secret value opens nothing.
    #[test]
    fn an_empty_secret_refuses_every_provider() {
        let empty_sig = sign(b"", BODY);
        let prefixed = format!("sha256={empty_sig}");
        let calls: Vec<Vec<(&str, &str)>> = vec![
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &prefixed)],
            vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", &empty_sig)],
            vec![("X-Forgejo-Event", "push"), ("X-Forgejo-Signature", &empty_sig)],
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "")],
            vec![("Authorization", "Bearer ")],
            vec![("X-Signature-256", &prefixed)],
            vec![],
        ];
        for h in calls {
            assert_eq!(verify(h.as_slice(), BODY, b""), Err(VerifyError::Unauthorized), "{h:?}");
        }
    }

    #[test]
    fn pushes_only_affect_repos_tracking_the_pushed_ref() {
        let branch = |b: &str| GitRef {
            branch: Some(b.into()),
            ..GitRef::default()
        };
        assert!(push_affects(&branch("main"), Some("refs/heads/main")));
        assert!(!push_affects(&branch("main"), Some("refs/heads/feature")));
        assert!(push_affects(&GitRef::default(), Some("refs/heads/main")));
        assert!(push_affects(&branch("x"), None));
        let semver = GitRef {
            semver: Some(">=1".into()),
            ..GitRef::default()
        };
        assert!(push_affects(&semver, Some("refs/tags/v1.2.0")));
        assert!(!push_affects(&semver, Some("refs/heads/main")));
        let commit = GitRef {
            commit: Some("a".repeat(40)),
            ..GitRef::default()
        };
        assert!(!push_affects(&commit, Some("refs/heads/main")));
    }
}
