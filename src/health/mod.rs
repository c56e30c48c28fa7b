//! Health: is a live object doing what it was applied for? A kstatus-like assessment, pure, per kind, so every
//! rule is unit-tested; the controller only fetches objects and reports the verdicts.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Reconciled and doing its job.
    Current,
    /// Still converging; the message says on what.
    InProgress(String),
    /// Will not get there without a change.
    Failed(String),
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

/// Kinds without a status: [`assess`] finds any object of them that exists `Current`, so knowing that it exists
/// is enough, without reading it.
pub fn only_existence_counts(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        ("v1", "ConfigMap" | "Secret" | "ServiceAccount")
            | (
                "rbac.authorization.k8s.io/v1",
                "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
            )
    )
}

/// Assesses one live object.
pub fn assess(object: &Value) -> Health {
    let generation = object["metadata"]["generation"].as_i64();
    let observed = object["status"]["observedGeneration"].as_i64();
    if let (Some(g), Some(o)) = (generation, observed)
        && o < g
    {
        return Health::InProgress(format!("observedGeneration {o} < generation {g}"));
    }
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("apps/v1", "Deployment") => deployment(object),
        ("apps/v1", "StatefulSet") => statefulset(object),
        ("apps/v1", "DaemonSet") => daemonset(object),
        ("apps/v1", "ReplicaSet") => replicaset(object),
        ("batch/v1", "Job") => job(object),
        ("v1", "Pod") => pod(object),
        ("v1", "PersistentVolumeClaim") => match object["status"]["phase"].as_str() {
            Some("Bound") => Health::Current,
            Some("Lost") => Health::Failed("claim lost its volume".into()),
            phase => Health::InProgress(format!("phase {}", phase.unwrap_or("Pending"))),
        },
        ("v1", "Service") => {
            let lb = object["spec"]["type"] == "LoadBalancer";
            let ingress = object["status"]["loadBalancer"]["ingress"]
                .as_array()
                .is_some_and(|i| !i.is_empty());
            if lb && !ingress {
                Health::InProgress("waiting for a load balancer address".into())
            } else {
                Health::Current
            }
        }
        ("v1", "Namespace") => match object["status"]["phase"].as_str() {
            Some("Terminating") => Health::InProgress("terminating".into()),
            _ => Health::Current,
        },
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            if condition_is(object, "Established", "True") {
                Health::Current
            } else {
                Health::InProgress("not Established yet".into())
            }
        }
        _ => generic(object),
    }
}

/// Any kind that follows the `Ready` condition convention (with Stalled for terminal failures).
fn generic(object: &Value) -> Health {
    if condition_is(object, "Stalled", "True") {
        let message = condition(object, "Stalled")
            .and_then(|c| c["message"].as_str())
            .unwrap_or("stalled");
        return Health::Failed(message.to_string());
    }
    match condition(object, "Ready") {
        Some(c) if c["status"] == "True" => Health::Current,
        Some(c) => Health::InProgress(c["message"].as_str().unwrap_or("not Ready").to_string()),
        None => Health::Current,
    }
}

fn deployment(o: &Value) -> Health {
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &o["status"];
    if let Some(c) = condition(o, "Progressing")
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        return Health::Failed(format!(
            "rollout exceeded its progress deadline: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let (updated, available, total) = (
        int(&s["updatedReplicas"]),
        int(&s["availableReplicas"]),
        int(&s["replicas"]),
    );
    if updated < want {
        return Health::InProgress(format!("{updated}/{want} replicas updated"));
    }
    if total > updated {
        return Health::InProgress(format!("{} old replicas pending termination", total - updated));
    }
    if available < want {
        return Health::InProgress(format!("{available}/{want} replicas available"));
    }
    Health::Current
}

fn statefulset(o: &Value) -> Health {
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let s = &o["status"];
    let ready = int(&s["readyReplicas"]);
    if ready < want {
        return Health::InProgress(format!("{ready}/{want} replicas ready"));
    }
    let rolling = o["spec"]["updateStrategy"]["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling && s["updateRevision"].is_string() && s["currentRevision"] != s["updateRevision"] {
        return Health::InProgress(format!("{}/{want} replicas updated", int(&s["updatedReplicas"])));
    }
    Health::Current
}

fn daemonset(o: &Value) -> Health {
    let s = &o["status"];
    let desired = int(&s["desiredNumberScheduled"]);
    let (updated, available) = (int(&s["updatedNumberScheduled"]), int(&s["numberAvailable"]));
    if updated < desired {
        return Health::InProgress(format!("{updated}/{desired} pods updated"));
    }
    if available < desired {
        return Health::InProgress(format!("{available}/{desired} pods available"));
    }
    Health::Current
}

fn replicaset(o: &Value) -> Health {
    let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = int(&o["status"]["availableReplicas"]);
    if available < want {
        return Health::InProgress(format!("{available}/{want} replicas available"));
    }
    Health::Current
}

fn job(o: &Value) -> Health {
    if condition_is(o, "Failed", "True") {
        let c = condition(o, "Failed");
        let why = c
            .and_then(|c| c["message"].as_str().or(c["reason"].as_str()))
            .unwrap_or("failed");
        return Health::Failed(format!("job failed: {why}"));
    }
    if condition_is(o, "Complete", "True") {
        return Health::Current;
    }
    let (active, succeeded) = (int(&o["status"]["active"]), int(&o["status"]["succeeded"]));
    Health::InProgress(format!("{active} active, {succeeded} succeeded"))
}

fn pod(o: &Value) -> Health {
    match o["status"]["phase"].as_str() {
        Some("Succeeded") => Health::Current,
        Some("Failed") => Health::Failed(format!(
            "pod failed: {}",
            o["status"]["reason"]
                .as_str()
                .or(o["status"]["message"].as_str())
                .unwrap_or("Failed")
        )),
        Some("Running") if condition_is(o, "Ready", "True") => Health::Current,
        phase => Health::InProgress(format!("phase {}", phase.unwrap_or("Pending"))),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn kinds_without_status_are_current_whenever_they_exist() {
        for (api_version, kind) in [
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "ServiceAccount"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ] {
            assert!(only_existence_counts(api_version, kind));
            let object = serde_json::json!({"apiVersion": api_version, "kind": kind,
                "metadata": {"name": "x", "generation": 3}, "data": {"a": "b"}});
            assert_eq!(assess(&object), Health::Current, "{kind}");
        }
        for (api_version, kind) in [
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("example.com/v1", "ConfigMap"),
        ] {
            assert!(!only_existence_counts(api_version, kind), "{kind}");
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn deployments_need_all_replicas_updated_and_available() {
        let d = |updated: i64, available: i64, total: i64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generation": 2},
                   "spec": {"replicas": 3},
                   "status": {"observedGeneration": 2, "updatedReplicas": updated, "availableReplicas": available, "replicas": total}})
        };
        assert_eq!(assess(&d(3, 3, 3)), Health::Current);
        assert!(matches!(assess(&d(2, 3, 3)), Health::InProgress(m) if m.contains("2/3 replicas updated")));
        assert!(matches!(assess(&d(3, 3, 4)), Health::InProgress(m) if m.contains("old replicas")));
        assert!(matches!(assess(&d(3, 1, 3)), Health::InProgress(m) if m.contains("1/3 replicas available")));
        let mut stale = d(3, 3, 3);
        stale["status"]["observedGeneration"] = json!(1);
        assert!(matches!(assess(&stale), Health::InProgress(m) if m.contains("observedGeneration")));
        let mut stuck = d(1, 1, 3);
        stuck["status"]["conditions"] =
            json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "x"}]);
        assert!(matches!(assess(&stuck), Health::Failed(_)));
    }

    #[test]
    fn jobs_complete_or_fail() {
        let j = |conds: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": conds, "active": 1}});
        assert_eq!(
            assess(&j(json!([{"type": "Complete", "status": "True"}]))),
            Health::Current
        );
        assert!(
            matches!(assess(&j(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]))), Health::Failed(m) if m.contains("BackoffLimitExceeded"))
        );
        assert!(matches!(assess(&j(json!([]))), Health::InProgress(_)));
    }

    #[test]
    fn statefulsets_daemonsets_replicasets_pods_and_claims() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": 2},
            "status": {"readyReplicas": 2, "currentRevision": "a", "updateRevision": "b", "updatedReplicas": 1}});
        assert!(matches!(assess(&sts), Health::InProgress(_)));
        let mut done = sts.clone();
        done["status"]["currentRevision"] = json!("b");
        assert_eq!(assess(&done), Health::Current);
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "status": {"desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert!(matches!(assess(&ds), Health::InProgress(_)));
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": {"replicas": 1}, "status": {"availableReplicas": 1}});
        assert_eq!(assess(&rs), Health::Current);
        let running = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(assess(&running), Health::Current);
        let failed = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Failed"}});
        assert!(matches!(assess(&failed), Health::Failed(_)));
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert!(matches!(assess(&pvc), Health::InProgress(_)));
    }

    #[test]
    fn services_crds_namespaces_and_generic_conditions() {
        let lb = json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}});
        assert!(matches!(assess(&lb), Health::InProgress(_)));
        let cluster_ip = json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "ClusterIP"}});
        assert_eq!(assess(&cluster_ip), Health::Current);
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(assess(&crd), Health::Current);
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Terminating"}});
        assert!(matches!(assess(&ns), Health::InProgress(_)));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(assess(&cm), Health::Current);
        let custom = |ready: &str| {
            json!({"apiVersion": "x/v1", "kind": "Thing",
            "status": {"conditions": [{"type": "Ready", "status": ready, "message": "warming up"}]}})
        };
        assert_eq!(assess(&custom("True")), Health::Current);
        assert!(matches!(assess(&custom("False")), Health::InProgress(m) if m == "warming up"));
        let stalled = json!({"apiVersion": "x/v1", "kind": "Thing",
            "status": {"conditions": [{"type": "Stalled", "status": "True", "message": "bad config"}]}});
        assert_eq!(assess(&stalled), Health::Failed("bad config".into()));
    }
}
