//! Which refs to fetch for a `GitRef`, and the revision string (`main@sha1:…`) users see in status.

use super::SourceError;
use crate::api::GitRef;

/// A resolved revision: the ref's short name (empty for a bare commit) and the commit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub name: String,
    pub commit: String,
}

impl Revision {
    /// `main@sha1:<hex>`, or `sha1:<hex>` for a commit ref: Flux's format, so tooling carries over.
    pub fn render(&self) -> String {
        if self.name.is_empty() {
            format!("sha1:{}", self.commit)
        } else {
            format!("{}@sha1:{}", self.name, self.commit)
        }
    }

    pub fn parse(s: &str) -> Option<Revision> {
        let (name, hex) = match s.rsplit_once("@sha1:") {
            Some((name, hex)) => (name, hex),
            None => ("", s.strip_prefix("sha1:")?),
        };
        if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Some(Revision {
            name: name.to_string(),
            commit: hex.to_ascii_lowercase(),
        })
    }
}

/// What to fetch for a ref, and which local ref then names the wanted commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSpec {
    /// Refspecs for the fetch.
    pub fetch: Vec<String>,
    /// The local reference to resolve after the fetch; `None` for a commit (looked up by id).
    pub local: Option<String>,
    /// The short name for the revision string.
    pub name: String,
    /// A commit pinned by the user.
    pub commit: Option<String>,
}

/// Precedence: commit > tag > semver > branch, as documented on `GitRef`.
pub fn resolve_ref_spec(r: &GitRef) -> Result<RefSpec, SourceError> {
    if let Some(commit) = &r.commit {
        if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(SourceError::InvalidRef(format!(
                "commit {commit:?} must be a full 40-character hex SHA"
            )));
        }
        return Ok(RefSpec {
            fetch: vec![
                "+refs/heads/*:refs/remotes/origin/*".to_string(),
                "+refs/tags/*:refs/tags/*".to_string(),
            ],
            local: None,
            name: String::new(),
            commit: Some(commit.to_ascii_lowercase()),
        });
    }
    if let Some(tag) = &r.tag {
        check_ref_name(tag)?;
        return Ok(RefSpec {
            fetch: vec![format!("+refs/tags/{tag}:refs/tags/{tag}")],
            local: Some(format!("refs/tags/{tag}")),
            name: tag.clone(),
            commit: None,
        });
    }
    if r.semver.is_some() {
        return Err(SourceError::InvalidRef(
            "semver ranges are not supported yet; use a tag, branch or commit".to_string(),
        ));
    }
    let branch = r.branch.clone().unwrap_or_else(|| "main".to_string());
    check_ref_name(&branch)?;
    Ok(RefSpec {
        fetch: vec![format!("+refs/heads/{branch}:refs/remotes/origin/{branch}")],
        local: Some(format!("refs/remotes/origin/{branch}")),
        name: branch,
        commit: None,
    })
}

/// The subset of git's ref-name rules that keeps a user's string from turning into another refspec.
fn check_ref_name(name: &str) -> Result<(), SourceError> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err(SourceError::InvalidRef(format!("{name:?} is not a valid git ref name")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_round_trips() {
        let r = Revision {
            name: "main".into(),
            commit: "a".repeat(40),
        };
        assert_eq!(r.render(), format!("main@sha1:{}", "a".repeat(40)));
        assert_eq!(Revision::parse(&r.render()), Some(r));
        assert_eq!(Revision::parse("main@sha1:abc"), None);
        let bare = Revision::parse(&format!("sha1:{}", "b".repeat(40))).unwrap();
        assert_eq!(bare.name, "");
    }

    #[test]
    fn commit_wins_over_tag_and_branch() {
        let spec = resolve_ref_spec(&GitRef {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            commit: Some("C".repeat(40)),
            semver: None,
        })
        .unwrap();
        assert_eq!(spec.commit, Some("c".repeat(40)));
        let tag = resolve_ref_spec(&GitRef {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            ..GitRef::default()
        })
        .unwrap();
        assert_eq!(tag.local.as_deref(), Some("refs/tags/v1"));
    }

    #[test]
    fn rejects_refspec_injection_and_short_commits() {
        for bad in ["a:b", "x..y", "-f", "a b", "+refs/*"] {
            let r = GitRef {
                branch: Some(bad.into()),
                ..GitRef::default()
            };
            assert!(resolve_ref_spec(&r).is_err(), "{bad}");
        }
        let short = GitRef {
            commit: Some("abc".into()),
            ..GitRef::default()
        };
        assert!(resolve_ref_spec(&short).is_err());
    }
}
