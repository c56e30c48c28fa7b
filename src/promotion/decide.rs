//! The promotion state machine as one pure function: given a Promotion, its Environment, the upstream
//! Environment, the other Promotions of that Environment and the time, which phase it is in and why.
//!
//! Pending and WaitingApproval are re-derived from the world on every call (so a restart resumes exactly
//! where it was); Applying and Verifying follow the Environment's record of this promotion's revision.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::gates::{WindowState, soak_remaining, window_state};
use crate::api::{
    Decision, Environment, Promotion, PromotionPhase, PromotionPolicy, Reason, RevisionPhase, parse_duration,
};

/// Where a promotion stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub phase: PromotionPhase,
    pub reason: Reason,
    pub message: String,
    /// Look again after this long even if nothing changes (a soak or a window ending).
    pub recheck: Option<Duration>,
}

fn step(phase: PromotionPhase, reason: Reason, message: impl Into<String>) -> Step {
    Step {
        phase,
        reason,
        message: message.into(),
        recheck: None,
    }
}

pub struct World<'a> {
    pub promotion: &'a Promotion,
    pub environment: Option<&'a Environment>,
    /// The Environment named by `environment.spec.promotion.from`.
    pub upstream: Option<&'a Environment>,
    /// Every other Promotion of the same Environment.
    pub others: &'a [Promotion],
    pub now: Timestamp,
}

/// How long to wait before looking again when an upstream Environment is missing.
const UPSTREAM_RECHECK: Duration = Duration::from_secs(30);

/// Where the promotion stands; None once it has ended (nothing moves it then).
pub fn decide(w: &World) -> Option<Step> {
    let p = w.promotion;
    let phase = p.phase();
    if phase.is_final() {
        return None;
    }
    Some(decide_open(w, phase))
}

fn decide_open(w: &World, phase: PromotionPhase) -> Step {
    let p = w.promotion;
    let env_name = &p.spec.environment;
    let Some(env) = w.environment else {
        return step(
            PromotionPhase::Failed,
            Reason::EnvironmentNotFound,
            format!("Environment {env_name} not found"),
        );
    };
    if phase.is_active() {
        return follow(p, env, phase);
    }
    gate(w, env)
}

/// Applying and Verifying: the Environment's record of this promotion decides.
fn follow(p: &Promotion, env: &Environment, phase: PromotionPhase) -> Step {
    let name = p.metadata.name.as_deref().unwrap_or_default();
    let revision = &p.spec.revision;
    let env_name = &p.spec.environment;
    let record = env.status.as_ref().and_then(|s| {
        s.history
            .iter()
            .find(|r| &r.revision == revision && r.promotion.as_deref() == Some(name))
    });
    let Some(record) = record else {
        return step(phase, Reason::Applying, format!("applying {revision} to {env_name}"));
    };
    let detail = record.message.clone().unwrap_or_default();
    match record.phase {
        RevisionPhase::Applying => step(
            PromotionPhase::Applying,
            Reason::Applying,
            format!("applying {revision} to {env_name}"),
        ),
        RevisionPhase::Verifying => step(
            PromotionPhase::Verifying,
            Reason::Verifying,
            format!("verifying {revision} in {env_name}"),
        ),
        RevisionPhase::Verified => step(
            PromotionPhase::Succeeded,
            Reason::Verified,
            format!("{revision} applied to {env_name} and verified"),
        ),
        RevisionPhase::Failed => step(
            PromotionPhase::Failed,
            Reason::VerificationFailed,
            format!("{revision} failed in {env_name}: {detail}"),
        ),
        RevisionPhase::Superseded => step(
            PromotionPhase::Aborted,
            Reason::Superseded,
            format!("{env_name} moved to another revision before {revision} was verified"),
        ),
    }
}

/// Pending and WaitingApproval: validity, order among siblings, soak, approval, windows — in that order.
fn gate(w: &World, env: &Environment) -> Step {
    let p = w.promotion;
    let revision = &p.spec.revision;
    let env_name = &p.spec.environment;
    if let Some(a) = &p.spec.approval
        && a.decision == Decision::Rejected
    {
        let by = a.by.as_deref().unwrap_or("someone");
        let why = a.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        return step(
            PromotionPhase::Aborted,
            Reason::Rejected,
            format!("rejected by {by}{why}"),
        );
    }
    let Some(policy) = env.spec.promotion.as_ref() else {
        return step(
            PromotionPhase::Failed,
            Reason::NotPromoted,
            format!("Environment {env_name} follows its GitRepository; set spec.promotion.from to promote into it"),
        );
    };
    let env_status = env.status.clone().unwrap_or_default();
    let mut verified_upstream_at = None;
    if p.spec.rollback {
        let succeeded_here = env_status
            .history
            .iter()
            .any(|r| &r.revision == revision && r.phase == RevisionPhase::Verified);
        if !succeeded_here {
            return step(
                PromotionPhase::Failed,
                Reason::RevisionNotVerified,
                format!("{revision} never succeeded in {env_name}, so it cannot be rolled back to"),
            );
        }
    } else {
        let Some(upstream) = w.upstream else {
            return Step {
                recheck: Some(UPSTREAM_RECHECK),
                ..step(
                    PromotionPhase::Pending,
                    Reason::UpstreamNotFound,
                    format!("upstream Environment {} not found", policy.from),
                )
            };
        };
        let record = upstream.status.as_ref().and_then(|s| s.record(revision));
        match record.map(|r| r.phase) {
            Some(RevisionPhase::Verified) => {
                verified_upstream_at = record.and_then(|r| r.finished_at.as_ref()).map(|t| t.0);
            }
            Some(RevisionPhase::Applying | RevisionPhase::Verifying) => {
                return step(
                    PromotionPhase::Pending,
                    Reason::Pending,
                    format!("waiting for {} to verify {revision}", policy.from),
                );
            }
            Some(phase) => {
                let why = record
                    .and_then(|r| r.message.clone())
                    .unwrap_or_else(|| format!("{phase:?}"));
                return step(
                    PromotionPhase::Failed,
                    Reason::RevisionNotVerified,
                    format!("{revision} did not pass verification in {}: {why}", policy.from),
                );
            }
            None => {
                return step(
                    PromotionPhase::Failed,
                    Reason::RevisionNotVerified,
                    format!(
                        "{revision} was never applied in {} (see `ferry history {}`)",
                        policy.from, policy.from
                    ),
                );
            }
        }
    }
    let current_and_verified = env_status.last_applied_revision.as_ref() == Some(revision)
        && env_status
            .record(revision)
            .is_some_and(|r| r.phase == RevisionPhase::Verified);
    if current_and_verified {
        return step(
            PromotionPhase::Succeeded,
            Reason::AlreadyApplied,
            format!("{env_name} already runs {revision}, verified"),
        );
    }

    if let Some(wait) = order(w, policy) {
        return wait;
    }

    if !p.spec.rollback
        && let Some(soak) = policy.soak_time.as_deref().and_then(|s| parse_duration(s).ok())
        && let Some(left) = soak_remaining(verified_upstream_at.unwrap_or(w.now), soak, w.now)
    {
        let until = Timestamp::from_second(w.now.as_second() + left.as_secs() as i64).unwrap_or(w.now);
        return Step {
            recheck: Some(left),
            ..step(
                PromotionPhase::Pending,
                Reason::Soaking,
                format!("soaking in {} until {until}", policy.from),
            )
        };
    }

    let require_approval = if p.spec.rollback {
        policy.rollback.require_approval
    } else {
        policy.require_approval
    };
    let approved_by = p
        .spec
        .approval
        .as_ref()
        .filter(|a| a.decision == Decision::Approved)
        .map(|a| a.by.clone().unwrap_or_else(|| "someone".to_string()));
    if require_approval && approved_by.is_none() {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        return step(
            PromotionPhase::WaitingApproval,
            Reason::WaitingApproval,
            format!("waiting for approval: ferry approve {name}"),
        );
    }

    if !p.spec.rollback || policy.rollback.respect_windows {
        let approved = approved_by
            .as_ref()
            .map(|by| format!("approved by {by}; "))
            .unwrap_or_default();
        match window_state(w.now, &policy.windows, &policy.freezes) {
            Ok(WindowState::Open) => {}
            Ok(WindowState::Frozen { until, reason }) => {
                let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
                return Step {
                    recheck: Some(until_from(w.now, until)),
                    ..step(
                        PromotionPhase::Pending,
                        Reason::Frozen,
                        format!("{approved}promotions to {env_name} are frozen until {until}{why}"),
                    )
                };
            }
            Ok(WindowState::Closed { opens_at }) => {
                let when = opens_at.map(|t| format!(" until {t}")).unwrap_or_default();
                return Step {
                    recheck: opens_at.map(|t| until_from(w.now, t)),
                    ..step(
                        PromotionPhase::Pending,
                        Reason::OutsideWindow,
                        format!("{approved}outside the promotion windows of {env_name}{when}"),
                    )
                };
            }
            Err(e) => {
                return step(PromotionPhase::Pending, Reason::InvalidSpec, e.to_string());
            }
        }
    }
    let how = approved_by.map(|by| format!(", approved by {by}")).unwrap_or_default();
    step(
        PromotionPhase::Applying,
        Reason::Applying,
        format!("applying {revision} to {env_name}{how}"),
    )
}

fn until_from(now: Timestamp, then: Timestamp) -> Duration {
    Duration::from_secs((then.as_second() - now.as_second()).max(1) as u64)
}

fn created(p: &Promotion) -> (Option<Timestamp>, &str) {
    (
        p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        p.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// One promotion at a time per Environment: wait while another applies; a newer one supersedes a waiting
/// one (when the policy says so); otherwise first come, first served.
fn order(w: &World, policy: &PromotionPolicy) -> Option<Step> {
    let p = w.promotion;
    let me = created(p);
    let supersedes = |newer: &Promotion| policy.supersede && !p.spec.rollback && !newer.spec.rollback;
    if let Some(newer) = w.others.iter().find(|o| {
        created(o) > me
            && supersedes(o)
            && !matches!(
                o.phase(),
                PromotionPhase::Aborted | PromotionPhase::Superseded | PromotionPhase::Failed
            )
    }) {
        let name = newer.metadata.name.as_deref().unwrap_or_default();
        return Some(step(
            PromotionPhase::Superseded,
            Reason::Superseded,
            format!("superseded by {name} ({})", newer.spec.revision),
        ));
    }
    if let Some(active) = w.others.iter().find(|o| o.phase().is_active()) {
        let name = active.metadata.name.as_deref().unwrap_or_default();
        return Some(step(
            PromotionPhase::Pending,
            Reason::Queued,
            format!("waiting for {name} ({}) to finish", active.phase()),
        ));
    }
    let ahead = w
        .others
        .iter()
        .filter(|o| created(o) < me && !o.phase().is_final())
        .find(|o| !(policy.supersede && !p.spec.rollback && !o.spec.rollback));
    ahead.map(|o| {
        let name = o.metadata.name.as_deref().unwrap_or_default();
        step(
            PromotionPhase::Pending,
            Reason::Queued,
            format!("queued behind {name} ({})", o.phase()),
        )
    })
}
