//! The sync pipeline up to the write, in one place: revision → the commit's tree (fetched if the mirror lacks
//! it) → render (Helm charts with the Environment's values and the target's capabilities) → image digests
//! (resolved, or the upstream's, copied; then pinned) → decryption (in memory) → the apply options. The
//! Environment controller applies what it yields; `ferry diff --environment` (and the web view's diff of a
//! Promotion) dry-runs it, so a diff shows what the controller would apply.
//!
//! In two calls: [`Pipeline::prepare`] (render and digests: what the registry policy checks, and what the
//! controller's steady-state shortcut needs) and [`Pipeline::finish`] (decryption, only past that shortcut).

use std::path::PathBuf;
use std::sync::Arc;

use kube::{Client, ResourceExt};

use super::capabilities::CapabilityCache;
use super::failure::Failure;
use super::images::Pinned;
use crate::api::{Environment, EnvironmentStatus, GitRepository};
use crate::apply::{ApplyOptions, Owner};
use crate::cluster::Target;
use crate::controllers::ReconcileError;
use crate::registry::RegistrySettings;
use crate::render::{HelmInputs, RenderCache, RenderSettings, Rendered, RenderedObject, render_path_with};
use crate::secrets::{Readers, SecretReader};
use crate::source::{FetchOptions, MirrorStore, SourceError};

/// What an image step does with `promotion.copyImages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// Copy each image by digest to its production registry (the controller).
    Make,
    /// Name where each image would go and copy nothing (a diff).
    Plan,
}

/// Everything one Environment's pipeline reads, borrowed from the controller's context (or, for `ferry diff`,
/// from short-lived ones).
pub struct Pipeline<'a> {
    /// Reads the upstream Environment: Ferry's own client in the controller, the caller's in `ferry diff`.
    pub client: &'a Client,
    /// Reads the GitRepository's credentials and the Environment's decryption and registry Secrets: as each
    /// object's ServiceAccount in the controller (and its web view), with the caller's client in `ferry diff`.
    pub secrets: Readers<'a>,
    pub env: &'a Environment,
    pub mirrors: &'a MirrorStore,
    pub renders: &'a RenderCache,
    pub capabilities: &'a CapabilityCache,
    pub render: &'a RenderSettings,
    /// How a commit the mirror lacks is fetched.
    pub fetch: FetchOptions,
    pub registry: &'a RegistrySettings,
    pub copies: Copies,
}

/// A render with its image digests settled: what the registry policy checks.
pub struct Prepared {
    pub rendered: Arc<Rendered>,
    /// What, besides the revision, the render depended on (the helm inputs' digest for a chart; empty
    /// otherwise).
    pub render_key: String,
    /// The pinned render, when digests are pinned.
    pub pinned: Option<Pinned>,
}

impl Prepared {
    /// The objects as rendered and pinned (before decryption).
    pub fn objects(&self) -> &[RenderedObject] {
        self.pinned.as_ref().map_or(&self.rendered.objects, |p| &p.objects)
    }
}

/// How an Environment's objects are applied: labelled for it, into its target namespace.
pub fn apply_options(env: &Environment) -> ApplyOptions {
    let namespace = env.namespace().unwrap_or_default();
    ApplyOptions {
        owner: Some(Owner {
            name: env.name_any(),
            namespace: namespace.clone(),
        }),
        target_namespace: env.spec.target_namespace.clone(),
        default_namespace: namespace,
        force: env.spec.force,
    }
}

impl Pipeline<'_> {
    pub(super) fn namespace(&self) -> String {
        self.env.namespace().unwrap_or_default()
    }

    /// What reads the Environment's own Secrets (decryption keys, registry credentials).
    pub(super) fn env_reader(&self) -> Result<SecretReader, Failure> {
        self.secrets.for_environment(self.env).map_err(Failure::reader)
    }

    /// Renders the revision and settles its image digests (pinning them if asked for). `status` is the
    /// Environment's: its history holds digests decided before; with `track`, the current attempt's record
    /// gets the digests.
    pub async fn prepare(
        &self,
        target: &Target,
        repo: &GitRepository,
        revision: &str,
        commit: &str,
        status: &mut EnvironmentStatus,
        track: bool,
    ) -> Result<Result<Prepared, Failure>, ReconcileError> {
        let (rendered, render_key) = match self.render(target, repo, &repo.spec.url, commit).await? {
            Ok(rendered) => rendered,
            Err(failure) => return Ok(Err(failure)),
        };
        // Digests: resolved, or taken from the upstream (and copied), then pinned; before the policy looks.
        let pinned = match self.images(status, revision, track, &rendered.objects).await? {
            Ok(pinned) => pinned,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(Ok(Prepared {
            rendered,
            render_key,
            pinned,
        }))
    }

    /// The objects to apply: the prepared ones, with every SOPS-encrypted document decrypted in memory and
    /// pinned to the same digests as the render the policy checked.
    pub async fn finish(
        &self,
        prepared: &Prepared,
        repo: &GitRepository,
        commit: &str,
    ) -> Result<Result<Vec<RenderedObject>, Failure>, ReconcileError> {
        let decrypted = match self.decrypted(repo, commit, &prepared.rendered).await? {
            Ok(decrypted) => decrypted,
            Err(failure) => return Ok(Err(failure)),
        };
        // Decrypted from the render as stored: pinned to the same digests as the render the policy checked.
        Ok(Ok(match (decrypted, &prepared.pinned) {
            (Some(d), Some(pinned)) => crate::images::pinning::rewrite(&d.objects, &pinned.records),
            (Some(d), None) => d.objects,
            (None, _) => prepared.objects().to_vec(),
        }))
    }

    /// The inputs of `helm template` for this Environment on `target`, and the render cache key they make
    /// (the path, the values and the cluster's capabilities).
    async fn helm_inputs(&self, target: &Target) -> Result<(HelmInputs, String), ReconcileError> {
        let cluster = match &self.env.spec.kube_config {
            Some(k) => format!("{}/{}", self.namespace(), k.secret_ref.name),
            None => String::new(),
        };
        let caps = self
            .capabilities
            .get(&cluster, &target.client)
            .await
            .map_err(ReconcileError::Kube)?;
        let inputs = HelmInputs::for_environment(self.env, Some(caps));
        let key = format!("{}\0helm:{}", self.env.spec.path, inputs.digest());
        Ok((inputs, key))
    }

    /// Renders the path at the commit, once per (commit, path) across all Environments (once per commit, path
    /// and helm inputs for a chart). When this process has not fetched the commit yet (after a restart),
    /// fetches it through the same shared mirror first. Also returns what, besides the revision, the render
    /// depended on (the helm inputs' digest for a chart; empty otherwise).
    async fn render(
        &self,
        target: &Target,
        repo: &GitRepository,
        url: &str,
        commit: &str,
    ) -> Result<Result<(Arc<Rendered>, String), Failure>, ReconcileError> {
        let path = self.env.spec.path.clone();
        // Only what is not a chart is kept under the bare path.
        if let Some(hit) = self.renders.get(commit, &path) {
            return Ok(Ok((hit, String::new())));
        }
        let mut helm = None;
        if self.env.spec.helm.is_some() {
            let (inputs, key) = self.helm_inputs(target).await?;
            if let Some(hit) = self.renders.get(commit, &key) {
                return Ok(Ok((hit, key)));
            }
            helm = Some((inputs, key));
        }
        let tree = match self.export(repo, url, commit).await? {
            Ok(tree) => tree,
            Err(failure) => return Ok(Err(failure)),
        };
        let is_chart = crate::source::normalize_path(&path)
            .is_ok_and(|parts| tree.join(parts.join("/")).join(crate::render::CHART_FILE).is_file());
        if is_chart && helm.is_none() {
            let (inputs, key) = self.helm_inputs(target).await?;
            if let Some(hit) = self.renders.get(commit, &key) {
                return Ok(Ok((hit, key)));
            }
            helm = Some((inputs, key));
        }
        let (inputs, key) = match helm {
            Some((inputs, key)) if is_chart => (inputs, key),
            _ => (HelmInputs::default(), String::new()),
        };
        let cache_key = if key.is_empty() { path.clone() } else { key.clone() };
        match render_path_with(&tree, &path, self.render, &inputs).await {
            Ok(rendered) => Ok(Ok((self.renders.insert(commit, &cache_key, rendered), key))),
            Err(e) => Ok(Err(Failure {
                reason: e.reason(),
                message: format!("rendering {path:?} at {commit} failed: {e}"),
                stalled: !e.is_transient(),
            })),
        }
    }

    /// The commit's tree exported to disk (shared by every Environment on it), fetching first if the mirror
    /// does not have the commit (yet, or any more).
    async fn export(
        &self,
        repo: &GitRepository,
        url: &str,
        commit: &str,
    ) -> Result<Result<PathBuf, Failure>, ReconcileError> {
        let identity = repo.credentials_identity();
        let mirrors = self.mirrors.clone();
        let (url, commit_owned) = (url.to_string(), commit.to_string());
        let first = {
            let (mirrors, url, identity, commit) =
                (mirrors.clone(), url.clone(), identity.clone(), commit_owned.clone());
            tokio::task::spawn_blocking(move || mirrors.export(&url, &identity, &commit))
                .await
                .map_err(|e| ReconcileError::Internal(e.to_string()))?
        };
        let tree = match first {
            Err(SourceError::CommitMissing(_)) => {
                // The repository's credentials, as its own ServiceAccount reads them (not the Environment's).
                let reader = match self.secrets.for_repository(repo) {
                    Ok(reader) => reader,
                    Err(e) => return Ok(Err(Failure::reader(e))),
                };
                let creds = match crate::controllers::gitrepository::load_credentials(&reader, repo).await? {
                    Ok(c) => c,
                    Err((reason, message, stalled)) => {
                        return Ok(Err(Failure {
                            reason,
                            message,
                            stalled,
                        }));
                    }
                };
                let reference = repo.spec.effective_ref();
                let opts = self.fetch.clone();
                // A fetch brings every branch and tag, so an older promoted commit is there too.
                tokio::task::spawn_blocking(move || {
                    mirrors.fetch(&url, &reference, &creds, &opts)?;
                    mirrors.export(&url, &identity, &commit_owned)
                })
                .await
                .map_err(|e| ReconcileError::Internal(e.to_string()))?
            }
            other => other,
        };
        Ok(tree.map_err(Failure::from))
    }

    /// The render with every SOPS-encrypted document decrypted in memory with the identities of
    /// `spec.decryption.secretRef` (see [`crate::decrypt`]). A render without encrypted documents is used as
    /// it is (`None`); one with them is refused without `spec.decryption`.
    async fn decrypted(
        &self,
        repo: &GitRepository,
        commit: &str,
        rendered: &Arc<Rendered>,
    ) -> Result<Result<Option<Rendered>, Failure>, ReconcileError> {
        if crate::decrypt::find_encrypted(rendered).is_none() {
            return Ok(Ok(None));
        }
        let path = &self.env.spec.path;
        let failed = |e: crate::decrypt::DecryptError| Failure {
            reason: e.reason(),
            message: format!("decrypting {path:?} at {commit} failed: {e}"),
            stalled: !e.is_transient(),
        };
        let Some(decryption) = &self.env.spec.decryption else {
            return Ok(crate::decrypt::refuse_encrypted(rendered)
                .map(|()| None)
                .map_err(failed));
        };
        // Read in the Environment's namespace only (as kubeconfig Secrets are): as its ServiceAccount in the
        // controller, with the caller's client in `ferry diff`.
        let reader = match self.env_reader() {
            Ok(reader) => reader,
            Err(failure) => return Ok(Err(failure)),
        };
        let keys = match crate::decrypt::keyring_for(&reader, &self.namespace(), decryption).await? {
            Ok(keys) => keys,
            Err(e) => return Ok(Err(failed(e))),
        };
        let tree = match self.export(repo, &repo.spec.url, commit).await? {
            Ok(tree) => tree,
            Err(failure) => return Ok(Err(failure)),
        };
        match crate::decrypt::decrypt_render(&tree, path, rendered, &keys, self.render).await {
            Ok(decrypted) => Ok(Ok(decrypted)),
            Err(e) => Ok(Err(failed(e))),
        }
    }
}
