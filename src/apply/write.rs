//! Writing a set: staged (CRDs and Namespaces first, then everything else once those CRDs are Established),
//! each stage dry-run in full before any of it is written, and only objects whose dry run differs from the live
//! object written, so a reconcile where nothing changed makes no mutating request.

use std::collections::BTreeSet;

use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use super::plan::{Planned, Prepared};
use super::{
    APPLY_ORDER_ANNOTATION, Applier, ApplyError, ApplyOptions, ApplyReport, FIELD_MANAGER, client_error, differs,
    forbidden, gvk_of,
};
use crate::render::{RenderedObject, apply_rank};

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
        self.apply_stage(first_stage, opts, report).await?;
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
        match self.apply_stage(prepared, opts, report).await {
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
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let planned = self.plan_stage(stage, opts).await?;
        self.write(planned, report).await
    }

    /// Writes the planned objects that differ from the live ones.
    async fn write(&self, planned: Vec<Planned>, report: &mut ApplyReport) -> Result<(), ApplyError> {
        for plan in planned {
            let p = plan.prepared;
            let needs_write = match &plan.live {
                None => true,
                Some(live) => differs(&plan.dry_run, &serde_json::to_value(live).unwrap_or_default()),
            };
            if needs_write {
                let mut params = PatchParams::apply(FIELD_MANAGER);
                params.force = plan.force;
                let written = p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await;
                if let Ok(written) = &written
                    && let Some(version) = &written.metadata.resource_version
                {
                    report.versions.insert(p.entry.clone(), version.clone());
                }
                if let Err(e) = written {
                    return Err(match (client_error(&e), forbidden(&e)) {
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
                if plan.live.is_none() {
                    report.created.push(p.label);
                } else {
                    report.configured.push(p.label);
                }
            } else {
                report.unchanged += 1;
                if let Some(version) = plan.live.as_ref().and_then(|l| l.metadata.resource_version.clone()) {
                    report.versions.insert(p.entry.clone(), version);
                }
            }
            report.inventory.push(p.entry);
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
