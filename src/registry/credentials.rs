//! Registry credentials from a `kubernetes.io/dockerconfigjson` Secret (what `kubectl create secret
//! docker-registry` writes), parsed without ever putting a credential into an error: the Secret's text may be
//! anything a tenant stored.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

/// The key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// A user name and password (or token) for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, <redacted>)", self.username)
    }
}

/// Credentials per registry host (`host[:port]`, with Docker Hub's aliases folded into `docker.io`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    hosts: BTreeMap<String, Basic>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("is not JSON with an \"auths\" object")]
    NotDockerConfig,
    #[error("entry {0:?} has neither \"auth\" nor \"username\" and \"password\"")]
    Incomplete(String),
    #[error("entry {0:?} has an \"auth\" that is not base64 of user:password")]
    BadAuth(String),
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Parses `.dockerconfigjson`. Errors name the entry (a host), never a value.
    pub fn parse(json: &[u8]) -> Result<Credentials, CredentialsError> {
        let config: DockerConfig = serde_json::from_slice(json).map_err(|_| CredentialsError::NotDockerConfig)?;
        let mut hosts = BTreeMap::new();
        for (key, entry) in config.auths {
            let basic = match (entry.username, entry.password, entry.auth) {
                (Some(username), Some(password), _) => Basic { username, password },
                (_, _, Some(auth)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(|| CredentialsError::BadAuth(key.clone()))?;
                    let (username, password) = decoded
                        .split_once(':')
                        .ok_or_else(|| CredentialsError::BadAuth(key.clone()))?;
                    Basic {
                        username: username.to_string(),
                        password: password.to_string(),
                    }
                }
                _ => return Err(CredentialsError::Incomplete(key)),
            };
            hosts.insert(host_of(&key), basic);
        }
        Ok(Credentials { hosts })
    }

    /// The credentials for a registry host, if the Secret has them.
    pub fn for_host(&self, host: &str) -> Option<&Basic> {
        self.hosts.get(&canonical_host(host))
    }

    /// Both sets, `other` winning where both name a host.
    pub fn merged(mut self, other: &Credentials) -> Credentials {
        for (host, basic) in &other.hosts {
            self.hosts.insert(host.clone(), basic.clone());
        }
        self
    }
}

/// A dockerconfig key (`https://index.docker.io/v1/`, `registry.example.io:5000`, ...) as a host.
fn host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    canonical_host(rest.split('/').next().unwrap_or(rest))
}

/// Docker Hub answers under several names; the image references say `docker.io`.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_and_username_forms_and_hub_aliases() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "127.0.0.1:5000": {"username": "u", "password": "p"}
        }}"#;
        let c = Credentials::parse(json).unwrap();
        assert_eq!(
            c.for_host("docker.io"),
            Some(&Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(c.for_host("127.0.0.1:5000").map(|b| b.username.as_str()), Some("u"));
        assert_eq!(c.for_host("127.0.0.1:5001"), None);
    }

    #[test]
    fn errors_never_carry_a_secret_value() {
        let secret = "c3VwZXJzZWNyZXQ="; // base64 of "supersecret": no colon
        let json = format!(r#"{{"auths": {{"r.io": {{"auth": "{secret}"}}}}}}"#);
        let e = Credentials::parse(json.as_bytes()).unwrap_err();
        assert_eq!(e, CredentialsError::BadAuth("r.io".into()));
        assert!(!e.to_string().contains(secret) && !e.to_string().contains("supersecret"));
        let e = Credentials::parse(b"password=hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        let basic = Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
    }
}
