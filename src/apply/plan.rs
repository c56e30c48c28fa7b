//! The dry run: each object prepared (its namespace, the ownership labels), dry-run by server-side apply and
//! compared with the live object. Refusals, conflicts with other appliers and forbidden requests are collected
//! for the whole set, so one answer names every problem. What `ferry diff` shows comes from here too.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;

use super::{
    Applier, ApplyError, ApplyOptions, FIELD_MANAGER, Known, ObjectDiff, PARALLEL_REQUESTS, client_error,
    conflicting_managers, differs, forbidden, gvk_of, imperative_managers, normalized, owned_by_other, prepare,
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

/// The live object, as far as a stage needs it.
#[derive(Debug)]
pub(super) enum Live {
    /// The dry run created it: there is none.
    Absent,
    /// Read from the API server.
    Fetched(Box<DynamicObject>),
    /// Still at the resourceVersion the caller applied it at: known by its digest without a read.
    Known { version: String, digest: u64 },
}

/// Where the live object comes from, given the dry run's resourceVersion (`None`: the dry run failed, so the
/// live object may be needed to explain why; `Some("")`: the dry run would create it) and what is known.
/// Only an object that exists and is not known at exactly that resourceVersion is read.
fn live_from_dry_run(dry_run_version: Option<&str>, known: Option<&(String, u64)>) -> Option<Live> {
    match (dry_run_version, known) {
        (Some(""), _) => Some(Live::Absent),
        (Some(version), Some((at, digest))) if version == at => Some(Live::Known {
            version: version.to_string(),
            digest: *digest,
        }),
        _ => None,
    }
}

/// What the dry run found for one object.
enum Verdict {
    Planned(Box<Planned>),
    /// The server would refuse it.
    Invalid(String),
    Conflict(String),
    Denied(String),
}

/// The dry run's verdict on one object.
pub(super) struct Planned {
    pub(super) prepared: Prepared,
    pub(super) live: Live,
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

    /// Dry-runs every object of a stage; fails listing every object the server would refuse. The live object is
    /// read only when the dry run says it exists and `known` does not already say what it is. Objects are
    /// dry-run a few at a time (dry runs write nothing, so their order does not matter); verdicts are collected
    /// in the stage's order, as one after another would find them.
    pub(super) async fn plan_stage(
        &self,
        stage: Vec<Prepared>,
        opts: &ApplyOptions,
        known: &Known,
    ) -> Result<Vec<Planned>, ApplyError> {
        use futures::StreamExt;
        let verdicts: Vec<Result<Verdict, ApplyError>> = futures::stream::iter(stage)
            .map(|p| self.plan_one(p, opts, known))
            .buffered(PARALLEL_REQUESTS)
            .collect()
            .await;
        let mut invalid = Vec::new();
        let mut conflicts = Vec::new();
        let mut denied = Vec::new();
        let mut planned = Vec::new();
        for verdict in verdicts {
            match verdict? {
                Verdict::Planned(p) => planned.push(*p),
                Verdict::Invalid(f) => invalid.push(f),
                Verdict::Conflict(f) => conflicts.push(f),
                Verdict::Denied(f) => denied.push(f),
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

    /// The dry run's verdict on one object (an `Err` is the API server's, which fails the whole stage).
    async fn plan_one(&self, p: Prepared, opts: &ApplyOptions, known: &Known) -> Result<Verdict, ApplyError> {
        let force = opts.force;
        let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
        params.force = force;
        let first = p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await;
        let dry_run_version = first
            .as_ref()
            .ok()
            .map(|d| d.metadata.resource_version.as_deref().unwrap_or_default());
        let live = match live_from_dry_run(dry_run_version, known.get(&p.entry)) {
            Some(live) => live,
            None => match p.api.get_opt(&p.name).await {
                Ok(Some(live)) => Live::Fetched(Box::new(live)),
                Ok(None) => Live::Absent,
                Err(e) => {
                    return match forbidden(&e) {
                        Some(status) => Ok(Verdict::Denied(format!("{}: {}", p.label, status.message))),
                        None => Err(ApplyError::Api {
                            object: p.label,
                            source: e,
                        }),
                    };
                }
            },
        };
        // What is known was applied by this same owner; anything else is read and checked.
        let claimed = match &live {
            Live::Fetched(l) => opts.owner.as_ref().and_then(|o| owned_by_other(l, o)),
            _ => None,
        };
        if let Some(other) = claimed {
            return Ok(Verdict::Conflict(format!(
                "{}: already applied by Environment {other}",
                p.label
            )));
        }
        let (result, forced) = match first {
            Err(kube::Error::Api(s)) if s.code == 409 && !force && !conflicting_managers(&s.message).is_empty() => {
                // Fields taken by an imperative edit are drift: take them back. Fields of another
                // declarative applier are its to keep unless the Environment says force.
                let managers = conflicting_managers(&s.message);
                let imperative = match &live {
                    Live::Fetched(l) => serde_json::to_value(l).ok().map(|l| imperative_managers(&l)),
                    _ => None,
                }
                .unwrap_or_default();
                if !managers.is_empty() && managers.iter().all(|m| imperative.contains(m)) {
                    params.force = true;
                    (p.api.patch(&p.name, &params, &Patch::Apply(&p.body)).await, true)
                } else {
                    return Ok(Verdict::Conflict(format!("{}: {}", p.label, s.message)));
                }
            }
            other => (other, force),
        };
        match result {
            Ok(dry) => {
                let dry_run = serde_json::to_value(&dry).unwrap_or_default();
                Ok(Verdict::Planned(Box::new(Planned {
                    prepared: p,
                    live,
                    dry_run,
                    force: forced,
                })))
            }
            Err(e) => match (client_error(&e), forbidden(&e)) {
                (Some(status), _) => Ok(Verdict::Invalid(format!("{}: {}", p.label, status.message))),
                (None, Some(status)) => Ok(Verdict::Denied(format!("{}: {}", p.label, status.message))),
                (None, None) => Err(ApplyError::Api {
                    object: p.label,
                    source: e,
                }),
            },
        }
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
        for plan in self.plan_stage(prepared, opts, &Known::new()).await? {
            let live = match &plan.live {
                Live::Fetched(l) => serde_json::to_value(l).ok(),
                _ => None,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_existing_object_not_known_at_its_version_is_read() {
        let known = ("41".to_string(), 7u64);
        // The dry run would create it: nothing to read.
        assert!(matches!(live_from_dry_run(Some(""), None), Some(Live::Absent)));
        assert!(matches!(live_from_dry_run(Some(""), Some(&known)), Some(Live::Absent)));
        // Still at the version this caller left it at: known by its digest.
        assert!(matches!(
            live_from_dry_run(Some("41"), Some(&known)),
            Some(Live::Known { version, digest: 7 }) if version == "41"
        ));
        // Changed since (a hand edit, another writer), never applied by this caller, or the dry run failed.
        assert!(live_from_dry_run(Some("42"), Some(&known)).is_none());
        assert!(live_from_dry_run(Some("41"), None).is_none());
        assert!(live_from_dry_run(None, Some(&known)).is_none());
    }
}
