//! The command line: clap's types for every `ferry` command, shared by the binary, `ferry completion` and
//! the tests. Flags, env vars, defaults and help texts are an interface (scripts, the install manifests).
//! Option groups several commands share ([`Namespace`], [`Wait`]) are flattened into them.

mod run;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

pub use run::RunArgs;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Pull-based GitOps for Kubernetes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text, or as JSON objects for a log pipeline.
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print what would be applied for a path of a local checkout (kustomize output unchanged).
    Render(RenderArgs),
    /// Show what applying would change, as a unified diff per object; exit code 1 when there are differences.
    /// Either an Environment in the cluster (`--environment ns/name`) or a local checkout against the cluster.
    Diff(DiffArgs),
    /// Show the Environments along their promotion chains: revision, readiness, verification, promotion.
    Get(Namespace),
    /// Promote a revision that verified upstream into a promoted Environment.
    Promote(PromoteArgs),
    /// Approve a promotion waiting in WaitingApproval.
    Approve(DecisionArgs),
    /// Reject a promotion that has not finished; a waiting one is aborted.
    Reject(DecisionArgs),
    /// Return a promoted Environment to a revision that verified there before (default: the previous one).
    Rollback(RollbackArgs),
    /// Show the images of the revision an Environment runs: tag, digest, source registry, where copied.
    Images(EnvironmentArgs),
    /// Show the revisions an Environment applied and the promotions into it.
    History(EnvironmentArgs),
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
    Events(EventsArgs),
    /// Show what an object manages as a tree, with each object's health.
    Tree {
        #[command(subcommand)]
        target: TreeTarget,
    },
    /// Print the version of this binary and of the controller running in the cluster.
    Version(VersionArgs),
    /// Serve the read-only web view on this machine with your kubeconfig's rights (like `kubectl proxy`).
    Ui(UiArgs),
    /// Print a shell completion script: `source <(ferry completion bash)`.
    Completion {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
}

// `ferry render`.
#[derive(Args)]
pub struct RenderArgs {
    /// The checkout (repository root).
    pub dir: PathBuf,
    /// The path inside it, as in an Environment's spec.path.
    #[arg(long, default_value = ".")]
    pub path: String,
    #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
    pub kustomize: PathBuf,
    /// Decrypt SOPS-encrypted documents and secretGenerator files with the age identities in this file
    /// (as `age-keygen` writes it), in memory. Without it, documents are printed as stored (encrypted).
    #[arg(long, value_name = "KEYFILE")]
    pub decrypt_with: Option<PathBuf>,
    /// A file of RegistryPolicies to check the render against (repeatable; offline, their selectors are
    /// ignored). Violations go to stderr; exit code 3 when a Deny policy is violated.
    #[arg(long = "registry-policy", value_name = "FILE")]
    pub registry_policies: Vec<PathBuf>,
    /// The helm binary, for chart paths (rendered with helm's defaults: release `release` in `default`).
    #[arg(long, env = "FERRY_HELM", default_value = "helm")]
    pub helm: PathBuf,
}

// `ferry diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// An Environment, `namespace/name`: diffs the revision the controller would apply (a promoted
    /// Environment's active Promotion, else its last applied one; otherwise the GitRepository's) in its
    /// target cluster (`spec.kubeConfig`).
    #[arg(long, conflicts_with = "dir")]
    pub environment: Option<String>,
    /// A local checkout (repository root).
    pub dir: Option<PathBuf>,
    #[arg(long, default_value = ".")]
    pub path: String,
    /// Namespace for namespaced objects that name none (local mode).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, env = "FERRY_KUSTOMIZE", default_value = "kustomize")]
    pub kustomize: PathBuf,
    /// The helm binary, for chart paths and kustomize's `helmCharts:`.
    #[arg(long, env = "FERRY_HELM", default_value = "helm")]
    pub helm: PathBuf,
    /// Never color the output (default: color when stdout is a terminal and NO_COLOR is not set).
    #[arg(long)]
    pub no_color: bool,
    /// Registry hosts (`host[:port]`) reached over plain HTTP, for image digests an Environment has not
    /// recorded yet (as `ferry run --insecure-registry`).
    #[arg(long = "insecure-registry", env = "FERRY_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registries: Vec<String>,
}

// `ferry promote`.
#[derive(Args)]
pub struct PromoteArgs {
    pub environment: String,
    /// A full revision (`main@sha1:<hex>`), `sha1:<hex>`, or a commit prefix of at least 4 hex digits.
    #[arg(long)]
    pub revision: String,
    #[command(flatten)]
    pub ns: Namespace,
}

// `ferry approve` and `ferry reject`.
#[derive(Args)]
pub struct DecisionArgs {
    pub promotion: String,
    /// Why, recorded with the decision.
    #[arg(short, long)]
    pub message: Option<String>,
    #[command(flatten)]
    pub ns: Namespace,
}

// `ferry rollback`.
#[derive(Args)]
pub struct RollbackArgs {
    pub environment: String,
    /// The revision to return to, written as for `ferry promote --revision`.
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub ns: Namespace,
}

// `ferry images` and `ferry history`: one Environment.
#[derive(Args)]
pub struct EnvironmentArgs {
    pub environment: String,
    #[command(flatten)]
    pub ns: Namespace,
}

// `ferry events`.
#[derive(Args)]
pub struct EventsArgs {
    /// Only Events about objects of this name.
    pub name: Option<String>,
    #[command(flatten)]
    pub ns: Namespace,
}

// `ferry version`.
#[derive(Args)]
pub struct VersionArgs {
    /// Namespace of the controller's Deployment.
    #[arg(long, default_value = "ferry-system")]
    pub controller_namespace: String,
    /// Name of the controller's Deployment.
    #[arg(long, default_value = "ferry")]
    pub controller_deployment: String,
}

// `ferry ui`.
#[derive(Args)]
pub struct UiArgs {
    /// Where to listen; only loopback addresses (the local view has no sign-in of its own).
    #[arg(long, default_value = "127.0.0.1:8800")]
    pub addr: std::net::SocketAddr,
    /// Show only this namespace (default: all namespaces if your kubeconfig may list Environments
    /// cluster-wide, else its context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

#[derive(Subcommand)]
pub enum ReconcileTarget {
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
pub enum SuspendTarget {
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
pub enum ResumeTarget {
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
pub enum TreeTarget {
    /// The Environment's inventory, grouped by namespace and kind, with each object's health.
    #[command(visible_alias = "env")]
    Environment {
        name: String,
        #[command(flatten)]
        ns: Namespace,
    },
}

#[derive(Args)]
pub struct Wait {
    /// Wait until the controller handled the request and the object is Ready (exit 2 if it fails).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait (and --with-source) may wait, e.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub timeout: std::time::Duration,
}

impl Wait {
    pub fn deadline(&self) -> Option<std::time::Duration> {
        self.wait.then_some(self.timeout)
    }
}

#[derive(Args)]
pub struct Namespace {
    /// Default: the kubeconfig context's namespace, else `default`.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

impl Namespace {
    /// The client, as for `ferry diff`, and the namespace to work in.
    pub async fn connect(self) -> anyhow::Result<(kube::Client, String)> {
        let client = kube::Client::try_default().await.context("connecting to the cluster")?;
        let namespace = self.namespace.unwrap_or_else(|| client.default_namespace().to_string());
        Ok((client, namespace))
    }
}

/// `ferry completion SHELL`: the script for this very command line.
pub fn completion(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
}

/// Durations on the command line are written as in the API (`15s`, `1m`).
fn duration(text: &str) -> Result<std::time::Duration, String> {
    crate::api::parse_duration(text).map_err(|e| e.to_string())
}

/// `--default-service-account` must be a name the API server could give a ServiceAccount.
fn service_account_name(name: &str) -> Result<String, String> {
    if crate::cluster::valid_service_account_name(name) {
        Ok(name.to_string())
    } else {
        Err("not a ServiceAccount name (lowercase letters, digits, '-' and '.')".into())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_install_manifests_flags_parse() {
        // manifests/deployment.yaml's `args:`.
        let cli = Cli::try_parse_from([
            "ferry",
            "run",
            "--default-service-account=default",
            "--no-cross-namespace-refs",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not `ferry run`")
        };
        assert_eq!(args.default_service_account.as_deref(), Some("default"));
        assert!(args.no_cross_namespace_refs);
        assert!(Cli::try_parse_from(["ferry", "run", "--default-service-account=Not_A_Name"]).is_err());
    }

    #[test]
    fn shared_groups_parse_where_they_are_flattened() {
        let cli = Cli::try_parse_from([
            "ferry",
            "resume",
            "env",
            "web",
            "-n",
            "team",
            "--wait",
            "--timeout",
            "30s",
        ])
        .unwrap();
        let Command::Resume {
            target: ResumeTarget::Environment { name, wait, ns },
        } = cli.command
        else {
            panic!("not `ferry resume environment`")
        };
        assert_eq!(name, "web");
        assert_eq!(ns.namespace.as_deref(), Some("team"));
        assert_eq!(wait.deadline(), Some(std::time::Duration::from_secs(30)));
        let cli = Cli::try_parse_from(["ferry", "reject", "p-1", "-m", "no", "-n", "team"]).unwrap();
        let Command::Reject(decision) = cli.command else {
            panic!("not `ferry reject`")
        };
        assert_eq!(
            (decision.promotion.as_str(), decision.message.as_deref()),
            ("p-1", Some("no"))
        );
        assert_eq!(decision.ns.namespace.as_deref(), Some("team"));
    }
}
