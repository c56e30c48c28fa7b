//! One bare mirror per (URL, credentials), fetched incrementally, shared by every consumer of that URL.
//!
//! A fetch brings every branch and tag (pruning those deleted upstream), so any ref of the URL resolves locally
//! afterwards, and many GitRepositories on one URL need one network fetch per interval, not one each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::auth::{Credentials, known_hosts_accepts, ssh_host_port, verify_with_ca};
use super::export::{COMPLETE, export_tree};
use super::revision::{Revision, resolve_ref_spec};
use super::{SourceError, redact_url, validate_url};
use crate::api::GitRef;

const FETCH_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"];

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub timeout: Duration,
    /// Reuse a fetch of the same mirror younger than this instead of going to the network again.
    /// Zero forces a fetch (a webhook or a "reconcile now" request).
    pub max_age: Duration,
    /// Largest pack a fetch may download.
    pub max_bytes: u64,
    /// Accept `file://` URLs (local development and tests).
    pub allow_file: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(60),
            max_age: Duration::ZERO,
            max_bytes: 1 << 30,
            allow_file: false,
        }
    }
}

/// What a fetch resolved, and whether it went to the network for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub revision: Revision,
    pub network: bool,
}

#[derive(Default)]
struct MirrorState {
    last_fetch: Option<Instant>,
}

/// The on-disk cache of mirrors. Cheap to clone; clones share the per-mirror locks and counters.
#[derive(Clone)]
pub struct MirrorStore {
    root: PathBuf,
    mirrors: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<MirrorState>>>>>,
    network_fetches: Arc<AtomicU64>,
}

impl MirrorStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        set_socket_timeouts();
        MirrorStore {
            root: root.into(),
            mirrors: Arc::default(),
            network_fetches: Arc::default(),
        }
    }

    /// The mirror directory for a URL fetched with the credentials of `identity` (empty: anonymous).
    pub fn mirror_path(&self, url: &str, identity: &str) -> PathBuf {
        let digest = Sha256::digest(format!("{url}\0{identity}").as_bytes());
        self.root
            .join("git")
            .join(format!("{}.git", &hex::encode(digest)[..24]))
    }

    /// How many fetches went to the network since start (for benchmarks and metrics).
    pub fn network_fetches(&self) -> u64 {
        self.network_fetches.load(Ordering::Relaxed)
    }

    fn state_for(&self, path: &Path) -> Arc<Mutex<MirrorState>> {
        let mut mirrors = self.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        mirrors.entry(path.to_path_buf()).or_default().clone()
    }

    /// Brings the mirror up to date (unless a fetch younger than `max_age` exists) and resolves `reference`.
    /// Blocking: call from a blocking thread.
    pub fn fetch(
        &self,
        url: &str,
        reference: &GitRef,
        creds: &Credentials,
        opts: &FetchOptions,
    ) -> Result<Fetched, SourceError> {
        validate_url(url, opts.allow_file)?;
        let spec = resolve_ref_spec(reference)?;
        let path = self.mirror_path(url, &creds.identity);
        let state = self.state_for(&path);
        // Held for the whole fetch: concurrent requests for one mirror wait and then reuse its result.
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let repo = open_or_init(&path)?;
        let fresh = state.last_fetch.is_some_and(|t| t.elapsed() < opts.max_age);
        if !fresh {
            network_fetch(&repo, url, creds, opts).map_err(|e| storage_failure(&path, e))?;
            self.network_fetches.fetch_add(1, Ordering::Relaxed);
            state.last_fetch = Some(Instant::now());
            touch(&path);
        }
        let revision = spec.resolve(&repo, &redact_url(url))?;
        Ok(Fetched {
            revision,
            network: !fresh,
        })
    }

    /// The tree of `commit` on disk (exported once per commit and shared by every Environment on it).
    pub fn export(&self, url: &str, identity: &str, commit: &str) -> Result<PathBuf, SourceError> {
        let mirror = self.mirror_path(url, identity);
        let repo = git2::Repository::open_bare(&mirror).map_err(|_| SourceError::CommitMissing(commit.to_string()))?;
        let name = mirror
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        export_tree(&repo, commit, &self.root.join("trees").join(name).join(commit))
    }

    /// Whether `new` descends from `old` in the mirror: false means history was rewritten (force-push).
    pub fn descends(&self, url: &str, identity: &str, new: &str, old: &str) -> Option<bool> {
        let repo = git2::Repository::open_bare(self.mirror_path(url, identity)).ok()?;
        let (new, old) = (git2::Oid::from_str(new).ok()?, git2::Oid::from_str(old).ok()?);
        if new == old {
            return Some(true);
        }
        repo.graph_descendant_of(new, old).ok()
    }

    /// Deletes mirrors nobody fetched for `unused_for`, keeping the disk cache bounded. Returns how many.
    pub fn collect_garbage(&self, unused_for: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(self.root.join("git")) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let stamp = path.join("ferry-last-fetch");
            let age = std::fs::metadata(&stamp)
                .or_else(|_| std::fs::metadata(&path))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if age < unused_for {
                continue;
            }
            let state = self.state_for(&path);
            // Skip a mirror that is being fetched right now; it is in use.
            let Ok(mut state) = state.try_lock() else {
                continue;
            };
            if std::fs::remove_dir_all(&path).is_ok() {
                state.last_fetch = None;
                removed += 1;
            }
        }
        // Exported trees of commits nobody rendered for as long.
        let trees = self.root.join("trees");
        for mirror in std::fs::read_dir(&trees).into_iter().flatten().flatten() {
            for tree in std::fs::read_dir(mirror.path()).into_iter().flatten().flatten() {
                // The marker is touched on every use of the tree (see `export_tree`).
                let age = std::fs::metadata(tree.path().join(COMPLETE))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or(unused_for);
                if age >= unused_for {
                    let _ = std::fs::remove_dir_all(tree.path());
                }
            }
        }
        removed
    }
}

fn touch(path: &Path) {
    let _ = std::fs::write(path.join("ferry-last-fetch"), b"");
}

/// libgit2 waits on a silent server for ever by default (its deadline check runs only when data arrives), and
/// a fetch holds its mirror's lock while it runs: one hung Git host would stop every GitRepository on that URL.
/// Process-wide socket timeouts end such a fetch: connecting, and each read or write, give up after these.
const CONNECT_TIMEOUT_MS: i32 = 10_000;
const IO_TIMEOUT_MS: i32 = 30_000;

fn set_socket_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2 options are process-global and set here once, before any fetch runs.
        unsafe {
            if let Err(e) = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS) {
                tracing::warn!(error = %e, "could not set the git connect timeout");
            }
            if let Err(e) = git2::opts::set_server_timeout_in_milliseconds(IO_TIMEOUT_MS) {
                tracing::warn!(error = %e, "could not set the git socket timeout");
            }
        }
    });
}

fn network_fetch(
    repo: &git2::Repository,
    url: &str,
    creds: &Credentials,
    opts: &FetchOptions,
) -> Result<(), SourceError> {
    let safe_url = redact_url(url);
    let mut remote = repo.remote_anonymous(url).map_err(|e| SourceError::InvalidUrl {
        url: safe_url.clone(),
        why: e.message().replace(url, &safe_url),
    })?;
    let deadline = Instant::now() + opts.timeout;
    let aborted = Arc::new(Mutex::new(None::<SourceError>));
    let auth_failed = Arc::new(AtomicBool::new(false));
    let mut callbacks = git2::RemoteCallbacks::new();
    {
        let aborted = aborted.clone();
        let (max_bytes, timeout, safe_url) = (opts.max_bytes, opts.timeout, safe_url.clone());
        callbacks.transfer_progress(move |progress| {
            let failure = if Instant::now() > deadline {
                Some(SourceError::Timeout {
                    url: safe_url.clone(),
                    seconds: timeout.as_secs(),
                })
            } else if progress.received_bytes() as u64 > max_bytes {
                Some(SourceError::TooLarge {
                    url: safe_url.clone(),
                    max_bytes,
                })
            } else {
                None
            };
            match failure {
                Some(f) => {
                    *aborted.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                    false
                }
                None => true,
            }
        });
    }
    {
        let creds = creds.clone();
        let auth_failed = auth_failed.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, username, allowed| {
            // For `ssh://host/…` libgit2 first asks only for a user name; that is not a credential attempt.
            if allowed == git2::CredentialType::USERNAME {
                return git2::Cred::username(username.unwrap_or("git"));
            }
            attempts += 1;
            // libgit2 calls again after a rejection; a second call means the credentials were wrong.
            if attempts > 1 {
                auth_failed.store(true, Ordering::Relaxed);
                return Err(git2::Error::from_str("authentication failed"));
            }
            if let Some(key) = creds
                .ssh
                .as_ref()
                .filter(|_| allowed.contains(git2::CredentialType::SSH_KEY))
            {
                return git2::Cred::ssh_key_from_memory(
                    username.unwrap_or("git"),
                    None,
                    &key.private_key,
                    key.passphrase.as_deref(),
                );
            }
            if let Some((user, pass)) = creds.basic.as_ref() {
                return git2::Cred::userpass_plaintext(user, pass);
            }
            if allowed.contains(git2::CredentialType::USERNAME) {
                return git2::Cred::username(username.unwrap_or("git"));
            }
            auth_failed.store(true, Ordering::Relaxed);
            Err(git2::Error::from_str(
                "the server asks for credentials and no secretRef is set",
            ))
        });
    }
    {
        let creds = creds.clone();
        let url = url.to_string();
        let aborted = aborted.clone();
        callbacks.certificate_check(move |cert, host| {
            let reject = |why: String| {
                *aborted.lock().unwrap_or_else(|e| e.into_inner()) = Some(SourceError::HostKey(why.clone()));
                Err(git2::Error::from_str(&why))
            };
            if let Some(hostkey) = cert.as_hostkey() {
                let (Some(known_hosts), Some((h, port))) = (&creds.known_hosts, ssh_host_port(&url)) else {
                    return reject(format!("no known_hosts to verify the SSH host key of {host}"));
                };
                let Some(key) = hostkey.hostkey() else {
                    return reject(format!("the SSH server {host} sent no host key"));
                };
                return if known_hosts_accepts(known_hosts, &h, port, key) {
                    Ok(git2::CertificateCheckStatus::CertificateOk)
                } else {
                    reject(format!("the SSH host key of {h}:{port} is not in known_hosts"))
                };
            }
            if let (Some(ca), Some(x509)) = (&creds.ca_pem, cert.as_x509()) {
                return match verify_with_ca(x509.data(), ca, host) {
                    Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
                    Err(why) => reject(why),
                };
            }
            Ok(git2::CertificateCheckStatus::CertificatePassthrough)
        });
    }
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(callbacks);
    fo.download_tags(git2::AutotagOption::None);
    fo.prune(git2::FetchPrune::On);
    let header;
    if let Some(token) = &creds.bearer_token {
        header = format!("Authorization: Bearer {token}");
        fo.custom_headers(&[header.as_str()]);
    }
    remote.fetch(&FETCH_REFSPECS, Some(&mut fo), None).map_err(|e| {
        if let Some(failure) = aborted.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return failure;
        }
        let message = e.message().replace(url, &safe_url);
        if auth_failed.load(Ordering::Relaxed)
            || e.code() == git2::ErrorCode::Auth
            || e.class() == git2::ErrorClass::Http && message.contains("401")
        {
            return SourceError::Auth(format!("authentication to {safe_url} failed"));
        }
        SourceError::Fetch {
            url: safe_url.clone(),
            message,
        }
    })
}

fn open_or_init(path: &Path) -> Result<git2::Repository, SourceError> {
    match git2::Repository::open_bare(path) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            let disk = |message: String| SourceError::Disk {
                path: path.display().to_string(),
                message,
            };
            std::fs::create_dir_all(path).map_err(|e| disk(format!("creating the mirror: {}", super::os_error(&e))))?;
            git2::Repository::init_bare(path).map_err(|e| disk(format!("creating the mirror: {}", e.message())))
        }
    }
}

/// What the operating system says when a file system cannot take a write, as libgit2 quotes it.
const DISK_ERRORS: [&str; 3] = [
    "No space left on device",
    "Read-only file system",
    "Disk quota exceeded",
];

/// A fetch that failed writing into the mirror (its directory full or read-only) is a storage failure, not the
/// Git host's: reported as [`SourceError::Disk`] naming the mirror's directory. libgit2 gives no errno, so a
/// failure of a local kind (file system, object database, indexer, refs) is confirmed by writing a probe file
/// into the mirror: if that fails too, its OS error is the one reported.
fn storage_failure(mirror: &Path, error: SourceError) -> SourceError {
    let SourceError::Fetch { message, .. } = &error else {
        return error;
    };
    let says_disk = DISK_ERRORS.iter().any(|m| message.contains(m));
    let disk = |message: String| SourceError::Disk {
        path: mirror.display().to_string(),
        message,
    };
    match probe_writable(mirror) {
        Err(e) => disk(format!("writing the fetched objects: {}", super::os_error(&e))),
        Ok(()) if says_disk => disk(format!("writing the fetched objects: {message}")),
        Ok(()) => error,
    }
}

/// Writes (and removes) a small file in `dir`: an error means the directory cannot take writes now.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut probe = tempfile::Builder::new().prefix(".probe-").tempfile_in(dir)?;
    probe.write_all(&[0u8; 64 << 10])?;
    probe.as_file().sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn fetch_resolves_reuses_within_max_age_and_detects_rewrites() {
        let upstream = tempfile::tempdir().unwrap();
        let up = upstream.path();
        git(up, &["init", "-q"]);
        std::fs::write(up.join("a.yaml"), "a: 1\n").unwrap();
        git(up, &["add", "-A"]);
        git(up, &["commit", "-q", "-m", "one"]);
        let c1 = git(up, &["rev-parse", "HEAD"]);
        let url = format!("file://{}", up.display());
        let store = MirrorStore::new(tempfile::tempdir().unwrap().keep());
        let main = GitRef::default();
        let creds = Credentials::default();
        let window = FetchOptions {
            max_age: Duration::from_secs(3600),
            allow_file: true,
            ..FetchOptions::default()
        };
        let forced_opts = FetchOptions {
            allow_file: true,
            ..FetchOptions::default()
        };
        assert!(matches!(
            store.fetch(&url, &main, &creds, &FetchOptions::default()),
            Err(SourceError::InvalidUrl { .. })
        ));
        let first = store.fetch(&url, &main, &creds, &window).unwrap();
        assert_eq!(first.revision.commit, c1);
        assert!(first.network);

        std::fs::write(up.join("a.yaml"), "a: 2\n").unwrap();
        git(up, &["commit", "-q", "-a", "--amend", "-m", "rewritten"]);
        let c2 = git(up, &["rev-parse", "HEAD"]);
        let reused = store.fetch(&url, &main, &creds, &window).unwrap();
        assert!(!reused.network, "a fetch within max_age is reused");
        assert_eq!(reused.revision.commit, c1);
        let forced = store.fetch(&url, &main, &creds, &forced_opts).unwrap();
        assert!(forced.network);
        assert_eq!(forced.revision.commit, c2);
        assert_eq!(store.network_fetches(), 2);
        assert_eq!(store.descends(&url, "", &c2, &c1), Some(false), "amend is a rewrite");
        assert_eq!(store.descends(&url, "", &c2, &c2), Some(true));

        let tree = store.export(&url, "", &c2).unwrap();
        assert_eq!(std::fs::read(tree.join("a.yaml")).unwrap(), b"a: 2\n");
        assert_eq!(store.export(&url, "", &c2).unwrap(), tree, "exported once per commit");
        assert_eq!(
            store.collect_garbage(Duration::from_secs(3600)),
            0,
            "recently used mirrors stay"
        );
        assert!(tree.join("a.yaml").is_file(), "and so do recently used trees");
        assert_eq!(store.collect_garbage(Duration::ZERO), 1);
        assert!(!tree.exists(), "exported trees go with their mirror's age");
        assert!(matches!(
            store.export(&url, "", &c2),
            Err(SourceError::CommitMissing(_))
        ));
    }
}
