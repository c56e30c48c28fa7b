//! `status.history` bookkeeping, pure: one record per attempt to bring a revision into an Environment, moved
//! through Applying → Verifying → Verified | Failed | Superseded. Timestamps are set once, at the transition
//! they name, so re-running a reconcile rewrites nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    EnvironmentStatus, HISTORY_LIMIT, Reason, RevisionPhase, RevisionRecord, VERIFIED, set_condition_status,
};

/// Makes the attempt (`revision`, `promotion`) the newest record, unless it already is. An unfinished older
/// attempt ends `Superseded`. Returns whether a new record was started.
pub fn begin(history: &mut Vec<RevisionRecord>, revision: &str, promotion: Option<(&str, &str)>) -> bool {
    let (name, uid) = (promotion.map(|p| p.0), promotion.map(|p| p.1));
    if let Some(head) = history.first()
        && head.revision == revision
        && head.promotion.as_deref() == name
        && head.promotion_uid.as_deref() == uid
    {
        return false;
    }
    for r in history.iter_mut().filter(|r| !r.phase.is_final()) {
        r.phase = RevisionPhase::Superseded;
        r.message = Some(format!("superseded by {revision} before it finished"));
    }
    history.insert(
        0,
        RevisionRecord {
            revision: revision.to_string(),
            phase: RevisionPhase::Applying,
            promotion: name.map(str::to_string),
            promotion_uid: uid.map(str::to_string),
            applied_at: None,
            finished_at: None,
            attempts: 0,
            job: None,
            message: None,
            images: Vec::new(),
        },
    );
    history.truncate(HISTORY_LIMIT);
    true
}

/// Whether the newest record is this attempt, applied and being verified.
pub fn is_verifying(history: &[RevisionRecord], revision: &str, promotion: Option<(&str, &str)>) -> bool {
    history.first().is_some_and(|head| {
        head.phase == RevisionPhase::Verifying
            && head.revision == revision
            && head.promotion.as_deref() == promotion.map(|p| p.0)
            && head.promotion_uid.as_deref() == promotion.map(|p| p.1)
    })
}

/// The current attempt's record, if it is for `revision`.
pub fn current<'a>(history: &'a mut [RevisionRecord], revision: &str) -> Option<&'a mut RevisionRecord> {
    history.first_mut().filter(|r| r.revision == revision)
}

/// Applied: verification starts now. An attempt that failed before anything was applied reopens (a spec fix,
/// such as `force`, made it apply).
pub fn applied(record: &mut RevisionRecord, now: Timestamp) {
    let never_applied_failure = record.phase == RevisionPhase::Failed && record.applied_at.is_none();
    if record.phase == RevisionPhase::Applying || never_applied_failure {
        record.finished_at = None;
        record.phase = RevisionPhase::Verifying;
        record.applied_at.get_or_insert(Time(now));
        record.message = None;
    }
}

/// Ends an unfinished record; a finished one keeps its verdict.
pub fn finish(record: &mut RevisionRecord, ok: bool, message: Option<String>, now: Timestamp) {
    if record.phase.is_final() {
        return;
    }
    record.phase = if ok {
        RevisionPhase::Verified
    } else {
        RevisionPhase::Failed
    };
    record.finished_at = Some(Time(now));
    record.message = message;
}

/// The `Verified` condition, from the newest record: Unknown while verifying, then True or False.
pub fn set_verified_condition(status: &mut EnvironmentStatus, now: Timestamp) {
    let generation = status.observed_generation;
    let Some(head) = status.history.first() else {
        status.conditions.retain(|c| c.type_ != VERIFIED);
        return;
    };
    let (state, reason, message) = match head.phase {
        RevisionPhase::Applying => ("Unknown", Reason::Applying, format!("applying {}", head.revision)),
        RevisionPhase::Verifying => (
            "Unknown",
            Reason::Verifying,
            match &head.message {
                Some(m) => format!("verifying {}: {m}", head.revision),
                None => format!("verifying {}", head.revision),
            },
        ),
        RevisionPhase::Verified => ("True", Reason::Verified, format!("{} verified", head.revision)),
        RevisionPhase::Failed | RevisionPhase::Superseded => (
            "False",
            Reason::VerificationFailed,
            format!(
                "{} failed: {}",
                head.revision,
                head.message.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    };
    set_condition_status(
        &mut status.conditions,
        VERIFIED,
        state,
        reason,
        message,
        generation,
        now,
    );
}

/// The Event for the newest record reaching a verdict since `old`: (warning, reason, note).
pub fn event(
    old: Option<&EnvironmentStatus>,
    new: &EnvironmentStatus,
    environment: &str,
) -> Option<(bool, Reason, String)> {
    let head = new.history.first()?;
    let before = old
        .and_then(|o| o.history.first())
        .filter(|r| r.revision == head.revision && r.promotion == head.promotion)
        .map(|r| r.phase);
    if before == Some(head.phase) {
        return None;
    }
    let detail = head.message.clone().unwrap_or_default();
    match head.phase {
        RevisionPhase::Verified => Some((
            false,
            Reason::Verified,
            format!("{} verified in {environment}: {detail}", head.revision),
        )),
        RevisionPhase::Failed => Some((
            true,
            Reason::VerificationFailed,
            format!("{} failed in {environment}: {detail}", head.revision),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_new_revision_supersedes_an_unfinished_one_and_history_is_bounded() {
        let mut h = Vec::new();
        assert!(begin(&mut h, "a", None));
        assert!(!begin(&mut h, "a", None), "the same attempt is not restarted");
        applied(&mut h[0], ts(1));
        assert!(begin(&mut h, "b", None));
        assert_eq!(h[1].phase, RevisionPhase::Superseded);
        assert_eq!(h[0].phase, RevisionPhase::Applying);
        for i in 0..20 {
            begin(&mut h, &format!("r{i}"), None);
        }
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h[0].revision, "r19");
    }

    #[test]
    fn the_same_revision_through_another_promotion_is_a_new_attempt() {
        let mut h = Vec::new();
        begin(&mut h, "a", Some(("p1", "uid-1")));
        finish(&mut h[0], true, None, ts(5));
        assert!(begin(&mut h, "a", Some(("rollback", "uid-2"))));
        assert!(
            begin(&mut h, "a", Some(("rollback", "uid-3"))),
            "deleted and created again under the same name"
        );
        assert_eq!(h[1].phase, RevisionPhase::Superseded, "the unfinished attempt ends");
        assert_eq!(
            h[2].phase,
            RevisionPhase::Verified,
            "a finished record keeps its verdict"
        );
    }

    #[test]
    fn verified_condition_and_event_follow_the_newest_record() {
        let mut old = EnvironmentStatus::default();
        begin(&mut old.history, "a", None);
        applied(&mut old.history[0], ts(1));
        set_verified_condition(&mut old, ts(1));
        assert_eq!(crate::api::condition_status(&old.conditions, VERIFIED), Some("Unknown"));
        let mut new = old.clone();
        finish(
            &mut new.history[0],
            false,
            Some("Job web-verify-a-1 failed".into()),
            ts(2),
        );
        set_verified_condition(&mut new, ts(2));
        assert_eq!(crate::api::condition_status(&new.conditions, VERIFIED), Some("False"));
        let (warning, reason, note) = event(Some(&old), &new, "staging").unwrap();
        assert!(warning && reason == Reason::VerificationFailed && note.contains("web-verify-a-1"));
        assert_eq!(event(Some(&new), &new, "staging"), None, "one event per change");
    }

    #[test]
    fn timestamps_are_written_once() {
        let mut h = Vec::new();
        begin(&mut h, "a", None);
        applied(&mut h[0], ts(1));
        applied(&mut h[0], ts(2));
        assert_eq!(h[0].applied_at, Some(Time(ts(1))));
        finish(&mut h[0], false, Some("job failed".into()), ts(3));
        finish(&mut h[0], true, None, ts(4));
        assert_eq!(h[0].phase, RevisionPhase::Failed);
        assert_eq!(h[0].finished_at, Some(Time(ts(3))));
    }

    #[test]
    fn an_attempt_that_failed_to_apply_reopens_when_it_applies() {
        let mut h = Vec::new();
        begin(&mut h, "a", None);
        finish(&mut h[0], false, Some("invalid".into()), ts(1));
        assert!(!begin(&mut h, "a", None));
        applied(&mut h[0], ts(2));
        assert_eq!(h[0].phase, RevisionPhase::Verifying);
        assert_eq!(h[0].finished_at, None);
        finish(&mut h[0], false, Some("job failed".into()), ts(3));
        applied(&mut h[0], ts(4));
        assert_eq!(
            h[0].phase,
            RevisionPhase::Failed,
            "a verification failure does not reopen"
        );
    }
}
