//! The dry run: each object prepared (its namespace, the ownership labels), dry-run by server-side apply and
//! compared with the live object. Refusals, conflicts with other appliers and forbidden requests are collected
//! for the whole set, so one answer names every problem. What `ferry diff` shows comes from here too.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;

use super::{
    Applier, ApplyError, ApplyOptions, FIELD_MANAGER, ObjectDiff, client_error, conflicting_managers, differs,
    forbidden, gvk_of, imperative_managers, normalized, owned_by_other, prepare,
};
use crate::api::InventoryEntry;
use crate::render::RenderedObject;

/// One object ready to send: where it goes and what it says.
pub(super) struct Prepared {
    pub(super) api: Api<DynamicObject>,
    pub(super) name: String,
    pub(super) body: Value,
    pub(super) label: String,
    pub(super) entry: InventoryEntry,
}

/// The dry run's verdict on one object.
pub(super) struct Planned {
    pub(super) prepared: Prepared,
    pub(super) live: Option<DynamicObject>,
    pub(super) dry_run: Value,
    pub(super) force: bool,
}

impl Applier {
    pub(super) fn prepare(
        &self,
        rendered: &RenderedObject,
        ar: &ApiResource,
        caps: &ApiCapabilities,
        opts: &ApplyOptions,
    ) -> Prepared {
        let namespaced = caps.scope == Scope::Namespaced;
        let namespace = namespaced.then(|| {
            opts.target_namespace
                .clone()
                .or_else(|| rendered.namespace().map(str::to_string))
                .unwrap_or_else(|| opts.default_namespace.clone())
        });
        let entry = InventoryEntry {
            api_version: rendered.api_version().to_string(),
            kind: rendered.kind().to_string(),
            namespace: namespace.clone(),
            name: rendered.name().to_string(),
        };
        Prepared {
            api: self.api_for(ar, caps, namespace.as_deref()),
            name: rendered.name().to_string(),
            body: prepare(&rendered.object, namespace.as_deref(), opts.owner.as_ref()),
            label: entry.to_string(),
            entry,
        }
    }

    /// Dry-runs the objects that do not depend on the first stage; refusals other than "namespace not found"
    /// fail the whole set.
    pub(super) async fn precheck(&self, objects: &[&RenderedObject], opts: &ApplyOptions) -> Result<(), ApplyError> {
        let mut failures = Vec::new();
        let mut denied = Vec::new();
        for o in objects {
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            let Some((ar, caps)) = self.resource(&gvk_of(o.api_version(), o.kind()), &label).await? else {
                continue; // defined by a CRD of this set: checked after it is Established
            };
            let p = self.prepare(o, &ar, &caps, opts);
            let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
            params.force = true;
            match p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {} // its namespace comes with the first stage
                Err(e) => match (client_error(&e), forbidden(&e)) {
                    (Some(status), _) => failures.push(format!("{}: {}", p.label, status.message)),
                    (None, Some(status)) => denied.push(format!("{}: {}", p.label, status.message)),
                    (None, None) => {
                        return Err(ApplyError::Api {
                            object: p.label,
                            source: e,
                        });
                    }
                },
            }
        }
        if !denied.is_empty() {
            return Err(ApplyError::Forbidden { failures: denied });
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Invalid { failures })
        }
    }

    /// Dry-runs every object of a stage; fails listing every object the server would refuse.
    pub(super) async fn plan_stage(
        &self,
        stage: Vec<Prepared>,
        opts: &ApplyOptions,
    ) -> Result<Vec<Planned>, ApplyError> {
        let force = opts.force;
        let mut invalid = Vec::new();
        let mut conflicts = Vec::new();
        let mut denied = Vec::new();
        let mut planned = Vec::new();
        for p in stage {
            let live = match p.api.get_opt(&p.name).await {
                Ok(live) => live,
                Err(e) => match forbidden(&e) {
                    Some(status) => {
                        denied.push(format!("{}: {}", p.label, status.message));
                        continue;
                    }
                    None => {
                        return Err(ApplyError::Api {
                            object: p.label,
                            source: e,
                        });
                    }
                },
            };
            let claimed = live
                .as_ref()
                .zip(opts.owner.as_ref())
                .and_then(|(l, o)| owned_by_other(l, o));
            if let Some(other) = claimed {
                conflicts.push(format!("{}: already applied by Environment {other}", p.label));
                continue;
            }
            let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
            params.force = force;
            let first = p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await;
            let (result, forced) = match first {
                Err(kube::Error::Api(s)) if s.code == 409 && !force && !conflicting_managers(&s.message).is_empty() => {
                    // Fields taken by an imperative edit are drift: take them back. Fields of another
                    // declarative applier are its to keep unless the Environment says force.
                    let managers = conflicting_managers(&s.message);
                    let imperative = live
                        .as_ref()
                        .and_then(|l| serde_json::to_value(l).ok())
                        .map(|l| imperative_managers(&l))
                        .unwrap_or_default();
                    if !managers.is_empty() && managers.iter().all(|m| imperative.contains(m)) {
                        params.force = true;
                        (p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await, true)
                    } else {
                        conflicts.push(format!("{}: {}", p.label, s.message));
                        continue;
                    }
                }
                other => (other, force),
            };
            match result {
                Ok(dry) => {
                    let dry_run = serde_json::to_value(&dry).unwrap_or_default();
                    planned.push(Planned {
                        prepared: p,
                        live,
                        dry_run,
                        force: forced,
                    });
                }
                Err(e) => match (client_error(&e), forbidden(&e)) {
                    (Some(status), _) => invalid.push(format!("{}: {}", p.label, status.message)),
                    (None, Some(status)) => denied.push(format!("{}: {}", p.label, status.message)),
                    (None, None) => {
                        return Err(ApplyError::Api {
                            object: p.label,
                            source: e,
                        });
                    }
                },
            }
        }
        if !denied.is_empty() {
            return Err(ApplyError::Forbidden { failures: denied });
        }
        if !invalid.is_empty() {
            invalid.extend(conflicts);
            return Err(ApplyError::Invalid { failures: invalid });
        }
        if !conflicts.is_empty() {
            return Err(ApplyError::Conflict { failures: conflicts });
        }
        Ok(planned)
    }

    /// What applying would change, without changing anything: for each object that differs, the live object
    /// (if any) and the server's dry-run result, both normalized. Objects of kinds that a CRD in the same set
    /// defines cannot be dry-run before that CRD exists and are listed as new.
    pub async fn diff(&self, objects: &[RenderedObject], opts: &ApplyOptions) -> Result<Vec<ObjectDiff>, ApplyError> {
        let mut prepared = Vec::new();
        let mut unknown = Vec::new();
        let mut diffs = Vec::new();
        for o in objects {
            let gvk = gvk_of(o.api_version(), o.kind());
            let label = format!("{}/{} {}", o.api_version(), o.kind(), o.name());
            match self.resource(&gvk, &label).await? {
                Some((ar, caps)) => prepared.push(self.prepare(o, &ar, &caps, opts)),
                None if objects.iter().any(|c| {
                    c.kind() == "CustomResourceDefinition"
                        && c.object["spec"]["group"] == gvk.group.as_str()
                        && c.object["spec"]["names"]["kind"] == gvk.kind.as_str()
                }) =>
                {
                    diffs.push(ObjectDiff {
                        object: label,
                        live: None,
                        desired: normalized(&o.object),
                    })
                }
                None => unknown.push(format!("{label}: kind {} is not served by the cluster", o.kind())),
            }
        }
        if !unknown.is_empty() {
            return Err(ApplyError::Invalid { failures: unknown });
        }
        for plan in self.plan_stage(prepared, opts).await? {
            let live = plan.live.as_ref().and_then(|l| serde_json::to_value(l).ok());
            let changed = live.as_ref().is_none_or(|l| differs(&plan.dry_run, l));
            if changed {
                diffs.push(ObjectDiff {
                    object: plan.prepared.label,
                    live: live.as_ref().map(normalized),
                    desired: normalized(&plan.dry_run),
                });
            }
        }
        Ok(diffs)
    }
}
