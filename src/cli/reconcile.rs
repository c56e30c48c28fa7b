//! `ferry reconcile`, `ferry suspend` and `ferry resume`: ask the controllers to act now, or to stop acting.
//! A request is the `ferry.dev/reconcile-requested-at` annotation (Flux's `reconcile.fluxcd.io/requestedAt`
//! under Ferry's group): changing it wakes the controller, which echoes the value in
//! `status.lastHandledReconcileAt` once it acted on it, so `--wait` knows when *this* request was handled.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::args::{ReconcileTarget, ResumeTarget, SuspendTarget, Wait};
use super::pipeline::{CliError, get};
use super::progress::Progress;
use crate::api::{Environment, GitRepository, READY, RECONCILE_REQUESTED_AT, RECONCILING};

/// How often `--wait` looks at the object.
const POLL: Duration = Duration::from_millis(500);

/// A kind whose controller honours reconcile requests and `spec.suspend`.
pub trait Reconcilable:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug
{
    /// The kind as users write it.
    const KIND: &'static str;
    fn suspended(&self) -> bool;
    /// `status.lastHandledReconcileAt`.
    fn last_handled(&self) -> Option<&str>;
    fn conditions(&self) -> &[Condition];
    /// The revision the object stands at: what a finished reconcile reports.
    fn revision(&self) -> Option<&str>;
}

impl Reconcilable for GitRepository {
    const KIND: &'static str = "GitRepository";
    fn suspended(&self) -> bool {
        self.spec.suspend
    }
    fn last_handled(&self) -> Option<&str> {
        self.status.as_ref()?.last_handled_reconcile_at.as_deref()
    }
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }
    fn revision(&self) -> Option<&str> {
        Some(self.status.as_ref()?.artifact.as_ref()?.revision.as_str())
    }
}

impl Reconcilable for Environment {
    const KIND: &'static str = "Environment";
    fn suspended(&self) -> bool {
        self.spec.suspend
    }
    fn last_handled(&self) -> Option<&str> {
        self.status.as_ref()?.last_handled_reconcile_at.as_deref()
    }
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }
    fn revision(&self) -> Option<&str> {
        self.status.as_ref()?.last_applied_revision.as_deref()
    }
}

/// Where a requested reconcile stands, from the object alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not handled yet, or handled and still converging: what is awaited.
    Waiting(String),
    /// Handled and Ready: the Ready message.
    Ready(String),
    /// Handled and not Ready: the Ready message says why.
    Failed(String),
}

/// Whether the request `token` was handled and how it ended. The controllers write the handled token in the
/// same status write as the outcome, and set `Reconciling` while work is under way, so a handled token with no
/// `Reconciling` means Ready describes this request's result.
pub fn verdict<K: Reconcilable>(object: &K, token: &str) -> Verdict {
    if object.last_handled() != Some(token) {
        return Verdict::Waiting("waiting for the controller to pick up the request".into());
    }
    let find = |t: &str| object.conditions().iter().find(|c| c.type_ == t);
    if let Some(reconciling) = find(RECONCILING).filter(|c| c.status == "True") {
        return Verdict::Waiting(reconciling.message.clone());
    }
    let generation = object.meta().generation;
    match find(READY) {
        Some(ready) if ready.observed_generation.is_some() && ready.observed_generation != generation => {
            Verdict::Waiting(format!("waiting for generation {}", generation.unwrap_or_default()))
        }
        Some(ready) if ready.status == "True" => Verdict::Ready(ready.message.clone()),
        Some(ready) if ready.status == "False" => Verdict::Failed(ready.message.clone()),
        Some(ready) => Verdict::Waiting(ready.message.clone()),
        None => Verdict::Waiting("waiting for a Ready condition".into()),
    }
}

/// A new request value: a timestamp, unique enough and readable in `kubectl get -o yaml`.
fn new_token() -> String {
    Timestamp::now().to_string()
}

/// Sets the reconcile-request annotation on `name` and returns its value. A suspended object is refused: its
/// controller would ignore the request.
pub async fn request_reconcile<K: Reconcilable>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<String, CliError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let object = get(&api, K::KIND, namespace, name).await?;
    if object.suspended() {
        return Err(CliError::Refused(format!(
            "{} {namespace}/{name} is suspended; `ferry resume {} {name}` first",
            K::KIND,
            K::KIND.to_lowercase()
        )));
    }
    let token = new_token();
    let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: token}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(token)
}

/// Polls `name` until the request `token` was handled and the object is Ready (its Ready message is
/// returned), it fails (`CliError::Failed`), or `timeout` passes.
pub async fn wait_reconciled<K: Reconcilable>(
    client: &Client,
    namespace: &str,
    name: &str,
    token: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<K, CliError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    let what = format!("{} {namespace}/{name}", K::KIND);
    loop {
        let object = get(&api, K::KIND, namespace, name).await?;
        match verdict(&object, token) {
            Verdict::Ready(_) => {
                progress.clear();
                return Ok(object);
            }
            Verdict::Failed(message) => {
                progress.clear();
                return Err(CliError::Failed(format!("{what}: {message}")));
            }
            Verdict::Waiting(message) => {
                if tokio::time::Instant::now() >= deadline {
                    progress.clear();
                    return Err(CliError::Timeout {
                        what,
                        after: timeout,
                        last: message,
                    });
                }
                progress.update(&format!("{what}: {message}"));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One object `ferry reconcile` asked to reconcile, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// `Kind namespace/name`.
    pub object: String,
    /// When waited for (`--wait`, and the source of `--with-source`): the revision it stands at, handled
    /// and Ready.
    pub revision: Option<String>,
}

/// `ferry reconcile gitrepository NAME [--wait]`.
pub async fn reconcile_gitrepository(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: Option<Duration>,
    progress: &mut Progress,
) -> Result<Vec<Reconciled>, CliError> {
    let mut done = Vec::new();
    reconcile_one::<GitRepository>(client, namespace, name, wait, progress, &mut done).await?;
    Ok(done)
}

/// `ferry reconcile environment NAME [--with-source] [--wait]`. With `with_source`, the Environment's
/// GitRepository is reconciled first and waited for (within `timeout`), so the Environment then applies
/// what the repository holds now.
pub async fn reconcile_environment(
    client: &Client,
    namespace: &str,
    name: &str,
    with_source: bool,
    wait: Option<Duration>,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<Vec<Reconciled>, CliError> {
    let mut done = Vec::new();
    if with_source {
        let env = get(
            &Api::<Environment>::namespaced(client.clone(), namespace),
            "Environment",
            namespace,
            name,
        )
        .await?;
        if env.spec.suspend {
            return Err(CliError::Refused(format!(
                "Environment {namespace}/{name} is suspended; `ferry resume environment {name}` first"
            )));
        }
        let source_ns = env.spec.source_ref.namespace.as_deref().unwrap_or(namespace);
        let source = &env.spec.source_ref.name;
        reconcile_one::<GitRepository>(client, source_ns, source, Some(timeout), progress, &mut done).await?;
    }
    reconcile_one::<Environment>(client, namespace, name, wait, progress, &mut done).await?;
    Ok(done)
}

async fn reconcile_one<K: Reconcilable>(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: Option<Duration>,
    progress: &mut Progress,
    done: &mut Vec<Reconciled>,
) -> Result<(), CliError> {
    let token = request_reconcile::<K>(client, namespace, name).await?;
    let revision = match wait {
        Some(timeout) => {
            let object = wait_reconciled::<K>(client, namespace, name, &token, timeout, progress).await?;
            Some(object.revision().unwrap_or("-").to_string())
        }
        None => None,
    };
    done.push(Reconciled {
        object: format!("{} {namespace}/{name}", K::KIND),
        revision,
    });
    Ok(())
}

/// `ferry suspend` (`suspend: true`) and `ferry resume` (`false`): sets `spec.suspend`. Resuming also asks for
/// a reconcile, so `--wait` can tell when the controller caught up; returns that request's value.
pub async fn set_suspended<K: Reconcilable>(
    client: &Client,
    namespace: &str,
    name: &str,
    suspend: bool,
) -> Result<Option<String>, CliError> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    // A missing object is an answer the user should read as such, not an API error.
    get(&api, K::KIND, namespace, name).await?;
    let token = (!suspend).then(new_token);
    let patch = match &token {
        Some(token) => serde_json::json!({
            "metadata": {"annotations": {RECONCILE_REQUESTED_AT: token}},
            "spec": {"suspend": false},
        }),
        None => serde_json::json!({"spec": {"suspend": true}}),
    };
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(token)
}

/// `ferry reconcile`: asks for a reconcile, and with `--wait` waits until it is done.
pub async fn run_reconcile(target: ReconcileTarget) -> anyhow::Result<()> {
    let mut progress = Progress::stderr();
    let done = match target {
        ReconcileTarget::Gitrepository { name, wait, ns } => {
            let (client, namespace) = ns.connect().await?;
            reconcile_gitrepository(&client, &namespace, &name, wait.deadline(), &mut progress).await?
        }
        ReconcileTarget::Environment {
            name,
            with_source,
            wait,
            ns,
        } => {
            let (client, namespace) = ns.connect().await?;
            let (deadline, timeout) = (wait.deadline(), wait.timeout);
            reconcile_environment(
                &client,
                &namespace,
                &name,
                with_source,
                deadline,
                timeout,
                &mut progress,
            )
            .await?
        }
    };
    print_reconciled(&done);
    Ok(())
}

/// `ferry reconcile`'s and `ferry resume`'s report: what was asked, and where it stands when waited for.
fn print_reconciled(done: &[Reconciled]) {
    for step in done {
        match &step.revision {
            Some(revision) => println!("✔ {} reconciled: {revision}", step.object),
            None => println!("► {} reconcile requested", step.object),
        }
    }
}

/// `ferry suspend`.
pub async fn run_suspend(target: SuspendTarget) -> anyhow::Result<()> {
    let (kind, name, namespace) = match target {
        SuspendTarget::Gitrepository { name, ns } => {
            let (client, namespace) = ns.connect().await?;
            set_suspended::<GitRepository>(&client, &namespace, &name, true).await?;
            ("GitRepository", name, namespace)
        }
        SuspendTarget::Environment { name, ns } => {
            let (client, namespace) = ns.connect().await?;
            set_suspended::<Environment>(&client, &namespace, &name, true).await?;
            ("Environment", name, namespace)
        }
    };
    println!("► {kind} {namespace}/{name} suspended");
    Ok(())
}

/// `ferry resume`: and with `--wait`, until the object reconciled.
pub async fn run_resume(target: ResumeTarget) -> anyhow::Result<()> {
    let mut progress = Progress::stderr();
    let (object, revision) = match target {
        ResumeTarget::Gitrepository { name, wait, ns } => {
            let (client, namespace) = ns.connect().await?;
            resume::<GitRepository>(&client, &namespace, &name, &wait, &mut progress).await?
        }
        ResumeTarget::Environment { name, wait, ns } => {
            let (client, namespace) = ns.connect().await?;
            resume::<Environment>(&client, &namespace, &name, &wait, &mut progress).await?
        }
    };
    match revision {
        Some(revision) => println!("✔ {object} resumed and reconciled: {revision}"),
        None => println!("► {object} resumed"),
    }
    Ok(())
}

/// `ferry resume KIND NAME [--wait]`: the object shown, and its revision when waited for.
async fn resume<K: Reconcilable>(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: &Wait,
    progress: &mut Progress,
) -> anyhow::Result<(String, Option<String>)> {
    let token = set_suspended::<K>(client, namespace, name, false).await?;
    let object = format!("{} {namespace}/{name}", K::KIND);
    let revision = match (token, wait.deadline()) {
        (Some(token), Some(timeout)) => {
            let reconciled = wait_reconciled::<K>(client, namespace, name, &token, timeout, progress).await?;
            Some(reconciled.revision().unwrap_or("-").to_string())
        }
        _ => None,
    };
    Ok((object, revision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo(generation: i64, status: serde_json::Value) -> GitRepository {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitRepository",
            "metadata": {"name": "config", "namespace": "demo", "generation": generation},
            "spec": {"url": "https://example.com/r.git"},
            "status": status,
        }))
        .expect("a GitRepository")
    }

    fn condition(type_: &str, status: &str, message: &str, generation: i64) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": "R", "message": message,
               "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn a_request_is_done_only_once_handled_and_no_longer_reconciling() {
        let ready = condition("Ready", "True", "stored revision b", 1);
        let old = repo(1, json!({"lastHandledReconcileAt": "t1", "conditions": [ready]}));
        assert!(
            matches!(verdict(&old, "t2"), Verdict::Waiting(_)),
            "another request's answer"
        );
        let busy = repo(
            1,
            json!({"lastHandledReconcileAt": "t2",
                   "conditions": [ready, condition("Reconciling", "True", "fetching", 1)]}),
        );
        assert_eq!(verdict(&busy, "t2"), Verdict::Waiting("fetching".into()));
        let done = repo(1, json!({"lastHandledReconcileAt": "t2", "conditions": [ready]}));
        assert_eq!(verdict(&done, "t2"), Verdict::Ready("stored revision b".into()));
    }

    #[test]
    fn a_handled_request_that_failed_or_describes_an_old_spec_is_told_apart() {
        let failed = repo(
            2,
            json!({"lastHandledReconcileAt": "t", "conditions": [condition("Ready", "False", "auth failed", 2)]}),
        );
        assert_eq!(verdict(&failed, "t"), Verdict::Failed("auth failed".into()));
        let stale = repo(
            3,
            json!({"lastHandledReconcileAt": "t", "conditions": [condition("Ready", "True", "old", 2)]}),
        );
        assert!(matches!(verdict(&stale, "t"), Verdict::Waiting(_)));
        let progressing = repo(
            3,
            json!({"lastHandledReconcileAt": "t", "conditions": [condition("Ready", "Unknown", "waiting for web", 3)]}),
        );
        assert_eq!(verdict(&progressing, "t"), Verdict::Waiting("waiting for web".into()));
    }
}
