//! Writes the tree of one commit to disk, once per commit, for renderers that need files (kustomize).
//! Symlinks that leave the repository or loop are never kept: each is resolved against the exported tree
//! itself (see [`super::links`]), removed when it escapes or loops, and listed, so a render of a path that
//! holds one fails clearly, naming it, instead of silently missing a file.
//!
//! Writing itself never follows a link: every entry is created relative to an open handle of its directory,
//! exclusively, and a tree holding one name twice is refused, so no entry can be written through a link that
//! an earlier entry of a crafted tree created.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::SourceError;
use super::links::{LinkProblem, real_path_beneath};

/// Marker written last: an export without it is incomplete and is redone. Its name changes whenever the
/// export rules change, so trees exported under older (weaker) rules are redone too.
pub(super) const COMPLETE: &str = ".ferry-complete-3";
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
///
/// Every directory, file and link is created relative to an open handle of its directory, exclusively and
/// without following symlinks (see [`Writer`]), and a tree holding two entries of one name is refused: a
/// crafted tree cannot make a later entry write through a link an earlier one created.
pub fn export_tree(repo: &git2::Repository, commit: &str, dest: &Path) -> Result<PathBuf, SourceError> {
    if dest.join(COMPLETE).is_file() {
        let _ = std::fs::write(dest.join(COMPLETE), b"");
        return Ok(dest.to_path_buf());
    }
    if dest.exists() {
        // Incomplete, or exported under older rules: redone from scratch.
        let _ = std::fs::remove_dir_all(dest);
    }
    let errors = Errors { commit, dest };
    let missing = || SourceError::CommitMissing(commit.to_string());
    let oid = git2::Oid::from_str(commit).map_err(|_| missing())?;
    let tree = repo
        .find_commit(oid)
        .map_err(|_| missing())?
        .tree()
        .map_err(|_| missing())?;
    check_shape(repo, &tree).map_err(|e| errors.storage(&e))?;
    let parent = dest
        .parent()
        .ok_or_else(|| errors.storage("export path has no parent"))?;
    std::fs::create_dir_all(parent).map_err(|e| errors.disk("creating the directory", &e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempdir_in(parent)
        .map_err(|e| errors.disk("creating a temporary directory", &e))?;
    let root = tmp.path().to_path_buf();
    let root_dir = open_root(&root).map_err(|e| errors.disk("opening the temporary directory", &e))?;
    let mut writer = Writer {
        repo,
        errors,
        total: 0,
        links: Vec::new(),
        escaping: Vec::new(),
    };
    writer.write_tree(&tree, &root_dir, "")?;
    let Writer {
        links, mut escaping, ..
    } = writer;
    // Every link is judged on the complete tree (a link may go through links written after it), all before
    // any is removed. Paths are safe to use here: names are unique, so every parent of a link is a directory
    // this export created, never a link.
    let canonical_root = root.canonicalize().map_err(|e| errors.disk("reading the export", &e))?;
    let bad: Vec<(String, LinkProblem)> = links
        .iter()
        .filter_map(|rel| {
            real_path_beneath(&canonical_root, Path::new(rel))
                .err()
                .map(|p| (rel.clone(), p))
        })
        .collect();
    for (rel, _) in &bad {
        std::fs::remove_file(root.join(rel)).map_err(|e| errors.disk(&format!("removing {rel}"), &e))?;
    }
    escaping.extend(bad);
    escaping.sort();
    let list: Vec<String> = escaping
        .iter()
        .map(|(rel, problem)| format!("{}\t{rel}", problem.as_str()))
        .collect();
    replace_file(&root_dir, ESCAPING_SYMLINKS, list.join("\n").as_bytes())
        .map_err(|e| errors.disk(&format!("writing {ESCAPING_SYMLINKS}"), &e))?;
    replace_file(&root_dir, COMPLETE, b"").map_err(|e| errors.disk(&format!("writing {COMPLETE}"), &e))?;
    drop(root_dir);
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        // Another export of the same commit won the race; use it.
        let _ = std::fs::remove_dir_all(&kept);
        if !dest.join(COMPLETE).is_file() {
            return Err(errors.disk("moving the export into place", &e));
        }
    }
    Ok(dest.to_path_buf())
}

/// The errors of one export, naming its commit (and, for disk errors, its destination).
#[derive(Clone, Copy)]
struct Errors<'a> {
    commit: &'a str,
    dest: &'a Path,
}

impl Errors<'_> {
    /// The repository content cannot be exported (unreadable objects, a crafted tree, over a limit).
    fn storage(&self, what: &str) -> SourceError {
        SourceError::Storage(format!("exporting {}: {what}", self.commit))
    }

    /// The storage directory could not be written: the operating system's error alone (see
    /// [`super::os_error`]), so the message is the same on every retry.
    fn disk(&self, what: &str, e: &std::io::Error) -> SourceError {
        SourceError::Disk {
            path: self.dest.display().to_string(),
            message: format!("exporting {}: {what}: {}", self.commit, super::os_error(e)),
        }
    }
}

/// Directories nested deeper than this are refused. Each level keeps its directory open while its entries
/// are written, so the depth bounds the open handles (and the recursion); paths were bounded by the kernel's
/// `PATH_MAX` before writes became relative to handles. Real repositories are nowhere near it.
const MAX_DEPTH: usize = 256;

/// Upper bound on the entries (directories, files, links) one export creates. Bytes alone do not bound them:
/// three small crafted trees can name one empty blob a billion times (each listing the one below it a
/// thousand times), and every name is an inode of the storage directory shared by all repositories.
const MAX_EXPORT_ENTRIES: usize = 1 << 20;

/// What writing a tree would create, known before anything is written.
#[derive(Clone, Copy)]
struct Shape {
    /// Directories, files and links, every copy of a repeated subtree counted.
    entries: usize,
    /// Directories nested below it: 0 when it holds none.
    height: usize,
}

/// Refuses a tree over [`MAX_EXPORT_ENTRIES`] or [`MAX_DEPTH`] before anything of it is written.
fn check_shape(repo: &git2::Repository, tree: &git2::Tree<'_>) -> Result<(), String> {
    let shape = measure(repo, tree, 0, &mut HashMap::new())?;
    if shape.height > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(())
}

fn too_deep() -> String {
    format!("directories are nested deeper than {MAX_DEPTH} levels")
}

/// The [`Shape`] of `tree`, `depth` levels below the root. Each distinct subtree object is measured once
/// (`measured`), so a tree that repeats one subtree a thousand times costs a thousand lookups, not a walk of
/// every copy; the walk stops as soon as a limit is passed. A subtree that cannot be read counts as one entry:
/// writing it fails later, naming its path.
fn measure(
    repo: &git2::Repository,
    tree: &git2::Tree<'_>,
    depth: usize,
    measured: &mut HashMap<git2::Oid, Shape>,
) -> Result<Shape, String> {
    if let Some(shape) = measured.get(&tree.id()) {
        return Ok(*shape);
    }
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let mut shape = Shape { entries: 0, height: 0 };
    for entry in tree.iter() {
        shape.entries += 1;
        if entry.kind() == Some(git2::ObjectType::Tree)
            && let Ok(subtree) = repo.find_tree(entry.id())
        {
            let sub = measure(repo, &subtree, depth + 1, measured)?;
            shape.entries = shape.entries.saturating_add(sub.entries);
            shape.height = shape.height.max(sub.height + 1);
        }
        if shape.entries > MAX_EXPORT_ENTRIES {
            return Err(format!(
                "the repository has more than {MAX_EXPORT_ENTRIES} files and directories"
            ));
        }
    }
    measured.insert(tree.id(), shape);
    Ok(shape)
}

/// Writes a tree's entries beneath open directory handles, and collects the links for the check afterwards.
/// Its recursion (one open handle per level) is bounded because [`check_shape`] passed first.
struct Writer<'a> {
    repo: &'a git2::Repository,
    errors: Errors<'a>,
    /// Bytes written so far, against [`MAX_EXPORT_BYTES`].
    total: usize,
    /// Links written, as repository paths: each is resolved on the complete tree afterwards.
    links: Vec<String>,
    /// Links not written because their target leaves the repository on its face.
    escaping: Vec<(String, LinkProblem)>,
}

impl Writer<'_> {
    /// Writes `tree`'s entries into `dir`, the directory of repository path `rel_dir` (`""` or ending in `/`).
    fn write_tree(&mut self, tree: &git2::Tree<'_>, dir: &OwnedFd, rel_dir: &str) -> Result<(), SourceError> {
        check_names(tree, rel_dir).map_err(|e| self.errors.storage(&e))?;
        for entry in tree.iter() {
            // `check_names` refused names that are not UTF-8.
            let name = entry.name().unwrap_or_default();
            let rel = format!("{rel_dir}{name}");
            match entry.kind() {
                Some(git2::ObjectType::Tree) => self.write_subtree(&entry, dir, &rel)?,
                Some(git2::ObjectType::Blob) => self.write_blob(&entry, dir, rel_dir, &rel)?,
                _ => {} // submodules are not followed
            }
        }
        Ok(())
    }

    /// Creates directory `rel` in `dir` and writes its tree into it.
    fn write_subtree(&mut self, entry: &git2::TreeEntry<'_>, dir: &OwnedFd, rel: &str) -> Result<(), SourceError> {
        let subtree = self
            .repo
            .find_tree(entry.id())
            .map_err(|e| self.errors.storage(&format!("{rel}: {}", e.message())))?;
        let name = entry.name().unwrap_or_default();
        let child = create_dir(dir, name).map_err(|e| self.errors.disk(&format!("writing {rel}"), &e))?;
        self.write_tree(&subtree, &child, &format!("{rel}/"))
    }

    /// Writes file or link `rel` in `dir`, counting its bytes. A link whose target leaves the repository on
    /// its face is not written, only listed.
    fn write_blob(
        &mut self,
        entry: &git2::TreeEntry<'_>,
        dir: &OwnedFd,
        rel_dir: &str,
        rel: &str,
    ) -> Result<(), SourceError> {
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| self.errors.storage(&format!("{rel}: {}", e.message())))?;
        self.total += blob.content().len();
        if self.total > MAX_EXPORT_BYTES {
            return Err(self
                .errors
                .storage(&format!("the repository is larger than {MAX_EXPORT_BYTES} bytes")));
        }
        let name = entry.name().unwrap_or_default();
        let writing = |e: std::io::Error| self.errors.disk(&format!("writing {rel}"), &e);
        if entry.filemode() != 0o120000 {
            return create_file(dir, name, blob.content()).map_err(writing);
        }
        let target = String::from_utf8_lossy(blob.content()).to_string();
        if resolve_link(rel_dir, &target).is_none() {
            self.escaping.push((rel.to_string(), LinkProblem::Escapes));
            return Ok(());
        }
        rustix::fs::symlinkat(target.as_str(), dir, name).map_err(|e| writing(e.into()))?;
        self.links.push(rel.to_string());
        Ok(())
    }
}

/// Refuses a tree whose entries cannot each become one file of their own: a name that is not one file name
/// (see [`valid_entry_name`]), or two entries of the same name. Git never writes either, but a crafted tree
/// object can hold them, and a second `a` would be written into or through the first (a link to `/etc` then a
/// directory `a/`). Names differing only in case are distinct on Linux and kept. The message names the
/// directory only: the name itself is what is hostile.
fn check_names(tree: &git2::Tree<'_>, rel_dir: &str) -> Result<(), String> {
    let shown = if rel_dir.is_empty() {
        "the repository root".to_string()
    } else {
        rel_dir.trim_end_matches('/').to_string()
    };
    let mut seen = HashSet::with_capacity(tree.len());
    for entry in tree.iter() {
        if !valid_entry_name(entry.name_bytes()) {
            return Err(format!(
                "an entry of {shown} has an invalid name (a crafted tree: `..`, `.`, a slash or not UTF-8)"
            ));
        }
        if !seen.insert(entry.name_bytes().to_vec()) {
            return Err(format!(
                "{shown} holds two entries of the same name (a crafted tree: git never writes one)"
            ));
        }
    }
    Ok(())
}

/// Flags for opening a directory to write into: never through a symlink.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the export's temporary directory (just created, so not a link) as the handle everything is written
/// beneath.
fn open_root(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, dir_flags(), Mode::empty())?)
}

/// Creates directory `name` in `dir` and opens it. `mkdirat` fails on any existing entry (a link included),
/// and the open does not follow a link, so the handle is the directory just made.
fn create_dir(dir: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777))?;
    Ok(rustix::fs::openat(dir, name, dir_flags(), Mode::empty())?)
}

/// Creates file `name` in `dir` holding `content`. `O_EXCL` fails on any existing entry, a link included
/// (even a dangling one), so nothing is ever written through a link.
fn create_file(dir: &OwnedFd, name: &str, content: &[u8]) -> std::io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o666))?;
    std::fs::File::from(fd).write_all(content)
}

/// Writes the export's own file `name` at its root, replacing whatever entry of the repository has that name
/// (the export's markers win, as they always have), without following it.
fn replace_file(root: &OwnedFd, name: &str, content: &[u8]) -> std::io::Result<()> {
    match rustix::fs::unlinkat(root, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    create_file(root, name, content)
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

    /// A commit of a raw root tree, exported into `<out>/trees/tree`, beside `<out>/outside` (an existing
    /// directory a crafted tree would like to write into). Returns the export's result and what `outside`
    /// holds afterwards.
    fn export_raw(
        repo: &git2::Repository,
        out: &Path,
        entries: &[(&str, &[u8], git2::Oid)],
    ) -> (Result<PathBuf, SourceError>, Vec<PathBuf>) {
        std::fs::create_dir_all(out.join("outside")).unwrap();
        let top = raw_tree(repo, entries);
        let tree = repo.find_tree(top).expect("libgit2 parses the crafted tree");
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let id = repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap().to_string();
        let result = export_tree(repo, &id, &out.join("trees/tree"));
        (result, walk(&out.join("outside")))
    }

    /// `b/c/up -> ../..` is the export's root, so `b/c/up/../../outside` looks local (lexically `b/outside`)
    /// while the kernel resolves it to `<out>/outside`: a link the lexical check lets through.
    fn root_link_dir(repo: &git2::Repository) -> git2::Oid {
        let up = repo.blob(b"../..").unwrap();
        let c = raw_tree(repo, &[("120000", b"up", up)]);
        raw_tree(repo, &[("40000", b"c", c)])
    }

    #[test]
    fn a_link_then_a_directory_of_the_same_name_is_refused_and_nothing_is_written_through_it() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let blob = repo.blob(b"kind: ConfigMap\n").unwrap();
        let pwn = raw_tree(&repo, &[("100644", b"pwn.yaml", blob)]);
        let out = tempfile::tempdir().unwrap();
        let absolute = out.path().join("outside").display().to_string();
        for target in ["b/c/up/../../outside", absolute.as_str()] {
            let link = repo.blob(target.as_bytes()).unwrap();
            let (result, outside) = export_raw(
                &repo,
                out.path(),
                &[
                    ("40000", b"b", root_link_dir(&repo)),
                    ("120000", b"z", link),
                    ("40000", b"z", pwn),
                ],
            );
            assert!(outside.is_empty(), "{target}: wrote {outside:?}");
            let err = result.expect_err(target).to_string();
            assert!(err.contains("the repository root holds two entries"), "{err}");
            assert!(!out.path().join("trees/tree").exists(), "nothing is put in place");
        }
    }

    #[test]
    fn a_link_then_a_file_of_the_same_name_is_refused_and_nothing_is_written_through_it() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let blob = repo.blob(b"kind: ConfigMap\n").unwrap();
        let link = repo.blob(b"../b/c/up/../../outside/pwn.yaml").unwrap();
        let dir = raw_tree(&repo, &[("120000", b"pwn.yaml", link), ("100644", b"pwn.yaml", blob)]);
        let out = tempfile::tempdir().unwrap();
        let (result, outside) = export_raw(
            &repo,
            out.path(),
            &[("40000", b"b", root_link_dir(&repo)), ("40000", b"d", dir)],
        );
        assert!(outside.is_empty(), "wrote {outside:?}");
        let err = result.expect_err("refused").to_string();
        assert!(err.contains("d holds two entries of the same name"), "{err}");
        assert!(!err.contains("pwn"), "the hostile name is not shown: {err}");
    }

    #[test]
    fn two_blobs_of_the_same_name_are_refused_but_case_variants_are_kept() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let one = repo.blob(b"kind: ConfigMap\n").unwrap();
        let two = repo.blob(b"kind: Secret\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let (result, _) = export_raw(
            &repo,
            out.path(),
            &[("100644", b"x.yaml", one), ("100644", b"x.yaml", two)],
        );
        let err = result.expect_err("refused");
        assert!(matches!(err, SourceError::Storage(_)), "{err}");
        assert!(
            err.to_string().contains("the repository root holds two entries"),
            "{err}"
        );

        let out = tempfile::tempdir().unwrap();
        let (result, _) = export_raw(
            &repo,
            out.path(),
            &[("100644", b"X.yaml", one), ("100644", b"x.yaml", two)],
        );
        let dest = result.expect("case variants are distinct names");
        assert_eq!(
            std::fs::read_to_string(dest.join("X.yaml")).unwrap(),
            "kind: ConfigMap\n"
        );
        assert_eq!(std::fs::read_to_string(dest.join("x.yaml")).unwrap(), "kind: Secret\n");
    }

    /// The writes are safe by construction, not only because duplicates are refused first: an existing link
    /// (to an existing directory or a missing file) is never written through.
    #[test]
    fn writes_never_follow_an_existing_link() {
        let out = tempfile::tempdir().unwrap();
        let outside = out.path().join("outside");
        let root = out.path().join("root");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("pwn.yaml"), root.join("file")).unwrap();
        let dir = open_root(&root).unwrap();
        assert!(create_dir(&dir, "dir").is_err());
        assert!(create_file(&dir, "file", b"pwn").is_err());
        assert!(create_file(&dir, "dir", b"pwn").is_err());
        assert!(
            replace_file(&dir, "file", b"ours").is_ok(),
            "the link itself is replaced"
        );
        assert!(walk(&outside).is_empty());
        assert!(
            open_root(&root.join("dir")).is_err(),
            "a link is not opened as a directory"
        );
    }

    #[test]
    fn directories_nested_too_deep_are_refused() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let blob = repo.blob(b"kind: ConfigMap\n").unwrap();
        let mut tree = raw_tree(&repo, &[("100644", b"cm.yaml", blob)]);
        for _ in 1..MAX_DEPTH {
            tree = raw_tree(&repo, &[("40000", b"d", tree)]);
        }
        let out = tempfile::tempdir().unwrap();
        let (result, _) = export_raw(&repo, out.path(), &[("40000", b"d", tree)]);
        let dest = result.expect("as deep as allowed");
        let deepest: PathBuf = std::iter::repeat_n("d", MAX_DEPTH).collect();
        assert!(dest.join(deepest).join("cm.yaml").is_file());

        let tree = raw_tree(&repo, &[("40000", b"d", tree)]);
        let out = tempfile::tempdir().unwrap();
        let (result, _) = export_raw(&repo, out.path(), &[("40000", b"d", tree)]);
        let err = result.expect_err("too deep").to_string();
        assert!(err.contains("nested deeper than"), "{err}");
    }

    /// Two small trees that name one empty blob over a million times: no bytes, but an inode each.
    #[test]
    fn a_tree_of_too_many_entries_is_refused_before_anything_is_written() {
        let git = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(git.path()).unwrap();
        let empty = repo.blob(b"").unwrap();
        let names: Vec<Vec<u8>> = (0..1024).map(|i| format!("f{i:04}").into_bytes()).collect();
        let files: Vec<_> = names.iter().map(|n| ("100644", &n[..], empty)).collect();
        let leaf = raw_tree(&repo, &files);
        let dirs: Vec<_> = names.iter().map(|n| ("40000", &n[..], leaf)).collect();
        let out = tempfile::tempdir().unwrap();
        let (result, _) = export_raw(&repo, out.path(), &dirs);
        let err = result.expect_err("too many entries").to_string();
        assert!(err.contains("more than 1048576 files and directories"), "{err}");
        assert_eq!(walk(&out.path().join("trees")), Vec::<PathBuf>::new());
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
