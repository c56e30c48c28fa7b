//! Reads manifest files for one path at one commit straight from the git object database.

use std::path::{Component, Path};

use super::SourceError;

/// Largest single manifest file accepted; bigger files are almost always a mistake (a binary, a dump).
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Largest total size read for one path.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub content: Vec<u8>,
}

/// Normalizes a user path (`./apps/staging/`) to tree components, refusing anything that leaves the repo.
pub fn normalize_path(path: &str) -> Result<Vec<String>, SourceError> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SourceError::InvalidPath(path.to_string()));
            }
        }
    }
    Ok(parts)
}

pub fn read_manifests(repo: &git2::Repository, commit: &str, path: &str) -> Result<Vec<ManifestFile>, SourceError> {
    let parts = normalize_path(path)?;
    let missing = || SourceError::CommitMissing(commit.to_string());
    let oid = git2::Oid::from_str(commit).map_err(|_| missing())?;
    let root = repo
        .find_commit(oid)
        .map_err(|_| missing())?
        .tree()
        .map_err(|_| missing())?;
    let not_found = || SourceError::PathNotFound {
        path: path.to_string(),
        revision: commit.to_string(),
    };
    let (tree, prefix) = if parts.is_empty() {
        (root, String::new())
    } else {
        let rel = parts.join("/");
        let entry = root.get_path(Path::new(&rel)).map_err(|_| not_found())?;
        let object = entry.to_object(repo).map_err(|_| not_found())?;
        match object.into_tree() {
            Ok(tree) => (tree, format!("{rel}/")),
            Err(_) => return Err(not_found()),
        }
    };

    let mut files = Vec::new();
    let mut total = 0usize;
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let is_manifest = name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json");
        // Symlinks (mode 120000) are skipped: their target could point anywhere.
        if entry.kind() != Some(git2::ObjectType::Blob) || entry.filemode() == 0o120000 || !is_manifest {
            return git2::TreeWalkResult::Ok;
        }
        let file_path = format!("{prefix}{dir}{name}");
        let blob = match repo.find_blob(entry.id()) {
            Ok(b) => b,
            Err(e) => {
                failure = Some(SourceError::Storage(e.message().to_string()));
                return git2::TreeWalkResult::Abort;
            }
        };
        let size = blob.content().len();
        total += size;
        if size > MAX_FILE_BYTES || total > MAX_TOTAL_BYTES {
            failure = Some(SourceError::Storage(format!(
                "{file_path} is {size} bytes; the limits are {MAX_FILE_BYTES} per file and {MAX_TOTAL_BYTES} per path"
            )));
            return git2::TreeWalkResult::Abort;
        }
        files.push(ManifestFile {
            path: file_path,
            content: blob.content().to_vec(),
        });
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| {
        failure
            .take()
            .unwrap_or_else(|| SourceError::Storage(e.message().to_string()))
    })?;
    if let Some(err) = failure {
        return Err(err);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_repo() {
        assert_eq!(normalize_path("./apps/staging/").unwrap(), vec!["apps", "staging"]);
        assert!(normalize_path(".").unwrap().is_empty());
        assert!(normalize_path("../etc").is_err());
        assert!(normalize_path("/etc").is_err());
        assert!(normalize_path("apps/../../x").is_err());
    }
}
