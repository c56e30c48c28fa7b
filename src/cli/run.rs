//! `ferry run`: the controller, the webhook receiver, metrics, probes and the web view, with the settings
//! its flags give.

use std::sync::Arc;

use anyhow::Context as _;

use crate::cli::args::RunArgs;
use crate::controllers::{self, Context, Scope, Settings};

/// The controller, the webhook receiver, metrics and probes, until SIGTERM or Ctrl-C. With leader election the
/// controllers start only once this process holds the Lease, and the process exits if it loses it (a
/// restarted process stands by again), so two replicas never apply at once.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // libgit2's transfer timeout only runs while data flows; these bound a server that accepts a
    // connection and then says nothing. Set once, before any fetch.
    // SAFETY: called before any other libgit2 use in this process.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(30_000)?;
        git2::opts::set_server_timeout_in_milliseconds(120_000)?;
    }
    let identity = args.leader_election_identity.clone().unwrap_or_else(default_identity);
    let mut config = kube::Config::infer()
        .await
        .context("loading the kubeconfig or in-cluster config")?;
    // The audit log then tells replicas apart.
    if let Ok(agent) = http::HeaderValue::from_str(&format!("ferry/{} ({identity})", env!("CARGO_PKG_VERSION"))) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let client = client_with_rate_limit(config.clone(), args.kube_api_qps)?;
    let worker = worker_settings(&args)?;
    // One worker at start says which walls this node allows: logged, and shown by /readyz and the metric.
    match crate::render::sandbox::probe(&worker).await {
        Ok(walls) if walls.holds() => tracing::info!(sandbox = %walls.summary(), "render sandbox"),
        Ok(walls) if worker.allow_unconfined => tracing::warn!(
            sandbox = %walls.summary(),
            "render sandbox unavailable: kustomize and helm run without it (--insecure-render-without-sandbox)"
        ),
        Ok(walls) => tracing::warn!(
            sandbox = %walls.summary(),
            "render sandbox unavailable: kustomize and helm paths will fail with SandboxUnavailable"
        ),
        Err(e) => tracing::warn!(error = %e, "the render worker could not be started"),
    }
    let settings = settings(&args, crate::render::Sandbox::Worker(worker));
    let receiver_identity = crate::receiver::Identity {
        client: client.clone(),
        config: config.clone(),
        default_service_account: settings.default_service_account.clone(),
    };
    let ctx = Arc::new(Context::new(client, config, settings));
    let process = crate::endpoints::Process::new(ctx.clone());

    let bind = |addr: std::net::SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} to {addr}"))
    };
    let webhook = bind(args.webhook_addr, "webhook receiver").await?;
    let metrics = bind(args.metrics_addr, "metrics endpoint").await?;
    let probes = bind(args.probe_addr, "probe endpoint").await?;
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        webhook_addr = %args.webhook_addr,
        metrics_addr = %args.metrics_addr,
        probe_addr = %args.probe_addr,
        %identity,
        leader_elect = args.leader_elect,
        default_service_account = ctx.settings.default_service_account.as_deref().unwrap_or("<none: ferry's own>"),
        no_cross_namespace_refs = ctx.settings.no_cross_namespace_refs,
        "ferry starting"
    );
    let servers = [
        tokio::spawn(crate::receiver::serve(
            webhook,
            receiver_identity,
            args.namespace.clone(),
            shutdown_signal(),
        )),
        tokio::spawn(crate::endpoints::serve(
            metrics,
            crate::endpoints::metrics(process.clone()),
            shutdown_signal(),
        )),
        tokio::spawn(crate::endpoints::serve(
            probes,
            crate::endpoints::probes(process.clone()),
            shutdown_signal(),
        )),
    ];
    let mut servers = Vec::from(servers);
    if let Some(addr) = args.ui_addr {
        let listener = bind(addr, "web view").await?;
        let data = crate::ui::Data::start(
            ctx.client.clone(),
            crate::ui::Backend::Cluster { ctx: ctx.clone() },
            args.namespace.as_deref(),
        )?;
        let ui = Arc::new(crate::ui::Ui::new(
            crate::ui::Mode::Cluster,
            data,
            args.ui_access_recheck,
        )?);
        tracing::info!(ui_addr = %addr, "serving the web view");
        servers.push(tokio::spawn(crate::ui::serve(listener, ui, shutdown_signal())));
    }
    let scope = Scope {
        namespace: args.namespace.clone(),
    };
    if !args.leader_elect {
        process.set_leading(true);
        controllers::run(ctx, scope, shutdown_signal()).await;
    } else {
        let elector = crate::leader::LeaderElector::new(
            ctx.client.clone(),
            &args.leader_election_namespace,
            &args.leader_election_id,
            &identity,
            crate::leader::Timing::for_lease(args.leader_election_lease_duration),
        );
        tracing::info!(lease = %args.leader_election_id, "standing by until this process holds the lease");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown_signal() => {
                servers.iter().for_each(|s| s.abort());
                return Ok(());
            }
        }
        process.set_leading(true);
        tokio::select! {
            _ = controllers::run(ctx, scope, shutdown_signal()) => {
                // Asked to stop: hand the lease over at once instead of letting it expire.
                elector.release().await;
            }
            lost = elector.hold() => {
                // Another process may be applying now: stop everything, and let the restart stand by.
                tracing::error!(error = %lost, "lost the leader lease; exiting");
                std::process::exit(1);
            }
        }
    }
    servers.iter().for_each(|s| s.abort());
    Ok(())
}

/// The controllers' settings from `ferry run`'s flags; renders run in `sandbox`.
pub fn settings(args: &RunArgs, sandbox: crate::render::Sandbox) -> Settings {
    let defaults = Settings::new(&args.storage_dir);
    Settings {
        max_repo_bytes: args.max_repo_bytes,
        render: crate::render::RenderSettings {
            kustomize: args.kustomize.clone(),
            helm: args.helm.clone(),
            max_objects: args.max_render_objects,
            max_bytes: args.max_render_bytes,
            cache_bytes: args.render_cache_bytes,
            sandbox,
            ..defaults.render
        },
        full_sync_interval: args.full_sync_interval,
        concurrency: args.concurrency.max(1),
        allow_file_urls: args.allow_file_urls,
        default_service_account: args.default_service_account.clone(),
        no_cross_namespace_refs: args.no_cross_namespace_refs,
        allow_insecure_kubeconfig: args.allow_insecure_kubeconfig,
        remote_cluster_timeout: args.remote_cluster_timeout,
        registry: crate::registry::RegistrySettings {
            insecure: args.insecure_registries.clone(),
        },
        ..defaults
    }
}

/// The render worker of this binary, with `ferry run`'s memory limit and sandbox choice.
pub fn worker_settings(args: &RunArgs) -> anyhow::Result<crate::render::WorkerSettings> {
    let mut worker = crate::render::WorkerSettings::this_binary().context("finding the ferry binary")?;
    worker.limits.memory_bytes = args.render_memory_bytes;
    worker.allow_unconfined = args.insecure_render_without_sandbox;
    Ok(worker)
}

/// A name for this process in the Lease when no `POD_NAME` is given: host and process id.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferry".to_string());
    format!("{host}-{}", std::process::id())
}

/// A client whose requests are limited to `qps` per second (0: unlimited), so a wave of reconciles cannot
/// flood the API server.
fn client_with_rate_limit(config: kube::Config, qps: u64) -> anyhow::Result<kube::Client> {
    if qps == 0 {
        return Ok(kube::Client::try_from(config)?);
    }
    let layer = tower::limit::RateLimitLayer::new(qps, std::time::Duration::from_secs(1));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    fn run_args(flags: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["ferry", "run"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Run(args) => *args,
            _ => panic!("not `ferry run`"),
        }
    }

    #[test]
    fn every_setting_comes_from_its_flag() {
        let args = run_args(&[
            "--storage-dir=/var/ferry",
            "--max-repo-bytes=1000",
            "--kustomize=/bin/kz",
            "--helm=/bin/hm",
            "--allow-file-urls",
            "--concurrency=3",
            "--default-service-account=deployer",
            "--no-cross-namespace-refs",
            "--allow-insecure-kubeconfig",
            "--remote-cluster-timeout=7s",
            "--insecure-registry=a:5000,b",
            "--max-render-objects=10",
            "--max-render-bytes=2000",
            "--render-cache-bytes=3000",
            "--full-sync-interval=2m",
        ]);
        let s = settings(&args, crate::render::Sandbox::InProcess);
        assert_eq!(s.storage_dir, std::path::PathBuf::from("/var/ferry"));
        assert_eq!(s.max_repo_bytes, 1000);
        assert_eq!(s.render.kustomize, std::path::PathBuf::from("/bin/kz"));
        assert_eq!(s.render.helm, std::path::PathBuf::from("/bin/hm"));
        assert!(s.allow_file_urls);
        assert_eq!(s.concurrency, 3);
        assert_eq!(s.default_service_account.as_deref(), Some("deployer"));
        assert!(s.no_cross_namespace_refs);
        assert!(s.allow_insecure_kubeconfig);
        assert_eq!(s.remote_cluster_timeout, std::time::Duration::from_secs(7));
        assert_eq!(s.registry.insecure, ["a:5000", "b"]);
        assert_eq!(s.render.max_objects, 10);
        assert_eq!(s.render.max_bytes, 2000);
        assert_eq!(s.render.cache_bytes, 3000);
        assert_eq!(s.full_sync_interval, std::time::Duration::from_secs(120));
    }

    #[test]
    fn the_defaults_are_the_controllers_defaults() {
        let args = run_args(&["--concurrency=0"]);
        let s = settings(&args, crate::render::Sandbox::InProcess);
        let d = Settings::new("/tmp/ferry");
        assert_eq!(s.storage_dir, d.storage_dir);
        assert_eq!(s.max_repo_bytes, d.max_repo_bytes);
        assert_eq!(s.mirror_ttl, d.mirror_ttl);
        assert_eq!(s.render.kustomize, d.render.kustomize);
        assert_eq!(s.render.helm, d.render.helm);
        assert_eq!(s.render.timeout, d.render.timeout);
        assert_eq!(s.render.max_objects, d.render.max_objects);
        assert_eq!(s.render.max_bytes, d.render.max_bytes);
        assert_eq!(s.render.cache_bytes, d.render.cache_bytes);
        assert_eq!(s.remote_cluster_timeout, d.remote_cluster_timeout);
        assert_eq!(s.full_sync_interval, d.full_sync_interval);
        // At least one reconcile runs, whatever the flag says.
        assert_eq!(s.concurrency, 1);
    }
}
