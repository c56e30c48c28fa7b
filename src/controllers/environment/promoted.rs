//! Promoted Environments (`spec.promotion.from`): the upstream chain is checked (present, no cycle), a
//! Promotion is proposed for the upstream's newest verified revision, and the revision to apply is the active
//! Promotion's — or, between promotions, the one already applied, kept in place.

use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Desired, Failure, Reconcile};
use crate::api::{Environment, EnvironmentStatus, GitRepository, Promotion, PromotionPolicy, PromotionSummary, Reason};
use crate::controllers::ReconcileError;
use crate::promotion::{expired, new_promotion, promotion_name, promotions_of, validate_gates};

/// How far `promotion.from` is followed looking for a cycle.
const MAX_CHAIN: usize = 32;

impl Reconcile {
    pub(super) async fn promoted_desired(
        &self,
        repo: GitRepository,
        status: &mut EnvironmentStatus,
    ) -> Result<Result<Option<Desired>, Failure>, ReconcileError> {
        let Some(policy) = self.env.spec.promotion.as_ref() else {
            return Ok(Ok(None));
        };
        let mut promotions = promotions_of(&self.ctx.client, &self.namespace, &self.name).await?;
        // A promotion already applying finishes even if the upstream or the gates went wrong meanwhile (a
        // rollback does not need the upstream at all); new ones are only proposed when both are sound.
        let has_active = promotions.iter().any(|p| p.phase().is_active());
        let upstream = match self.upstream(policy).await? {
            Ok(upstream) => Some(upstream),
            Err(failure) if !has_active => return Ok(Err(failure)),
            Err(failure) => {
                warn!(reason = %failure.reason, error = %failure.message, "finishing the active promotion regardless");
                None
            }
        };
        if let Err(e) = validate_gates(&policy.windows, &policy.freezes)
            && !has_active
        {
            return Ok(Err(Failure {
                reason: Reason::InvalidSpec,
                message: e.to_string(),
                stalled: true,
            }));
        }
        if let Some(upstream) = &upstream
            && let Some(created) = self.propose(policy, upstream, &promotions, status).await?
        {
            promotions.push(created);
        }
        if let Some(upstream) = &upstream {
            self.expire(policy, upstream, &promotions).await;
        }
        let active = crate::promotion::active(&promotions);
        let shown = active.or_else(|| promotions.iter().rev().find(|p| !p.phase().is_final()));
        status.promotion = shown.map(|p| PromotionSummary {
            name: p.name_any(),
            revision: p.spec.revision.clone(),
            phase: p.phase(),
        });
        if let Some(active) = active {
            return Ok(Ok(Some(Desired {
                repo,
                revision: active.spec.revision.clone(),
                promotion: Some((active.name_any(), active.uid().unwrap_or_default())),
                track: true,
            })));
        }
        Ok(Ok(status.last_applied_revision.clone().map(|revision| Desired {
            repo,
            revision,
            promotion: None,
            track: false,
        })))
    }

    /// Deletes finished Promotions beyond `historyLimit`. Best effort: what is left is tried again next time.
    async fn expire(&self, policy: &PromotionPolicy, upstream: &Environment, promotions: &[Promotion]) {
        let protected = upstream
            .status
            .as_ref()
            .and_then(|s| s.newest_verified())
            .map(|r| r.revision.as_str());
        let api: Api<Promotion> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for old in expired(promotions, policy.history_limit as usize, protected) {
            match api.delete(&old.name_any(), &Default::default()).await {
                Ok(_) => info!(promotion = %old.name_any(), "deleted a finished promotion beyond historyLimit"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => warn!(promotion = %old.name_any(), error = %e, "could not delete an old promotion"),
            }
        }
    }

    /// The upstream Environment, after following `promotion.from` far enough to know there is no cycle.
    async fn upstream(&self, policy: &PromotionPolicy) -> Result<Result<Environment, Failure>, ReconcileError> {
        if let Some((namespace, _)) = policy.from.split_once('/') {
            // Promotion never crosses namespaces: a tenant could otherwise take another team's verified
            // revisions, or learn about them from status.
            return Ok(Err(Failure {
                reason: Reason::CrossNamespaceRef,
                message: format!(
                    "promotion.from {:?} names an Environment in namespace {namespace:?}; promotion is between \
                     Environments of one namespace, so give the name only",
                    policy.from
                ),
                stalled: true,
            }));
        }
        let mut chain = vec![self.name.clone()];
        let mut next = policy.from.clone();
        let mut first = None;
        for _ in 0..MAX_CHAIN {
            if chain.contains(&next) {
                chain.push(next);
                return Ok(Err(Failure {
                    reason: Reason::PromotionCycle,
                    message: format!("promotion.from forms a cycle: {}", chain.join(" → ")),
                    stalled: true,
                }));
            }
            let Some(env) = self.api.get_opt(&next).await? else {
                if first.is_none() {
                    return Ok(Err(Failure {
                        reason: Reason::UpstreamNotFound,
                        message: format!("upstream Environment {next} (promotion.from) not found"),
                        stalled: false,
                    }));
                }
                break;
            };
            chain.push(next);
            let from = env.spec.promotion.as_ref().map(|p| p.from.clone());
            if first.is_none() {
                first = Some(env);
            }
            match from {
                Some(from) => next = from,
                None => break,
            }
        }
        Ok(first.ok_or_else(|| Failure {
            reason: Reason::UpstreamNotFound,
            message: format!("upstream Environment {} not found", policy.from),
            stalled: false,
        }))
    }

    /// Creates the Promotion for the upstream's newest verified revision, unless this Environment runs it
    /// already or a Promotion of it exists (in any phase: a failed or rejected one is not retried by itself).
    async fn propose(
        &self,
        policy: &PromotionPolicy,
        upstream: &Environment,
        promotions: &[Promotion],
        status: &EnvironmentStatus,
    ) -> Result<Option<Promotion>, ReconcileError> {
        let Some(verified) = upstream.status.as_ref().and_then(|s| s.newest_verified()) else {
            return Ok(None);
        };
        let revision = &verified.revision;
        let known = promotions
            .iter()
            .any(|p| &p.spec.revision == revision && !p.spec.rollback);
        if known || status.last_applied_revision.as_ref() == Some(revision) {
            return Ok(None);
        }
        // One name per (Environment, revision): proposing twice, from any reconcile, creates one Promotion.
        let name = promotion_name(&self.name, revision);
        let mut promotion = new_promotion(&self.namespace, &self.name, revision, false);
        promotion.metadata.name = Some(name.clone());
        let api: Api<Promotion> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        match api.create(&PostParams::default(), &promotion).await {
            Ok(created) => {
                let note = format!("{revision} was verified in {}: created Promotion {name}", policy.from);
                info!(promotion = %name, %revision, "proposed a promotion");
                self.ctx.event(self.env.as_ref(), false, "PromotionCreated", note).await;
                Ok(Some(created))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
