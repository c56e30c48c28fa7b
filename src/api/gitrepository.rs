//! `GitRepository`: which repo, which ref, how often. Status names the exact commit Ferry resolved.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "GitRepository",
    namespaced,
    status = "GitRepositoryStatus",
    shortname = "gitrepo",
    category = "ferry",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.artifact.revision"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    /// Repository URL: `https://`, `http://`, `ssh://`, `git://`, or `file://` (local mirrors and tests).
    pub url: String,
    /// What to check out. Precedence: commit > tag > semver > branch. Defaults to branch `main`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRef>,
    /// How often to look for new commits, e.g. `1m`.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub interval: String,
    /// Upper bound for one fetch, e.g. `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Secret in the same namespace holding credentials for the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Secret (key `token`) that verifies push webhooks sent to `/hooks/<namespace>/<name>`: the HMAC key for
    /// GitHub, Gitea and Forgejo signatures, the GitLab token, or the bearer token of a generic call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<SecretReference>,
    /// Stop fetching; consumers keep the last revision.
    #[serde(default)]
    pub suspend: bool,
}

pub(crate) fn default_interval() -> String {
    "1m".to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A semver range; the highest matching tag wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A full 40-hex commit SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last revision fetched successfully: what consumers use, even while a later fetch fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The value of the `ferry.dev/reconcile-requested-at` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// `<ref>@sha1:<40 hex>`, e.g. `main@sha1:0123…`.
    pub revision: String,
    /// The URL the revision was fetched from, credentials redacted.
    pub url: String,
}

/// Annotation that asks for an immediate fetch, bypassing the interval and the shared-fetch window. Its value is
/// any string that differs from the last one handled (Flux's `reconcile.fluxcd.io/requestedAt` under our group).
pub const RECONCILE_REQUESTED_AT: &str = "ferry.dev/reconcile-requested-at";

impl GitRepository {
    /// Which credentials this repo fetches with: `namespace/secret`, or empty when anonymous. Mirrors are keyed
    /// by it, so a repo never reads objects fetched with someone else's credentials.
    pub fn credentials_identity(&self) -> String {
        match &self.spec.secret_ref {
            Some(s) => format!("{}/{}", self.metadata.namespace.as_deref().unwrap_or_default(), s.name),
            None => String::new(),
        }
    }
}

impl GitRepositorySpec {
    /// The effective ref after defaults: branch `main` when nothing is set.
    pub fn effective_ref(&self) -> GitRef {
        match &self.reference {
            Some(r) if r.branch.is_some() || r.tag.is_some() || r.semver.is_some() || r.commit.is_some() => r.clone(),
            _ => GitRef {
                branch: Some("main".to_string()),
                ..GitRef::default()
            },
        }
    }
}
