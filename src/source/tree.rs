//! Paths inside a repository, and the files a renderer reads.

use std::path::{Component, Path};

use super::SourceError;

/// Largest single manifest file accepted; bigger files are almost always a mistake (a binary, a dump).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub content: Vec<u8>,
}

/// Normalizes a user path (`./apps/staging/`) to components, refusing anything that leaves the repo.
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
