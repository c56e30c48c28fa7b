//! The `ferry` binary: the controller (`ferry run`), the promotion pipeline commands, CRD generation, and a
//! local dev control plane.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ferry::cli::CliError;
use ferry::controllers::{self, Context, Scope, Settings};
use ferry::testenv;
use kube::ResourceExt;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Pull-based GitOps for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster config).
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "FERRY_NAMESPACE")]
        namespace: Option<String>,
        /// Where git mirrors are kept.
        #[arg(long, env = "FERRY_STORAGE_DIR", default_value = "/tmp/ferry")]
        storage_dir: PathBuf,
        /// Largest download one git fetch may make, in bytes.
        #[arg(long, env = "FERRY_MAX_REPO_BYTES", default_value_t = 1 << 30)]
        max_repo_bytes: u64,
        /// The kustomize binary used for paths with a kustomization.
        #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
        kustomize: PathBuf,
        /// Accept file:// GitRepository URLs (local development only).
        #[arg(long, env = "FERRY_ALLOW_FILE_URLS")]
        allow_file_urls: bool,
        /// Reconciles running at once, per kind.
        #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 16)]
        concurrency: u16,
        /// Client-side limit on requests per second to the API server (0: no limit). Off by default: the
        /// reconcile concurrency already bounds the load, and this limiter (tower's) costs far more throughput than
        /// its nominal rate (see the README's performance section).
        #[arg(long, env = "FERRY_KUBE_API_QPS", default_value_t = 0)]
        kube_api_qps: u64,
        /// Address of the push-webhook receiver (`POST /hooks/<namespace>/<gitrepository>`).
        #[arg(long, env = "FERRY_WEBHOOK_ADDR", default_value = "0.0.0.0:9292")]
        webhook_addr: std::net::SocketAddr,
        /// Most objects one render may produce; over it the sync stops with RenderLimitExceeded.
        #[arg(long, env = "FERRY_MAX_RENDER_OBJECTS", default_value_t = 5000)]
        max_render_objects: usize,
        /// Most bytes of manifests one render may read, and of YAML it may produce (kustomize output included).
        #[arg(long, env = "FERRY_MAX_RENDER_BYTES", default_value_t = 64 << 20)]
        max_render_bytes: u64,
        /// Bytes of renders kept in memory, shared by Environments on the same commit and path.
        #[arg(long, env = "FERRY_RENDER_CACHE_BYTES", default_value_t = 128 << 20)]
        render_cache_bytes: u64,
    },
    /// Print what would be applied for a path of a local checkout (kustomize output unchanged).
    Render {
        /// The checkout (repository root).
        dir: PathBuf,
        /// The path inside it, as in an Environment's spec.path.
        #[arg(long, default_value = ".")]
        path: String,
        #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
        kustomize: PathBuf,
    },
    /// Show what applying would change, as a unified diff per object; exit code 1 when there are differences.
    /// Either an Environment in the cluster (`--environment ns/name`) or a local checkout against the cluster.
    Diff {
        /// An Environment, `namespace/name`: diffs its source's current revision.
        #[arg(long, conflicts_with = "dir")]
        environment: Option<String>,
        /// A local checkout (repository root).
        dir: Option<PathBuf>,
        #[arg(long, default_value = ".")]
        path: String,
        /// Namespace for namespaced objects that name none (local mode).
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
        kustomize: PathBuf,
        /// Never color the output (default: color when stdout is a terminal).
        #[arg(long)]
        no_color: bool,
    },
    /// Show the Environments along their promotion chains: revision, readiness, verification, promotion.
    Get {
        #[command(flatten)]
        ns: Namespace,
    },
    /// Promote a revision that verified upstream into a promoted Environment.
    Promote {
        environment: String,
        /// A full revision (`main@sha1:<hex>`), `sha1:<hex>`, or a commit prefix of at least 4 hex digits.
        #[arg(long)]
        revision: String,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Approve a promotion waiting in WaitingApproval.
    Approve {
        promotion: String,
        /// Why, recorded with the decision.
        #[arg(short, long)]
        message: Option<String>,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Reject a promotion that has not finished; a waiting one is aborted.
    Reject {
        promotion: String,
        /// Why, recorded with the decision.
        #[arg(short, long)]
        message: Option<String>,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Return a promoted Environment to a revision that verified there before (default: the previous one).
    Rollback {
        environment: String,
        /// The revision to return to, written as for `ferry promote --revision`.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Show the revisions an Environment applied and the promotions into it.
    History {
        environment: String,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Print the CustomResourceDefinitions as YAML (what `crds/ferry.dev.yaml` contains).
    Crds,
    /// Local development helpers.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Start a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and keep it
    /// running until interrupted. Writes a kubeconfig to `<dir>/kubeconfig`.
    Cluster {
        /// Directory for data, logs and the kubeconfig.
        #[arg(long, default_value = ".ferry-dev")]
        dir: PathBuf,
        /// Directory of the control-plane binaries (default: build or reuse them with hack/controlplane-build.sh).
        #[arg(long, env = "FERRY_CONTROLPLANE_BIN")]
        bin_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Namespace {
    /// Default: the kubeconfig context's namespace, else `default`.
    #[arg(short, long)]
    namespace: Option<String>,
}

impl Namespace {
    /// The client, as for `ferry diff`, and the namespace to work in.
    async fn connect(self) -> anyhow::Result<(kube::Client, String)> {
        let client = kube::Client::try_default().await.context("connecting to the cluster")?;
        let namespace = self.namespace.unwrap_or_else(|| client.default_namespace().to_string());
        Ok((client, namespace))
    }
}

/// Exit codes: 0 success, 1 differences found (`ferry diff`), 2 error or refused request.
#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        // A refusal is an answer, not a failure of ferry: print it as it is.
        match e.downcast_ref::<CliError>() {
            Some(CliError::Refused(message)) => eprintln!("{message}"),
            _ => eprintln!("error: {e:#}"),
        }
        std::process::exit(2);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Run {
            namespace,
            storage_dir,
            max_repo_bytes,
            kustomize,
            allow_file_urls,
            concurrency,
            kube_api_qps,
            webhook_addr,
            max_render_objects,
            max_render_bytes,
            render_cache_bytes,
        } => {
            // libgit2's transfer timeout only runs while data flows; these bound a server that accepts a
            // connection and then says nothing. Set once, before any fetch.
            // SAFETY: called before any other libgit2 use in this process.
            unsafe {
                git2::opts::set_server_connect_timeout_in_milliseconds(30_000)?;
                git2::opts::set_server_timeout_in_milliseconds(120_000)?;
            }
            let client = client_with_rate_limit(kube_api_qps).await?;
            let mut settings = Settings {
                max_repo_bytes,
                ..Settings::new(storage_dir)
            };
            settings.render.kustomize = kustomize;
            settings.render.max_objects = max_render_objects;
            settings.render.max_bytes = max_render_bytes;
            settings.render.cache_bytes = render_cache_bytes;
            settings.concurrency = concurrency.max(1);
            settings.allow_file_urls = allow_file_urls;
            let ctx = Arc::new(Context::new(client, settings));
            let listener = tokio::net::TcpListener::bind(webhook_addr)
                .await
                .with_context(|| format!("binding the webhook receiver to {webhook_addr}"))?;
            tracing::info!(namespace = namespace.as_deref().unwrap_or("<all>"), %webhook_addr, "ferry starting");
            let receiver = tokio::spawn(ferry::receiver::serve(
                listener,
                ctx.client.clone(),
                namespace.clone(),
                shutdown_signal(),
            ));
            controllers::run(ctx, Scope { namespace }, shutdown_signal()).await;
            receiver.abort();
            Ok(())
        }
        Command::Render { dir, path, kustomize } => {
            let settings = ferry::render::RenderSettings {
                kustomize,
                ..Default::default()
            };
            let rendered = ferry::cli::render_local(&dir, &path, &settings).await?;
            print!("{}", rendered.yaml);
            Ok(())
        }
        Command::Diff {
            environment,
            dir,
            path,
            namespace,
            kustomize,
            no_color,
        } => {
            use std::io::IsTerminal;
            let settings = ferry::render::RenderSettings {
                kustomize,
                ..Default::default()
            };
            let client = kube::Client::try_default().await.context("connecting to the cluster")?;
            let diffs = match (environment, dir) {
                (Some(env), _) => {
                    let (ns, name) = env
                        .split_once('/')
                        .ok_or_else(|| anyhow::anyhow!("--environment takes namespace/name"))?;
                    let (revision, diffs) = ferry::cli::diff_environment(client, ns, name, &settings).await?;
                    eprintln!(
                        "Environment {ns}/{name} at {revision}: {} object(s) differ",
                        diffs.len()
                    );
                    diffs
                }
                (None, Some(dir)) => ferry::cli::diff_local(client, &dir, &path, &namespace, &settings).await?,
                (None, None) => anyhow::bail!("give --environment ns/name or a checkout directory"),
            };
            let color = !no_color && std::io::stdout().is_terminal();
            for d in &diffs {
                print!("{}", ferry::cli::unified(d, color));
            }
            std::process::exit(if diffs.is_empty() { 0 } else { 1 });
        }
        Command::Get { ns } => {
            let (client, namespace) = ns.connect().await?;
            print!("{}", ferry::cli::pipeline(&client, &namespace).await?);
            Ok(())
        }
        Command::Promote {
            environment,
            revision,
            ns,
        } => {
            let (client, namespace) = ns.connect().await?;
            let p = ferry::cli::promote(&client, &namespace, &environment, &revision).await?;
            println!(
                "promotion {} created: {} → {environment}",
                p.name_any(),
                p.spec.revision
            );
            Ok(())
        }
        Command::Approve { promotion, message, ns } => {
            let (client, namespace) = ns.connect().await?;
            let p = ferry::cli::approve(&client, &namespace, &promotion, message.as_deref()).await?;
            print_decision(&p, "approved");
            Ok(())
        }
        Command::Reject { promotion, message, ns } => {
            let (client, namespace) = ns.connect().await?;
            let p = ferry::cli::reject(&client, &namespace, &promotion, message.as_deref()).await?;
            print_decision(&p, "rejected");
            Ok(())
        }
        Command::Rollback { environment, to, ns } => {
            let (client, namespace) = ns.connect().await?;
            let p = ferry::cli::rollback(&client, &namespace, &environment, to.as_deref()).await?;
            println!(
                "promotion {} created: rolling {environment} back to {}",
                p.name_any(),
                p.spec.revision
            );
            Ok(())
        }
        Command::History { environment, ns } => {
            let (client, namespace) = ns.connect().await?;
            print!("{}", ferry::cli::history(&client, &namespace, &environment).await?);
            Ok(())
        }
        Command::Crds => {
            print!("{}", ferry::api::crds_yaml()?);
            Ok(())
        }
        Command::Dev {
            command: DevCommand::Cluster { dir, bin_dir },
        } => {
            let bin_dir = match bin_dir {
                Some(b) => b,
                None => testenv::bin_dir_from_env_or_build(&std::env::current_dir()?)?,
            };
            let dir = std::path::absolute(dir)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
            }
            let mut cp = testenv::ControlPlane::start(testenv::Options {
                bin_dir,
                workloads: true,
                dir: Some(dir),
            })
            .await?;
            println!("control plane ready at {}", cp.server);
            println!("export KUBECONFIG={}", cp.kubeconfig.display());
            shutdown_signal().await;
            cp.stop();
            Ok(())
        }
    }
}

fn print_decision(p: &ferry::api::Promotion, verb: &str) {
    let by = p
        .spec
        .approval
        .as_ref()
        .and_then(|a| a.by.as_deref())
        .unwrap_or("unknown");
    println!("promotion {} {verb} by {by}", p.name_any());
}

/// A client whose requests are limited to `qps` per second (0: unlimited), so a wave of reconciles cannot
/// flood the API server.
async fn client_with_rate_limit(qps: u64) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("loading the kubeconfig or in-cluster config")?;
    if qps == 0 {
        return Ok(kube::Client::try_from(config)?);
    }
    let layer = tower::limit::RateLimitLayer::new(qps, std::time::Duration::from_secs(1));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
