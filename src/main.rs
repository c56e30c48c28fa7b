//! The `ferry` binary: the controller (`ferry run`), the promotion pipeline commands, CRD generation, and a
//! local dev control plane.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ferry::api::{Environment, GitRepository};
use ferry::cli::{CliError, Progress};
use ferry::controllers::{self, Context, Scope, Settings};
use kube::ResourceExt;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Pull-based GitOps for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as JSON objects for a log pipeline.
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print what would be applied for a path of a local checkout (kustomize output unchanged).
    Render {
        /// The checkout (repository root).
        dir: PathBuf,
        /// The path inside it, as in an Environment's spec.path.
        #[arg(long, default_value = ".")]
        path: String,
        #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
        kustomize: PathBuf,
        /// Decrypt SOPS-encrypted documents and secretGenerator files with the age identities in this file
        /// (as `age-keygen` writes it), in memory. Without it, documents are printed as stored (encrypted).
        #[arg(long, value_name = "KEYFILE")]
        decrypt_with: Option<PathBuf>,
        /// A file of RegistryPolicies to check the render against (repeatable; offline, their selectors are
        /// ignored). Violations go to stderr; exit code 3 when a Deny policy is violated.
        #[arg(long = "registry-policy", value_name = "FILE")]
        registry_policies: Vec<PathBuf>,
        /// The helm binary, for chart paths (rendered with helm's defaults: release `release` in `default`).
        #[arg(long, env = "FERRY_HELM", default_value = "helm")]
        helm: PathBuf,
    },
    /// Show what applying would change, as a unified diff per object; exit code 1 when there are differences.
    /// Either an Environment in the cluster (`--environment ns/name`) or a local checkout against the cluster.
    Diff {
        /// An Environment, `namespace/name`: diffs the revision the controller would apply (a promoted
        /// Environment's active Promotion, else its last applied one; otherwise the GitRepository's) in its
        /// target cluster (`spec.kubeConfig`).
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
        /// The helm binary, for chart paths and kustomize's `helmCharts:`.
        #[arg(long, env = "FERRY_HELM", default_value = "helm")]
        helm: PathBuf,
        /// Never color the output (default: color when stdout is a terminal and NO_COLOR is not set).
        #[arg(long)]
        no_color: bool,
        /// Registry hosts (`host[:port]`) reached over plain HTTP, for image digests an Environment has not
        /// recorded yet (as `ferry run --insecure-registry`).
        #[arg(long = "insecure-registry", env = "FERRY_INSECURE_REGISTRIES", value_delimiter = ',')]
        insecure_registries: Vec<String>,
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
    /// Show the images of the revision an Environment runs: tag, digest, source registry, where copied.
    Images {
        environment: String,
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
    /// Ask the controller to reconcile an object now, without waiting for its interval.
    Reconcile {
        #[command(subcommand)]
        target: ReconcileTarget,
    },
    /// Stop reconciling an object (`spec.suspend: true`): the cluster keeps what was applied last.
    Suspend {
        #[command(subcommand)]
        target: SuspendTarget,
    },
    /// Reconcile a suspended object again (`spec.suspend: false`), at once.
    Resume {
        #[command(subcommand)]
        target: ResumeTarget,
    },
    /// Show the Events of Ferry's objects in a namespace, oldest first (all of them, or those of NAME).
    Events {
        /// Only Events about objects of this name.
        name: Option<String>,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Show what an object manages as a tree, with each object's health.
    Tree {
        #[command(subcommand)]
        target: TreeTarget,
    },
    /// Print the version of this binary and of the controller running in the cluster.
    Version {
        /// Namespace of the controller's Deployment.
        #[arg(long, default_value = "ferry-system")]
        controller_namespace: String,
        /// Name of the controller's Deployment.
        #[arg(long, default_value = "ferry")]
        controller_deployment: String,
    },
    /// Serve the read-only web view on this machine with your kubeconfig's rights (like `kubectl proxy`).
    Ui {
        /// Where to listen; only loopback addresses (the local view has no sign-in of its own).
        #[arg(long, default_value = "127.0.0.1:8800")]
        addr: std::net::SocketAddr,
        /// Show only this namespace (default: all namespaces if your kubeconfig may list Environments
        /// cluster-wide, else its context's namespace).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print a shell completion script: `source <(ferry completion bash)`.
    Completion {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ReconcileTarget {
    /// Fetch the repository now (bypassing the interval and the shared-fetch window).
    #[command(visible_alias = "gitrepo")]
    Gitrepository {
        name: String,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        ns: Namespace,
    },
    /// Sync the Environment now.
    #[command(visible_alias = "env")]
    Environment {
        name: String,
        /// Reconcile its GitRepository first, and wait for it, so the newest commit is applied.
        #[arg(long)]
        with_source: bool,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        ns: Namespace,
    },
}

#[derive(Subcommand)]
enum SuspendTarget {
    #[command(visible_alias = "gitrepo")]
    Gitrepository {
        name: String,
        #[command(flatten)]
        ns: Namespace,
    },
    #[command(visible_alias = "env")]
    Environment {
        name: String,
        #[command(flatten)]
        ns: Namespace,
    },
}

#[derive(Subcommand)]
enum ResumeTarget {
    #[command(visible_alias = "gitrepo")]
    Gitrepository {
        name: String,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        ns: Namespace,
    },
    #[command(visible_alias = "env")]
    Environment {
        name: String,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        ns: Namespace,
    },
}

#[derive(Subcommand)]
enum TreeTarget {
    /// The Environment's inventory, grouped by namespace and kind, with each object's health.
    #[command(visible_alias = "env")]
    Environment {
        name: String,
        #[command(flatten)]
        ns: Namespace,
    },
}

#[derive(Args)]
struct Wait {
    /// Wait until the controller handled the request and the object is Ready (exit 2 if it fails).
    #[arg(long)]
    wait: bool,
    /// How long --wait (and --with-source) may wait, e.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_parser = duration)]
    timeout: std::time::Duration,
}

impl Wait {
    fn deadline(&self) -> Option<std::time::Duration> {
        self.wait.then_some(self.timeout)
    }
}

#[derive(Args)]
struct RunArgs {
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
    /// The helm binary used for chart paths (`helm template`) and kustomize's `helmCharts:`.
    #[arg(long, env = "FERRY_HELM", default_value = "helm")]
    helm: PathBuf,
    /// Accept file:// GitRepository URLs (local development only).
    #[arg(long, env = "FERRY_ALLOW_FILE_URLS")]
    allow_file_urls: bool,
    /// Reconciles running at once, per kind.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Client-side limit on requests per second to the API server (0: no limit). Off by default: the
    /// reconcile concurrency already bounds the load, and this limiter (tower's) costs far more throughput than
    /// its nominal rate (see docs/src/performance.md, Sync engine).
    #[arg(long, env = "FERRY_KUBE_API_QPS", default_value_t = 0)]
    kube_api_qps: u64,
    /// Address of the push-webhook receiver (`POST /hooks/<namespace>/<gitrepository>`).
    #[arg(long, env = "FERRY_WEBHOOK_ADDR", default_value = "0.0.0.0:9292")]
    webhook_addr: std::net::SocketAddr,
    /// Multi-tenant clusters: the ServiceAccount (in each Environment's own namespace) whose rights an
    /// Environment without `spec.serviceAccountName` applies with; Ferry impersonates it for every request
    /// made for that Environment. The install manifests set `default`, which has no rights until a team
    /// grants them. Without this flag such Environments apply with Ferry's own identity (single-team
    /// clusters; needs the broad role in manifests/single-tenant/).
    #[arg(long, env = "FERRY_DEFAULT_SERVICE_ACCOUNT", value_parser = service_account_name)]
    default_service_account: Option<String>,
    /// Refuse an Environment whose `sourceRef.namespace` names another namespace (`CrossNamespaceRef`):
    /// each team renders only its own namespace's repositories. On in the install manifests.
    #[arg(long, env = "FERRY_NO_CROSS_NAMESPACE_REFS")]
    no_cross_namespace_refs: bool,
    /// Accept kubeConfig Secrets that set `insecure-skip-tls-verify: true` or a `proxy-url` (refused by
    /// default: either hands the connection and its credentials to whoever sits in between).
    #[arg(long, env = "FERRY_ALLOW_INSECURE_KUBECONFIG")]
    allow_insecure_kubeconfig: bool,
    /// How long a request to a cluster reached through a kubeconfig Secret may take to connect, or wait
    /// without an answer, before it fails (the Environment then says `ClusterUnreachable` and retries), e.g. `30s`.
    #[arg(long, env = "FERRY_REMOTE_CLUSTER_TIMEOUT", default_value = "30s", value_parser = duration)]
    remote_cluster_timeout: std::time::Duration,
    /// A registry host (`host[:port]`) reached over plain HTTP when resolving and copying images (repeat for
    /// several; default none: every registry over HTTPS). For local registries only.
    #[arg(long = "insecure-registry", env = "FERRY_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// Most objects one render may produce; over it the sync stops with RenderLimitExceeded.
    #[arg(long, env = "FERRY_MAX_RENDER_OBJECTS", default_value_t = 5000)]
    max_render_objects: usize,
    /// Most bytes of manifests one render may read, and of YAML it may produce (kustomize output included).
    #[arg(long, env = "FERRY_MAX_RENDER_BYTES", default_value_t = 64 << 20)]
    max_render_bytes: u64,
    /// Bytes of renders kept in memory, shared by Environments on the same commit and path.
    #[arg(long, env = "FERRY_RENDER_CACHE_BYTES", default_value_t = 128 << 20)]
    render_cache_bytes: u64,
    /// Memory (private writable bytes) each process of a render may use: the render worker, kustomize, helm.
    /// Over it the render fails with RenderLimitExceeded; the controller's own memory does not move.
    #[arg(long, env = "FERRY_RENDER_MEMORY_BYTES", default_value_t = 1 << 30)]
    render_memory_bytes: u64,
    /// Run kustomize and helm even where the render sandbox (Landlock, seccomp) cannot be raised. Without
    /// it such paths fail with SandboxUnavailable. A config repo can then reach whatever the controller can:
    /// only for clusters whose every config repo is trusted.
    #[arg(long, env = "FERRY_INSECURE_RENDER_WITHOUT_SANDBOX")]
    insecure_render_without_sandbox: bool,
    /// How often an Environment nobody touched still goes through the full dry-run path, e.g. `1h` (in between,
    /// watches on the applied objects tell whether anything changed, and an unchanged sync asks nothing).
    #[arg(long, env = "FERRY_FULL_SYNC_INTERVAL", default_value = "1h", value_parser = duration)]
    full_sync_interval: std::time::Duration,
    /// Elect one leader among replicas with a Lease; only the leader runs the controllers (every replica
    /// serves webhooks). `--leader-elect=false` for a single local process.
    #[arg(long, env = "FERRY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ferry-system")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "FERRY_LEADER_ELECTION_ID", default_value = "ferry-leader")]
    leader_election_id: String,
    /// How long a standby waits for a silent leader before taking over, e.g. `15s`.
    #[arg(long, env = "FERRY_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    leader_election_lease_duration: std::time::Duration,
    /// This process's name in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// Address of Prometheus `/metrics`.
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Address of the `/livez` and `/readyz` probes.
    #[arg(long, env = "FERRY_PROBE_ADDR", default_value = "0.0.0.0:8081")]
    probe_addr: std::net::SocketAddr,
    /// Serve the read-only web view here (off by default). Viewers sign in with a Kubernetes bearer token
    /// and see only what they may list (TokenReview and SubjectAccessReview).
    #[arg(long, env = "FERRY_UI_ADDR")]
    ui_addr: Option<std::net::SocketAddr>,
    /// How often an open live-update stream of the web view asks the API server again whether its viewer's
    /// token is valid and may still list the namespace's Environments; it closes when not, e.g. `30s`.
    #[arg(long, env = "FERRY_UI_ACCESS_RECHECK", default_value = "30s", value_parser = duration)]
    ui_access_recheck: std::time::Duration,
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
fn main() {
    // A render worker confines itself while it is still one thread (Landlock and seccomp never reach threads
    // that already run): before clap, logging or the runtime.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == ferry::render::sandbox::WORKER_ARG)
    {
        std::process::exit(ferry::render::sandbox::worker_main());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(2);
        }
    };
    runtime.block_on(cli_main());
}

/// Renders of the CLI run in the same sandbox as the controller's.
fn sandboxed() -> anyhow::Result<ferry::render::Sandbox> {
    Ok(ferry::render::Sandbox::Worker(
        ferry::render::WorkerSettings::this_binary().context("finding the ferry binary")?,
    ))
}

async fn cli_main() {
    if let Err(e) = run().await {
        // A refusal is an answer, not a failure of ferry: print it as it is.
        match e.downcast_ref::<CliError>() {
            Some(CliError::Refused(message) | CliError::Failed(message)) => eprintln!("{message}"),
            _ => eprintln!("error: {e:#}"),
        }
        std::process::exit(2);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        // One JSON object per line; the reconcile span's fields (kind, namespace, name, revision) come along.
        LogFormat::Json => ferry::logging::init_json(filter),
    }
    match cli.command {
        Command::Run(args) => run_operator(*args).await,
        Command::Render {
            dir,
            path,
            kustomize,
            decrypt_with,
            registry_policies,
            helm,
        } => {
            let settings = ferry::render::RenderSettings {
                kustomize,
                helm,
                sandbox: sandboxed()?,
                ..Default::default()
            };
            let rendered = match decrypt_with {
                Some(keyfile) => ferry::cli::render_local_decrypted(&dir, &path, &settings, &keyfile).await?,
                None => ferry::cli::render_local(&dir, &path, &settings).await?,
            };
            print!("{}", rendered.yaml);
            if !registry_policies.is_empty() {
                let policies = ferry::cli::policies_from_files(&registry_policies)?;
                let found = ferry::cli::check_registry_policy(&policies, None, "", &rendered.objects);
                if let Some(warning) = ferry::cli::unchecked_encrypted(&rendered) {
                    eprintln!("{warning}");
                }
                eprint!("{}", ferry::cli::format_violations(&found));
                if found.denied() {
                    std::process::exit(3);
                }
            }
            Ok(())
        }
        Command::Diff {
            environment,
            dir,
            path,
            namespace,
            kustomize,
            helm,
            no_color,
            insecure_registries,
        } => {
            use std::io::IsTerminal;
            let settings = ferry::render::RenderSettings {
                kustomize,
                helm,
                sandbox: sandboxed()?,
                ..Default::default()
            };
            let config = kube::Config::infer().await.context("loading the kubeconfig")?;
            let client = kube::Client::try_from(config.clone()).context("connecting to the cluster")?;
            let policy;
            let diffs = match (environment, dir) {
                (Some(env), _) => {
                    let (ns, name) = env
                        .split_once('/')
                        .ok_or_else(|| anyhow::anyhow!("--environment takes namespace/name"))?;
                    let registry = ferry::registry::RegistrySettings {
                        insecure: insecure_registries,
                    };
                    let d =
                        ferry::cli::diff_environment_checked(client, &config, ns, name, &settings, &registry).await?;
                    eprintln!(
                        "Environment {ns}/{name} at {}: {} object(s) differ",
                        d.revision,
                        d.diffs.len()
                    );
                    policy = d.policy;
                    d.diffs
                }
                (None, Some(dir)) => {
                    let rendered = ferry::cli::render_local(&dir, &path, &settings).await?;
                    if let Some(warning) = ferry::cli::unchecked_encrypted(&rendered) {
                        eprintln!("{warning}");
                    }
                    policy = ferry::cli::cluster_policies(&client).await?.map(|policies| {
                        ferry::cli::check_registry_policy(&policies, None, &namespace, &rendered.objects)
                    });
                    ferry::cli::diff_local(client, &dir, &path, &namespace, &settings).await?
                }
                (None, None) => anyhow::bail!("give --environment ns/name or a checkout directory"),
            };
            let color = ferry::cli::color_enabled(no_color, std::io::stdout().is_terminal());
            for d in &diffs {
                print!("{}", ferry::cli::unified(d, color));
            }
            match &policy {
                Some(found) => eprint!("{}", ferry::cli::format_violations(found)),
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
        Command::Images { environment, ns } => {
            let (client, namespace) = ns.connect().await?;
            print!("{}", ferry::cli::images(&client, &namespace, &environment).await?);
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
        Command::Reconcile { target } => {
            let mut progress = Progress::stderr();
            let done = match target {
                ReconcileTarget::Gitrepository { name, wait, ns } => {
                    let (client, namespace) = ns.connect().await?;
                    ferry::cli::reconcile_gitrepository(&client, &namespace, &name, wait.deadline(), &mut progress)
                        .await?
                }
                ReconcileTarget::Environment {
                    name,
                    with_source,
                    wait,
                    ns,
                } => {
                    let (client, namespace) = ns.connect().await?;
                    let (deadline, timeout) = (wait.deadline(), wait.timeout);
                    ferry::cli::reconcile_environment(
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
        Command::Suspend { target } => {
            let (kind, name, namespace) = match target {
                SuspendTarget::Gitrepository { name, ns } => {
                    let (client, namespace) = ns.connect().await?;
                    ferry::cli::set_suspended::<GitRepository>(&client, &namespace, &name, true).await?;
                    ("GitRepository", name, namespace)
                }
                SuspendTarget::Environment { name, ns } => {
                    let (client, namespace) = ns.connect().await?;
                    ferry::cli::set_suspended::<Environment>(&client, &namespace, &name, true).await?;
                    ("Environment", name, namespace)
                }
            };
            println!("► {kind} {namespace}/{name} suspended");
            Ok(())
        }
        Command::Resume { target } => {
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
        Command::Events { name, ns } => {
            let (client, namespace) = ns.connect().await?;
            let rows = ferry::cli::events(&client, &namespace, name.as_deref()).await?;
            print!(
                "{}",
                ferry::cli::format_events(&rows, k8s_openapi::jiff::Timestamp::now())
            );
            Ok(())
        }
        Command::Tree {
            target: TreeTarget::Environment { name, ns },
        } => {
            let config = kube::Config::infer().await.context("loading the kubeconfig")?;
            let client = kube::Client::try_from(config.clone()).context("connecting to the cluster")?;
            let namespace = ns.namespace.unwrap_or_else(|| client.default_namespace().to_string());
            print!("{}", ferry::cli::tree(&client, &config, &namespace, &name).await?);
            Ok(())
        }
        Command::Version {
            controller_namespace,
            controller_deployment,
        } => {
            println!("client: {}", env!("CARGO_PKG_VERSION"));
            let shown = format!("{controller_namespace}/{controller_deployment}");
            // The client's version is worth printing even without a cluster.
            let controller = match kube::Client::try_default().await {
                Ok(client) => {
                    match ferry::cli::controller_version(&client, &controller_namespace, &controller_deployment).await {
                        Ok(Some(version)) => format!("{version} (Deployment {shown})"),
                        Ok(None) => format!("unknown (no readable Deployment {shown})"),
                        Err(e) => format!("unknown ({e})"),
                    }
                }
                Err(e) => format!("unknown (no cluster: {e})"),
            };
            println!("controller: {controller}");
            // What this machine's kernel allows a render worker (the controller's node may differ: its
            // /readyz and the ferry_render_sandbox metric say there).
            match ferry::render::sandbox::probe(&ferry::render::WorkerSettings::this_binary()?).await {
                Ok(walls) => println!("render sandbox (this machine): {}", walls.summary()),
                Err(e) => println!("render sandbox (this machine): unknown ({e})"),
            }
            Ok(())
        }
        Command::Ui { addr, namespace } => run_ui(addr, namespace).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `ferry reconcile`'s and `ferry resume`'s report: what was asked, and where it stands when waited for.
fn print_reconciled(done: &[ferry::cli::Reconciled]) {
    for step in done {
        match &step.revision {
            Some(revision) => println!("✔ {} reconciled: {revision}", step.object),
            None => println!("► {} reconcile requested", step.object),
        }
    }
}

/// The controller, the webhook receiver, metrics and probes, until SIGTERM or Ctrl-C. With leader election the
/// controllers start only once this process holds the Lease, and the process exits if it loses it (a
/// restarted process stands by again), so two replicas never apply at once.
async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
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
    let mut settings = Settings {
        max_repo_bytes: args.max_repo_bytes,
        ..Settings::new(&args.storage_dir)
    };
    settings.render.kustomize = args.kustomize.clone();
    settings.render.helm = args.helm.clone();
    settings.full_sync_interval = args.full_sync_interval;
    settings.render.max_objects = args.max_render_objects;
    settings.render.max_bytes = args.max_render_bytes;
    settings.render.cache_bytes = args.render_cache_bytes;
    let mut worker = ferry::render::WorkerSettings::this_binary().context("finding the ferry binary")?;
    worker.limits.memory_bytes = args.render_memory_bytes;
    worker.allow_unconfined = args.insecure_render_without_sandbox;
    // One worker at start says which walls this node allows: logged, and shown by /readyz and the metric.
    match ferry::render::sandbox::probe(&worker).await {
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
    settings.render.sandbox = ferry::render::Sandbox::Worker(worker);
    settings.concurrency = args.concurrency.max(1);
    settings.allow_file_urls = args.allow_file_urls;
    settings.default_service_account = args.default_service_account.clone();
    settings.no_cross_namespace_refs = args.no_cross_namespace_refs;
    settings.allow_insecure_kubeconfig = args.allow_insecure_kubeconfig;
    settings.remote_cluster_timeout = args.remote_cluster_timeout;
    settings.registry.insecure = args.insecure_registries.clone();
    let receiver_identity = ferry::receiver::Identity {
        client: client.clone(),
        config: config.clone(),
        default_service_account: settings.default_service_account.clone(),
    };
    let ctx = Arc::new(Context::new(client, config, settings));
    let process = ferry::endpoints::Process::new(ctx.clone());

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
        tokio::spawn(ferry::receiver::serve(
            webhook,
            receiver_identity,
            args.namespace.clone(),
            shutdown_signal(),
        )),
        tokio::spawn(ferry::endpoints::serve(
            metrics,
            ferry::endpoints::metrics(process.clone()),
            shutdown_signal(),
        )),
        tokio::spawn(ferry::endpoints::serve(
            probes,
            ferry::endpoints::probes(process.clone()),
            shutdown_signal(),
        )),
    ];
    let mut servers = Vec::from(servers);
    if let Some(addr) = args.ui_addr {
        let listener = bind(addr, "web view").await?;
        let data = ferry::ui::Data::start(
            ctx.client.clone(),
            ferry::ui::Backend::Cluster { ctx: ctx.clone() },
            args.namespace.as_deref(),
        )?;
        let ui = Arc::new(ferry::ui::Ui::new(
            ferry::ui::Mode::Cluster,
            data,
            args.ui_access_recheck,
        )?);
        tracing::info!(ui_addr = %addr, "serving the web view");
        servers.push(tokio::spawn(ferry::ui::serve(listener, ui, shutdown_signal())));
    }
    let scope = Scope {
        namespace: args.namespace.clone(),
    };
    if !args.leader_elect {
        process.set_leading(true);
        controllers::run(ctx, scope, shutdown_signal()).await;
    } else {
        let elector = ferry::leader::LeaderElector::new(
            ctx.client.clone(),
            &args.leader_election_namespace,
            &args.leader_election_id,
            &identity,
            ferry::leader::Timing::for_lease(args.leader_election_lease_duration),
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

/// `ferry ui`: the web view on loopback, reading with the caller's kubeconfig.
async fn run_ui(addr: std::net::SocketAddr, namespace: Option<String>) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "ferry ui serves your own kubeconfig's rights without a sign-in, so it listens only on loopback \
             (127.0.0.1, ::1); in a cluster use `ferry run --ui-addr`"
        );
    }
    let config = kube::Config::infer().await.context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config.clone()).context("connecting to the cluster")?;
    let scope = match namespace {
        Some(ns) => Some(ns),
        None if may_list_everywhere(&client).await => None,
        None => Some(client.default_namespace().to_string()),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the web view to {addr}"))?;
    let data = ferry::ui::Data::start(
        client,
        ferry::ui::Backend::Local {
            config: Box::new(config),
        },
        scope.as_deref(),
    )?;
    // Locally the caller's own kubeconfig reads: a stream has no viewer of its own to re-check.
    let ui = Arc::new(ferry::ui::Ui::new(
        ferry::ui::Mode::Local,
        data,
        ferry::ui::server::DEFAULT_RECHECK,
    )?);
    let shown = listener.local_addr()?;
    match &scope {
        Some(ns) => println!("ferry ui: http://{shown}/ns/{ns}  (namespace {ns}; Ctrl-C stops)"),
        None => println!("ferry ui: http://{shown}/  (all namespaces; Ctrl-C stops)"),
    }
    ferry::ui::serve(listener, ui, shutdown_signal()).await?;
    Ok(())
}

/// Whether the caller may list Environments in every namespace (SelfSubjectAccessReview).
async fn may_list_everywhere(client: &kube::Client) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("list".into()),
                group: Some(ferry::api::GROUP.into()),
                resource: Some("environments".into()),
                ..ResourceAttributes::default()
            }),
            non_resource_attributes: None,
        },
        ..SelfSubjectAccessReview::default()
    };
    kube::Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await
        .is_ok_and(|r| r.status.is_some_and(|s| s.allowed))
}

/// A name for this process in the Lease when no `POD_NAME` is given: host and process id.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferry".to_string());
    format!("{host}-{}", std::process::id())
}

/// Durations on the command line are written as in the API (`15s`, `1m`).
fn duration(text: &str) -> Result<std::time::Duration, String> {
    ferry::api::parse_duration(text).map_err(|e| e.to_string())
}

/// `--default-service-account` must be a name the API server could give a ServiceAccount.
fn service_account_name(name: &str) -> Result<String, String> {
    if ferry::cluster::valid_service_account_name(name) {
        Ok(name.to_string())
    } else {
        Err("not a ServiceAccount name (lowercase letters, digits, '-' and '.')".into())
    }
}

/// `ferry resume KIND NAME [--wait]`: the object shown, and its revision when waited for.
async fn resume<K: ferry::cli::Reconcilable>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    wait: &Wait,
    progress: &mut Progress,
) -> anyhow::Result<(String, Option<String>)> {
    let token = ferry::cli::set_suspended::<K>(client, namespace, name, false).await?;
    let object = format!("{} {namespace}/{name}", K::KIND);
    let revision = match (token, wait.deadline()) {
        (Some(token), Some(timeout)) => {
            let reconciled =
                ferry::cli::wait_reconciled::<K>(client, namespace, name, &token, timeout, progress).await?;
            Some(reconciled.revision().unwrap_or("-").to_string())
        }
        _ => None,
    };
    Ok((object, revision))
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
fn client_with_rate_limit(config: kube::Config, qps: u64) -> anyhow::Result<kube::Client> {
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
