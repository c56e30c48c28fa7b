//! `GitRepository`: which repo, which ref, how often. Status names the exact commit Ferry resolved.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a GitRepository asks for: which repository, which ref, how often, with which credentials.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    doc = "A Git repository Ferry fetches on an interval (or at once on a push webhook or `ferry reconcile`), \
           resolving a branch, tag, semver range or commit to the exact commit Environments apply. \
           status.artifact.revision is that commit.",
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
    /// How often to look for new commits, as a Go duration (`30s`, `1m`, `1h30m`). Default `1m`. Push
    /// webhooks and `ferry reconcile` fetch sooner.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub interval: String,
    /// Upper bound for one fetch, as a Go duration (e.g. `60s`). Default `60s`; a fetch over it fails with
    /// `FetchFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::duration::DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Secret in the same namespace holding credentials for the URL (Flux's keys: `username`/`password`,
    /// `bearerToken`, `ca.crt`, or `identity`/`known_hosts` for SSH). None: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
    /// Secret (key `token`) that verifies push webhooks sent to `/hooks/<namespace>/<name>`: the HMAC key for
    /// GitHub, Gitea and Forgejo signatures, the GitLab token, or the bearer token of a generic call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<SecretReference>,
    /// ServiceAccount (same namespace) whose rights `secretRef` and `webhookSecretRef` are read with: it needs
    /// `get` on those Secrets, else the repository is `Forbidden`. Default: the one `ferry run
    /// --default-service-account` names; when neither is set (a single-tenant install), Ferry's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
        length(max = 253)
    )]
    pub service_account_name: Option<String>,
    /// Stop fetching (`ferry suspend gitrepository`); consumers keep the last revision. Default false.
    #[serde(default)]
    pub suspend: bool,
}

pub(crate) fn default_interval() -> String {
    "1m".to_string()
}

/// A Git ref to follow. Precedence when several are set: commit > tag > semver > branch.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    /// A branch name (e.g. `main`); its newest commit is followed. The default when nothing is set: `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag name (e.g. `v1.2.3`); a tag moved upstream is followed and reported (`TagMoved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A semver range (e.g. `>=1.0.0, <2.0.0`); the highest matching tag wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A full 40-hex commit SHA: pinned, never moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A Secret in the referring object's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// The Secret's name (same namespace).
    pub name: String,
}

/// What Ferry found: the revision consumers use, and whether the last fetch worked.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the last fetch worked; else why not), `Reconciling` (a fetch for a new spec is under way) and
    /// `Stalled` (only a change of spec can fix it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last revision fetched successfully: what consumers use, even while a later fetch fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// The value of the `ferry.dev/reconcile-requested-at` annotation last acted on: equal to the annotation
    /// once a `ferry reconcile` (or webhook) request was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// A fetched revision.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// `<ref>@sha1:<40 hex>` (e.g. `main@sha1:0123…`, `v1.2.3@sha1:…`), or `sha1:<40 hex>` for a pinned commit.
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
