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
    /// When the upstream verified the revision, once known: to be kept in status.
    pub upstream_verified_at: Option<Timestamp>,
}

fn step(phase: PromotionPhase, reason: Reason, message: impl Into<String>) -> Step {
    Step {
        phase,
        reason,
        message: message.into(),
        recheck: None,
        upstream_verified_at: None,
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
        return follow(w, env, phase);
    }
    let mut step = gate(w, env);
    if step.upstream_verified_at.is_none() {
        step.upstream_verified_at = stored_upstream_verified_at(p);
    }
    step
}

fn stored_upstream_verified_at(p: &Promotion) -> Option<Timestamp> {
    p.status.as_ref()?.upstream_verified_at.as_ref().map(|t| t.0)
}

/// Applying and Verifying: the Environment's record of this promotion decides.
fn follow(w: &World, env: &Environment, phase: PromotionPhase) -> Step {
    let p = w.promotion;
    let name = p.metadata.name.as_deref().unwrap_or_default();
    let revision = &p.spec.revision;
    let env_name = &p.spec.environment;
    let record = env.status.as_ref().and_then(|s| {
        s.history.iter().find(|r| {
            &r.revision == revision
                && r.promotion.as_deref() == Some(name)
                && (r.promotion_uid.is_none() || r.promotion_uid == p.metadata.uid)
        })
    });
    let Some(record) = record else {
        // Two promotions that went Applying at the same moment: the older one applies, the other steps back.
        if let Some(older) = w
            .others
            .iter()
            .find(|o| o.phase().is_active() && created(o) < created(p))
        {
            let other = older.metadata.name.as_deref().unwrap_or_default();
            return step(
                PromotionPhase::Pending,
                Reason::Queued,
                format!("waiting for {other} ({}) to finish", older.phase()),
            );
        }
        return step(phase, Reason::Applying, format!("applying {revision} to {env_name}"));
    };
    let detail = record.message.clone().unwrap_or_default();
    match record.phase {
        RevisionPhase::Applying => {
            // An apply that keeps failing (and retrying) shows here too, not only on the Environment.
            let why = env
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == crate::api::READY))
                .filter(|c| c.status == "False")
                .map(|c| format!(": {}", c.message))
                .unwrap_or_default();
            step(
                PromotionPhase::Applying,
                Reason::Applying,
                format!("applying {revision} to {env_name}{why}"),
            )
        }
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
        RevisionPhase::Failed if denied_by_policy(env, revision) => step(
            PromotionPhase::Failed,
            Reason::PolicyViolation,
            format!("{revision} was not applied to {env_name}: {detail}"),
        ),
        RevisionPhase::Failed if image_failure(env, revision).is_some() => step(
            PromotionPhase::Failed,
            image_failure(env, revision).unwrap_or(Reason::ImageCopyFailed),
            format!("{revision} was not applied to {env_name}: {detail}"),
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

/// The Environment refused `revision` because a Deny RegistryPolicy found violations in it.
fn denied_by_policy(env: &Environment, revision: &str) -> bool {
    env.status.as_ref().is_some_and(|s| {
        s.last_attempted_revision.as_deref() == Some(revision)
            && s.conditions
                .iter()
                .any(|c| c.type_ == crate::api::READY && c.reason == Reason::PolicyViolation.as_str())
    })
}

/// The image step's reason when the Environment refused `revision` before applying it (an image copy that
/// failed, a digest the upstream did not record, an unresolvable image).
fn image_failure(env: &Environment, revision: &str) -> Option<Reason> {
    let status = env.status.as_ref()?;
    if status.last_attempted_revision.as_deref() != Some(revision) {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == crate::api::READY)?;
    [
        Reason::ImageCopyFailed,
        Reason::ImageNotVerified,
        Reason::ImageResolutionFailed,
        Reason::InvalidImageReference,
    ]
    .into_iter()
    .find(|r| ready.reason == r.as_str())
}

/// Pending and WaitingApproval: validity, order among siblings, soak, approval, windows — in that order.
fn gate(w: &World, env: &Environment) -> Step {
    let mut seen = None;
    let mut step = gate_inner(w, env, &mut seen);
    step.upstream_verified_at = step.upstream_verified_at.or(seen);
    step
}

fn gate_inner(w: &World, env: &Environment, seen: &mut Option<Timestamp>) -> Step {
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
    if env.spec.suspend {
        return step(
            PromotionPhase::Pending,
            Reason::Suspended,
            format!("Environment {env_name} is suspended"),
        );
    }
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
        let stored = stored_upstream_verified_at(p);
        match record.map(|r| r.phase) {
            Some(RevisionPhase::Verified) => {
                verified_upstream_at = record.and_then(|r| r.finished_at.as_ref()).map(|t| t.0);
            }
            // Verified when first seen; the record has since left the upstream's bounded history.
            None if stored.is_some() => verified_upstream_at = stored,
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
    *seen = verified_upstream_at;
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

/// Whether promotion `a` comes after `b`. For forward promotions, whether `a`'s revision was verified upstream
/// after `b`'s: its place in the upstream's history (newest
/// first) decides. Creation time only breaks a tie (the same revision twice, or both gone from the history),
/// because it has one-second resolution and two proposals often share a second.
fn verified_later(upstream: Option<&Environment>, a: &Promotion, b: &Promotion) -> bool {
    let rank = |p: &Promotion| {
        upstream
            .and_then(|u| u.status.as_ref())
            .and_then(|s| s.history.iter().position(|r| r.revision == p.spec.revision))
    };
    if a.spec.rollback || b.spec.rollback {
        // A rollback's revision was verified upstream long ago; among rollbacks, the first asked goes first.
        return created(a) > created(b);
    }
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) if x != y => x < y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => created(a) > created(b),
    }
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
    let supersedes = |newer: &Promotion| policy.supersede && !p.spec.rollback && !newer.spec.rollback;
    if let Some(newer) = w.others.iter().find(|o| {
        verified_later(w.upstream, o, p)
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
    if !p.spec.rollback
        && let Some(rollback) = w.others.iter().find(|o| o.spec.rollback && !o.phase().is_final())
    {
        let name = rollback.metadata.name.as_deref().unwrap_or_default();
        return Some(step(
            PromotionPhase::Pending,
            Reason::Queued,
            format!("waiting for rollback {name} ({}) to finish", rollback.phase()),
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
    // Rollbacks go first: they only ever wait for an older rollback.
    let ahead = w
        .others
        .iter()
        .filter(|o| verified_later(w.upstream, p, o) && !o.phase().is_final())
        .filter(|o| !p.spec.rollback || o.spec.rollback)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Approval, EnvironmentSpec, EnvironmentStatus, Freeze, PromotionSpec, PromotionStatus, RevisionRecord,
        SourceReference,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-11-25T12:00:00Z";

    fn record(revision: &str, phase: RevisionPhase, promotion: Option<&str>, finished: &str) -> RevisionRecord {
        RevisionRecord {
            revision: revision.into(),
            phase,
            promotion: promotion.map(String::from),
            promotion_uid: None,
            applied_at: None,
            finished_at: Some(Time(at(finished))),
            attempts: 0,
            job: None,
            message: Some("why".into()),
            images: Vec::new(),
        }
    }

    fn env(name: &str, policy: Option<PromotionPolicy>, history: Vec<RevisionRecord>) -> Environment {
        let mut e = Environment::new(
            name,
            EnvironmentSpec {
                source_ref: SourceReference {
                    name: "config".into(),
                    ..Default::default()
                },
                path: ".".into(),
                target_namespace: None,
                interval: "5m".into(),
                prune: true,
                wait: false,
                health_timeout: "5m".into(),
                max_prune_percent: 50,
                allow_empty: false,
                force: false,
                deletion_policy: Default::default(),
                suspend: false,
                promotion: policy,
                verification: None,
                kube_config: None,
                decryption: None,
                service_account_name: None,
                images: None,
                depends_on: Vec::new(),
                helm: None,
            },
        );
        e.status = Some(EnvironmentStatus {
            last_applied_revision: history.first().map(|r| r.revision.clone()),
            history,
            ..Default::default()
        });
        e
    }

    fn policy() -> PromotionPolicy {
        PromotionPolicy {
            from: "staging".into(),
            supersede: true,
            ..Default::default()
        }
    }

    fn promotion(name: &str, revision: &str, created: &str, phase: Option<PromotionPhase>) -> Promotion {
        let mut p = Promotion::new(
            name,
            PromotionSpec {
                environment: "production".into(),
                revision: revision.into(),
                rollback: false,
                approval: None,
            },
        );
        p.metadata.creation_timestamp = Some(Time(at(created)));
        p.status = phase.map(|phase| PromotionStatus {
            phase: Some(phase),
            ..Default::default()
        });
        p
    }

    fn staging_verified(revision: &str, at: &str) -> Environment {
        env(
            "staging",
            None,
            vec![record(revision, RevisionPhase::Verified, None, at)],
        )
    }

    fn decide_with(p: &Promotion, production: &Environment, staging: &Environment, others: &[Promotion]) -> Step {
        decide(&World {
            promotion: p,
            environment: Some(production),
            upstream: Some(staging),
            others,
            now: at(NOW),
        })
        .expect("an open promotion")
    }

    #[test]
    fn a_verified_revision_applies_without_gates() {
        let p = promotion("p", "r1", NOW, None);
        let s = decide_with(
            &p,
            &env("production", Some(policy()), vec![]),
            &staging_verified("r1", NOW),
            &[],
        );
        assert_eq!((s.phase, s.reason), (PromotionPhase::Applying, Reason::Applying));
    }

    #[test]
    fn only_verified_upstream_revisions_move() {
        let production = env("production", Some(policy()), vec![]);
        let p = promotion("p", "r1", NOW, None);
        let unknown = decide_with(&p, &production, &staging_verified("r0", NOW), &[]);
        assert_eq!(
            (unknown.phase, unknown.reason),
            (PromotionPhase::Failed, Reason::RevisionNotVerified)
        );
        let failed = env("staging", None, vec![record("r1", RevisionPhase::Failed, None, NOW)]);
        let s = decide_with(&p, &production, &failed, &[]);
        assert_eq!(s.phase, PromotionPhase::Failed);
        assert!(s.message.contains("why"), "{}", s.message);
        let verifying = env("staging", None, vec![record("r1", RevisionPhase::Verifying, None, NOW)]);
        assert_eq!(
            decide_with(&p, &production, &verifying, &[]).phase,
            PromotionPhase::Pending
        );
    }

    #[test]
    fn soak_then_approval_then_window() {
        let mut pol = policy();
        pol.soak_time = Some("1h".into());
        pol.require_approval = true;
        pol.freezes = vec![Freeze {
            from: "2026-11-25T00:00:00Z".into(),
            to: "2026-11-26T00:00:00Z".into(),
            reason: Some("launch day".into()),
        }];
        let production = env("production", Some(pol), vec![]);
        let mut p = promotion("p", "r1", NOW, None);
        let soaking = decide_with(&p, &production, &staging_verified("r1", "2026-11-25T11:30:00Z"), &[]);
        assert_eq!(
            (soaking.phase, soaking.reason),
            (PromotionPhase::Pending, Reason::Soaking)
        );
        assert_eq!(soaking.recheck, Some(Duration::from_secs(1800)));
        assert!(soaking.message.contains("2026-11-25T12:30:00Z"), "{}", soaking.message);
        let soaked = staging_verified("r1", "2026-11-25T10:00:00Z");
        let waiting = decide_with(&p, &production, &soaked, &[]);
        assert_eq!(waiting.phase, PromotionPhase::WaitingApproval);
        p.spec.approval = Some(Approval {
            decision: Decision::Approved,
            by: Some("alice".into()),
            at: None,
            message: None,
        });
        let frozen = decide_with(&p, &production, &soaked, &[]);
        assert_eq!((frozen.phase, frozen.reason), (PromotionPhase::Pending, Reason::Frozen));
        assert!(
            frozen.message.contains("alice") && frozen.message.contains("launch day"),
            "{}",
            frozen.message
        );
        assert_eq!(frozen.recheck, Some(Duration::from_secs(12 * 3600)));
    }

    #[test]
    fn rejection_aborts() {
        let mut p = promotion("p", "r1", NOW, Some(PromotionPhase::WaitingApproval));
        p.spec.approval = Some(Approval {
            decision: Decision::Rejected,
            by: Some("bob".into()),
            at: None,
            message: Some("not today".into()),
        });
        let s = decide_with(
            &p,
            &env("production", Some(policy()), vec![]),
            &staging_verified("r1", NOW),
            &[],
        );
        assert_eq!((s.phase, s.reason), (PromotionPhase::Aborted, Reason::Rejected));
        assert_eq!(s.message, "rejected by bob: not today");
    }

    #[test]
    fn a_newer_promotion_supersedes_a_waiting_one_or_queues_behind_it() {
        let old = promotion(
            "old",
            "r1",
            "2026-11-25T11:00:00Z",
            Some(PromotionPhase::WaitingApproval),
        );
        let new = promotion("new", "r2", "2026-11-25T11:30:00Z", None);
        let staging = env(
            "staging",
            None,
            vec![
                record("r2", RevisionPhase::Verified, None, NOW),
                record("r1", RevisionPhase::Verified, None, NOW),
            ],
        );
        let production = env("production", Some(policy()), vec![]);
        let s = decide_with(&old, &production, &staging, std::slice::from_ref(&new));
        assert_eq!((s.phase, s.reason), (PromotionPhase::Superseded, Reason::Superseded));
        assert!(s.message.contains("new"));
        assert_eq!(
            decide_with(&new, &production, &staging, std::slice::from_ref(&old)).phase,
            PromotionPhase::Applying
        );

        let mut queue = policy();
        queue.supersede = false;
        let production = env("production", Some(queue), vec![]);
        let s = decide_with(&old, &production, &staging, std::slice::from_ref(&new));
        assert_eq!(s.phase, PromotionPhase::Applying, "first come, first served");
        let s = decide_with(&new, &production, &staging, std::slice::from_ref(&old));
        assert_eq!((s.phase, s.reason), (PromotionPhase::Pending, Reason::Queued));
    }

    #[test]
    fn one_promotion_applies_at_a_time() {
        let active = promotion("active", "r1", "2026-11-25T11:00:00Z", Some(PromotionPhase::Verifying));
        let rollback = {
            let mut p = promotion("rb", "r0", "2026-11-25T11:30:00Z", None);
            p.spec.rollback = true;
            p
        };
        let production = env(
            "production",
            Some(policy()),
            vec![
                record("r1", RevisionPhase::Verifying, Some("active"), NOW),
                record("r0", RevisionPhase::Verified, Some("first"), NOW),
            ],
        );
        let s = decide_with(
            &rollback,
            &production,
            &staging_verified("r1", NOW),
            std::slice::from_ref(&active),
        );
        assert_eq!((s.phase, s.reason), (PromotionPhase::Pending, Reason::Queued));
    }

    #[test]
    fn applying_and_verifying_follow_this_promotions_record_only() {
        let p = promotion("p", "r1", NOW, Some(PromotionPhase::Applying));
        let staging = staging_verified("r1", NOW);
        // An old record of the same revision from another promotion does not count.
        let production = env(
            "production",
            Some(policy()),
            vec![record("r1", RevisionPhase::Verified, Some("earlier"), NOW)],
        );
        assert_eq!(
            decide_with(&p, &production, &staging, &[]).phase,
            PromotionPhase::Applying
        );
        for (phase, expected) in [
            (RevisionPhase::Verifying, PromotionPhase::Verifying),
            (RevisionPhase::Verified, PromotionPhase::Succeeded),
            (RevisionPhase::Failed, PromotionPhase::Failed),
        ] {
            let production = env("production", Some(policy()), vec![record("r1", phase, Some("p"), NOW)]);
            assert_eq!(decide_with(&p, &production, &staging, &[]).phase, expected);
        }
    }

    #[test]
    fn a_revision_a_registry_policy_denied_fails_the_promotion_with_that_reason() {
        let p = promotion("p", "r1", NOW, Some(PromotionPhase::Applying));
        let staging = staging_verified("r1", NOW);
        let mut production = env(
            "production",
            Some(policy()),
            vec![record("r1", RevisionPhase::Failed, Some("p"), NOW)],
        );
        let s = decide_with(&p, &production, &staging, &[]);
        assert_eq!(
            (s.phase, s.reason),
            (PromotionPhase::Failed, Reason::VerificationFailed)
        );
        let status = production.status.as_mut().unwrap();
        status.last_attempted_revision = Some("r1".into());
        crate::api::set_condition(
            &mut status.conditions,
            crate::api::READY,
            false,
            Reason::PolicyViolation,
            "r1 was not applied: 1 image policy violation: ...",
            None,
            at(NOW),
        );
        let s = decide_with(&p, &production, &staging, &[]);
        assert_eq!((s.phase, s.reason), (PromotionPhase::Failed, Reason::PolicyViolation));
        assert!(s.message.contains("was not applied to production"), "{}", s.message);
    }

    #[test]
    fn a_revision_the_image_step_refused_fails_the_promotion_with_that_reason() {
        let p = promotion("p", "r1", NOW, Some(PromotionPhase::Applying));
        let staging = staging_verified("r1", NOW);
        let mut production = env(
            "production",
            Some(policy()),
            vec![record("r1", RevisionPhase::Failed, Some("p"), NOW)],
        );
        let status = production.status.as_mut().unwrap();
        status.last_attempted_revision = Some("r1".into());
        crate::api::set_condition(
            &mut status.conditions,
            crate::api::READY,
            false,
            Reason::ImageCopyFailed,
            "r1: copying images failed: ...",
            None,
            at(NOW),
        );
        let s = decide_with(&p, &production, &staging, &[]);
        assert_eq!((s.phase, s.reason), (PromotionPhase::Failed, Reason::ImageCopyFailed));
    }

    #[test]
    fn rollbacks_need_a_revision_that_succeeded_here_and_skip_soak_and_windows() {
        let mut pol = policy();
        pol.soak_time = Some("24h".into());
        pol.freezes = vec![Freeze {
            from: "2026-11-25T00:00:00Z".into(),
            to: "2026-11-26T00:00:00Z".into(),
            reason: None,
        }];
        let production = env(
            "production",
            Some(pol.clone()),
            vec![
                record("r2", RevisionPhase::Failed, Some("p2"), NOW),
                record("r1", RevisionPhase::Verified, Some("p1"), NOW),
            ],
        );
        let mut rb = promotion("rb", "r1", NOW, None);
        rb.spec.rollback = true;
        assert_eq!(
            decide_with(&rb, &production, &staging_verified("r2", NOW), &[]).phase,
            PromotionPhase::Applying
        );
        rb.spec.revision = "r2".into();
        let s = decide_with(&rb, &production, &staging_verified("r2", NOW), &[]);
        assert_eq!(
            (s.phase, s.reason),
            (PromotionPhase::Failed, Reason::RevisionNotVerified)
        );
        pol.rollback.respect_windows = true;
        let production = env(
            "production",
            Some(pol),
            vec![
                record("r1", RevisionPhase::Verified, Some("p1"), "2026-11-24T00:00:00Z"),
                record("r0", RevisionPhase::Verified, None, NOW),
            ],
        );
        let mut rb = promotion("rb", "r0", NOW, None);
        rb.spec.rollback = true;
        assert_eq!(
            decide_with(&rb, &production, &staging_verified("r2", NOW), &[]).reason,
            Reason::Frozen
        );
    }

    #[test]
    fn promotions_into_unpromoted_or_missing_environments_fail() {
        let p = promotion("p", "r1", NOW, None);
        let staging = staging_verified("r1", NOW);
        let s = decide_with(&p, &env("production", None, vec![]), &staging, &[]);
        assert_eq!(s.reason, Reason::NotPromoted);
        let s = decide(&World {
            promotion: &p,
            environment: None,
            upstream: None,
            others: &[],
            now: at(NOW),
        })
        .unwrap();
        assert_eq!(
            (s.phase, s.reason),
            (PromotionPhase::Failed, Reason::EnvironmentNotFound)
        );
        let s = decide(&World {
            promotion: &p,
            environment: Some(&env("production", Some(policy()), vec![])),
            upstream: None,
            others: &[],
            now: at(NOW),
        })
        .unwrap();
        assert_eq!((s.phase, s.reason), (PromotionPhase::Pending, Reason::UpstreamNotFound));
        let done = promotion("p", "r1", NOW, Some(PromotionPhase::Succeeded));
        assert!(
            decide(&World {
                promotion: &done,
                environment: None,
                upstream: None,
                others: &[],
                now: at(NOW)
            })
            .is_none()
        );
    }

    #[test]
    fn rollbacks_go_before_forward_promotions() {
        let production = env(
            "production",
            Some(policy()),
            vec![
                record("r2", RevisionPhase::Failed, Some("p2"), NOW),
                record("r1", RevisionPhase::Verified, Some("p1"), NOW),
            ],
        );
        let staging = env(
            "staging",
            None,
            vec![
                record("r3", RevisionPhase::Verified, None, NOW),
                record("r2", RevisionPhase::Verified, None, NOW),
            ],
        );
        // A forward promotion created before the rollback still waits for it.
        let forward = promotion(
            "p3",
            "r3",
            "2026-11-25T11:00:00Z",
            Some(PromotionPhase::WaitingApproval),
        );
        let mut rollback = promotion("p2-rollback", "r1", "2026-11-25T11:30:00Z", None);
        rollback.spec.rollback = true;
        let s = decide_with(&forward, &production, &staging, std::slice::from_ref(&rollback));
        assert_eq!((s.phase, s.reason), (PromotionPhase::Pending, Reason::Queued));
        assert!(s.message.contains("rollback p2-rollback"), "{}", s.message);
        let s = decide_with(&rollback, &production, &staging, std::slice::from_ref(&forward));
        assert_eq!(s.phase, PromotionPhase::Applying);
    }

    #[test]
    fn a_suspended_environment_holds_its_promotions() {
        let mut production = env("production", Some(policy()), vec![]);
        production.spec.suspend = true;
        let p = promotion("p", "r1", NOW, None);
        let s = decide_with(&p, &production, &staging_verified("r1", NOW), &[]);
        assert_eq!((s.phase, s.reason), (PromotionPhase::Pending, Reason::Suspended));
    }

    #[test]
    fn a_verified_revision_stays_verified_after_it_leaves_the_upstream_history() {
        let mut pol = policy();
        pol.soak_time = Some("1h".into());
        let production = env("production", Some(pol), vec![]);
        let mut p = promotion("p", "r1", NOW, None);
        let first = decide_with(&p, &production, &staging_verified("r1", "2026-11-25T11:30:00Z"), &[]);
        assert_eq!(first.reason, Reason::Soaking);
        assert_eq!(
            first.upstream_verified_at,
            Some(at("2026-11-25T11:30:00Z")),
            "kept in status"
        );
        p.status = Some(PromotionStatus {
            phase: Some(PromotionPhase::Pending),
            upstream_verified_at: first.upstream_verified_at.map(Time),
            ..Default::default()
        });
        // Ten newer revisions later the upstream no longer lists r1: the soak clock is the one seen first.
        let s = decide_with(&p, &production, &staging_verified("r11", NOW), &[]);
        assert_eq!(s.reason, Reason::Soaking);
        assert_eq!(s.recheck, Some(Duration::from_secs(1800)));
    }

    #[test]
    fn of_two_promotions_applying_at_once_the_younger_steps_back() {
        let older = promotion("a", "r1", "2026-11-25T11:00:00Z", Some(PromotionPhase::Applying));
        let younger = promotion("b", "r2", "2026-11-25T11:30:00Z", Some(PromotionPhase::Applying));
        let production = env(
            "production",
            Some(policy()),
            vec![record("r1", RevisionPhase::Applying, Some("a"), NOW)],
        );
        let staging = staging_verified("r2", NOW);
        let s = decide_with(&younger, &production, &staging, std::slice::from_ref(&older));
        assert_eq!((s.phase, s.reason), (PromotionPhase::Pending, Reason::Queued));
        assert_eq!(
            decide_with(&older, &production, &staging, std::slice::from_ref(&younger)).phase,
            PromotionPhase::Applying
        );
    }

    #[test]
    fn an_apply_that_keeps_failing_is_visible_on_the_promotion() {
        let p = promotion("p", "r1", NOW, Some(PromotionPhase::Applying));
        let mut production = env(
            "production",
            Some(policy()),
            vec![record("r1", RevisionPhase::Applying, Some("p"), NOW)],
        );
        let conditions = &mut production.status.as_mut().unwrap().conditions;
        crate::api::set_condition(
            conditions,
            "Ready",
            false,
            Reason::FetchFailed,
            "git server down",
            None,
            at(NOW),
        );
        let s = decide_with(&p, &production, &staging_verified("r1", NOW), &[]);
        assert_eq!(s.phase, PromotionPhase::Applying);
        assert!(s.message.ends_with(": git server down"), "{}", s.message);
    }

    #[test]
    fn the_later_verified_revision_supersedes_even_when_both_were_proposed_in_the_same_second() {
        // Names order the other way round: "p-b" (r1, verified first) sorts after "p-a" (r2).
        let first = promotion("p-b", "r1", NOW, Some(PromotionPhase::WaitingApproval));
        let second = promotion("p-a", "r2", NOW, None);
        let staging = env(
            "staging",
            None,
            vec![
                record("r2", RevisionPhase::Verified, None, NOW),
                record("r1", RevisionPhase::Verified, None, NOW),
            ],
        );
        let production = env("production", Some(policy()), vec![]);
        let s = decide_with(&first, &production, &staging, std::slice::from_ref(&second));
        assert_eq!(s.phase, PromotionPhase::Superseded);
        let s = decide_with(&second, &production, &staging, std::slice::from_ref(&first));
        assert_eq!(s.phase, PromotionPhase::Applying);
    }
}
