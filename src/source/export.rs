//! Writes the tree of one commit to disk, once per commit, for renderers that need files (kustomize).
//! Symlinks that point outside the repository are never created; they are listed, so a render of a path that
//! holds one fails clearly instead of silently missing a file.

use std::path::{Component, Path, PathBuf};

use super::SourceError;

/// Marker written last: an export without it is incomplete and is redone.
const COMPLETE: &str = ".ferry-complete";
/// Repository paths of symlinks that escape the repository, one per line.
pub const ESCAPING_SYMLINKS: &str = ".ferry-escaping-symlinks";
/// Upper bound on the bytes one export writes.
const MAX_EXPORT_BYTES: usize = 512 << 20;

/// Resolves a symlink target against the link's directory; `None` when it leaves the repository.
pub fn resolve_link(link_dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<String> = link_dir
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    for c in Path::new(target).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// Exports `commit` into `dest` unless a complete export is already there. Returns `dest`.
pub fn export_tree(repo: &git2::Repository, commit: &str, dest: &Path) -> Result<PathBuf, SourceError> {
    if dest.join(COMPLETE).is_file() {
        let _ = std::fs::write(dest.join(COMPLETE), b"");
        return Ok(dest.to_path_buf());
    }
    let storage = |e: &dyn std::fmt::Display| SourceError::Storage(format!("exporting {commit}: {e}"));
    let missing = || SourceError::CommitMissing(commit.to_string());
    let oid = git2::Oid::from_str(commit).map_err(|_| missing())?;
    let tree = repo
        .find_commit(oid)
        .map_err(|_| missing())?
        .tree()
        .map_err(|_| missing())?;
    let parent = dest.parent().ok_or_else(|| storage(&"export path has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|e| storage(&e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempdir_in(parent)
        .map_err(|e| storage(&e))?;
    let root = tmp.path().to_path_buf();
    let mut escaping = Vec::new();
    let mut failure = None;
    let mut total = 0usize;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let rel = format!("{dir}{name}");
        let path = root.join(&rel);
        let result: Result<(), String> = (|| {
            match entry.kind() {
                Some(git2::ObjectType::Tree) => std::fs::create_dir_all(&path).map_err(|e| e.to_string()),
                Some(git2::ObjectType::Blob) => {
                    let blob = repo.find_blob(entry.id()).map_err(|e| e.message().to_string())?;
                    total += blob.content().len();
                    if total > MAX_EXPORT_BYTES {
                        return Err(format!("the repository is larger than {MAX_EXPORT_BYTES} bytes"));
                    }
                    if entry.filemode() == 0o120000 {
                        let target = String::from_utf8_lossy(blob.content()).to_string();
                        if resolve_link(dir, &target).is_some() {
                            std::os::unix::fs::symlink(&target, &path).map_err(|e| e.to_string())
                        } else {
                            escaping.push(rel.clone());
                            Ok(())
                        }
                    } else {
                        std::fs::write(&path, blob.content()).map_err(|e| e.to_string())
                    }
                }
                _ => Ok(()), // submodules are not followed
            }
        })();
        match result {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(storage(&format!("{rel}: {e}")));
                git2::TreeWalkResult::Abort
            }
        }
    })
    .map_err(|e| failure.take().unwrap_or_else(|| storage(&e.message())))?;
    if let Some(f) = failure {
        return Err(f);
    }
    std::fs::write(root.join(ESCAPING_SYMLINKS), escaping.join("\n")).map_err(|e| storage(&e))?;
    std::fs::write(root.join(COMPLETE), b"").map_err(|e| storage(&e))?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        // Another export of the same commit won the race; use it.
        let _ = std::fs::remove_dir_all(&kept);
        if !dest.join(COMPLETE).is_file() {
            return Err(storage(&e));
        }
    }
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_resolved_inside_the_repo() {
        assert_eq!(
            resolve_link("apps/staging/", "../base/x.yaml").as_deref(),
            Some("apps/base/x.yaml")
        );
        assert_eq!(resolve_link("", "a/b").as_deref(), Some("a/b"));
        assert_eq!(resolve_link("apps/", "../../etc/passwd"), None);
        assert_eq!(resolve_link("apps/", "/etc/passwd"), None);
    }
}
