//! Source: turns a `GitRepository` spec into a commit, and a commit + path into manifest files.
//!
//! Every URL gets one bare mirror under the storage directory; fetches into it are incremental and serialized
//! per URL, so any number of GitRepositories and Environments on one URL share it. git2 is blocking, so callers
//! run these functions on a blocking thread.

mod auth;
pub mod credentials;
mod export;
mod links;
mod mirror;
mod revision;
mod tree;

pub use auth::Credentials;
pub use export::{ESCAPING_SYMLINKS, export_tree, removed_links};
pub use links::{LinkProblem, real_path_beneath, resolve_beneath, symlinks_below};
pub use mirror::{FetchOptions, Fetched, MirrorStore};
pub use revision::{RefSpec, Revision, resolve_ref_spec};
pub use tree::{MAX_FILE_BYTES, ManifestFile, normalize_path};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid URL {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error("invalid ref: {0}")]
    InvalidRef(String),
    #[error("{what} not found in {url}")]
    RefNotFound { what: String, url: String },
    #[error("fetching {url} failed: {message}")]
    Fetch { url: String, message: String },
    #[error("fetching {url} timed out after {seconds}s")]
    Timeout { url: String, seconds: u64 },
    #[error("commit {0} is not in the local mirror")]
    CommitMissing(String),
    #[error("path {path:?} not found at {revision}")]
    PathNotFound { path: String, revision: String },
    #[error("path {0:?} is invalid: it must be relative and stay inside the repository")]
    InvalidPath(String),
    #[error("reading the mirror failed: {0}")]
    Storage(String),
    /// The storage directory could not be written (full, read-only, gone): nothing of the commit is used.
    /// `path` is the directory under `--storage-dir`, `message` the operating system's error.
    #[error("storage {path}: {message}")]
    Disk { path: String, message: String },
    #[error("{0}")]
    Auth(String),
    #[error("host verification failed: {0}")]
    HostKey(String),
    #[error("{url} is larger than the limit of {max_bytes} bytes")]
    TooLarge { url: String, max_bytes: u64 },
}

/// The operating system's error alone ("No space left on device (os error 28)"), without the path some
/// wrappers add: temporary names differ on every attempt, and a message that changes each retry would rewrite
/// status (and raise an Event) each time.
pub(crate) fn os_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    // tempfile's errors carry the kind but not the code: the usual ones get their code back.
    let code = e.raw_os_error().or(match e.kind() {
        ErrorKind::StorageFull => Some(libc::ENOSPC),
        ErrorKind::ReadOnlyFilesystem => Some(libc::EROFS),
        ErrorKind::QuotaExceeded => Some(libc::EDQUOT),
        ErrorKind::PermissionDenied => Some(libc::EACCES),
        ErrorKind::NotFound => Some(libc::ENOENT),
        _ => None,
    });
    match code {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

/// The URL with any user info removed, the only form of a URL that may reach logs, status or events.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://***@{host}{path}");
        }
    }
    url.to_string()
}

/// Checks the URL's shape before any network call, so typos fail fast with a clear message. `file://` is
/// refused unless `allow_file`: it would let any GitRepository read the controller's disk, other tenants'
/// mirrors included.
pub fn validate_url(url: &str, allow_file: bool) -> Result<(), SourceError> {
    let invalid = |why: &str| SourceError::InvalidUrl {
        url: redact_url(url),
        why: why.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("missing scheme (expected https://, http://, ssh://, git:// or file://)"))?;
    match scheme {
        "https" | "http" | "ssh" | "git" => {}
        "file" if allow_file => {}
        "file" => {
            return Err(invalid(
                "file:// URLs are disabled (ferry run --allow-file-urls enables them)",
            ));
        }
        other => return Err(invalid(&format!("unsupported scheme {other:?}"))),
    }
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("empty or contains whitespace"));
    }
    if scheme != "file" {
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        if host.is_empty() || host.starts_with(':') {
            return Err(invalid("missing host"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Reason;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://user:s3cret@example.com/org/repo.git"),
            "https://***@example.com/org/repo.git"
        );
        assert_eq!(redact_url("git://127.0.0.1:9418/r"), "git://127.0.0.1:9418/r");
    }

    #[test]
    fn validates_urls() {
        assert!(validate_url("https://example.com/r.git", false).is_ok());
        assert!(validate_url("git://127.0.0.1:9418/r", false).is_ok());
        assert!(validate_url("file:///tmp/r", true).is_ok());
        assert!(validate_url("file:///tmp/r", false).is_err());
        for bad in [
            "example.com/r",
            "ftp://x/r",
            "https://",
            "https:///path",
            "https://a b/c",
        ] {
            let err = validate_url(bad, true).unwrap_err();
            assert_eq!(err.reason(), Reason::InvalidUrl, "{bad}");
        }
    }
}
