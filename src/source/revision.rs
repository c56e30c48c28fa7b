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

/// A validated ref, ready to resolve against a freshly fetched mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefSpec {
    Commit(String),
    Tag(String),
    Semver(semver::VersionReq),
    Branch(String),
}

/// Precedence: commit > tag > semver > branch, as documented on `GitRef`.
pub fn resolve_ref_spec(r: &GitRef) -> Result<RefSpec, SourceError> {
    if let Some(commit) = &r.commit {
        if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(SourceError::InvalidRef(format!(
                "commit {commit:?} must be a full 40-character hex SHA"
            )));
        }
        return Ok(RefSpec::Commit(commit.to_ascii_lowercase()));
    }
    if let Some(tag) = &r.tag {
        check_ref_name(tag)?;
        return Ok(RefSpec::Tag(tag.clone()));
    }
    if let Some(range) = &r.semver {
        let req = semver::VersionReq::parse(range)
            .map_err(|e| SourceError::InvalidRef(format!("semver range {range:?} is invalid: {e}")))?;
        return Ok(RefSpec::Semver(req));
    }
    let branch = r.branch.clone().unwrap_or_else(|| "main".to_string());
    check_ref_name(&branch)?;
    Ok(RefSpec::Branch(branch))
}

/// The highest tag matching `req`; tags may carry a leading `v`. Pre-releases only match ranges that name one.
pub fn highest_matching<'a>(req: &semver::VersionReq, tags: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    tags.into_iter()
        .filter_map(|t| {
            semver::Version::parse(t.strip_prefix('v').unwrap_or(t))
                .ok()
                .map(|v| (v, t))
        })
        .filter(|(v, _)| req.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t)
}

impl RefSpec {
    /// Resolves against the mirror's local refs, which the fetch just synchronized with the server
    /// (deleted branches and tags are pruned, so they do not resolve to stale commits).
    pub fn resolve(&self, repo: &git2::Repository, safe_url: &str) -> Result<Revision, SourceError> {
        let not_found = |what: String| SourceError::RefNotFound {
            what,
            url: safe_url.to_string(),
        };
        let peel = |refname: &str, what: String| -> Result<String, SourceError> {
            let reference = repo.find_reference(refname).map_err(|_| not_found(what.clone()))?;
            Ok(reference
                .peel_to_commit()
                .map_err(|_| not_found(what))?
                .id()
                .to_string())
        };
        match self {
            RefSpec::Commit(commit) => {
                let oid = git2::Oid::from_str(commit).map_err(|e| SourceError::InvalidRef(e.message().to_string()))?;
                repo.find_commit(oid)
                    .map_err(|_| not_found(format!("commit {commit}")))?;
                Ok(Revision {
                    name: String::new(),
                    commit: commit.clone(),
                })
            }
            RefSpec::Tag(tag) => Ok(Revision {
                name: tag.clone(),
                commit: peel(&format!("refs/tags/{tag}"), format!("tag {tag:?}"))?,
            }),
            RefSpec::Branch(branch) => Ok(Revision {
                name: branch.clone(),
                commit: peel(&format!("refs/remotes/origin/{branch}"), format!("branch {branch:?}"))?,
            }),
            RefSpec::Semver(req) => {
                let names = repo
                    .tag_names(None)
                    .map_err(|e| SourceError::Storage(e.message().to_string()))?;
                let names: Vec<&str> = names.iter().filter_map(|n| n.ok().flatten()).collect();
                let tag = highest_matching(req, names)
                    .ok_or_else(|| not_found(format!("a tag matching semver {req}")))?
                    .to_string();
                let commit = peel(&format!("refs/tags/{tag}"), format!("tag {tag:?}"))?;
                Ok(Revision { name: tag, commit })
            }
        }
    }
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
    fn commit_wins_over_tag_semver_and_branch() {
        let all = GitRef {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            semver: Some(">=1".into()),
            commit: Some("C".repeat(40)),
        };
        assert_eq!(resolve_ref_spec(&all).unwrap(), RefSpec::Commit("c".repeat(40)));
        let no_commit = GitRef {
            commit: None,
            ..all.clone()
        };
        assert_eq!(resolve_ref_spec(&no_commit).unwrap(), RefSpec::Tag("v1".into()));
        let semver = GitRef { tag: None, ..no_commit };
        assert!(matches!(resolve_ref_spec(&semver).unwrap(), RefSpec::Semver(_)));
        assert_eq!(
            resolve_ref_spec(&GitRef::default()).unwrap(),
            RefSpec::Branch("main".into())
        );
    }

    #[test]
    fn semver_picks_the_highest_matching_tag() {
        let tags = ["v1.0.0", "v1.2.3", "1.10.0", "v2.0.0", "v1.11.0-rc.1", "latest"];
        let req = semver::VersionReq::parse(">=1.0.0, <2.0.0").unwrap();
        assert_eq!(highest_matching(&req, tags), Some("1.10.0"));
        let req = semver::VersionReq::parse("~1.2").unwrap();
        assert_eq!(highest_matching(&req, tags), Some("v1.2.3"));
        let req = semver::VersionReq::parse(">=3").unwrap();
        assert_eq!(highest_matching(&req, tags), None);
        let bad = GitRef {
            semver: Some("not a range".into()),
            ..GitRef::default()
        };
        assert!(resolve_ref_spec(&bad).unwrap_err().to_string().contains("semver"));
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
