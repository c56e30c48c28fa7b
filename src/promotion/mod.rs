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

/// The Promotion the Environment is applying or verifying now, if any: its revision is what a promoted
/// Environment applies (between promotions it keeps its last applied revision). Shared by the Environment
/// controller and `ferry diff`, so the diff shows what the controller would apply.
pub fn active(promotions: &[Promotion]) -> Option<&Promotion> {
    promotions.iter().find(|p| p.phase().is_active())
}

/// A new Promotion of `revision` into `environment`, labelled so Environments find it by label. The caller
/// names it (`metadata.name` for one per revision, `generateName` for one per request).
pub fn new_promotion(namespace: &str, environment: &str, revision: &str, rollback: bool) -> Promotion {
    let mut promotion = Promotion::new(
        "",
        crate::api::PromotionSpec {
            environment: environment.to_string(),
            revision: revision.to_string(),
            rollback,
            approval: None,
        },
    );
    promotion.metadata.name = None;
    promotion.metadata.namespace = Some(namespace.to_string());
    promotion.metadata.labels = Some(std::collections::BTreeMap::from([(
        PROMOTION_ENVIRONMENT_LABEL.to_string(),
        environment.to_string(),
    )]));
    promotion
}

/// Finished Promotions beyond `limit` (`promotions` oldest first), oldest first: what an Environment deletes.
/// The one of `protected` (the upstream's newest verified revision) stays, since it is what keeps that
/// revision from being proposed again.
pub fn expired<'a>(promotions: &'a [Promotion], limit: usize, protected: Option<&str>) -> Vec<&'a Promotion> {
    let finished: Vec<&Promotion> = promotions.iter().filter(|p| p.phase().is_final()).collect();
    let excess = finished.len().saturating_sub(limit);
    finished
        .into_iter()
        .filter(|p| p.spec.rollback || Some(p.spec.revision.as_str()) != protected)
        .take(excess)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PromotionPhase, PromotionSpec, PromotionStatus};

    fn promotion(name: &str, revision: &str, phase: PromotionPhase) -> Promotion {
        let mut p = Promotion::new(
            name,
            PromotionSpec {
                environment: "production".into(),
                revision: revision.into(),
                rollback: false,
                approval: None,
            },
        );
        p.status = Some(PromotionStatus {
            phase: Some(phase),
            ..Default::default()
        });
        p
    }

    #[test]
    fn the_oldest_finished_promotions_expire_but_never_open_ones_or_the_protected_one() {
        let list = vec![
            promotion("a", "r1", PromotionPhase::Failed),
            promotion("b", "r2", PromotionPhase::Succeeded),
            promotion("c", "r3", PromotionPhase::Applying),
            promotion("d", "r4", PromotionPhase::Succeeded),
            promotion("e", "r5", PromotionPhase::WaitingApproval),
        ];
        let names = |v: Vec<&Promotion>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(expired(&list, 1, None)), vec!["a", "b"]);
        assert_eq!(
            names(expired(&list, 1, Some("r1"))),
            vec!["b", "d"],
            "r1 is spared, and counts"
        );
        assert!(expired(&list, 3, None).is_empty());
    }
}
