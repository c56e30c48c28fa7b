//! Image references, parsed exactly as the container runtime parses them (the `distribution/reference`
//! grammar with Docker's normalization: `ParseNormalizedNamed`), so a policy decides about the image the
//! kubelet will actually pull, not about the string a manifest happens to contain.
//!
//! `nginx` is `docker.io/library/nginx`; `index.docker.io/x/y` is `docker.io/x/y`; the first path component
//! is a registry host only when it contains `.` or `:`, is `localhost`, or has upper-case letters; a reference
//! may carry a tag, a digest, or both (the runtime then pulls by digest).

use std::fmt;

/// The registry Docker Hub images live in, after normalization.
pub const DOCKER_HUB: &str = "docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
/// The runtime's limit on the repository path (without the registry host).
pub const NAME_MAX: usize = 255;
/// A tag is at most 128 characters.
pub const TAG_MAX: usize = 128;

/// Why a string is not an image reference the runtime would pull.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image reference is empty")]
    Empty,
    #[error("invalid image reference {0:?}: a 64-character hexadecimal string is an image ID, not a repository name")]
    IdentifierOnly(String),
    #[error("invalid image reference {reference:?}: repository name {path:?} must be lowercase")]
    Uppercase { reference: String, path: String },
    #[error("invalid image reference {reference:?}: repository name is longer than {NAME_MAX} characters")]
    NameTooLong { reference: String },
    #[error("invalid image reference {reference:?}: registry host {domain:?} is malformed")]
    InvalidDomain { reference: String, domain: String },
    #[error("invalid image reference {reference:?}: path component {component:?} is malformed")]
    InvalidPath { reference: String, component: String },
    #[error(
        "invalid image reference {reference:?}: tag {tag:?} is malformed (1-128 of [A-Za-z0-9_.-], not starting with . or -)"
    )]
    InvalidTag { reference: String, tag: String },
    #[error("invalid image reference {reference:?}: digest {digest:?} is malformed")]
    InvalidDigest { reference: String, digest: String },
    #[error(
        "invalid image reference {reference:?}: digest algorithm {algorithm:?} is not supported (sha256, sha384, sha512)"
    )]
    UnsupportedDigest { reference: String, algorithm: String },
}

/// A fully-qualified image reference: registry host (`domain`, including any port), repository `path`, and
/// an optional tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// Parses a reference the way the kubelet's runtime does (`ParseNormalizedNamed`).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ReferenceError::IdentifierOnly(s.to_string()));
        }
        let (domain, remainder) = split_domain(s);
        let (name, digest) = match remainder.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (remainder.as_str(), None),
        };
        let (path, tag) = match name.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (name, None),
        };
        if path.to_lowercase() != path {
            return Err(ReferenceError::Uppercase {
                reference: s.to_string(),
                path: path.to_string(),
            });
        }
        if !valid_domain(&domain) {
            return Err(ReferenceError::InvalidDomain {
                reference: s.to_string(),
                domain,
            });
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                return Err(ReferenceError::InvalidPath {
                    reference: s.to_string(),
                    component: component.to_string(),
                });
            }
        }
        if path.len() > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                reference: s.to_string(),
            });
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::InvalidTag {
                reference: s.to_string(),
                tag: tag.to_string(),
            });
        }
        if let Some(digest) = digest {
            validate_digest(digest).map_err(|e| match e {
                DigestProblem::Malformed => ReferenceError::InvalidDigest {
                    reference: s.to_string(),
                    digest: digest.to_string(),
                },
                DigestProblem::Unsupported(algorithm) => ReferenceError::UnsupportedDigest {
                    reference: s.to_string(),
                    algorithm,
                },
            })?;
        }
        Ok(ImageReference {
            domain,
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// The registry host, with its port if any (`docker.io`, `localhost:5000`, `[::1]:5000`), as written
    /// (hosts are case-insensitive; compare with [`ImageReference::registry_key`]).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The registry host lower-cased: DNS names are case-insensitive, so `Prod.Example.io` and
    /// `prod.example.io` are the same registry.
    pub fn registry_key(&self) -> String {
        self.domain.to_ascii_lowercase()
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// `algorithm:hex`, when the reference names a digest.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`, the repository without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag the runtime pulls when neither tag nor digest is given: `latest`.
    pub fn effective_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// The same repository and tag, pinned to `digest` (`repo:tag@sha256:…`): what the runtime pulls is then
    /// exactly that content, the tag stays for readers.
    pub fn with_digest(&self, digest: &str) -> Result<Self, ReferenceError> {
        validate_digest(digest).map_err(|_| ReferenceError::InvalidDigest {
            reference: self.to_string(),
            digest: digest.to_string(),
        })?;
        Ok(ImageReference {
            digest: Some(digest.to_string()),
            ..self.clone()
        })
    }

    /// The same path and tag in another registry host (for copies between registries).
    pub fn with_repository(&self, domain: &str, path: &str) -> Result<Self, ReferenceError> {
        let mut s = format!("{domain}/{path}");
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        ImageReference::parse(&s)
    }

    /// The short form `docker` prints (`nginx:1.27`, `bitnami/redis`, `ghcr.io/x/y`).
    pub fn familiar(&self) -> String {
        let mut out = if self.domain == DOCKER_HUB {
            match self.path.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.repository()
        };
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

/// The fully-qualified form: `docker.io/library/nginx:1.27@sha256:…`.
impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageReference::parse(s)
    }
}

/// `splitDockerDomain`: the first component is a registry host only if it looks like one.
fn split_domain(s: &str) -> (String, String) {
    let Some((first, rest)) = s.split_once('/') else {
        return (DOCKER_HUB.to_string(), format!("{OFFICIAL_PREFIX}{s}"));
    };
    let (domain, remainder) = if first == "localhost" || first.contains(['.', ':']) || first.to_lowercase() != first {
        if first == LEGACY_DOCKER_HUB {
            (DOCKER_HUB.to_string(), rest.to_string())
        } else {
            (first.to_string(), rest.to_string())
        }
    } else {
        (DOCKER_HUB.to_string(), s.to_string())
    };
    if domain == DOCKER_HUB && !remainder.contains('/') {
        return (domain, format!("{OFFICIAL_PREFIX}{remainder}"));
    }
    (domain, remainder)
}

/// `host[:port]`, host a DNS name (`[a-zA-Z0-9]` components, inner `-`) or a bracketed IPv6 address.
pub(crate) fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    match host {
        None => true,
        Some(host) => !host.is_empty() && host.split('.').all(valid_domain_component),
    }
}

fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty() && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-') && b[0] != b'-' && b[b.len() - 1] != b'-'
}

/// `[a-z0-9]+` runs joined by one `.`, one `_`, two `_`, or any number of `-`.
pub(crate) fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty() && b.len() <= TAG_MAX && word(b[0]) && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
}

enum DigestProblem {
    Malformed,
    Unsupported(String),
}

/// `go-digest`'s `Parse`: a registered algorithm and lower-case hex of its exact length.
fn validate_digest(digest: &str) -> Result<(), DigestProblem> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(DigestProblem::Malformed);
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            let well_formed = !other.is_empty()
                && other.as_bytes()[0].is_ascii_alphabetic()
                && other.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_+.".contains(&b))
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit());
            return Err(if well_formed {
                DigestProblem::Unsupported(other.to_string())
            } else {
                DigestProblem::Malformed
            });
        }
    };
    if hex.len() == len && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(DigestProblem::Malformed)
    }
}

/// Whether `digest` is `algorithm:hex` the runtime accepts.
pub fn is_valid_digest(digest: &str) -> bool {
    validate_digest(digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

    fn full(s: &str) -> String {
        ImageReference::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    // From distribution/reference normalize_test.go TestValidateReferenceName.
    #[test]
    fn valid_names() {
        for name in [
            "docker/docker",
            "library/debian",
            "debian",
            "docker.io/docker/docker",
            "docker.io/library/debian",
            "docker.io/debian",
            "index.docker.io/docker/docker",
            "index.docker.io/library/debian",
            "index.docker.io/debian",
            "127.0.0.1:5000/docker/docker",
            "127.0.0.1:5000/library/debian",
            "127.0.0.1:5000/debian",
            "192.168.0.1",
            "192.168.0.1:80",
            "192.168.0.1:8/debian",
            "192.168.0.2:25000/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "Docker/docker",
            "DOCKER/docker",
            // TestValidateRemoteName
            "docker-rules/docker",
            "docker---rules/docker",
            "doc/docker",
            "d/docker",
            "jess/t",
            "dock__er/docker",
        ] {
            assert!(
                ImageReference::parse(name).is_ok(),
                "{name} should be valid: {:?}",
                ImageReference::parse(name)
            );
        }
    }

    #[test]
    fn invalid_names() {
        let long = format!(
            "{}/docker",
            "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_".repeat(4)
        );
        for name in [
            "",
            "https://github.com/docker/docker",
            "docker/Docker",
            "-docker",
            "-docker/docker",
            "-docker.io/docker/docker",
            "docker///docker",
            "docker.io/docker/Docker",
            "docker.io/docker///docker",
            "[fc00::1]",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "[2001:db8:3:4::192.0.2.33]:5000/debian",
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "docker-/docker",
            "-docker-/docker",
            "____/____",
            "_docker/_docker",
            "dock..er/docker",
            "dock_.er/docker",
            "dock-.er/docker",
            "docker/",
            "/docker",
            "docker.io/",
            "nginx:",
            "nginx:-x",
            "nginx@sha256:abc",
            "nginx@sha256:DBCC1C35AC38DF41FD2F5E4130B32FFDB93EBAE8B3DBE638C23575912276FC9C",
            "nginx@md5:dbcc1c35ac38df41fd2f5e4130b32ffd",
            "nginx@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c",
            "example.com:/foo",
            "example.com:port/foo",
            "ex_ample.com/foo",
            "nginx:1.0:2.0",
            " nginx",
            "nginx ",
            long.as_str(),
        ] {
            assert!(ImageReference::parse(name).is_err(), "{name:?} should be invalid");
        }
        let tag = format!("nginx:{}", "a".repeat(129));
        assert!(ImageReference::parse(&tag).is_err());
        let tag = format!("nginx:{}", "a".repeat(128));
        assert!(ImageReference::parse(&tag).is_ok());
    }

    // TestParseRepositoryInfo and TestNormalizedSplitHostname.
    #[test]
    fn normalization() {
        for (input, domain, path) in [
            ("fooo/bar", "docker.io", "fooo/bar"),
            ("index.docker.io/fooo/bar", "docker.io", "fooo/bar"),
            ("ubuntu", "docker.io", "library/ubuntu"),
            ("library/ubuntu", "docker.io", "library/ubuntu"),
            ("docker.io/foo", "docker.io", "library/foo"),
            ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
            ("other/library", "docker.io", "other/library"),
            ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase"),
            ("127.0.0.1:8000/privatebase", "127.0.0.1:8000", "privatebase"),
            (
                "example.com:8000/private/moonbase",
                "example.com:8000",
                "private/moonbase",
            ),
            ("ubuntu-12.04-base", "docker.io", "library/ubuntu-12.04-base"),
            ("Foo/bar", "Foo", "bar"),
            ("FOO/bar", "FOO", "bar"),
            ("test.com/foo", "test.com", "foo"),
            ("test_com/foo", "docker.io", "test_com/foo"),
            ("test-com:8080/foo", "test-com:8080", "foo"),
            ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
            ("localhost/foo", "localhost", "foo"),
            ("localhost:5000/foo/bar", "localhost:5000", "foo/bar"),
            // a bare "localhost" is a Docker Hub repository, as the runtime has it
            ("localhost", "docker.io", "library/localhost"),
            ("localhost:5000", "docker.io", "library/localhost"),
        ] {
            let r = ImageReference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((r.domain(), r.path()), (domain, path), "{input}");
        }
        assert_eq!(ImageReference::parse("localhost:5000").unwrap().tag(), Some("5000"));
    }

    #[test]
    fn tags_and_digests() {
        let short = format!("busybox:latest@{D}");
        let r = ImageReference::parse(&short).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/{short}"));
        assert_eq!(r.familiar(), short);
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.effective_tag(), Some("latest"));
        assert_eq!(full(&format!("redis@{D}")), format!("docker.io/library/redis@{D}"));
        assert_eq!(
            ImageReference::parse(&format!("redis@{D}")).unwrap().effective_tag(),
            None
        );
        assert_eq!(full("redis"), "docker.io/library/redis");
        assert_eq!(ImageReference::parse("redis").unwrap().effective_tag(), Some("latest"));
        assert_eq!(full("dmcgowan/myapp:latest"), "docker.io/dmcgowan/myapp:latest");
        assert_eq!(full("localhost:5000/a/b:v1.2_3-x"), "localhost:5000/a/b:v1.2_3-x");
        assert_eq!(full("[::1]:5000/a:1"), "[::1]:5000/a:1");
        // 63 hex characters is a name, 64 is an ID
        assert_eq!(
            full("dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9"),
            "docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9"
        );
        let sha512 = format!("a@sha512:{}", "0".repeat(128));
        assert!(ImageReference::parse(&sha512).is_ok());
    }

    #[test]
    fn errors_are_specific() {
        assert!(matches!(
            ImageReference::parse("docker/Docker"),
            Err(ReferenceError::Uppercase { .. })
        ));
        assert!(matches!(
            ImageReference::parse(&format!("a@md5:{}", "0".repeat(32))),
            Err(ReferenceError::UnsupportedDigest { .. })
        ));
        assert!(matches!(
            ImageReference::parse("a:-b"),
            Err(ReferenceError::InvalidTag { .. })
        ));
        assert!(matches!(
            ImageReference::parse("a@sha256:0"),
            Err(ReferenceError::InvalidDigest { .. })
        ));
        assert!(matches!(
            ImageReference::parse("ex_ample.com/a"),
            Err(ReferenceError::InvalidDomain { .. })
        ));
        assert!(matches!(ImageReference::parse(""), Err(ReferenceError::Empty)));
    }

    #[test]
    fn familiar_names() {
        for (input, familiar) in [
            ("docker.io/library/redis", "redis"),
            ("docker.io/dmcgowan/myapp", "dmcgowan/myapp"),
            ("docker.io/library/foo/bar", "library/foo/bar"),
            ("example.com/privatebase", "example.com/privatebase"),
            ("index.docker.io/library/ubuntu:22.04", "ubuntu:22.04"),
        ] {
            assert_eq!(ImageReference::parse(input).unwrap().familiar(), familiar);
        }
    }

    #[test]
    fn pinning_keeps_the_tag() {
        let r = ImageReference::parse("prod.example.io/team/app:1.2").unwrap();
        let pinned = r.with_digest(D).unwrap();
        assert_eq!(pinned.to_string(), format!("prod.example.io/team/app:1.2@{D}"));
        assert!(r.with_digest("sha256:nothex").is_err());
        let moved = pinned.with_repository("prod.example.io", "team/app").unwrap();
        assert_eq!(moved, pinned);
        let moved = pinned.with_repository("other.io:5000", "x/app").unwrap();
        assert_eq!(moved.to_string(), format!("other.io:5000/x/app:1.2@{D}"));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            "[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,2}"
        }
        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("localhost".to_string()),
                "[a-z0-9]{1,8}(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?){1,3}",
                "\\[[0-9a-f]{0,4}:[0-9a-f:]{0,8}\\]",
            ]
        }
        fn reference() -> impl Strategy<Value = String> {
            (
                proptest::option::of((host(), proptest::option::of(0u32..70000))),
                proptest::collection::vec(component(), 1..4),
                proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
                proptest::option::of("[0-9a-f]{64}"),
            )
                // without a host, a first component with a dot would be read as one (and rejected)
                .prop_filter("first component looks like a host", |(domain, path, _, _)| {
                    domain.is_some() || path.len() == 1 || !path[0].contains('.')
                })
                .prop_map(|(domain, path, tag, digest)| {
                    let mut s = String::new();
                    if let Some((host, port)) = domain {
                        s.push_str(&host);
                        if let Some(port) = port {
                            s.push_str(&format!(":{port}"));
                        }
                        s.push('/');
                    }
                    s.push_str(&path.join("/"));
                    if let Some(tag) = tag {
                        s.push(':');
                        s.push_str(&tag);
                    }
                    if let Some(d) = digest {
                        s.push_str("@sha256:");
                        s.push_str(&d);
                    }
                    s
                })
        }

        proptest! {
            #[test]
            fn never_panics(s in "\\PC{0,300}") {
                let _ = ImageReference::parse(&s);
            }

            #[test]
            fn never_panics_near_valid(s in "[a-zA-Z0-9:/@._\\[\\]-]{0,80}") {
                if let Ok(r) = ImageReference::parse(&s) {
                    // whatever parses, its full form parses to itself
                    let again = ImageReference::parse(&r.to_string());
                    prop_assert_eq!(again, Ok(r));
                }
            }

            #[test]
            fn round_trips(s in reference()) {
                let r = ImageReference::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
                let again = ImageReference::parse(&r.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&again, &r);
                let familiar = ImageReference::parse(&r.familiar()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&familiar, &r);
                prop_assert!(r.to_string().ends_with(&s) || r.domain() == DOCKER_HUB);
            }
        }
    }
}
