//! Who is looking, and what they may see.
//!
//! `ferry ui` (local) reads with the caller's own kubeconfig, so the API server itself decides every read, as
//! for `kubectl proxy`. In the cluster (`ferry run --ui-addr`) the UI reads with Ferry's identity, which sees
//! every namespace; so each viewer proves who they are with a Kubernetes bearer token (TokenReview), and every
//! namespace and kind is shown only when a SubjectAccessReview says that user may `list` it there: nobody sees
//! more through the UI than through kubectl.
//!
//! Why reviews rather than impersonation: reading *as* the viewer would need Ferry to impersonate any user and
//! group, which is as much as cluster-admin (a group can be `system:masters`). Ferry may impersonate only
//! ServiceAccounts (manifests/rbac.yaml) and keeps it that way; asking the API server "may this user list X"
//! needs only `create` on tokenreviews and subjectaccessreviews, and a wrong answer can only hide things.
//!
//! Answers are cached briefly (tokens 30 s, decisions 10 s), so a page of 100 Environments costs a handful of
//! reviews, and a revoked right stops showing within seconds. What stays open (a live-update stream) asks again
//! past the cache ([`Authorizer::authenticate_now`], [`Authorizer::allowed_now`]), so its re-check period alone
//! bounds how long a revoked viewer keeps it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

/// How long a token's review is trusted.
const TOKEN_TTL: Duration = Duration::from_secs(30);
/// How long an access decision is trusted.
const DECISION_TTL: Duration = Duration::from_secs(10);
/// Cache entries kept at most (each map), so a flood of bogus tokens cannot grow memory without bound.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The API server could not be asked (the viewer is neither let in nor refused).
    #[error("asking the API server: {0}")]
    Kube(#[from] kube::Error),
}

/// An authenticated user as the API server knows them (the subject of access reviews).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Who a request comes from.
#[derive(Clone, Debug)]
pub enum Viewer {
    /// `ferry ui`: the caller's kubeconfig does the reading, so the API server decides.
    Local,
    /// In the cluster: a user whose token the API server reviewed.
    User(User),
}

impl Viewer {
    pub fn name(&self) -> Option<&str> {
        match self {
            Viewer::Local => None,
            Viewer::User(u) => Some(&u.name),
        }
    }
}

/// One question to the authorizer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: &'static str,
    pub group: String,
    pub resource: String,
    /// None: cluster-wide (or a cluster-scoped kind).
    pub namespace: Option<String>,
    /// One object (None: any of the kind). Named reviews are what Roles with `resourceNames` answer.
    pub name: Option<String>,
}

impl Access {
    pub fn list(group: &str, resource: &str, namespace: &str) -> Self {
        Access {
            verb: "list",
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: Some(namespace.to_string()),
            name: None,
        }
    }

    /// `get` on one Secret: what reading a kubeconfig Secret takes, and so what seeing through it takes.
    pub fn get_secret(namespace: &str, name: &str) -> Self {
        Access {
            verb: "get",
            group: String::new(),
            resource: "secrets".to_string(),
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
        }
    }
}

type Decisions = HashMap<(User, Access), (Instant, bool)>;
/// SHA-256 of a token → when it was reviewed, and whose it is (None: refused).
type Tokens = HashMap<[u8; 32], (Instant, Option<User>)>;

/// TokenReviews and SubjectAccessReviews with Ferry's client, cached.
pub struct Authorizer {
    client: Client,
    tokens: Mutex<Tokens>,
    decisions: Mutex<Decisions>,
}

impl Authorizer {
    pub fn new(client: Client) -> Self {
        Authorizer {
            client,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The user a bearer token belongs to, or None when the API server does not accept it. The token itself is
    /// never stored or logged: the cache is keyed by its SHA-256.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((at, user)) = lock(&self.tokens).get(&key)
            && at.elapsed() < TOKEN_TTL
        {
            return Ok(user.clone());
        }
        self.authenticate_now(token).await
    }

    /// [`Authorizer::authenticate`] asking the API server even when a recent answer is cached: an expired or
    /// revoked token is noticed now, not a cache lifetime later. The answer refreshes the cache.
    pub async fn authenticate_now(&self, token: &str) -> Result<Option<User>, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username.filter(|n| !n.is_empty())?,
                    uid: u.uid,
                    groups: u.groups.unwrap_or_default(),
                    extra: u.extra.unwrap_or_default(),
                })
            });
        let mut tokens = lock(&self.tokens);
        evict(&mut tokens, TOKEN_TTL);
        tokens.insert(key, (Instant::now(), user.clone()));
        Ok(user)
    }

    /// Whether `viewer` may do `access`. Local viewers: always (their own client reads, and the API server
    /// refuses what they may not).
    pub async fn allowed(&self, viewer: &Viewer, access: &Access) -> Result<bool, AuthError> {
        let user = match viewer {
            Viewer::Local => return Ok(true),
            Viewer::User(u) => u,
        };
        if let Some((at, allowed)) = lock(&self.decisions).get(&(user.clone(), access.clone()))
            && at.elapsed() < DECISION_TTL
        {
            return Ok(*allowed);
        }
        self.review(user, access).await
    }

    /// [`Authorizer::allowed`] asking the API server even when a recent decision is cached: a deleted
    /// RoleBinding is noticed now. The answer refreshes the cache, so pages see it too.
    pub async fn allowed_now(&self, viewer: &Viewer, access: &Access) -> Result<bool, AuthError> {
        match viewer {
            Viewer::Local => Ok(true),
            Viewer::User(user) => self.review(user, access).await,
        }
    }

    /// One SubjectAccessReview, its answer cached.
    async fn review(&self, user: &User, access: &Access) -> Result<bool, AuthError> {
        let key = (user.clone(), access.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.to_string()),
                    group: Some(access.group.clone()),
                    resource: Some(access.resource.clone()),
                    namespace: access.namespace.clone(),
                    name: access.name.clone(),
                    ..ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let allowed = answer.status.is_some_and(|s| s.allowed && s.denied != Some(true));
        let mut decisions = lock(&self.decisions);
        evict(&mut decisions, DECISION_TTL);
        decisions.insert(key, (Instant::now(), allowed));
        Ok(allowed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops expired entries once the map is full (and everything, if they are all fresh: a flood).
fn evict<K, V>(map: &mut HashMap<K, (Instant, V)>, ttl: Duration) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, (at, _)| at.elapsed() < ttl);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
}

/// The bearer token of a request: the `Authorization: Bearer` header, else the login cookie.
pub fn request_token(headers: &http::HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        let token = token.trim();
        if !token.is_empty() {
            return Some(token.to_string());
        }
    }
    cookie(headers, super::server::COOKIE)
}

/// The value of cookie `name`.
pub fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_header_wins_over_the_cookie() {
        let h = headers(&[("authorization", "Bearer abc"), ("cookie", "x=1; ferry-token=def")]);
        assert_eq!(request_token(&h).as_deref(), Some("abc"));
        let h = headers(&[("cookie", "x=1; ferry-token=def")]);
        assert_eq!(request_token(&h).as_deref(), Some("def"));
        assert_eq!(request_token(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(request_token(&headers(&[("cookie", "ferry-token=")])), None);
    }

    #[test]
    fn full_caches_are_emptied_of_stale_entries() {
        let mut map: HashMap<u32, (Instant, bool)> = HashMap::new();
        let old = Instant::now() - Duration::from_secs(60);
        for i in 0..MAX_ENTRIES as u32 {
            map.insert(i, (if i == 0 { Instant::now() } else { old }, true));
        }
        evict(&mut map, Duration::from_secs(10));
        assert_eq!(map.len(), 1);
    }
}
