//! Writes the tree of one commit to disk, once per commit, for renderers that need files (kustomize).
//! Symlinks that leave the repository or loop are never kept: each is resolved against the exported tree
//! itself (see [`super::links`]), removed when it escapes or loops, and listed, so a render of a path that
//! holds one fails clearly, naming it, instead of silently missing a file.

use std::path::{Component, Path, PathBuf};

use super::SourceError;
use super::links::{LinkProblem, real_path_beneath};

/// Marker written last: an export without it is incomplete and is redone. Its name changes whenever the
/// export rules change, so trees exported under older (weaker) rules are redone too.
pub(super) const COMPLETE: &str = ".ferry-complete-2";
/// Symlinks removed from the export, one per line: `<escapes|loops>\t<repository path>`.
pub const ESCAPING_SYMLINKS: &str = ".ferry-escaping-symlinks";

/// Parses [`ESCAPING_SYMLINKS`]: (repository path, problem). A line without a problem is an escape.
pub fn removed_links(list: &str) -> Vec<(String, LinkProblem)> {
    list.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('\t') {
            Some((problem, path)) => (
                path.to_string(),
                LinkProblem::parse(problem).unwrap_or(LinkProblem::Escapes),
            ),
            None => (l.to_string(), LinkProblem::Escapes),
        })
        .collect()
}
/// Upper bound on the bytes one export writes.
const MAX_EXPORT_BYTES: usize = 512 << 20;

/// Resolves a symlink target against the link's directory, lexically; `None` when it leaves the repository.
/// A first filter only: it cannot see other links on the way (see [`super::links`]).
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

/// Whether a tree entry's name is one file name: git never writes `..`, `.`, empty names or names with a
/// slash, but a crafted tree object can hold them, and `..` would make the export write outside its directory.
/// Names that are not UTF-8 are refused too (a manifest path must be shown in messages).
fn valid_entry_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&b'\\')
        && !name.contains(&0)
        && std::str::from_utf8(name).is_ok()
}

/// Exports `commit` into `dest` unless a complete export is already there. Returns `dest`.
///
/// The tree is written to a temporary directory beside `dest` and renamed into place only when complete, so a
/// failure part-way (a full or read-only storage directory) leaves nothing that a render could read: the
/// partial directory is removed, and the error ([`SourceError::Disk`]) names `dest` and the operating system's
/// error.
pub fn export_tree(repo: &git2::Repository, commit: &str, dest: &Path) -> Result<PathBuf, SourceError> {
    if dest.join(COMPLETE).is_file() {
        let _ = std::fs::write(dest.join(COMPLETE), b"");
        return Ok(dest.to_path_buf());
    }
    if dest.exists() {
        // Incomplete, or exported under older rules: redone from scratch.
        let _ = std::fs::remove_dir_all(dest);
    }
    let storage = |e: &dyn std::fmt::Display| SourceError::Storage(format!("exporting {commit}: {e}"));
    let disk = |what: &str, e: &std::io::Error| SourceError::Disk {
        path: dest.display().to_string(),
        message: format!("exporting {commit}: {what}: {}", super::os_error(e)),
    };
    let missing = || SourceError::CommitMissing(commit.to_string());
    let oid = git2::Oid::from_str(commit).map_err(|_| missing())?;
    let tree = repo
        .find_commit(oid)
        .map_err(|_| missing())?
        .tree()
        .map_err(|_| missing())?;
    let parent = dest.parent().ok_or_else(|| storage(&"export path has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|e| disk("creating the directory", &e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempdir_in(parent)
        .map_err(|e| disk("creating a temporary directory", &e))?;
    let root = tmp.path().to_path_buf();
    let mut escaping: Vec<(String, LinkProblem)> = Vec::new();
    let mut links = Vec::new();
    let mut failure = None;
    let mut total = 0usize;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if !valid_entry_name(entry.name_bytes()) {
            // Named by its directory only: the name itself is what is hostile.
            let shown = if dir.is_empty() { "the repository root" } else { dir };
            failure = Some(storage(&format!(
                "an entry of {shown} has an invalid name (a crafted tree: `..`, `.`, a slash or not UTF-8)"
            )));
            return git2::TreeWalkResult::Abort;
        }
        let name = entry.name().unwrap_or_default();
        let rel = format!("{dir}{name}");
        let path = root.join(&rel);
        let writing = |e: std::io::Error| disk(&format!("writing {rel}"), &e);
        let result: Result<(), SourceError> = (|| {
            match entry.kind() {
                Some(git2::ObjectType::Tree) => std::fs::create_dir_all(&path).map_err(writing),
                Some(git2::ObjectType::Blob) => {
                    let blob = repo
                        .find_blob(entry.id())
                        .map_err(|e| storage(&format!("{rel}: {}", e.message())))?;
                    total += blob.content().len();
                    if total > MAX_EXPORT_BYTES {
                        return Err(storage(&format!(
                            "the repository is larger than {MAX_EXPORT_BYTES} bytes"
                        )));
                    }
                    if entry.filemode() == 0o120000 {
                        let target = String::from_utf8_lossy(blob.content()).to_string();
                        if resolve_link(dir, &target).is_some() {
                            links.push(rel.clone());
                            std::os::unix::fs::symlink(&target, &path).map_err(writing)
                        } else {
                            escaping.push((rel.clone(), LinkProblem::Escapes));
                            Ok(())
                        }
                    } else {
                        std::fs::write(&path, blob.content()).map_err(writing)
                    }
                }
                _ => Ok(()), // submodules are not followed
            }
        })();
        match result {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .map_err(|e| failure.take().unwrap_or_else(|| storage(&e.message())))?;
    if let Some(f) = failure {
        return Err(f);
    }
    // Every link is judged on the complete tree (a link may go through links written after it), all before
    // any is removed.
    let canonical_root = root.canonicalize().map_err(|e| disk("reading the export", &e))?;
    let bad: Vec<(String, LinkProblem)> = links
        .iter()
        .filter_map(|rel| {
            real_path_beneath(&canonical_root, Path::new(rel))
                .err()
                .map(|p| (rel.clone(), p))
        })
        .collect();
    for (rel, _) in &bad {
        std::fs::remove_file(root.join(rel)).map_err(|e| disk(&format!("removing {rel}"), &e))?;
    }
    escaping.extend(bad);
    escaping.sort();
    let list: Vec<String> = escaping
        .iter()
        .map(|(rel, problem)| format!("{}\t{rel}", problem.as_str()))
        .collect();
    std::fs::write(root.join(ESCAPING_SYMLINKS), list.join("\n"))
        .map_err(|e| disk(&format!("writing {ESCAPING_SYMLINKS}"), &e))?;
    std::fs::write(root.join(COMPLETE), b"").map_err(|e| disk(&format!("writing {COMPLETE}"), &e))?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        // Another export of the same commit won the race; use it.
        let _ = std::fs::remove_dir_all(&kept);
        if !dest.join(COMPLETE).is_file() {
            return Err(disk("moving the export into place", &e));
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

#[cfg(test)]
mod export_tests {
    use super::*;

    /// A commit whose tree holds `files` (path → content) and `links` (path → target).
    fn commit(repo: &git2::Repository, files: &[(&str, &str)], links: &[(&str, &str)]) -> String {
        let mut index = repo.index().unwrap();
        let mut add = |path: &str, content: &str, mode: u32| {
            let id = repo.blob(content.as_bytes()).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id,
                flags: path.len() as u16,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        };
        for (path, content) in files {
            add(path, content, 0o100644);
        }
        for (path, target) in links {
            add(path, target, 0o120000);
        }
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap().to_string()
    }

    #[test]
    fn link_chains_and_cycles_are_removed_and_listed() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let id = commit(
            &repo,
            &[
                ("a/b/c/cm.yaml", "kind: ConfigMap\n"),
                ("d/keep.yaml", "kind: ConfigMap\n"),
            ],
            &[
                ("a/b/c/up", "../../.."),
                ("d/x", "../a/b/c/up/../.."),
                ("d/ok.yaml", "../a/b/c/cm.yaml"),
                ("loop/one", "two"),
                ("loop/two", "one"),
                ("abs.yaml", "/etc/hostname"),
            ],
        );
        let out = tempfile::tempdir().unwrap();
        let dest = export_tree(&repo, &id, &out.path().join("tree")).unwrap();
        let removed = removed_links(&std::fs::read_to_string(dest.join(ESCAPING_SYMLINKS)).unwrap());
        assert_eq!(
            removed,
            [
                ("abs.yaml".to_string(), LinkProblem::Escapes),
                ("d/x".to_string(), LinkProblem::Escapes),
                ("loop/one".to_string(), LinkProblem::Loops),
                ("loop/two".to_string(), LinkProblem::Loops),
            ]
        );
        for (rel, _) in &removed {
            assert!(
                std::fs::symlink_metadata(dest.join(rel)).is_err(),
                "{rel} was not created"
            );
        }
        assert!(dest.join("a/b/c/up").is_dir(), "a link to the root itself stays inside");
        assert_eq!(
            std::fs::read_to_string(dest.join("d/ok.yaml")).unwrap(),
            "kind: ConfigMap\n"
        );
    }

    /// A tree object written byte by byte, as a hostile server could serve it: git's own tools refuse to make
    /// one with such names, nothing stops a crafted push.
    fn raw_tree(repo: &git2::Repository, entries: &[(&str, &[u8], git2::Oid)]) -> git2::Oid {
        let mut raw = Vec::new();
        for (mode, name, id) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            raw.extend_from_slice(id.as_bytes());
        }
        repo.odb().unwrap().write(git2::ObjectType::Tree, &raw).unwrap()
    }

    #[test]
    fn crafted_entry_names_never_write_outside_the_export() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let blob = repo.blob(b"kind: ConfigMap\n").unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        for name in [&b".."[..], b".", b"a/../../x", b"", b"\xff"] {
            let inner = raw_tree(&repo, &[("100644", b"escaped.yaml", blob)]);
            let top = raw_tree(&repo, &[("40000", name, inner), ("100644", b"ok.yaml", blob)]);
            let Ok(tree) = repo.find_tree(top) else {
                continue; // libgit2 refused to parse it: fine too
            };
            let id = repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap().to_string();
            let out = tempfile::tempdir().unwrap();
            let result = export_tree(&repo, &id, &out.path().join("trees/tree"));
            let escaped: Vec<_> = walk(out.path())
                .into_iter()
                .filter(|p| p.ends_with("escaped.yaml") && !p.starts_with(out.path().join("trees/tree")))
                .collect();
            assert!(
                escaped.is_empty(),
                "{:?}: wrote {escaped:?}",
                String::from_utf8_lossy(name)
            );
            assert!(result.is_err(), "{:?} is refused", String::from_utf8_lossy(name));
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn exports_under_older_rules_are_redone() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let id = commit(&repo, &[("cm.yaml", "kind: ConfigMap\n")], &[]);
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("tree");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join(".ferry-complete"), "").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dest.join("old.yaml")).unwrap();
        export_tree(&repo, &id, &dest).unwrap();
        assert!(std::fs::symlink_metadata(dest.join("old.yaml")).is_err());
        assert!(dest.join("cm.yaml").is_file() && dest.join(COMPLETE).is_file());
    }
}
