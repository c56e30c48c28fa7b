//! GitRepository reconcile: fetch the ref into the shared mirror and record the resolved revision.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::status::patch_if_changed;
use super::{Context, ReconcileError};
use crate::api::{Artifact, ConditionSet, GitRepository, Reason, parse_duration};
use crate::source::{FetchOptions, SourceError, redact_url};

pub async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let span = info_span!("reconcile", kind = "GitRepository", namespace = %namespace, name = %name, revision = tracing::field::Empty);
    reconcile_inner(repo, ctx, namespace, name).instrument(span).await
}

async fn reconcile_inner(
    repo: Arc<GitRepository>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
) -> Result<Action, ReconcileError> {
    let api: Api<GitRepository> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = repo.status.as_ref();
    let mut status = old.cloned().unwrap_or_default();
    let generation = repo.metadata.generation;
    let now = Timestamp::now();
    status.observed_generation = generation;

    let settings = parse_duration(&repo.spec.interval).and_then(|interval| {
        let timeout = match &repo.spec.timeout {
            Some(t) => parse_duration(t)?,
            None => FetchOptions::default().timeout,
        };
        Ok((interval, timeout))
    });
    let (interval, timeout) = match settings {
        Ok(s) => s,
        Err(e) => {
            ConditionSet::failed(
                &mut status.conditions,
                Reason::InvalidSpec,
                e.to_string(),
                true,
                generation,
                now,
            );
            if patch_if_changed(&api, &name, old, &status).await? {
                ctx.event(repo.as_ref(), true, Reason::InvalidSpec.as_str(), e.to_string())
                    .await;
            }
            return Ok(Action::await_change());
        }
    };
    if repo.spec.suspend {
        info!("suspended; not fetching");
        return Ok(Action::await_change());
    }

    let url = repo.spec.url.clone();
    let reference = repo.spec.effective_ref();
    let mirrors = ctx.mirrors.clone();
    let fetched = tokio::task::spawn_blocking(move || mirrors.fetch(&url, &reference, &FetchOptions { timeout }))
        .await
        .map_err(|e| ReconcileError::Internal(e.to_string()))?;

    let previous = status.artifact.as_ref().map(|a| a.revision.clone());
    match fetched {
        Ok(revision) => {
            let revision = revision.render();
            tracing::Span::current().record("revision", revision.as_str());
            status.artifact = Some(Artifact {
                revision: revision.clone(),
                url: repo.spec.url.clone(),
            });
            ConditionSet::ready(
                &mut status.conditions,
                format!("stored revision {revision}"),
                generation,
                now,
            );
            patch_if_changed(&api, &name, old, &status).await?;
            if previous.as_deref() != Some(revision.as_str()) {
                info!(%revision, "new revision");
                let note = format!("fetched revision {revision} from {}", redact_url(&repo.spec.url));
                ctx.event(repo.as_ref(), false, "NewRevision", note).await;
            }
        }
        Err(e) => {
            report_failure(&ctx, &api, &repo, old, &mut status, &e, generation, now).await?;
        }
    }
    Ok(Action::requeue(interval.max(Duration::from_secs(1))))
}

#[allow(clippy::too_many_arguments)]
async fn report_failure(
    ctx: &Context,
    api: &Api<GitRepository>,
    repo: &GitRepository,
    old: Option<&crate::api::GitRepositoryStatus>,
    status: &mut crate::api::GitRepositoryStatus,
    e: &SourceError,
    generation: Option<i64>,
    now: Timestamp,
) -> Result<(), ReconcileError> {
    // The message already has credentials redacted; the last good artifact stays for consumers.
    let message = match &status.artifact {
        Some(a) => format!("{e}; still serving {}", a.revision),
        None => e.to_string(),
    };
    warn!(reason = %e.reason(), error = %message, "fetch failed");
    ConditionSet::failed(
        &mut status.conditions,
        e.reason(),
        message.clone(),
        e.is_stalled(),
        generation,
        now,
    );
    if patch_if_changed(api, &repo.name_any(), old, status).await? {
        ctx.event(repo, true, e.reason().as_str(), message).await;
    }
    Ok(())
}
