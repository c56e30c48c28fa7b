//! Writing a set: staged (CRDs and Namespaces first, then everything else once those CRDs are Established),
//! each stage dry-run in full before any of it is written, and only objects whose dry run differs from the live
//! object written, so a reconcile where nothing changed makes no mutating request.

use std::collections::BTreeSet;

use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use kube::api::DynamicObject;

use super::plan::{Live, Planned, Prepared};
use super::{
    APPLY_ORDER_ANNOTATION, Applier, ApplyError, ApplyOptions, ApplyReport, FIELD_MANAGER, Known, PARALLEL_REQUESTS,
    client_error, digest, forbidden, gvk_of, normalized,
};
use crate::render::{RenderedObject, apply_rank};

/// One planned object after its write step: its normalized dry run, and the write's result (`None`: unchanged,
/// not written).
type Written = (Planned, Value, Option<Result<DynamicObject, kube::Error>>);

/// The apply step an object is written in: its kind's rank, then its apply-order annotation.
fn write_step(plan: &Planned) -> (u8, i64) {
    (apply_rank(&plan.prepared.entry.kind), order_of(&plan.prepared.body))
}

fn order_of(object: &Value) -> i64 {
    object["metadata"]["annotations"][APPLY_ORDER_ANNOTATION]
        .as_str()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Applier {
    /// Applies the whole set, staged: CRDs and Namespaces first (then waits for the CRDs to be Established),
    /// then everything else. Each stage is dry-run in full first; if any object would be rejected, nothing of
    /// that stage is applied and every failure is reported. Objects whose dry run equals the live object are
    /// not written, so a reconcile where nothing changed makes no mutating request.
    /// On failure, `report` still lists what was written before it, so the caller can keep tracking it.
    pub async fn apply_all(
        &self,
        objects: &[RenderedObject],
        opts: &ApplyOptions,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        self.apply_all_known(objects, opts, &Known::new(), report).await
    }

    /// [`Applier::apply_all`], reading no object that `known` (what this caller applied before, see [`Known`])
    /// already answers for. `report.versions` and `report.digests` are the next call's `known`.
    pub async fn apply_all_known(
        &self,
        objects: &[RenderedObject],
        opts: &ApplyOptions,
        known: &Known,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let mut ordered: Vec<&RenderedObject> = objects.iter().collect();
        ordered.sort_by_key(|o| (apply_rank(o.kind()), order_of(&o.object)));
        let defined_by_set: BTreeSet<(String, String)> = objects
            .iter()
            .filter(|o| o.kind() == "CustomResourceDefinition")
            .filter_map(|o| {
                let spec = &o.object["spec"];
                Some((
                    spec["group"].as_str()?.to_string(),
                    spec["names"]["kind"].as_str()?.to_string(),
                ))
            })
            .collect();

        // Every kind must be served, or defined by a CRD of this same set, before anything is applied.
        let mut unknown = Vec::new();
        let mut first_stage = Vec::new();
        let mut second_stage: Vec<&RenderedObject> = Vec::new();
        for o in &ordered {
            let gvk = gvk_of(o.api_version(), o.kind());
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            match self.resource(&gvk, &label).await? {
                Some((ar, caps)) if apply_rank(o.kind()) <= 1 => first_stage.push(self.prepare(o, &ar, &caps, opts)),
                Some(_) => second_stage.push(o),
                None if defined_by_set.contains(&(gvk.group.clone(), gvk.kind.clone())) => second_stage.push(o),
                None => unknown.push(format!("{label}: kind {} is not served by the cluster", o.kind())),
            }
        }
        if !unknown.is_empty() {
            return Err(ApplyError::Invalid { failures: unknown });
        }

        // Before the first stage is written, dry-run whatever of the second stage can be checked already (kinds
        // served now, namespaces that exist), so an invalid object stops the revision before anything is applied.
        if !first_stage.is_empty() {
            self.precheck(&second_stage, opts).await?;
        }
        let crds: Vec<String> = first_stage
            .iter()
            .filter(|p| p.entry.kind == "CustomResourceDefinition")
            .map(|p| p.name.clone())
            .collect();
        self.apply_stage(first_stage, opts, known, report).await?;
        for crd in &crds {
            self.wait_established(crd).await?;
        }
        let mut prepared = Vec::new();
        for o in second_stage {
            let gvk = gvk_of(o.api_version(), o.kind());
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            let Some((ar, caps)) = self.resource(&gvk, &label).await? else {
                return Err(ApplyError::Invalid {
                    failures: vec![format!(
                        "{label}: kind {} is not served after its CRD was applied",
                        o.kind()
                    )],
                });
            };
            prepared.push(self.prepare(o, &ar, &caps, opts));
        }
        match self.apply_stage(prepared, opts, known, report).await {
            Err(ApplyError::Invalid { failures }) if report.changed() => {
                return Err(ApplyError::InvalidAfterFirstStage {
                    created: report.created.clone(),
                    failures,
                });
            }
            other => other?,
        }
        report.inventory.sort();
        Ok(())
    }

    async fn apply_stage(
        &self,
        stage: Vec<Prepared>,
        opts: &ApplyOptions,
        known: &Known,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let planned = self.plan_stage(stage, opts, known).await?;
        self.write(planned, report).await
    }

    /// Writes the planned objects that differ from the live ones, in order: objects of one apply step (the same
    /// kind rank and apply-order annotation, which promise no order among themselves) a few at a time. On a
    /// failure, every object that was written is still in `report`, and nothing of a later step is written.
    async fn write(&self, planned: Vec<Planned>, report: &mut ApplyReport) -> Result<(), ApplyError> {
        use futures::StreamExt;
        let mut planned = planned.into_iter().peekable();
        while let Some(first) = planned.next() {
            let step = write_step(&first);
            let mut group = vec![first];
            while let Some(next) = planned.next_if(|p| write_step(p) == step) {
                group.push(next);
            }
            let results: Vec<Written> = futures::stream::iter(group)
                .map(|plan| async move {
                    let desired = normalized(&plan.dry_run);
                    let needs_write = match &plan.live {
                        Live::Absent => true,
                        Live::Fetched(live) => desired != normalized(&serde_json::to_value(live).unwrap_or_default()),
                        Live::Known { digest: known, .. } => digest(&desired) != *known,
                    };
                    let written = if needs_write {
                        let p = &plan.prepared;
                        let mut params = PatchParams::apply(FIELD_MANAGER);
                        params.force = plan.force;
                        Some(p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await)
                    } else {
                        None
                    };
                    (plan, desired, written)
                })
                .buffered(PARALLEL_REQUESTS)
                .collect()
                .await;
            let mut failed = None;
            for (plan, desired, written) in results {
                let p = plan.prepared;
                match written {
                    Some(Ok(written)) => {
                        if let Some(version) = &written.metadata.resource_version {
                            report.versions.insert(p.entry.clone(), version.clone());
                            let value = serde_json::to_value(&written).unwrap_or_default();
                            report.digests.insert(p.entry.clone(), digest(&normalized(&value)));
                        }
                        if matches!(plan.live, Live::Absent) {
                            report.created.push(p.label);
                        } else {
                            report.configured.push(p.label);
                        }
                    }
                    Some(Err(e)) => {
                        if failed.is_none() {
                            failed = Some(match (client_error(&e), forbidden(&e)) {
                                (Some(status), _) => ApplyError::Rejected {
                                    object: p.label,
                                    message: status.message.clone(),
                                },
                                (None, Some(status)) => ApplyError::forbidden(p.label, status),
                                (None, None) => ApplyError::Api {
                                    object: p.label,
                                    source: e,
                                },
                            });
                        }
                        continue;
                    }
                    None => {
                        report.unchanged += 1;
                        // Unchanged: the live object is the desired one, whose digest is already at hand.
                        let version = match &plan.live {
                            Live::Fetched(l) => l.metadata.resource_version.clone(),
                            Live::Known { version, .. } => Some(version.clone()),
                            Live::Absent => None,
                        };
                        if let Some(version) = version {
                            report.versions.insert(p.entry.clone(), version);
                            report.digests.insert(p.entry.clone(), digest(&desired));
                        }
                    }
                }
                report.inventory.push(p.entry);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn wait_established(&self, name: &str) -> Result<(), ApplyError> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let crd = crds.get_opt(name).await.map_err(|source| ApplyError::Api {
                object: format!("CustomResourceDefinition {name}"),
                source,
            })?;
            let established = crd
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(ApplyError::NotEstablished(name.to_string()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_order_annotation_is_read_as_an_integer() {
        let o = serde_json::json!({"metadata": {"annotations": {APPLY_ORDER_ANNOTATION: "-2"}}});
        assert_eq!(order_of(&o), -2);
        assert_eq!(order_of(&serde_json::json!({})), 0);
    }
}
