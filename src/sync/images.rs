//! The image step of a sync, between decryption and the registry policy: each image of the revision gets the
//! digest that stands for it here — resolved in its registry (`spec.images`), or, in a promoted Environment,
//! the digest the upstream recorded for this revision (never a fresh tag lookup), copied to the production
//! registry first with `promotion.copyImages`. It reads the objects as they are applied, decrypted, so an
//! image (or a kind) sops hid is resolved, copied and pinned like any other. The digests go into the
//! revision's history record, once per attempt, so later syncs of the same revision ask no registry; pinning
//! rewrites the objects to `repo:tag@sha256:…`. Any failure stops the sync before anything is applied.

use kube::Api;
use tracing::info;

use super::failure::Failure;
use super::plan::{Copies, Pipeline};
use crate::api::{Environment, EnvironmentStatus, ImageRecord, LocalSecretReference, Reason, RevisionPhase};
use crate::error::ReconcileError;
use crate::images::ImageReference;
use crate::images::pinning::{CopyRule, covers, distinct_images, recorded, rewrite};
use crate::registry::{CopyReport, Credentials, DOCKER_CONFIG_KEY, Registry};
use crate::render::RenderedObject;
use crate::secrets::SecretError;
use crate::sync::history;

type Images = Vec<(String, ImageReference)>;

/// A render pinned to digests (and possibly moved to the registries `copyImages` names).
pub struct Pinned {
    pub objects: Vec<RenderedObject>,
    /// What was copied, for an Event (`Copies::Make` only).
    pub copied: Option<String>,
}

impl Pipeline<'_> {
    /// The objects to apply: `None` keeps `objects` (the render, decrypted) as they are (no image handling
    /// asked for, or digests only recorded), `Some` is them pinned (and possibly moved).
    pub(super) async fn images(
        &self,
        status: &mut EnvironmentStatus,
        revision: &str,
        track: bool,
        objects: &[RenderedObject],
    ) -> Result<Result<Option<Pinned>, Failure>, ReconcileError> {
        let spec = &self.env.spec;
        let promoted = spec.promotion.is_some();
        if spec.images.is_none() && !promoted {
            return Ok(Ok(None));
        }
        let images = match distinct_images(objects) {
            Ok(images) => images,
            Err(e) => {
                return Ok(Err(Failure {
                    reason: Reason::InvalidImageReference,
                    message: format!("{}: {e}", revision),
                    stalled: true,
                }));
            }
        };
        if images.is_empty() {
            return Ok(Ok(None));
        }
        // Decided before for this revision here (this attempt, or an earlier one a rollback returns to).
        let known = status
            .history
            .iter()
            .find(|r| r.revision == revision && !r.images.is_empty() && covers(&r.images, &images))
            .map(|r| r.images.clone());
        let mut copied = None;
        let records = match known {
            Some(records) => records,
            None => {
                let computed = match promoted {
                    true => self.upstream_digests(revision, &images, &mut copied).await?,
                    false => self.resolve(revision, &images).await?,
                };
                match computed {
                    Ok(records) => records,
                    Err(failure) => return Ok(Err(failure)),
                }
            }
        };
        if records.is_empty() {
            return Ok(Ok(None));
        }
        if track
            && let Some(record) = history::current(&mut status.history, revision)
            && record.images != records
        {
            record.images = records.clone();
        }
        let pin = promoted || spec.images.as_ref().is_some_and(|i| i.pin_digests);
        Ok(Ok(pin.then(|| Pinned {
            objects: rewrite(objects, &records),
            copied,
        })))
    }

    /// Every image resolved to the digest its tag points at now.
    async fn resolve(
        &self,
        revision: &str,
        images: &Images,
    ) -> Result<Result<Vec<ImageRecord>, Failure>, ReconcileError> {
        let secret = self.env.spec.images.as_ref().and_then(|i| i.pull_secret_ref.as_ref());
        let credentials = match self.credentials(secret).await? {
            Ok(c) => c,
            Err(failure) => return Ok(Err(failure)),
        };
        let registry = Registry::new(self.registry, credentials);
        let mut records = Vec::new();
        for (written, _) in images {
            match registry.resolve(written).await {
                Ok(digest) => records.push(ImageRecord {
                    image: written.clone(),
                    digest,
                    copied_to: None,
                }),
                Err(e) => {
                    let failure = Failure::registry(Reason::ImageResolutionFailed, "resolving", &e);
                    return Ok(Err(Failure {
                        message: format!("{}: {}", revision, failure.message),
                        ..failure
                    }));
                }
            }
        }
        let shown: Vec<String> = records
            .iter()
            .map(|r| format!("{}@{}", r.image, short(&r.digest)))
            .collect();
        info!(images = %shown.join(", "), "resolved image digests");
        Ok(Ok(records))
    }

    /// The digests the upstream recorded for this revision (when it verified it), copied with
    /// `copyImages`. An upstream that recorded none leaves the render as it is, unless this Environment asks
    /// for digests (`images` or `copyImages`), which then fails: there is nothing verified to pin. `copied`
    /// gets what was copied.
    async fn upstream_digests(
        &self,
        revision: &str,
        images: &Images,
        copied: &mut Option<String>,
    ) -> Result<Result<Vec<ImageRecord>, Failure>, ReconcileError> {
        let Some(policy) = self.env.spec.promotion.as_ref() else {
            return Ok(Ok(Vec::new()));
        };
        let api: Api<Environment> = Api::namespaced(self.client.clone(), &self.namespace());
        let upstream = api.get_opt(&policy.from).await?;
        let upstream_records = upstream
            .as_ref()
            .and_then(|u| u.status.as_ref())
            .and_then(|s| {
                let of_revision = || s.history.iter().filter(|r| r.revision == revision);
                of_revision()
                    .find(|r| r.phase == RevisionPhase::Verified && !r.images.is_empty())
                    .or_else(|| of_revision().find(|r| !r.images.is_empty()))
            })
            .map(|r| r.images.clone())
            .unwrap_or_default();
        let wants = self.env.spec.images.is_some() || !policy.copy_images.is_empty();
        if upstream_records.is_empty() {
            if !wants {
                return Ok(Ok(Vec::new()));
            }
            return Ok(Err(Failure {
                reason: Reason::ImageNotVerified,
                message: format!(
                    "{} recorded no image digests for {}: give it spec.images, so what it verifies is what is \
                     promoted",
                    policy.from, revision
                ),
                stalled: true,
            }));
        }
        let mut records = Vec::new();
        let mut missing = Vec::new();
        for (written, parsed) in images {
            match recorded(&upstream_records, parsed) {
                Some(r) => records.push(ImageRecord {
                    image: written.clone(),
                    digest: r.digest.clone(),
                    copied_to: None,
                }),
                None => missing.push(written.clone()),
            }
        }
        if !missing.is_empty() {
            return Ok(Err(Failure {
                reason: Reason::ImageNotVerified,
                message: format!(
                    "{} names images {} did not verify at {}: {}",
                    revision,
                    policy.from,
                    revision,
                    missing.join(", ")
                ),
                stalled: true,
            }));
        }
        if policy.copy_images.is_empty() {
            return Ok(Ok(records));
        }
        match self.copy(revision, &mut records).await? {
            Ok(note) => {
                *copied = note;
                Ok(Ok(records))
            }
            Err(failure) => Ok(Err(failure)),
        }
    }

    /// Copies each record under a `copyImages.from` to its `to`, by digest, and notes where it went (with
    /// [`Copies::Plan`], only notes where it would go). Returns what was copied, for an Event.
    async fn copy(
        &self,
        revision: &str,
        records: &mut [ImageRecord],
    ) -> Result<Result<Option<String>, Failure>, ReconcileError> {
        let Some(policy) = self.env.spec.promotion.as_ref() else {
            return Ok(Ok(None));
        };
        let pull_secret = self.env.spec.images.as_ref().and_then(|i| i.pull_secret_ref.as_ref());
        let mut total = CopyReport::default();
        let mut copied = Vec::new();
        for rule_spec in &policy.copy_images {
            let rule = match CopyRule::parse(rule_spec) {
                Ok(rule) => rule,
                Err(e) => {
                    return Ok(Err(Failure {
                        reason: Reason::InvalidSpec,
                        message: e.to_string(),
                        stalled: true,
                    }));
                }
            };
            let secret = rule_spec
                .secret_ref
                .as_ref()
                .or(pull_secret)
                .filter(|_| self.copies == Copies::Make);
            let credentials = match self.credentials(secret).await? {
                Ok(c) => c,
                Err(failure) => return Ok(Err(failure)),
            };
            let registry = Registry::new(self.registry, credentials);
            for record in records.iter_mut().filter(|r| r.copied_to.is_none()) {
                let Ok(parsed) = ImageReference::parse(&record.image) else {
                    continue;
                };
                let Some(target) = rule.target(&parsed) else {
                    continue;
                };
                let source = format!("{}@{}", parsed.repository(), record.digest);
                let result = match (
                    crate::registry::parse(&source),
                    crate::registry::parse(&target.to_string()),
                ) {
                    (Ok(_), Ok(_)) if self.copies == Copies::Plan => Ok(CopyReport::default()),
                    (Ok(source), Ok(target)) => registry.copy(&source, &target).await,
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                match result {
                    Ok(report) => {
                        add(&mut total, &report);
                        record.copied_to = Some(target.repository());
                        copied.push(format!("{} → {}", record.image, target.repository()));
                    }
                    Err(e) => {
                        let mut failure = Failure::registry(Reason::ImageCopyFailed, "copying", &e);
                        // A promotion must not half-happen: a failed copy ends this attempt.
                        failure.stalled = true;
                        failure.message = format!("{}: {}; nothing was applied", revision, failure.message);
                        return Ok(Err(failure));
                    }
                }
            }
        }
        if copied.is_empty() || self.copies == Copies::Plan {
            return Ok(Ok(None));
        }
        let note = format!(
            "copied {} image(s) by digest: {} ({} blob(s), {} bytes uploaded, {} mounted, {} already there)",
            copied.len(),
            copied.join(", "),
            total.blobs_uploaded,
            total.bytes_uploaded,
            total.blobs_mounted,
            total.skipped
        );
        info!(%note);
        Ok(Ok(Some(note)))
    }

    /// Registry credentials from a `kubernetes.io/dockerconfigjson` Secret in this namespace, read as the
    /// Environment's ServiceAccount (as kubeconfig and decryption Secrets are); none: anonymous.
    async fn credentials(
        &self,
        secret: Option<&LocalSecretReference>,
    ) -> Result<Result<Credentials, Failure>, ReconcileError> {
        let Some(secret) = secret else {
            return Ok(Ok(Credentials::default()));
        };
        let namespace = self.namespace();
        let shown = format!("{namespace}/{}", secret.name);
        let reader = match self.env_reader() {
            Ok(reader) => reader,
            Err(failure) => return Ok(Err(failure)),
        };
        let found = match reader.get(&namespace, &secret.name).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Ok(Err(Failure {
                    reason: Reason::SecretNotFound,
                    message: format!("registry Secret {shown} not found"),
                    stalled: false,
                }));
            }
            Err(SecretError::Forbidden(message)) => {
                return Ok(Err(Failure {
                    reason: Reason::Forbidden,
                    message: format!("registry credentials: {message}"),
                    stalled: false,
                }));
            }
            Err(SecretError::Api(e)) => return Err(e.into()),
        };
        let bytes = found
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKER_CONFIG_KEY))
            .map(|b| b.0.clone());
        let Some(bytes) = bytes else {
            return Ok(Err(Failure {
                reason: Reason::InvalidSpec,
                message: format!(
                    "registry Secret {shown} has no key {DOCKER_CONFIG_KEY:?} (a kubernetes.io/dockerconfigjson Secret)"
                ),
                stalled: true,
            }));
        };
        Ok(Credentials::parse(&bytes).map_err(|e| Failure {
            reason: Reason::InvalidSpec,
            message: format!("registry Secret {shown}: {DOCKER_CONFIG_KEY} {e}"),
            stalled: true,
        }))
    }
}

fn add(total: &mut CopyReport, report: &CopyReport) {
    total.manifests_pushed += report.manifests_pushed;
    total.blobs_uploaded += report.blobs_uploaded;
    total.bytes_uploaded += report.bytes_uploaded;
    total.blobs_mounted += report.blobs_mounted;
    total.skipped += report.skipped;
}

/// `sha256:0123456789ab` for logs.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
