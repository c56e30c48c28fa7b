//! Verification of the current attempt: health of every applied object, then the acceptance-test Job (with
//! retries and a timeout per attempt). Job names are derived from the revision and attempt, so after a
//! restart the running Job is found again instead of started twice.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tracing::info;

use super::{Reconcile, health_of};
use crate::api::{EnvironmentStatus, RevisionPhase, Verification, parse_duration};
use crate::cluster::Target;
use crate::controllers::ReconcileError;
use crate::source::Revision;
use crate::sync::history;
use crate::verify::{JobOutcome, build_job, job_name, job_outcome, run_token};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where verification stands after one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Poll {
    /// Finished (verified or failed), or nothing to verify: no more polling.
    Done,
    /// Waiting for health or the Job.
    Running,
    /// Waiting, and an applied object is gone: a full sync should put it back.
    ObjectsMissing,
    /// The target cluster could not be asked; the same step runs again.
    Retry,
    /// As `Retry`, and the cluster did not answer at all (no connection, no response): not a refusal.
    Unreachable,
}

impl Poll {
    pub(super) fn again(self) -> bool {
        self != Poll::Done
    }
}

fn elapsed_since(t: Timestamp) -> Duration {
    Timestamp::now().duration_since(t).unsigned_abs()
}

impl Reconcile {
    /// Deletes the Jobs of attempts that a newer revision superseded while they ran: their verdict no longer
    /// matters. Best effort; a Job left behind expires with its TTL.
    pub(super) async fn cancel_superseded(
        &self,
        target: &Target,
        old: Option<&EnvironmentStatus>,
        status: &EnvironmentStatus,
    ) {
        let was_running = |job: &str| {
            old.is_some_and(|o| {
                o.history
                    .iter()
                    .any(|r| r.phase == RevisionPhase::Verifying && r.job.as_deref() == Some(job))
            })
        };
        let jobs: Api<Job> = Api::namespaced(target.client.clone(), &self.job_namespace());
        for record in &status.history {
            let Some(job) = record.job.as_deref() else { continue };
            if record.phase != RevisionPhase::Superseded || !was_running(job) {
                continue;
            }
            let params = kube::api::DeleteParams::background();
            match jobs.delete(job, &params).await {
                Ok(_) => info!(job, "deleted the verification Job of a superseded revision"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(job, error = %e, "could not delete a superseded verification Job"),
            }
        }
    }

    /// Where verification Jobs run: the target namespace, else the Environment's.
    fn job_namespace(&self) -> String {
        self.env
            .spec
            .target_namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone())
    }

    /// Moves the current record on. When the target cluster cannot be asked (unreachable, forbidden, a
    /// quota), what was applied is kept, the record says why, and the same step is tried again: an API error
    /// is not the test's verdict, so it never fails a revision by itself.
    pub(super) async fn verify(&self, target: &Target, status: &mut EnvironmentStatus, revision: &str) -> Poll {
        let running =
            history::current(&mut status.history, revision).is_some_and(|r| r.phase == RevisionPhase::Verifying);
        if !running {
            return Poll::Done;
        }
        let verification = self.env.spec.verification.clone().unwrap_or(Verification {
            job_template: None,
            timeout: String::new(),
            retries: 0,
        });
        let timeout = parse_duration(&verification.timeout).unwrap_or(DEFAULT_TIMEOUT);
        let error = match self.verify_step(target, status, revision, &verification, timeout).await {
            Ok(poll) => return poll,
            Err(e) => e,
        };
        tracing::warn!(error = %error, "verification could not proceed; retrying");
        let (unreachable, why) = match &error {
            // Anything but the server's own answer (a Status): the connection failed or timed out.
            ReconcileError::Kube(e) => (!matches!(e, kube::Error::Api(_)), crate::apply::with_causes(e)),
            other => (false, other.to_string()),
        };
        if let Some(record) = history::current(&mut status.history, revision) {
            record.message = Some(format!("retrying: {why}"));
        }
        if unreachable { Poll::Unreachable } else { Poll::Retry }
    }

    async fn verify_step(
        &self,
        target: &Target,
        status: &mut EnvironmentStatus,
        revision: &str,
        verification: &Verification,
        timeout: Duration,
    ) -> Result<Poll, ReconcileError> {
        let (waiting, failed) = health_of(target, &status.inventory, &|e| self.exists(e)).await?;
        let now = Timestamp::now();
        let Some(record) = history::current(&mut status.history, revision) else {
            return Ok(Poll::Done);
        };
        if !failed.is_empty() {
            history::finish(record, false, Some(format!("unhealthy: {}", failed.join("; "))), now);
            return Ok(Poll::Done);
        }
        // An object deleted since the apply is drift for the full sync to put back, not a verdict.
        if waiting.iter().any(|w| w.ends_with(": not found")) {
            return Ok(Poll::ObjectsMissing);
        }
        if record.attempts == 0 && !waiting.is_empty() {
            let started = record.applied_at.as_ref().map(|t| t.0).unwrap_or(now);
            if elapsed_since(started) > timeout {
                let message = format!("not healthy within {}: {}", verification.timeout, waiting.join("; "));
                history::finish(record, false, Some(message), now);
                return Ok(Poll::Done);
            }
            record.message = Some(format!("waiting for health: {}", waiting.join("; ")));
            return Ok(Poll::Running);
        }
        let Some(template) = verification.job_template.as_ref() else {
            history::finish(record, true, Some("all objects healthy".into()), now);
            return Ok(Poll::Done);
        };
        let commit = Revision::parse(revision).map(|r| r.commit).unwrap_or_default();
        let namespace = self.job_namespace();
        let jobs: Api<Job> = Api::namespaced(target.client.clone(), &namespace);
        let attempt = record.attempts.max(1);
        let token = run_token(&self.namespace, &self.name, record);
        let name = job_name(&self.name, &commit, &token, attempt);
        let existing = if record.attempts == 0 {
            None
        } else {
            jobs.get_opt(&name).await?
        };
        let next = match existing {
            None => Some(attempt),
            Some(job) => match job_outcome(&job) {
                JobOutcome::Running => {
                    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
                    if elapsed_since(created) > timeout {
                        let message = format!("Job {name} did not finish within {}", verification.timeout);
                        history::finish(record, false, Some(message), now);
                        // A test that overran must not keep acting on the cluster.
                        if let Err(e) = jobs.delete(&name, &kube::api::DeleteParams::background()).await {
                            tracing::warn!(job = %name, error = %e, "could not delete a timed-out verification Job");
                        }
                        return Ok(Poll::Done);
                    }
                    return Ok(Poll::Running);
                }
                JobOutcome::Succeeded => {
                    history::finish(record, true, Some(format!("Job {name} succeeded")), now);
                    return Ok(Poll::Done);
                }
                JobOutcome::Failed(why) if attempt > verification.retries => {
                    let message = format!("Job {name} failed: {why}");
                    history::finish(record, false, Some(message), now);
                    return Ok(Poll::Done);
                }
                JobOutcome::Failed(why) => {
                    info!(job = %name, %why, "verification Job failed; retrying");
                    Some(attempt + 1)
                }
            },
        };
        let Some(attempt) = next else {
            return Ok(Poll::Running);
        };
        let name = job_name(&self.name, &commit, &token, attempt);
        let job = match build_job(template, &name, &namespace, &self.name, revision, &commit, attempt) {
            Ok(job) => job,
            Err(e) => {
                history::finish(record, false, Some(e.to_string()), now);
                return Ok(Poll::Done);
            }
        };
        // The Job's name derives from the record (its applied time among others): the record is stored
        // before the first Job exists, so a crash between the two cannot lead to a second, differently named Job.
        let stored = self.env.status.as_ref().and_then(|s| s.history.first());
        if record.attempts == 0 && stored != Some(&*record) {
            self.patch_status(self.env.status.as_ref(), status).await?;
        }
        let Some(record) = history::current(&mut status.history, revision) else {
            return Ok(Poll::Done);
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            // Only the server's verdict on the Job itself is final; 403, 404 (no namespace), 401, 429 are not.
            Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => {
                let message = format!("verification.jobTemplate is invalid: {}", s.message);
                history::finish(record, false, Some(message), now);
                return Ok(Poll::Done);
            }
            Err(e) => return Err(e.into()),
        }
        let total = verification.retries + 1;
        record.attempts = attempt;
        record.job = Some(name.clone());
        record.message = Some(format!("running Job {namespace}/{name} (attempt {attempt} of {total})"));
        info!(job = %name, attempt, "verification Job started");
        Ok(Poll::Running)
    }
}
