//! One bare mirror per URL, fetched incrementally, shared by every consumer of that URL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::revision::{Revision, resolve_ref_spec};
use super::tree::{ManifestFile, read_manifests};
use super::{SourceError, redact_url, validate_url};
use crate::api::GitRef;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(60),
        }
    }
}

/// The on-disk cache of mirrors. Cheap to clone; clones share the per-URL locks.
#[derive(Clone)]
pub struct MirrorStore {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
}

/// A handle on one URL's mirror.
pub struct Mirror {
    pub url: String,
    pub path: PathBuf,
}

impl MirrorStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MirrorStore {
            root: root.into(),
            locks: Arc::default(),
        }
    }

    pub fn mirror(&self, url: &str) -> Mirror {
        let digest = Sha256::digest(url.as_bytes());
        let name = format!("{}.git", &hex::encode(digest)[..24]);
        Mirror {
            url: url.to_string(),
            path: self.root.join("git").join(name),
        }
    }

    fn lock_for(&self, path: &Path) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(path.to_path_buf()).or_default().clone()
    }

    /// Fetches `reference` from `url` into the mirror and resolves it to a commit. Blocking.
    pub fn fetch(&self, url: &str, reference: &GitRef, opts: &FetchOptions) -> Result<Revision, SourceError> {
        validate_url(url)?;
        let spec = resolve_ref_spec(reference)?;
        let mirror = self.mirror(url);
        let lock = self.lock_for(&mirror.path);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let repo = open_or_init(&mirror.path)?;
        let safe_url = redact_url(url);
        let fetch_err = |e: git2::Error| SourceError::Fetch {
            url: safe_url.clone(),
            message: e.message().replace(url, &safe_url),
        };

        let mut remote = repo.remote_anonymous(url).map_err(|e| SourceError::InvalidUrl {
            url: safe_url.clone(),
            why: e.message().replace(url, &safe_url),
        })?;
        let deadline = Instant::now() + opts.timeout;
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut callbacks = git2::RemoteCallbacks::new();
        {
            let timed_out = timed_out.clone();
            callbacks.transfer_progress(move |_| {
                let over = Instant::now() > deadline;
                if over {
                    timed_out.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                !over
            });
        }
        let mut fo = git2::FetchOptions::new();
        fo.remote_callbacks(callbacks);
        fo.download_tags(git2::AutotagOption::None);
        let refspecs: Vec<&str> = spec.fetch.iter().map(String::as_str).collect();
        if let Err(e) = remote.fetch(&refspecs, Some(&mut fo), None) {
            if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(SourceError::Timeout {
                    url: safe_url,
                    seconds: opts.timeout.as_secs(),
                });
            }
            return Err(fetch_err(e));
        }

        let commit = match (&spec.commit, &spec.local) {
            (Some(commit), _) => {
                let oid = git2::Oid::from_str(commit).map_err(|e| SourceError::InvalidRef(e.message().to_string()))?;
                repo.find_commit(oid).map_err(|_| SourceError::RefNotFound {
                    what: format!("commit {commit}"),
                    url: safe_url.clone(),
                })?;
                commit.clone()
            }
            (None, Some(local)) => {
                // The server's advertisement is the truth: a ref deleted upstream must not resolve to the
                // stale local copy left by an earlier fetch.
                let remote_name = remote_ref_name(local);
                let advertised = remote
                    .list()
                    .map_err(fetch_err)?
                    .iter()
                    .any(|head| head.name() == remote_name);
                let not_found = || SourceError::RefNotFound {
                    what: describe_ref(local),
                    url: safe_url.clone(),
                };
                if !advertised {
                    if let Ok(mut stale) = repo.find_reference(local) {
                        let _ = stale.delete();
                    }
                    return Err(not_found());
                }
                let reference = repo.find_reference(local).map_err(|_| not_found())?;
                reference.peel_to_commit().map_err(|_| not_found())?.id().to_string()
            }
            (None, None) => return Err(SourceError::InvalidRef("empty ref".to_string())),
        };
        Ok(Revision {
            name: spec.name,
            commit,
        })
    }

    /// The manifest files under `path` at `commit`, read straight from the object database (no checkout).
    pub fn read(&self, url: &str, commit: &str, path: &str) -> Result<Vec<ManifestFile>, SourceError> {
        let mirror = self.mirror(url);
        let repo =
            git2::Repository::open_bare(&mirror.path).map_err(|_| SourceError::CommitMissing(commit.to_string()))?;
        read_manifests(&repo, commit, path)
    }
}

fn open_or_init(path: &Path) -> Result<git2::Repository, SourceError> {
    let storage = |e: git2::Error| SourceError::Storage(e.message().to_string());
    match git2::Repository::open_bare(path) {
        Ok(repo) => Ok(repo),
        Err(_) => {
            std::fs::create_dir_all(path).map_err(|e| SourceError::Storage(e.to_string()))?;
            git2::Repository::init_bare(path).map_err(storage)
        }
    }
}

/// `refs/remotes/origin/main` → `refs/heads/main`: the name the server advertises.
fn remote_ref_name(local: &str) -> String {
    match local.strip_prefix("refs/remotes/origin/") {
        Some(branch) => format!("refs/heads/{branch}"),
        None => local.to_string(),
    }
}

fn describe_ref(local: &str) -> String {
    if let Some(b) = local.strip_prefix("refs/remotes/origin/") {
        format!("branch {b:?}")
    } else if let Some(t) = local.strip_prefix("refs/tags/") {
        format!("tag {t:?}")
    } else {
        local.to_string()
    }
}
