//! GitRepository reconcile: fetch the ref into the shared mirror and record the resolved revision.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use super::status::patch_if_changed;
use super::{Context, ReconcileError};
use crate::api::{
    Artifact, ConditionSet, GitRepository, GitRepositoryStatus, RECONCILE_REQUESTED_AT, Reason, parse_duration,
};
use crate::secrets::SecretReader;
use crate::source::credentials::load_credentials;
use crate::source::{Credentials, FetchOptions, Revision, redact_url};

/// Share of the interval within which another GitRepository's fetch of the same mirror is reused.
const SHARED_FETCH_WINDOW: f64 = 0.9;

pub async fn reconcile(repo: Arc<GitRepository>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let span = info_span!("reconcile", kind = "GitRepository", namespace = %namespace, name = %name, revision = tracing::field::Empty);
    reconcile_inner(repo, ctx, namespace, name).instrument(span).await
}

/// The reader of `repo`'s Secrets as the controller reads them; an invalid `serviceAccountName` is the user's
/// problem (stalled: only a change of spec fixes it).
fn reader_of(ctx: &Context, repo: &GitRepository) -> Result<SecretReader, (Reason, String, bool)> {
    ctx.readers()
        .for_repository(repo)
        .map_err(|e| (Reason::InvalidSpec, e.to_string(), true))
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
            let failure = (Reason::InvalidSpec, e.to_string(), true);
            report_failure(&ctx, &api, &repo, old, &mut status, failure, now).await?;
            return Ok(Action::await_change());
        }
    };
    if repo.spec.suspend {
        info!("suspended; not fetching");
        return Ok(Action::await_change());
    }
    let requeue = Action::requeue(interval.max(Duration::from_secs(1)));

    // A "reconcile now" request (by hand or from a webhook) forces a network fetch. It is handled by this
    // reconcile whatever its outcome, so even a failure below answers it (`ferry reconcile --wait` reports it).
    let requested = repo.annotations().get(RECONCILE_REQUESTED_AT).cloned();
    let forced = requested.is_some() && requested != status.last_handled_reconcile_at;
    status.last_handled_reconcile_at = requested.or(status.last_handled_reconcile_at);
    let creds = match reader_of(&ctx, &repo) {
        Ok(reader) => load_credentials(&reader, &repo).await?,
        Err(failure) => Err(failure),
    };
    let creds = match creds {
        Ok(c) => c,
        Err(failure) => {
            report_failure(&ctx, &api, &repo, old, &mut status, failure, now).await?;
            return Ok(requeue);
        }
    };
    let opts = FetchOptions {
        timeout,
        max_age: if forced {
            Duration::ZERO
        } else {
            interval.mul_f64(SHARED_FETCH_WINDOW)
        },
        max_bytes: ctx.settings.max_repo_bytes,
        allow_file: ctx.settings.allow_file_urls,
    };

    // Say so before the first fetch for a new spec; a steady state (failing or not) writes nothing here.
    let mut written = old.cloned();
    if old.and_then(|o| o.observed_generation) != generation {
        let message = format!("fetching {} from {}", describe_ref(&repo), redact_url(&repo.spec.url));
        ConditionSet::reconciling(&mut status.conditions, message, generation, now);
        if patch_if_changed(&api, &name, old, &status).await? {
            written = Some(status.clone());
        }
    }
    let old = written.as_ref();

    let url = repo.spec.url.clone();
    let reference = repo.spec.effective_ref();
    let mirrors = ctx.mirrors.clone();
    let fetch_creds = creds.clone();
    let started = std::time::Instant::now();
    let fetch = tokio::task::spawn_blocking(move || mirrors.fetch(&url, &reference, &fetch_creds, &opts));
    // libgit2 checks the deadline only when data arrives: a server that accepts and never answers, or trickles,
    // would hold this reconcile for ever. The answer is given on time; the blocking fetch itself ends at
    // libgit2's socket timeout (see `source::mirror`), and until then a new fetch of the URL waits its turn.
    let fetched = match tokio::time::timeout(timeout, fetch).await {
        Ok(joined) => joined.map_err(|e| ReconcileError::Internal(e.to_string()))?,
        Err(_) => Err(crate::source::SourceError::Timeout {
            url: redact_url(&repo.spec.url),
            seconds: timeout.as_secs(),
        }),
    };
    let network = fetched.as_ref().map_or(true, |f| f.network);
    crate::metrics::metrics().git_fetched(started.elapsed().as_secs_f64(), network);

    let previous = status.artifact.as_ref().and_then(|a| Revision::parse(&a.revision));
    match fetched {
        Ok(fetched) => {
            let revision = fetched.revision.render();
            tracing::Span::current().record("revision", revision.as_str());
            status.artifact = Some(Artifact {
                revision: revision.clone(),
                url: redact_url(&repo.spec.url),
            });
            ConditionSet::ready(
                &mut status.conditions,
                format!("stored revision {revision}"),
                generation,
                now,
            );
            patch_if_changed(&api, &name, old, &status).await?;
            if previous.as_ref() != Some(&fetched.revision) {
                info!(%revision, network = fetched.network, "new revision");
                let note = format!("fetched revision {revision} from {}", redact_url(&repo.spec.url));
                ctx.event(repo.as_ref(), false, "NewRevision", note).await;
                if let Some(prev) = previous.filter(|p| p.name == fetched.revision.name) {
                    report_rewrite(&ctx, &repo, &creds, &prev, &fetched.revision).await;
                }
            }
        }
        Err(e) => {
            let failure = (e.reason(), e.to_string(), e.is_stalled());
            report_failure(&ctx, &api, &repo, old, &mut status, failure, now).await?;
        }
    }
    Ok(requeue)
}

fn describe_ref(repo: &GitRepository) -> String {
    let r = repo.spec.effective_ref();
    match (r.commit, r.tag, r.semver, r.branch) {
        (Some(c), ..) => format!("commit {c}"),
        (_, Some(t), ..) => format!("tag {t}"),
        (_, _, Some(s), _) => format!("the highest tag matching {s}"),
        (_, _, _, b) => format!("branch {}", b.unwrap_or_else(|| "main".into())),
    }
}

/// A branch that moved to a commit not descending from the previous one (force-push), or a tag that moved:
/// followed, because that is what Git says now, but reported, because it rewrites what was deployed.
async fn report_rewrite(ctx: &Context, repo: &GitRepository, creds: &Credentials, prev: &Revision, new: &Revision) {
    let is_tag = repo.spec.effective_ref().tag.is_some();
    let (mirrors, url, identity) = (ctx.mirrors.clone(), repo.spec.url.clone(), creds.identity.clone());
    let (new_commit, prev_commit) = (new.commit.clone(), prev.commit.clone());
    // A history walk: off the async runtime.
    let descends = tokio::task::spawn_blocking(move || mirrors.descends(&url, &identity, &new_commit, &prev_commit))
        .await
        .ok()
        .flatten();
    if is_tag {
        let note = format!("tag {} moved from {} to {}", new.name, prev.commit, new.commit);
        warn!(%note);
        ctx.event(repo, true, "TagMoved", note).await;
    } else if descends == Some(false) {
        let note = format!(
            "history of {} was rewritten (force-push): {} does not descend from {}",
            new.name, new.commit, prev.commit
        );
        warn!(%note);
        ctx.event(repo, true, "HistoryRewritten", note).await;
    }
}

async fn report_failure(
    ctx: &Context,
    api: &Api<GitRepository>,
    repo: &GitRepository,
    old: Option<&GitRepositoryStatus>,
    status: &mut GitRepositoryStatus,
    (reason, message, stalled): (Reason, String, bool),
    now: Timestamp,
) -> Result<(), ReconcileError> {
    // Messages never hold credentials (URLs are redacted at the source); the last good artifact stays.
    let message = match &status.artifact {
        Some(a) => format!("{message}; still serving {}", a.revision),
        None => message,
    };
    warn!(%reason, error = %message, "fetch failed");
    let generation = status.observed_generation;
    ConditionSet::failed(
        &mut status.conditions,
        reason,
        message.clone(),
        stalled,
        generation,
        now,
    );
    if patch_if_changed(api, &repo.name_any(), old, status).await? {
        ctx.event(repo, true, reason.as_str(), message).await;
    }
    Ok(())
}
