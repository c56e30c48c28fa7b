//! `ferry render` and `ferry diff`: what the controller would render, and what applying it would change, as a
//! unified diff per object. `--environment` diffs exactly what the controller would apply: the revision it
//! would choose (a promoted Environment's active Promotion, else its last applied revision; the
//! GitRepository's head otherwise), fetched from the real URL with the GitRepository's credentials, into the
//! Environment's target cluster.

use std::path::Path;

use kube::{Api, Client, ResourceExt};

use super::pipeline::{CliError, get};
use super::target::environment_target;
use crate::api::{Environment, GitRepository};
use crate::apply::{ApplyError, ApplyOptions, ObjectDiff};
use crate::controllers::ReconcileError;
use crate::format::unified;
use crate::registry::RegistrySettings;
use crate::render::{RenderError, RenderSettings, Rendered, render_path};
use crate::secrets::Readers;
use crate::source::{FetchOptions, MirrorStore, Revision, SourceError};
use crate::sync::{Copies, Failure, Pipeline, apply_options};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Cli(#[from] CliError),
    /// The Environment has nothing to diff yet; the message says why.
    #[error("{0}")]
    NoRevision(String),
    #[error("fetching the revision: {0}")]
    Source(#[from] SourceError),
    #[error("rendering: {0}")]
    Render(#[from] RenderError),
    #[error(transparent)]
    Decrypt(#[from] crate::decrypt::DecryptError),
    /// A step of the controller's pipeline failed as it would fail the sync.
    #[error(transparent)]
    Sync(#[from] Failure),
    #[error("dry run: {0}")]
    Apply(#[from] ApplyError),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<ReconcileError> for DiffError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::Kube(e) => DiffError::Kube(e),
            ReconcileError::Internal(e) => DiffError::Internal(e),
        }
    }
}

/// Renders `path` of a local checkout as the controller would.
pub async fn render_local(dir: &Path, path: &str, settings: &RenderSettings) -> Result<Rendered, DiffError> {
    Ok(render_path(dir, path, settings).await?)
}

/// Renders `path` of a local checkout and decrypts its SOPS-encrypted documents (and secretGenerator files)
/// with the age identities in `keyfile`, in memory: `ferry render --decrypt-with`, for debugging.
pub async fn render_local_decrypted(
    dir: &Path,
    path: &str,
    settings: &RenderSettings,
    keyfile: &Path,
) -> Result<Rendered, DiffError> {
    let rendered = render_path(dir, path, settings).await?;
    let shown = keyfile.display().to_string();
    let text = std::fs::read(keyfile).map_err(|e| DiffError::Internal(format!("reading {shown}: {e}")))?;
    let keys = crate::decrypt::Keyring::parse(&text, &shown)?;
    if keys.is_empty() {
        return Err(DiffError::Internal(format!(
            "{shown} holds no age identity (AGE-SECRET-KEY-1…)"
        )));
    }
    Ok(crate::decrypt::decrypt_render(dir, path, &rendered, &keys, settings)
        .await?
        .unwrap_or(rendered))
}

/// What applying a local checkout's `path` into `namespace` would change.
pub async fn diff_local(
    client: Client,
    dir: &Path,
    path: &str,
    namespace: &str,
    settings: &RenderSettings,
) -> Result<Vec<ObjectDiff>, DiffError> {
    let rendered = render_path(dir, path, settings).await?;
    let opts = ApplyOptions {
        owner: None,
        target_namespace: None,
        default_namespace: namespace.to_string(),
        force: false,
    };
    Ok(crate::apply::Applier::new(client)
        .diff(&rendered.objects, &opts)
        .await?)
}

/// The revision the controller would apply to `env` now, as it decides it: for a promoted Environment the
/// active Promotion's revision, else the one it applied last (it never follows the repository's head); for
/// any other the GitRepository's revision.
pub async fn environment_revision(
    client: &Client,
    env: &Environment,
    repo: &GitRepository,
) -> Result<String, DiffError> {
    let namespace = env.namespace().unwrap_or_default();
    let name = env.name_any();
    if env.spec.promotion.is_some() {
        let promotions = crate::promotion::promotions_of(client, &namespace, &name).await?;
        if let Some(active) = crate::promotion::active(&promotions) {
            return Ok(active.spec.revision.clone());
        }
        return env
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.clone())
            .ok_or_else(|| {
                DiffError::NoRevision(format!(
                    "Environment {namespace}/{name} is promoted and has applied nothing yet: it waits for a Promotion"
                ))
            });
    }
    repo.status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .map(|a| a.revision.clone())
        .ok_or_else(|| DiffError::NoRevision(format!("GitRepository {} has no revision yet", repo.name_any())))
}

/// What the Environment would change if it synced now. Returns the revision diffed. `config` is what
/// `client` was built from (for Environments that apply to another cluster).
pub async fn diff_environment(
    client: Client,
    config: &kube::Config,
    namespace: &str,
    name: &str,
    settings: &RenderSettings,
) -> Result<(String, Vec<ObjectDiff>), DiffError> {
    let registry = RegistrySettings::default();
    let d = diff_environment_checked(client, config, namespace, name, settings, &registry).await?;
    Ok((d.revision, d.diffs))
}

/// What `ferry diff --environment` reports: the revision, the diffs, and what the cluster's RegistryPolicies
/// find (`None`: they could not be read).
pub struct EnvironmentDiff {
    pub revision: String,
    pub diffs: Vec<ObjectDiff>,
    pub policy: Option<crate::policy::Evaluation>,
}

/// [`diff_environment`], plus the registry-policy check the controller would make before its dry run.
/// `registry`: how image registries are reached, for digests the Environment has not recorded yet.
pub async fn diff_environment_checked(
    client: Client,
    config: &kube::Config,
    namespace: &str,
    name: &str,
    settings: &RenderSettings,
    registry: &RegistrySettings,
) -> Result<EnvironmentDiff, DiffError> {
    let target = |env: &Environment| {
        let (client, config, env) = (client.clone(), config.clone(), env.clone());
        async move { environment_target(&client, &config, &env).await }
    };
    let secrets = Readers::Caller(&client);
    diff_environment_at(
        client.clone(),
        namespace,
        name,
        None,
        settings,
        registry,
        true,
        secrets,
        target,
    )
    .await
}

/// What applying `revision` (default: the one the controller would choose) to the Environment would change,
/// in the cluster `target` gives for it (the CLI: the caller's own, or the kubeConfig's; the web view in the
/// cluster: the one the controller applies with). `allow_file`: accept `file://` repository URLs (the CLI, on
/// the user's own machine; in the cluster only what the controller itself accepts). `secrets`: who reads the
/// Secrets the objects name (the CLI: the caller; the web view in the cluster: each object's ServiceAccount, as
/// the controller does). The objects come from the controller's own pipeline ([`crate::sync::plan`]): render,
/// image digests, decryption, apply options.
#[allow(clippy::too_many_arguments)]
pub async fn diff_environment_at<F, Fut>(
    client: Client,
    namespace: &str,
    name: &str,
    revision: Option<String>,
    settings: &RenderSettings,
    registry: &RegistrySettings,
    allow_file: bool,
    secrets: Readers<'_>,
    target: F,
) -> Result<EnvironmentDiff, DiffError>
where
    F: FnOnce(&Environment) -> Fut,
    Fut: std::future::Future<Output = Result<crate::cluster::Target, CliError>>,
{
    let env = get(
        &Api::<Environment>::namespaced(client.clone(), namespace),
        "Environment",
        namespace,
        name,
    )
    .await?;
    let source_ns = env
        .spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.to_string());
    let repo = get(
        &Api::<GitRepository>::namespaced(client.clone(), &source_ns),
        "GitRepository",
        &source_ns,
        &env.spec.source_ref.name,
    )
    .await?;
    let full_revision = match revision {
        Some(r) => r,
        None => environment_revision(&client, &env, &repo).await?,
    };
    let revision = Revision::parse(&full_revision)
        .ok_or_else(|| DiffError::NoRevision(format!("revision {full_revision:?} is not understood")))?;
    let target = target(&env).await?;
    // The controller's pipeline, with short-lived caches: a fresh mirror fetched from the real URL with the
    // GitRepository's credentials, `secrets` for Secrets (the caller, who must be allowed to read them, or the
    // objects' ServiceAccounts; the diff masks Secret values), and image copies only planned.
    let storage = tempfile::tempdir().map_err(|e| DiffError::Internal(format!("a temporary directory: {e}")))?;
    let (mirrors, renders, capabilities) = (
        MirrorStore::new(storage.path()),
        crate::render::RenderCache::new(settings.cache_bytes),
        crate::sync::CapabilityCache::default(),
    );
    let pipeline = Pipeline {
        client: &client,
        secrets,
        env: &env,
        mirrors: &mirrors,
        renders: &renders,
        capabilities: &capabilities,
        render: settings,
        fetch: FetchOptions {
            allow_file,
            ..FetchOptions::default()
        },
        registry,
        copies: Copies::Plan,
    };
    // Digests decided before for this revision are in the Environment's history, as the controller reads them.
    let mut status = env.status.clone().unwrap_or_default();
    let prepared = pipeline
        .prepare(&target, &repo, &full_revision, &revision.commit, &mut status, false)
        .await??;
    // Decrypted, then pinned: what the controller applies and its policy checks.
    let objects = prepared.objects();
    let diffs = target.applier.diff(objects, &apply_options(&env)).await?;
    let policy = super::policy::cluster_policies(&client)
        .await?
        .map(|policies| super::policy::check(&policies, Some(&env), namespace, objects));
    Ok(EnvironmentDiff {
        revision: full_revision,
        diffs,
        policy,
    })
}

/// `ferry diff`: a unified diff per object on stdout; exits 0 without differences, 1 with some, 3 when a Deny
/// RegistryPolicy would stop the revision.
pub async fn run(args: crate::cli::args::DiffArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    use anyhow::Context as _;
    let crate::cli::args::DiffArgs {
        environment,
        dir,
        path,
        namespace,
        kustomize,
        helm,
        no_color,
        insecure_registries,
    } = args;
    let settings = RenderSettings {
        kustomize,
        helm,
        sandbox: super::render::sandboxed()?,
        ..Default::default()
    };
    let config = kube::Config::infer().await.context("loading the kubeconfig")?;
    let client = Client::try_from(config.clone()).context("connecting to the cluster")?;
    let policy;
    let diffs = match (environment, dir) {
        (Some(env), _) => {
            let (ns, name) = env
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("--environment takes namespace/name"))?;
            let registry = RegistrySettings {
                insecure: insecure_registries,
            };
            let d = diff_environment_checked(client, &config, ns, name, &settings, &registry).await?;
            eprintln!(
                "Environment {ns}/{name} at {}: {} object(s) differ",
                d.revision,
                d.diffs.len()
            );
            policy = d.policy;
            d.diffs
        }
        (None, Some(dir)) => {
            let rendered = render_local(&dir, &path, &settings).await?;
            if let Some(warning) = super::unchecked_encrypted(&rendered) {
                eprintln!("{warning}");
            }
            policy = super::cluster_policies(&client)
                .await?
                .map(|policies| super::check_registry_policy(&policies, None, &namespace, &rendered.objects));
            diff_local(client, &dir, &path, &namespace, &settings).await?
        }
        (None, None) => anyhow::bail!("give --environment ns/name or a checkout directory"),
    };
    let color = super::color_enabled(no_color, std::io::stdout().is_terminal());
    for d in &diffs {
        print!("{}", unified(d, color));
    }
    match &policy {
        Some(found) => eprint!("{}", super::format_violations(found)),
        None => {
            eprintln!("RegistryPolicies could not be read (not installed, or not allowed): images not checked")
        }
    }
    // 3: a Deny policy would stop the revision, whatever the diff.
    let denied = policy.as_ref().is_some_and(|p| p.denied());
    std::process::exit(if denied {
        3
    } else if diffs.is_empty() {
        0
    } else {
        1
    });
}
