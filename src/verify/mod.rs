//! Acceptance tests as Jobs: building the Job for one attempt at one revision from the Environment's template,
//! and reading its outcome. Pure, so the rules are unit-tested; the Environment controller creates and polls.

use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use crate::api::RevisionRecord;

/// Label on verification Jobs and their pods: the commit under test.
pub const REVISION_LABEL: &str = "ferry.dev/revision";
/// Label on verification Jobs and their pods: the Environment they verify. Not Ferry's ownership label, so
/// nothing treats a Job as an applied object.
pub const ENVIRONMENT_LABEL: &str = "ferry.dev/verification-for";
/// Label on verification Jobs: which attempt (1-based) this is.
pub const ATTEMPT_LABEL: &str = "ferry.dev/verification-attempt";

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verification.jobTemplate is invalid: {0}")]
    InvalidTemplate(String),
}

/// How a verification Job ended, or that it has not.
#[derive(Debug, PartialEq)]
pub enum JobOutcome {
    Running,
    Succeeded,
    Failed(String),
}

/// Six hex digits naming one verification run: the Environment (with its namespace, so Environments of the
/// same name in two namespaces never share a Job), the promotion and when the revision was applied. A rollback
/// to a revision verified before, or the same commit coming back, is a new run with new Jobs: a verdict is never
/// borrowed from an earlier run's Job.
pub fn run_token(namespace: &str, environment: &str, record: &RevisionRecord) -> String {
    use sha2::Digest;
    let applied = record.applied_at.as_ref().map(|t| t.0.as_second()).unwrap_or_default();
    let promotion = record
        .promotion_uid
        .as_deref()
        .or(record.promotion.as_deref())
        .unwrap_or_default();
    let digest = sha2::Sha256::digest(format!(
        "{namespace}/{environment}/{promotion}/{}/{applied}",
        record.revision
    ));
    digest.iter().take(3).map(|b| format!("{b:02x}")).collect()
}

/// `<env>-verify-<commit[..8]>-<run token>-<attempt>`, kept within the 63 characters a `job-name` pod label
/// allows.
pub fn job_name(environment: &str, commit: &str, token: &str, attempt: u32) -> String {
    let short = commit.get(..8).unwrap_or(commit);
    let suffix = format!("-verify-{short}-{token}-{attempt}");
    let room = 63 - suffix.len();
    let mut env: String = environment.chars().take(room).collect();
    while env.ends_with('-') || env.ends_with('.') {
        env.pop();
    }
    format!("{env}{suffix}")
}

/// The Job for one attempt: the template's labels and spec, Ferry's name and labels, the revision in every
/// container's environment, `backoffLimit: 0` unless the template sets one (Ferry's `retries` count Jobs) and
/// `ttlSecondsAfterFinished: 86400` unless set (Ferry reads the outcome within seconds; old Jobs go away).
pub fn build_job(
    template: &Value,
    name: &str,
    namespace: &str,
    environment: &str,
    revision: &str,
    commit: &str,
    attempt: u32,
) -> Result<Job, VerifyError> {
    let invalid = |m: &str| VerifyError::InvalidTemplate(m.to_string());
    let template = template.as_object().ok_or_else(|| invalid("must be an object"))?;
    if let Some(unknown) = template.keys().find(|k| *k != "metadata" && *k != "spec") {
        return Err(invalid(&format!(
            "unknown field {unknown:?}; expected metadata and spec"
        )));
    }
    let mut spec = template
        .get("spec")
        .cloned()
        .ok_or_else(|| invalid("spec is required"))?;
    let spec_obj = spec.as_object_mut().ok_or_else(|| invalid("spec must be an object"))?;
    spec_obj.entry("backoffLimit").or_insert(json!(0));
    spec_obj.entry("ttlSecondsAfterFinished").or_insert(json!(86_400));
    let pod_spec = spec_obj
        .get_mut("template")
        .and_then(|t| t.as_object_mut())
        .ok_or_else(|| invalid("spec.template (the pod template) is required"))?;
    let labels = json!({
        REVISION_LABEL: commit,
        ENVIRONMENT_LABEL: environment,
    });
    let pod_meta = pod_spec
        .entry("metadata")
        .or_insert(json!({}))
        .as_object_mut()
        .ok_or_else(|| invalid("spec.template.metadata must be an object"))?;
    add_labels(pod_meta, &labels)?;
    let containers = pod_spec
        .get_mut("spec")
        .and_then(|s| s.get_mut("containers"))
        .and_then(|c| c.as_array_mut())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("spec.template.spec.containers must list at least one container"))?;
    for c in containers {
        let env = c
            .as_object_mut()
            .ok_or_else(|| invalid("every container must be an object"))?
            .entry("env")
            .or_insert(json!([]));
        let env = env
            .as_array_mut()
            .ok_or_else(|| invalid("container env must be a list"))?;
        env.retain(|e| {
            !matches!(
                e.get("name").and_then(Value::as_str),
                Some("FERRY_REVISION" | "FERRY_ENVIRONMENT")
            )
        });
        env.push(json!({"name": "FERRY_REVISION", "value": revision}));
        env.push(json!({"name": "FERRY_ENVIRONMENT", "value": environment}));
    }
    let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = metadata
        .as_object_mut()
        .ok_or_else(|| invalid("metadata must be an object"))?;
    meta.retain(|k, _| k == "labels" || k == "annotations");
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    add_labels(meta, &labels)?;
    add_labels(meta, &json!({ ATTEMPT_LABEL: attempt.to_string() }))?;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec});
    serde_json::from_value(job).map_err(|e| VerifyError::InvalidTemplate(e.to_string()))
}

/// Sets `labels` in a metadata object's `labels`, over the template's own.
fn add_labels(meta: &mut serde_json::Map<String, Value>, labels: &Value) -> Result<(), VerifyError> {
    let target = meta
        .entry("labels")
        .or_insert(json!({}))
        .as_object_mut()
        .ok_or_else(|| VerifyError::InvalidTemplate("labels must be a map".into()))?;
    for (k, v) in labels.as_object().into_iter().flatten() {
        target.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// The Job's verdict from its conditions (`Complete`/`SuccessCriteriaMet`, `Failed`/`FailureTarget`).
pub fn job_outcome(job: &Job) -> JobOutcome {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return JobOutcome::Succeeded,
            "Failed" | "FailureTarget" => {
                let why = [c.reason.as_deref(), c.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ");
                return JobOutcome::Failed(if why.is_empty() { "Job failed".into() } else { why });
            }
            _ => {}
        }
    }
    JobOutcome::Running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Value {
        json!({
            "metadata": {"labels": {"suite": "smoke"}, "name": "ignored"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "t", "image": "curlimages/curl", "env": [{"name": "FERRY_REVISION", "value": "spoofed"}]}
            ]}}}
        })
    }

    #[test]
    fn job_carries_name_labels_revision_and_no_pod_retries() {
        let job = build_job(
            &template(),
            "web-verify-abc-1",
            "apps",
            "web",
            "main@sha1:abc",
            "abc",
            1,
        )
        .unwrap();
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["metadata"]["name"], "web-verify-abc-1");
        assert_eq!(v["metadata"]["namespace"], "apps");
        assert_eq!(v["metadata"]["labels"]["suite"], "smoke");
        assert_eq!(v["metadata"]["labels"][REVISION_LABEL], "abc");
        assert_eq!(v["metadata"]["labels"][ATTEMPT_LABEL], "1");
        assert_eq!(v["spec"]["template"]["metadata"]["labels"][REVISION_LABEL], "abc");
        assert_eq!(v["spec"]["backoffLimit"], 0);
        assert_eq!(v["spec"]["ttlSecondsAfterFinished"], 86_400);
        assert_eq!(v["metadata"]["labels"][ENVIRONMENT_LABEL], "web");
        assert!(v["metadata"]["labels"].get(crate::apply::OWNER_NAME_LABEL).is_none());
        let env = v["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        let revisions: Vec<_> = env.iter().filter(|e| e["name"] == "FERRY_REVISION").collect();
        assert_eq!(revisions.len(), 1, "the template cannot spoof the revision");
        assert_eq!(revisions[0]["value"], "main@sha1:abc");
    }

    #[test]
    fn a_template_backoff_limit_is_kept() {
        let mut t = template();
        t["spec"]["backoffLimit"] = json!(3);
        let job = build_job(&t, "n", "ns", "e", "r", "c", 1).unwrap();
        assert_eq!(job.spec.unwrap().backoff_limit, Some(3));
    }

    #[test]
    fn invalid_templates_say_what_is_wrong() {
        let no_containers = json!({"spec": {"template": {"spec": {"containers": []}}}});
        let cases = [
            (json!("job"), "object"),
            (json!({"spec": {}}), "spec.template"),
            (no_containers, "at least one container"),
            (
                json!({"spec": {"template": {}}, "kind": "Job"}),
                "unknown field \"kind\"",
            ),
        ];
        for (t, expected) in cases {
            let err = build_job(&t, "n", "ns", "e", "r", "c", 1).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn job_names_fit_a_label_value() {
        let long = "a".repeat(100);
        let name = job_name(&long, "0123456789abcdef", "a1b2c3", 12);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-verify-01234567-a1b2c3-12"));
        assert_eq!(
            job_name("web", "0123456789abcdef", "a1b2c3", 1),
            "web-verify-01234567-a1b2c3-1"
        );
    }

    #[test]
    fn every_run_has_its_own_token() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let record = |promotion: Option<&str>, applied: i64| RevisionRecord {
            revision: "main@sha1:abc".into(),
            phase: crate::api::RevisionPhase::Verifying,
            promotion: promotion.map(String::from),
            promotion_uid: None,
            applied_at: Some(Time(k8s_openapi::jiff::Timestamp::from_second(applied).unwrap())),
            finished_at: None,
            attempts: 0,
            job: None,
            message: None,
            images: Vec::new(),
        };
        let first = run_token("apps", "prod", &record(Some("p1"), 100));
        assert_eq!(
            first,
            run_token("apps", "prod", &record(Some("p1"), 100)),
            "stable across restarts"
        );
        assert_eq!(first.len(), 6);
        for other in [
            run_token("apps", "prod", &record(Some("rollback"), 100)),
            run_token("apps", "prod", &record(Some("p1"), 200)),
            run_token("team-b", "prod", &record(Some("p1"), 100)),
        ] {
            assert_ne!(first, other);
        }
    }

    #[test]
    fn outcome_from_conditions() {
        let job = |t: &str, s: &str| -> Job {
            serde_json::from_value(json!({"status": {"conditions": [
                {"type": t, "status": s, "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
            ]}}))
            .unwrap()
        };
        assert_eq!(job_outcome(&job("Complete", "True")), JobOutcome::Succeeded);
        assert_eq!(job_outcome(&job("Complete", "False")), JobOutcome::Running);
        assert!(
            matches!(job_outcome(&job("Failed", "True")), JobOutcome::Failed(m) if m.contains("BackoffLimitExceeded"))
        );
        assert_eq!(job_outcome(&Job::default()), JobOutcome::Running);
    }
}
