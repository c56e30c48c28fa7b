//! Registry prefixes (`prod.example.io/team/`) and whether an image lives under one, at a path boundary.
//!
//! A prefix is matched against the image's *fully-qualified* reference, component by component: the registry
//! host must be the same host (case-insensitive, as DNS is) with the same port, and every path component of
//! the prefix must equal the image's component at that position. So `prod.example.io/team/` covers
//! `prod.example.io/team/app` but never `prod.example.io.evil.com/team/app`, `prod.example.io:5000/team/app`
//! or `prod.example.io/teamx/app`; `docker.io/library/` covers `nginx`.

use std::fmt;

use super::reference::{DOCKER_HUB, ImageReference, valid_domain, valid_path_component};

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("registry prefix is empty")]
    Empty,
    #[error(
        "registry prefix {0:?} must start with a registry host (a name with a dot or a port, or localhost), e.g. docker.io/library/"
    )]
    NoRegistryHost(String),
    #[error("registry prefix {prefix:?}: registry host {host:?} is malformed")]
    InvalidHost { prefix: String, host: String },
    #[error("registry prefix {prefix:?}: path component {component:?} is malformed (lowercase letters, digits, . _ -)")]
    InvalidPath { prefix: String, component: String },
    #[error("registry prefix {0:?} names a tag or digest; a prefix names a registry or a repository path")]
    HasTagOrDigest(String),
}

/// A parsed registry prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPrefix {
    /// Lower-cased host with port.
    host: String,
    components: Vec<String>,
    /// `team/` (trailing slash): only repositories *under* `team`, not a repository named `team` itself.
    under_only: bool,
}

impl RegistryPrefix {
    pub fn parse(s: &str) -> Result<Self, PrefixError> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(PrefixError::Empty);
        }
        if trimmed.contains('@') {
            return Err(PrefixError::HasTagOrDigest(s.to_string()));
        }
        let under_only = trimmed.ends_with('/');
        let body = trimmed.trim_end_matches('/');
        let (host, path) = body.split_once('/').unwrap_or((body, ""));
        if !(host == "localhost" || host.contains(['.', ':'])) {
            return Err(PrefixError::NoRegistryHost(s.to_string()));
        }
        if !valid_domain(host) {
            return Err(PrefixError::InvalidHost {
                prefix: s.to_string(),
                host: host.to_string(),
            });
        }
        let mut host = host.to_ascii_lowercase();
        if host == "index.docker.io" {
            host = DOCKER_HUB.to_string();
        }
        let mut components = Vec::new();
        if !path.is_empty() {
            for component in path.split('/') {
                if component.contains(':') {
                    return Err(PrefixError::HasTagOrDigest(s.to_string()));
                }
                if !valid_path_component(component) {
                    return Err(PrefixError::InvalidPath {
                        prefix: s.to_string(),
                        component: component.to_string(),
                    });
                }
                components.push(component.to_string());
            }
        }
        Ok(RegistryPrefix {
            host,
            components,
            // a bare host always means "anything in this registry"
            under_only: under_only || path.is_empty(),
        })
    }

    /// Whether `image` is in this registry and under this path.
    pub fn matches(&self, image: &ImageReference) -> bool {
        if image.registry_key() != self.host {
            return false;
        }
        let parts: Vec<&str> = image.path().split('/').collect();
        if parts.len() < self.components.len() || (self.under_only && parts.len() == self.components.len()) {
            return false;
        }
        self.components.iter().zip(&parts).all(|(a, b)| a == b)
    }
}

impl fmt::Display for RegistryPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        for c in &self.components {
            write!(f, "/{c}")?;
        }
        if self.under_only {
            f.write_str("/")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(prefix: &str, image: &str) -> bool {
        let p = RegistryPrefix::parse(prefix).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        let i = ImageReference::parse(image).unwrap_or_else(|e| panic!("{image}: {e}"));
        p.matches(&i)
    }

    #[test]
    fn matches_at_path_boundaries_only() {
        assert!(m("prod.example.io/team/", "prod.example.io/team/app"));
        assert!(m("prod.example.io/team/", "prod.example.io/team/app:1.0"));
        assert!(m(
            "prod.example.io/team/",
            "prod.example.io/team/sub/app@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
        ));
        assert!(m("prod.example.io/team", "prod.example.io/team/app"));
        assert!(m("prod.example.io/team", "prod.example.io/team"));
        assert!(!m("prod.example.io/team/", "prod.example.io/team"));
        assert!(!m("prod.example.io/team/", "prod.example.io/teamx/app"));
        assert!(!m("prod.example.io/team", "prod.example.io/teamx/app"));
        assert!(!m("prod.example.io/team/", "prod.example.io.evil.com/team/app"));
        assert!(!m("prod.example.io", "prod.example.io.evil.com/team/app"));
        assert!(!m("prod.example.io/", "evilprod.example.io/team/app"));
        assert!(!m("prod.example.io/team/", "other.io/prod.example.io/team/app"));
    }

    #[test]
    fn ports_are_part_of_the_registry() {
        assert!(m("localhost:5000/", "localhost:5000/app"));
        assert!(!m("localhost:5000/", "localhost:50001/app"));
        assert!(!m("localhost:5000/", "localhost/app"));
        assert!(!m("prod.example.io/", "prod.example.io:8443/app"));
        assert!(m("prod.example.io:8443", "prod.example.io:8443/team/app"));
        assert!(m("[::1]:5000/", "[::1]:5000/app"));
    }

    #[test]
    fn hosts_are_case_insensitive_paths_are_not_loosened() {
        assert!(m("Prod.Example.IO/team/", "prod.example.io/team/app"));
        assert!(m("prod.example.io/team/", "PROD.example.io/team/app"));
        assert!(RegistryPrefix::parse("prod.example.io/Team/").is_err());
    }

    #[test]
    fn docker_hub_is_normalized() {
        assert!(m("docker.io/library/", "nginx"));
        assert!(m("docker.io/library/", "nginx:1.27"));
        assert!(m("index.docker.io/library/", "docker.io/library/nginx"));
        assert!(m("docker.io/", "bitnami/redis"));
        assert!(!m("docker.io/library/", "bitnami/redis"));
        assert!(!m("docker.io/bitnami/", "nginx"));
    }

    #[test]
    fn trailing_slashes_and_whitespace() {
        assert!(m("prod.example.io/team//", "prod.example.io/team/app"));
        assert!(m(" prod.example.io/team/ ", "prod.example.io/team/app"));
        assert_eq!(
            RegistryPrefix::parse("prod.example.io").unwrap().to_string(),
            "prod.example.io/"
        );
        assert_eq!(
            RegistryPrefix::parse("prod.example.io/team").unwrap().to_string(),
            "prod.example.io/team"
        );
    }

    #[test]
    fn malformed_prefixes() {
        assert_eq!(RegistryPrefix::parse(""), Err(PrefixError::Empty));
        assert_eq!(RegistryPrefix::parse("  "), Err(PrefixError::Empty));
        for (p, want) in [
            ("team/", "registry host"),
            ("nginx", "registry host"),
            ("https://prod.example.io/", "malformed"),
            ("prod.example.io/team:1.0", "tag or digest"),
            ("prod.example.io/team@sha256:00", "tag or digest"),
            ("-prod.example.io/", "malformed"),
            ("prod.example.io/a//b", "malformed"),
            ("prod.example.io/*", "malformed"),
            ("*.example.io/", "malformed"),
        ] {
            let err = RegistryPrefix::parse(p).expect_err(p);
            assert!(err.to_string().contains(want), "{p}: {err}");
        }
    }
}
