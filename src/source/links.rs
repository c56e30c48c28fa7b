//! Symlinks inside an exported (or checked-out) tree, resolved against the real filesystem.
//!
//! A lexical check of one link's target is not enough: `a/b/c/up -> ../../..` looks local and is, but then
//! `d/x -> ../a/b/c/up/../..` also looks local (lexically `a/b`) while the kernel resolves it two levels above
//! the tree, because `..` after a symlink applies to the link's target. So every path is resolved here one
//! component at a time, reading each link as the kernel would, and refused the moment it would step above the
//! root. A bounded number of link hops turns cycles into an error instead of a hang.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Link hops allowed while resolving one path; Linux's own limit (`MAXSYMLINKS`) is 40.
pub const MAX_LINK_HOPS: usize = 40;

/// Why a path cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkProblem {
    /// Resolving it leaves the root (through `..`, an absolute target, or a chain of links).
    Escapes,
    /// It goes through more than [`MAX_LINK_HOPS`] links: a cycle, or a chain built to look like one.
    Loops,
}

impl LinkProblem {
    /// The word written to the export's list of removed links (and parsed back).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkProblem::Escapes => "escapes",
            LinkProblem::Loops => "loops",
        }
    }

    pub fn parse(s: &str) -> Option<LinkProblem> {
        match s {
            "escapes" => Some(LinkProblem::Escapes),
            "loops" => Some(LinkProblem::Loops),
            _ => None,
        }
    }
}

/// Resolves `rel` (relative to `root`) to the real path it names, following every symlink on the way, and
/// refuses it when any step leaves `root` or the links loop. Components that do not exist are kept as they
/// are (the caller's open then fails normally). Returns the path relative to `root`.
pub fn resolve_beneath(root: &Path, rel: &Path) -> Result<PathBuf, LinkProblem> {
    resolve_counting_hops(root, rel).map(|(path, _)| path)
}

/// [`resolve_beneath`], and how many links it followed.
fn resolve_counting_hops(root: &Path, rel: &Path) -> Result<(PathBuf, usize), LinkProblem> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front(&mut pending, rel)?;
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop().ok_or(LinkProblem::Escapes)?;
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str())
            .chain(resolved.iter().map(|p| p.as_os_str()))
            .chain(std::iter::once(part.as_os_str()))
            .collect();
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(LinkProblem::Loops);
                }
                // Unreadable link: treat as leaving, never as harmless.
                let target = std::fs::read_link(&candidate).map_err(|_| LinkProblem::Escapes)?;
                push_front(&mut pending, &target)?;
            }
            _ => resolved.push(part),
        }
    }
    Ok((resolved.iter().collect(), hops))
}

/// Puts `path`'s components in front of what is left to resolve. Absolute paths leave the root.
fn push_front(pending: &mut VecDeque<OsString>, path: &Path) -> Result<(), LinkProblem> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::RootDir | Component::Prefix(_) => return Err(LinkProblem::Escapes),
        }
    }
    for p in parts.into_iter().rev() {
        pending.push_front(p);
    }
    Ok(())
}

/// [`resolve_beneath`], then, when a link was followed, the kernel's own answer as a second opinion: the
/// canonical path of what exists must start with `root`. `root` must be canonical (callers canonicalize it
/// once per tree, not once per file). Returns the absolute real path.
pub fn real_path_beneath(root: &Path, rel: &Path) -> Result<PathBuf, LinkProblem> {
    let (resolved, hops) = resolve_counting_hops(root, rel)?;
    let inside = root.join(resolved);
    if hops == 0 {
        // Every component was looked at with lstat and none is a link: this is the real path already.
        return Ok(inside);
    }
    match inside.canonicalize() {
        Ok(real) if real.starts_with(root) => Ok(real),
        Ok(_) => Err(LinkProblem::Escapes),
        // ELOOP from the kernel even though the walk above found none: be conservative.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(LinkProblem::Loops),
        // Missing: nothing to read, nothing escapes.
        _ => Ok(inside),
    }
}

/// Every symlink below `dir` (not following any), as paths relative to `root`, in sorted order. Bounded by
/// `max_entries` so a hostile tree cannot make the walk unbounded; over it, `None`.
pub fn symlinks_below(root: &Path, dir: &Path, max_entries: usize) -> Option<Vec<PathBuf>> {
    let mut links = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return None;
            }
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_symlink() {
                links.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            } else if kind.is_dir() {
                stack.push(path);
            }
        }
    }
    links.sort();
    Some(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().canonicalize().unwrap().join("repo");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(outer.path().join("secret.yaml"), "outside").unwrap();
        std::fs::write(root.join("a/file.yaml"), "inside").unwrap();
        (outer, root)
    }

    #[test]
    fn plain_and_local_links_resolve_inside() {
        let (_outer, root) = tree();
        symlink("../file.yaml", root.join("a/b/f.yaml")).unwrap();
        symlink("../a", root.join("d/a")).unwrap();
        assert_eq!(
            resolve_beneath(&root, Path::new("a/b/f.yaml")).unwrap(),
            Path::new("a/file.yaml")
        );
        assert_eq!(
            resolve_beneath(&root, Path::new("d/a/b/c")).unwrap(),
            Path::new("a/b/c")
        );
        assert_eq!(
            resolve_beneath(&root, Path::new("a/missing")).unwrap(),
            Path::new("a/missing")
        );
        assert!(real_path_beneath(&root, Path::new("a/b/f.yaml")).is_ok());
    }

    #[test]
    fn a_chain_of_links_that_each_look_local_is_caught() {
        let (_outer, root) = tree();
        // Lexically `a/b/c/up` is the root and `d/x` is `a/b`; really `d/x` is two levels above the root.
        symlink("../../..", root.join("a/b/c/up")).unwrap();
        symlink("../a/b/c/up/../..", root.join("d/x")).unwrap();
        assert_eq!(resolve_beneath(&root, Path::new("a/b/c/up")).unwrap(), Path::new(""));
        assert_eq!(resolve_beneath(&root, Path::new("d/x")), Err(LinkProblem::Escapes));
        assert_eq!(
            resolve_beneath(&root, Path::new("a/b/c/up/../secret.yaml")),
            Err(LinkProblem::Escapes)
        );
        assert_eq!(real_path_beneath(&root, Path::new("d/x")), Err(LinkProblem::Escapes));
    }

    #[test]
    fn absolute_and_parent_targets_escape() {
        let (_outer, root) = tree();
        symlink("/etc/hostname", root.join("abs.yaml")).unwrap();
        symlink("../secret.yaml", root.join("up.yaml")).unwrap();
        assert_eq!(resolve_beneath(&root, Path::new("abs.yaml")), Err(LinkProblem::Escapes));
        assert_eq!(resolve_beneath(&root, Path::new("up.yaml")), Err(LinkProblem::Escapes));
        assert_eq!(
            resolve_beneath(&root, Path::new("../repo/a")),
            Err(LinkProblem::Escapes)
        );
    }

    #[test]
    fn cycles_are_an_error_not_a_hang() {
        let (_outer, root) = tree();
        symlink("b.yaml", root.join("a.yaml")).unwrap();
        symlink("a.yaml", root.join("b.yaml")).unwrap();
        symlink("self", root.join("self")).unwrap();
        // A directory link to its own parent is not a cycle for resolution (it ends), only for a naive walk.
        symlink(".", root.join("a/here")).unwrap();
        assert_eq!(resolve_beneath(&root, Path::new("a.yaml")), Err(LinkProblem::Loops));
        assert_eq!(resolve_beneath(&root, Path::new("self")), Err(LinkProblem::Loops));
        assert_eq!(real_path_beneath(&root, Path::new("a.yaml")), Err(LinkProblem::Loops));
        assert_eq!(
            resolve_beneath(&root, Path::new("a/here/here/here")).unwrap(),
            Path::new("a")
        );
    }

    #[test]
    fn symlinks_below_lists_links_without_following_them() {
        let (_outer, root) = tree();
        symlink("..", root.join("a/b/loop")).unwrap();
        symlink("file.yaml", root.join("a/l.yaml")).unwrap();
        let links = symlinks_below(&root, &root, 1000).unwrap();
        assert_eq!(links, [PathBuf::from("a/b/loop"), PathBuf::from("a/l.yaml")]);
        assert!(symlinks_below(&root, &root, 2).is_none(), "bounded");
    }
}
