//! The registry-policy gate of a sync: every image of the objects to apply — decrypted, then pinned (see
//! [`crate::sync::Prepared::objects`]; sops can hide a kind or an image) — and of the verification Job is
//! checked against the RegistryPolicies that select this Environment, before the steady-state shortcut and
//! the dry run. Deny: nothing of the revision is applied. Audit: applied, with a Warning Event; both are recorded in
//! `status.policyViolations`.

use kube::ResourceExt;

use super::{Failure, Reconcile};
use crate::api::{Enforcement, EnvironmentStatus, Reason};
use crate::controllers::ReconcileError;
use crate::policy::{Subject, evaluate_with, verification_object};
use crate::render::RenderedObject;

impl Reconcile {
    /// `Ok(Err(_))`: a Deny policy found violations; the failure names every one (bounded).
    pub(super) async fn enforce_registry_policy(
        &self,
        objects: &[RenderedObject],
        status: &mut EnvironmentStatus,
        revision: &str,
    ) -> Result<Result<(), Failure>, ReconcileError> {
        let policies = self.ctx.registry_policies().await?;
        if policies.is_empty() {
            status.policy_violations = None;
            return Ok(Ok(()));
        }
        let verification = self
            .env
            .spec
            .verification
            .as_ref()
            .and_then(|v| v.job_template.as_ref())
            .and_then(verification_object);
        let subject = Subject {
            namespace: &self.namespace,
            labels: Some(self.env.labels()),
        };
        let evaluation = evaluate_with(&policies, &subject, objects, verification.as_ref());
        let before = self.env.status.as_ref().and_then(|s| s.policy_violations.clone());
        status.policy_violations = evaluation.status(revision);
        if evaluation.denied() {
            return Ok(Err(Failure {
                reason: Reason::PolicyViolation,
                message: format!("{revision} was not applied: {}", evaluation.message(Enforcement::Deny)),
                stalled: true,
            }));
        }
        let audited = evaluation.of(Enforcement::Audit);
        if !audited.is_empty() && before != status.policy_violations {
            let note = format!("{revision} (Audit): {}", evaluation.message(Enforcement::Audit));
            tracing::warn!(%note, "registry policy violations (audit)");
            self.ctx
                .event(self.env.as_ref(), true, Reason::PolicyViolation.as_str(), note)
                .await;
        }
        Ok(Ok(()))
    }
}
