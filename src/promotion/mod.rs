//! Promotion decisions, all pure: the time gates (soak, windows, freezes) and the phase state machine. The
//! promotion controller reads the world, calls [`decide`], and writes what it returns.

mod decide;
mod gates;

pub use decide::{Step, World, decide};
pub use gates::{GateError, WindowState, soak_remaining, validate as validate_gates, window_state};

use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::Promotion;
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

/// Promotions of `environment`, oldest first: the one API read in this module, shared by the controllers and
/// the CLI.
pub async fn promotions_of(
    client: &kube::Client,
    namespace: &str,
    environment: &str,
) -> Result<Vec<Promotion>, kube::Error> {
    let api: Api<Promotion> = Api::namespaced(client.clone(), namespace);
    // The label keeps this list small in a namespace of many pipelines; the promotion controller labels a
    // Promotion written without it. A name too long for a label value is looked up the slow way.
    let params = match environment.len() <= 63 {
        true => ListParams::default().labels(&format!("{PROMOTION_ENVIRONMENT_LABEL}={environment}")),
        false => ListParams::default(),
    };
    let mut list: Vec<Promotion> = api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.environment == environment)
        .collect();
    list.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any())
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()))
    });
    Ok(list)
}
