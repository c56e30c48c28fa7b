//! The sync pipeline up to the write, in one place: revision → the commit's tree (fetched if the mirror lacks
//! it) → render (Helm charts with the Environment's values and the target's capabilities) → decryption (in
//! memory) → image digests (resolved, or the upstream's, copied; then pinned) → the apply options. The
//! Environment controller applies what it yields; `ferry diff --environment` (and the web view's diff of a
//! Promotion) dry-runs it, so a diff shows what the controller would apply.
//!
//! Decryption comes first, before anything reads the objects: sops can encrypt any field, the kind and the
//! images included (`--encrypted-regex '^(image|kind)$'` needs only the team's public key), and a check of
//! the render as stored would see neither a Deployment nor its image. So the digests (and `copyImages`), the
//! registry policy, a chart's hook filter and the apply all see one set of objects, [`Prepared::objects`]:
//! decrypted, then pinned. That costs one decryption per sync for an Environment whose render holds
//! encrypted documents (the controller's steady-state shortcut comes after the policy, so it needs them too);
//! a render without any is used as it is, found so by one scan per cached render
//! ([`Rendered::holds_encrypted`]). Decrypted objects live in memory only, never in the render cache.

use std::path::PathBuf;
use std::sync::Arc;

use kube::{Client, ResourceExt};

use super::capabilities::CapabilityCache;
use super::failure::Failure;
use super::images::Pinned;
use crate::api::{Environment, EnvironmentStatus, GitRepository};
use crate::apply::{ApplyOptions, Owner};
use crate::cluster::Target;
use crate::error::ReconcileError;
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

/// A render decrypted and with its image digests settled: what the registry policy checks and the
/// controller applies.
pub struct Prepared {
    /// The render as the render cache shares it: SOPS-encrypted documents as stored.
    pub rendered: Arc<Rendered>,
    /// What, besides the revision, the render depended on (the helm inputs' digest for a chart; empty
    /// otherwise).
    pub render_key: String,
    /// The render's objects decrypted, when it held encrypted documents.
    decrypted: Option<Decrypted>,
    /// The objects pinned (decrypted first), when digests are pinned.
    pub pinned: Option<Pinned>,
}

impl Prepared {
    /// The objects to apply: decrypted, then pinned. What every check looks at.
    pub fn objects(&self) -> &[RenderedObject] {
        match (&self.pinned, &self.decrypted) {
            (Some(pinned), _) => &pinned.objects,
            (None, Some(decrypted)) => &decrypted.objects,
            (None, None) => &self.rendered.objects,
        }
    }

    /// What users should know about the render that is not an error: the render's notes, and the hooks of a
    /// chart left out only once decrypted.
    pub fn notes(&self) -> impl Iterator<Item = &String> {
        let late = self.decrypted.as_ref().and_then(|d| d.hooks.as_ref());
        self.rendered.notes.iter().chain(late)
    }
}

/// A render's objects decrypted in memory, as they are applied.
struct Decrypted {
    objects: Vec<RenderedObject>,
    /// The note naming the hooks of a chart left out only now, once decrypted (see [`Decrypted::of`]).
    hooks: Option<String>,
}

impl Decrypted {
    /// The decrypted render with a chart's hooks left out, as `helm template --no-hooks` leaves out the others:
    /// the render's filter saw them encrypted (sops leaves keys in clear), and this second look, at the objects
    /// as they are applied, keeps that from being the only guard. Any other render keeps every object (Ferry
    /// reads hook annotations in charts only).
    fn of(decrypted: Rendered, chart: bool) -> Decrypted {
        if !chart {
            return Decrypted {
                objects: decrypted.objects,
                hooks: None,
            };
        }
        let (objects, hooks) = crate::render::split_hooks(decrypted.objects);
        Decrypted {
            objects,
            hooks: crate::render::hooks_note(&hooks),
        }
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

    /// Renders the revision, decrypts it in memory if it holds SOPS-encrypted documents, and settles the
    /// image digests of the decrypted objects (pinning them if asked for). `status` is the Environment's: its
    /// history holds digests decided before; with `track`, the current attempt's record gets the digests.
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
        // Only a chart's render depends on more than the revision (see `render`).
        let chart = !render_key.is_empty();
        // Before anything reads the objects: encrypted, a Deployment need not even look like one.
        let decrypted = match self.decrypted(repo, commit, &rendered, chart).await? {
            Ok(decrypted) => decrypted,
            Err(failure) => return Ok(Err(failure)),
        };
        let plain = decrypted.as_ref().map_or(&rendered.objects, |d| &d.objects);
        // Digests: resolved, or taken from the upstream (and copied), then pinned; before the policy looks.
        let pinned = match self.images(status, revision, track, plain).await? {
            Ok(pinned) => pinned,
            Err(failure) => return Ok(Err(failure)),
        };
        Ok(Ok(Prepared {
            rendered,
            render_key,
            decrypted,
            pinned,
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
                let creds = match crate::source::credentials::load_credentials(&reader, repo).await? {
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

    /// The render's objects with every SOPS-encrypted document decrypted in memory with the identities of
    /// `spec.decryption.secretRef` (see [`crate::decrypt`]), a `chart`'s hooks left out. A render without
    /// encrypted documents is used as it is (`None`, at no cost past the first sync of a cached render); one
    /// with them is refused without `spec.decryption`.
    async fn decrypted(
        &self,
        repo: &GitRepository,
        commit: &str,
        rendered: &Rendered,
        chart: bool,
    ) -> Result<Result<Option<Decrypted>, Failure>, ReconcileError> {
        if !rendered.holds_encrypted() {
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
            Ok(decrypted) => Ok(Ok(decrypted.map(|d| Decrypted::of(d, chart)))),
            Err(e) => Ok(Err(failed(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::{Enforcement, EnvironmentSelector, RegistryPolicy, RegistryPolicySpec};
    use crate::images::pinning::distinct_images;
    use crate::policy::{Subject, evaluate};

    const CIPHER: &str = "ENC[AES256_GCM,data:AAAA,iv:BBBB,tag:CCCC,type:str]";

    fn object(source: &str, object: Value) -> RenderedObject {
        RenderedObject {
            source: source.to_string(),
            object,
        }
    }

    fn deployment(kind: &str, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    /// A Deployment as `sops --encrypted-regex '^(image|kind)$'` stores it: no kind, no image to read.
    fn stored() -> Arc<Rendered> {
        let mut encrypted = deployment(CIPHER, CIPHER);
        encrypted["sops"] = json!({"mac": CIPHER, "age": [{"recipient": "age1x"}]});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}});
        let objects = vec![object("apps/web.yaml", encrypted), object("apps/app.yaml", config)];
        Arc::new(Rendered::new(String::new(), objects, false, Vec::new()))
    }

    /// The same render as decryption hands it back.
    fn opened() -> Rendered {
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}});
        let objects = vec![
            object("apps/web.yaml", deployment("Deployment", "evil.example.io/app:1")),
            object("apps/app.yaml", config),
        ];
        Rendered::new(String::new(), objects, false, Vec::new())
    }

    fn deny(allowed: &str) -> RegistryPolicy {
        RegistryPolicy::new(
            "only-ours",
            RegistryPolicySpec {
                environment_selector: EnvironmentSelector::default(),
                allowed_registries: vec![allowed.to_string()],
                require_digest: false,
                enforcement: Enforcement::Deny,
            },
        )
    }

    #[test]
    fn the_checks_see_what_sops_hid_once_decrypted() {
        let rendered = stored();
        // As stored, nothing is a Deployment: no image for digests, nothing for the policy to deny.
        assert!(rendered.holds_encrypted());
        assert!(distinct_images(&rendered.objects).unwrap().is_empty());
        let prepared = Prepared {
            rendered,
            render_key: String::new(),
            decrypted: Some(Decrypted::of(opened(), false)),
            pinned: None,
        };
        let images: Vec<String> = distinct_images(prepared.objects())
            .unwrap()
            .into_iter()
            .map(|(written, _)| written)
            .collect();
        assert_eq!(images, ["evil.example.io/app:1"]);
        let subject = Subject {
            namespace: "team",
            labels: None,
        };
        let evaluation = evaluate(&[deny("registry.example.com/")], &subject, prepared.objects());
        assert!(evaluation.denied());
        assert!(
            evaluation.message(Enforcement::Deny).contains("evil.example.io/app:1"),
            "{}",
            evaluation.message(Enforcement::Deny)
        );
        assert!(prepared.objects().iter().all(|o| o.object.get("sops").is_none()));
    }

    #[test]
    fn pinned_objects_are_the_decrypted_ones_pinned() {
        let pinned = Pinned {
            objects: vec![object(
                "apps/web.yaml",
                deployment("Deployment", "evil.example.io/app:1@sha256:00"),
            )],
            copied: None,
        };
        let prepared = Prepared {
            rendered: stored(),
            render_key: String::new(),
            decrypted: Some(Decrypted::of(opened(), false)),
            pinned: Some(pinned),
        };
        assert_eq!(prepared.objects().len(), 1);
        assert!(prepared.objects()[0].object.to_string().contains("@sha256:00"));
    }

    #[test]
    fn a_render_without_encrypted_documents_is_used_as_it_is() {
        let rendered = Arc::new(opened());
        assert!(!rendered.holds_encrypted());
        let prepared = Prepared {
            rendered: rendered.clone(),
            render_key: String::new(),
            decrypted: None,
            pinned: None,
        };
        // The cached objects themselves, not a copy.
        assert!(std::ptr::eq(prepared.objects(), rendered.objects.as_slice()));
        assert_eq!(prepared.notes().count(), 0);
    }

    #[test]
    fn a_charts_decrypted_objects_are_looked_at_again_for_hooks() {
        let hook = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "annotations": {crate::render::HOOK_ANNOTATION: "pre-upgrade"}},
            "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "evil.example.io/m:1"}]}}}});
        let with_hook = || {
            let mut decrypted = opened();
            decrypted
                .objects
                .push(object("charts/app: app/templates/job.yaml", hook.clone()));
            decrypted
        };
        let notes = vec!["helm hooks are not applied (...): Pod/t (test)".to_string()];
        let rendered = Arc::new(Rendered::new(String::new(), stored().objects.clone(), false, notes));
        let prepared = Prepared {
            rendered: rendered.clone(),
            render_key: "apps\0helm:digest".to_string(),
            decrypted: Some(Decrypted::of(with_hook(), true)),
            pinned: None,
        };
        assert!(prepared.objects().iter().all(|o| o.name() != "migrate"));
        let notes: Vec<&String> = prepared.notes().collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[1].ends_with(": Job/migrate (pre-upgrade)"), "{notes:?}");
        // Outside a chart the annotation means nothing to Ferry: the object is applied as written.
        let plain = Decrypted::of(with_hook(), false);
        assert!(plain.objects.iter().any(|o| o.name() == "migrate") && plain.hooks.is_none());
    }
}
