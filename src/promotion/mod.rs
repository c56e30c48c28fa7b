//! Promotion decisions, all pure: the time gates (soak, windows, freezes) and the phase state machine. The
//! promotion controller reads the world, calls [`decide`], and writes what it returns.

mod decide;
mod gates;

pub use decide::{Step, World, decide};
pub use gates::{GateError, WindowState, soak_remaining, validate as validate_gates, window_state};

use crate::source::Revision;

/// Label on Promotions: the Environment they promote into.
pub const PROMOTION_ENVIRONMENT_LABEL: &str = "ferry.dev/environment";

/// The Promotion name Ferry uses for `revision` into `environment`: one per pair, so proposing is idempotent.
pub fn promotion_name(environment: &str, revision: &str) -> String {
    let commit = Revision::parse(revision).map(|r| r.commit).unwrap_or_default();
    let short = commit.get(..12).unwrap_or(&commit);
    let env: String = environment.chars().take(200).collect();
    format!("{env}-{short}")
}
