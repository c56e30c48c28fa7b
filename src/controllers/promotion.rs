//! Promotion reconcile: reads the Promotion, its Environment, the upstream and the sibling Promotions, asks
//! [`crate::promotion::decide`] where it stands, and records each phase change as a transition, a condition
//! and an Event. With `rollbackOnFailure`, a failure after applying starts a rollback Promotion.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span};

use super::status::patch_if_changed;
use super::{Context, ReconcileError};
use crate::api::{
    Environment, PhaseTransition, Promotion, PromotionPhase, READY, Reason, RevisionPhase, set_condition_status,
};
use crate::promotion::{PROMOTION_ENVIRONMENT_LABEL, Step, World, decide, new_promotion, promotions_of};

/// Promotions that a change to `env` can move: its own unfinished ones, and any in its namespace still
/// waiting to start (they may wait on it as their upstream). One applying elsewhere only follows its own
/// Environment.
pub fn affected_by(promotions: &Store<Promotion>, env: &Environment) -> Vec<ObjectRef<Promotion>> {
    let namespace = env.namespace();
    let name = env.name_any();
    promotions
        .state()
        .iter()
        .filter(|p| p.namespace() == namespace && !p.phase().is_final())
        .filter(|p| p.spec.environment == name || !p.phase().is_active())
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

pub async fn reconcile(promotion: Arc<Promotion>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = promotion.namespace().unwrap_or_default();
    let name = promotion.name_any();
    let span = info_span!("reconcile", kind = "Promotion", namespace = %namespace, name = %name, revision = %promotion.spec.revision);
    run(ctx, namespace, name).instrument(span).await
}

async fn run(ctx: Arc<Context>, namespace: String, name: String) -> Result<Action, ReconcileError> {
    let api: Api<Promotion> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(promotion) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    // Finished ones too: Environments find them by label when deciding what not to propose again.
    ensure_label(&api, &promotion).await?;
    confirm_phase_event(&ctx, &promotion).await;
    if promotion.phase().is_final() {
        return Ok(Action::await_change());
    }
    let envs: Api<Environment> = Api::namespaced(ctx.client.clone(), &namespace);
    let env = envs.get_opt(&promotion.spec.environment).await?;
    let upstream = match env.as_ref().and_then(|e| e.spec.promotion.as_ref()) {
        Some(policy) => envs.get_opt(&policy.from).await?,
        None => None,
    };
    let others: Vec<Promotion> = promotions_of(&ctx.client, &namespace, &promotion.spec.environment)
        .await?
        .into_iter()
        .filter(|p| p.name_any() != name)
        .collect();
    let now = Timestamp::now();
    let Some(step) = decide(&World {
        promotion: &promotion,
        environment: env.as_ref(),
        upstream: upstream.as_ref(),
        others: &others,
        now,
    }) else {
        return Ok(Action::await_change());
    };

    let old = promotion.status.as_ref();
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = promotion.metadata.generation;
    let before = promotion.phase();
    let phase_changed = status.phase != Some(step.phase);
    status.phase = Some(step.phase);
    if status.upstream_verified_at.is_none() {
        status.upstream_verified_at = step.upstream_verified_at.map(Time);
    }
    // Verified since the last look, which saw it applying: it was verifying in between (a quick verification
    // can finish between two reconciles). Recorded, so no phase is skipped.
    let passed_verifying = (phase_changed
        && before == PromotionPhase::Applying
        && step.phase == PromotionPhase::Succeeded
        && step.reason == Reason::Verified)
        .then(|| PhaseTransition {
            phase: PromotionPhase::Verifying,
            reason: Reason::Verifying.as_str().to_string(),
            message: format!(
                "verifying {} in {}",
                promotion.spec.revision, promotion.spec.environment
            ),
            time: Time(now),
        });
    if let Some(verifying) = &passed_verifying {
        status.transitions.push(verifying.clone());
    }
    if phase_changed {
        status.transitions.push(PhaseTransition {
            phase: step.phase,
            reason: step.reason.as_str().to_string(),
            message: step.message.clone(),
            time: Time(now),
        });
    }
    let ready = match step.phase {
        PromotionPhase::Succeeded => "True",
        p if p.is_final() => "False",
        _ => "Unknown",
    };
    let generation = status.observed_generation;
    set_condition_status(
        &mut status.conditions,
        READY,
        ready,
        step.reason,
        step.message.clone(),
        generation,
        now,
    );

    let mut rollback_note = None;
    let rollback_on_failure = env
        .as_ref()
        .and_then(|e| e.spec.promotion.as_ref())
        .is_some_and(|p| p.rollback_on_failure);
    if step.phase == PromotionPhase::Failed
        && before.is_active()
        && rollback_on_failure
        && !promotion.spec.rollback
        && status.rollback_promotion.is_none()
        && let Some(env) = env.as_ref()
    {
        if let Some((rollback, revision)) = start_rollback(&ctx, &promotion, env).await? {
            rollback_note = Some(format!(
                "rolling {} back to {revision}: Promotion {rollback}",
                env.name_any()
            ));
            status.rollback_promotion = Some(rollback);
        } else {
            rollback_note = Some(format!(
                "no earlier revision succeeded in {}: nothing to roll back to",
                env.name_any()
            ));
        }
    }

    if patch_if_changed(&api, &name, old, &status).await? {
        if phase_changed {
            crate::metrics::metrics().promotion_transition(step.phase.as_str());
        }
        let index = status.transitions.len().saturating_sub(1);
        if let Some(verifying) = passed_verifying {
            let name = phase_event_name(&promotion, index.saturating_sub(1), verifying.phase);
            let note = format!("{}: {}", verifying.phase, verifying.message);
            ctx.events
                .publish_once(&promotion, name, false, &verifying.reason, note)
                .await;
        }
        publish(&ctx, &promotion, &step, (phase_changed, index), old).await;
        if let Some(note) = rollback_note {
            ctx.event(&promotion, true, Reason::RolledBack.as_str(), note).await;
        }
    }
    Ok(match step.recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Labels a Promotion with its Environment (as Ferry and `ferry promote` do when they create one), so the
/// Environment finds it with a label selector. A label cannot hold a name over 63 characters; those are
/// found without one.
async fn ensure_label(api: &Api<Promotion>, promotion: &Promotion) -> Result<(), ReconcileError> {
    let env = &promotion.spec.environment;
    let current = promotion.labels().get(PROMOTION_ENVIRONMENT_LABEL);
    if env.len() > 63 || current == Some(env) {
        return Ok(());
    }
    let patch = serde_json::json!({"metadata": {"labels": {PROMOTION_ENVIRONMENT_LABEL: env}}});
    api.patch(
        &promotion.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Transitions older than this are not looked for again after a restart: Events expire (an hour by default),
/// and one recorded now would show an old change as new.
const CONFIRM_WITHIN: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The name of the Event of `promotion`'s transition number `index` (0-based, into `phase`): one per
/// transition, so it is recorded once whatever restarts happen around the status write. The index, not the
/// phase alone: a promotion can enter a phase again (WaitingApproval → Pending behind a rollback → back). The
/// uid tells a Promotion deleted and created again apart.
fn phase_event_name(promotion: &Promotion, index: usize, phase: PromotionPhase) -> String {
    let base: String = promotion.name_any().chars().take(200).collect();
    let uid = promotion.uid().unwrap_or_default();
    format!(
        "{base}.{index}-{}.{}",
        phase.as_str().to_lowercase(),
        uid.get(..8).unwrap_or(&uid)
    )
}

/// The first time this process sees `promotion`: the Event of its last phase change exists, recorded now if
/// the process that wrote the change was killed before it could record it.
async fn confirm_phase_event(ctx: &Context, promotion: &Promotion) {
    let transitions = promotion
        .status
        .as_ref()
        .map(|s| s.transitions.as_slice())
        .unwrap_or_default();
    let Some(last) = transitions.last() else {
        return;
    };
    let index = transitions.len() - 1;
    let age = Timestamp::now().duration_since(last.time.0).unsigned_abs();
    if age > CONFIRM_WITHIN {
        return;
    }
    let key = format!("{}/{index}", promotion.uid().unwrap_or_default());
    let warning = matches!(last.phase, PromotionPhase::Failed | PromotionPhase::Aborted);
    let note = format!("{}: {}", last.phase, last.message);
    let name = phase_event_name(promotion, index, last.phase);
    ctx.events
        .confirm_once(promotion, &key, name, warning, &last.reason, note)
        .await;
}

/// One Event per change of phase (exactly one, see [`phase_event_name`]) or of the reason within a phase.
async fn publish(
    ctx: &Context,
    promotion: &Promotion,
    step: &Step,
    (phase_changed, index): (bool, usize),
    old: Option<&crate::api::PromotionStatus>,
) {
    let old_reason = old
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .map(|c| c.reason.as_str());
    if !phase_changed && old_reason == Some(step.reason.as_str()) {
        return;
    }
    let warning = matches!(step.phase, PromotionPhase::Failed | PromotionPhase::Aborted);
    info!(phase = %step.phase, reason = %step.reason, message = %step.message, "promotion moved");
    let note = format!("{}: {}", step.phase, step.message);
    if phase_changed {
        let name = phase_event_name(promotion, index, step.phase);
        ctx.events
            .publish_once(promotion, name, warning, step.reason.as_str(), note)
            .await;
    } else {
        ctx.event(promotion, warning, step.reason.as_str(), note).await;
    }
}

/// Creates the rollback Promotion to the newest other revision that succeeded in `env`. Its name is derived
/// from the failed one's uid, so a retried reconcile finds it instead of creating another, and a Promotion
/// deleted and proposed again under the same name gets a rollback of its own.
async fn start_rollback(
    ctx: &Context,
    failed: &Promotion,
    env: &Environment,
) -> Result<Option<(String, String)>, ReconcileError> {
    let Some(previous) = env.status.as_ref().and_then(|s| {
        s.history
            .iter()
            .find(|r| r.phase == RevisionPhase::Verified && r.revision != failed.spec.revision)
    }) else {
        return Ok(None);
    };
    let base: String = failed.name_any().chars().take(220).collect();
    let uid = failed.uid().unwrap_or_default();
    let name = format!("{base}-rollback-{}", uid.get(..8).unwrap_or(&uid));
    let namespace = failed.namespace().unwrap_or_default();
    let mut rollback = new_promotion(&namespace, &failed.spec.environment, &previous.revision, true);
    rollback.metadata.name = Some(name.clone());
    let api: Api<Promotion> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.create(&PostParams::default(), &rollback).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some((name, previous.revision.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transition_has_its_own_event_name_even_into_the_same_phase() {
        let mut p = new_promotion("ns", "production", "main@sha1:abc", false);
        p.metadata.name = Some("x".repeat(300));
        p.metadata.uid = Some("0123456789-uid".into());
        let first = phase_event_name(&p, 1, PromotionPhase::WaitingApproval);
        let again = phase_event_name(&p, 3, PromotionPhase::WaitingApproval);
        assert_ne!(first, again, "a phase entered again is another Event");
        assert_eq!(first, phase_event_name(&p, 1, PromotionPhase::WaitingApproval));
        assert!(
            first.len() <= 253 && first.ends_with(".1-waitingapproval.01234567"),
            "{first}"
        );
        p.metadata.uid = Some("another-uid".into());
        assert_ne!(first, phase_event_name(&p, 1, PromotionPhase::WaitingApproval));
    }
}
