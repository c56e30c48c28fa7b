//! The sync's decisions, pure: is this sync of an unchanged revision and spec, is it a new attempt, are its
//! writes drift, and the health clock (when waiting for a revision started, and when it ran out).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use crate::api::{EnvironmentStatus, READY, Reason};

/// The last full sync applied `revision` at `generation` and succeeded (a failure path records the
/// generation too, without applying it).
pub fn unchanged(old: Option<&EnvironmentStatus>, generation: Option<i64>, revision: &str) -> bool {
    old.is_some_and(|o| {
        o.observed_generation == generation
            && o.last_applied_revision.as_deref() == Some(revision)
            && o.conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == o.observed_generation)
    })
}

/// Another revision, or another spec, than the last attempt's.
pub fn new_attempt(previous: Option<&EnvironmentStatus>, generation: Option<i64>, revision: &str) -> bool {
    previous.and_then(|p| p.last_attempted_revision.as_deref()) != Some(revision)
        || previous.and_then(|p| p.observed_generation) != generation
}

/// Writes at an unchanged revision and spec can only undo changes made outside Git: drift. `last_applied` is
/// the revision applied before this sync, `previous` the status before it, `generation` the spec's now.
pub fn drift(
    previous: Option<&EnvironmentStatus>,
    last_applied: Option<&str>,
    generation: Option<i64>,
    revision: &str,
    changed: bool,
) -> bool {
    let same_revision = last_applied == Some(revision);
    let same_spec = previous.and_then(|s| s.observed_generation) == generation;
    same_revision && same_spec && changed
}

/// The health clock keeps running: Ready already waits (Unknown) for *this* revision. Otherwise it starts
/// now, not when the revision before started waiting.
pub fn same_health_wait(old: Option<&EnvironmentStatus>, revision: &str) -> bool {
    old.and_then(|o| o.conditions.iter().find(|c| c.type_ == READY))
        .is_some_and(|c| c.status == "Unknown" && c.message.contains(revision))
}

/// Whether `revision` ran out of time to become healthy: Ready has waited (Unknown) for it longer than
/// `timeout`, or already failed it for that. Once timed out, a revision stays failed until its objects are
/// healthy: no flapping back to Unknown.
pub fn health_timed_out(ready: Option<&Condition>, revision: &str, now: Timestamp, timeout: Duration) -> bool {
    let ready = ready.filter(|c| c.type_ == READY && c.message.contains(revision));
    let timed_out_before = ready.is_some_and(|c| c.status == "False" && c.reason == Reason::HealthCheckFailed.as_str());
    let since = ready
        .filter(|c| c.status == "Unknown")
        .map(|c| c.last_transition_time.0);
    let over_time = since.is_some_and(|since| now.duration_since(since).unsigned_abs() > timeout);
    timed_out_before || over_time
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const REV: &str = "main@sha1:aaaa";
    const OTHER: &str = "main@sha1:bbbb";

    fn ready(status: &str, reason: &str, message: &str, generation: i64, at: Timestamp) -> Condition {
        Condition {
            type_: READY.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: Some(generation),
            last_transition_time: Time(at),
        }
    }

    fn status(applied: Option<&str>, attempted: Option<&str>, generation: i64, ready: Condition) -> EnvironmentStatus {
        EnvironmentStatus {
            observed_generation: Some(generation),
            last_applied_revision: applied.map(str::to_string),
            last_attempted_revision: attempted.map(str::to_string),
            conditions: vec![ready],
            ..Default::default()
        }
    }

    #[test]
    fn unchanged_needs_the_revision_the_spec_and_a_ready_sync() {
        let now = Timestamp::now();
        let ok = status(Some(REV), Some(REV), 2, ready("True", "Succeeded", "applied", 2, now));
        assert!(unchanged(Some(&ok), Some(2), REV));
        assert!(!unchanged(Some(&ok), Some(3), REV), "a new spec");
        assert!(!unchanged(Some(&ok), Some(2), OTHER), "a new revision");
        assert!(!unchanged(None, Some(2), REV), "nothing synced yet");
        let failed = status(Some(REV), Some(REV), 2, ready("False", "ApplyFailed", "x", 2, now));
        assert!(!unchanged(Some(&failed), Some(2), REV), "the last sync failed");
        let stale = status(Some(REV), Some(REV), 2, ready("True", "Succeeded", "applied", 1, now));
        assert!(!unchanged(Some(&stale), Some(2), REV), "Ready is about an older spec");
    }

    #[test]
    fn a_new_attempt_is_another_revision_or_spec() {
        let now = Timestamp::now();
        let s = status(None, Some(REV), 2, ready("False", "ApplyFailed", "x", 2, now));
        assert!(!new_attempt(Some(&s), Some(2), REV), "a retry");
        assert!(new_attempt(Some(&s), Some(2), OTHER));
        assert!(new_attempt(Some(&s), Some(3), REV));
        assert!(new_attempt(None, Some(1), REV));
    }

    #[test]
    fn only_writes_at_the_same_revision_and_spec_are_drift() {
        let now = Timestamp::now();
        let s = status(Some(REV), Some(REV), 2, ready("True", "Succeeded", "applied", 2, now));
        assert!(drift(Some(&s), Some(REV), Some(2), REV, true));
        assert!(!drift(Some(&s), Some(REV), Some(2), REV, false), "nothing written");
        assert!(!drift(Some(&s), Some(OTHER), Some(2), REV, true), "a new revision");
        assert!(!drift(Some(&s), Some(REV), Some(3), REV, true), "a new spec");
        assert!(!drift(None, None, Some(1), REV, true), "the first sync");
    }

    #[test]
    fn the_health_clock_starts_per_revision_and_a_timeout_sticks() {
        let now = Timestamp::now();
        let minute = Duration::from_secs(60);
        let ago = |secs: i64| now - k8s_openapi::jiff::SignedDuration::from_secs(secs);
        let waiting = ready(
            "Unknown",
            "Progressing",
            &format!("applied revision {REV}, waiting"),
            1,
            ago(30),
        );
        let s = status(Some(REV), Some(REV), 1, waiting.clone());
        assert!(same_health_wait(Some(&s), REV));
        assert!(!same_health_wait(Some(&s), OTHER), "another revision's wait");
        assert!(!same_health_wait(None, REV));
        assert!(!health_timed_out(Some(&waiting), REV, now, minute));
        let long = ready(
            "Unknown",
            "Progressing",
            &format!("applied revision {REV}, waiting"),
            1,
            ago(90),
        );
        assert!(health_timed_out(Some(&long), REV, now, minute));
        assert!(
            !health_timed_out(Some(&long), OTHER, now, minute),
            "the clock of another revision"
        );
        let failed = ready("False", "HealthCheckFailed", &format!("{REV} was not healthy"), 1, now);
        assert!(health_timed_out(Some(&failed), REV, now, minute), "stays failed");
        let other_failure = ready("False", "ApplyFailed", &format!("applying {REV} failed"), 1, now);
        assert!(!health_timed_out(Some(&other_failure), REV, now, minute));
    }
}
