//! The `ferry` binary: the controller (`ferry run`), the promotion pipeline commands, CRD generation, and a
//! local dev control plane. Only wiring: the command line is [`ferry::cli::args`], each command's body is in
//! [`ferry::cli`].

use clap::Parser;
use ferry::cli::args::{Cli, Command, LogFormat};
use ferry::cli::{self, CliError};

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
        Command::Run(args) => cli::run::run(*args).await,
        Command::Render(args) => cli::render::run(args).await,
        Command::Diff(args) => cli::diff::run(args).await,
        Command::Get(ns) => cli::pipeline::run_get(ns).await,
        Command::Promote(args) => cli::pipeline::run_promote(args).await,
        Command::Approve(args) => cli::pipeline::run_approve(args).await,
        Command::Reject(args) => cli::pipeline::run_reject(args).await,
        Command::Rollback(args) => cli::pipeline::run_rollback(args).await,
        Command::Images(args) => cli::images::run(args).await,
        Command::History(args) => cli::pipeline::run_history(args).await,
        Command::Crds => {
            print!("{}", ferry::api::crds_yaml()?);
            Ok(())
        }
        Command::Reconcile { target } => cli::reconcile::run_reconcile(target).await,
        Command::Suspend { target } => cli::reconcile::run_suspend(target).await,
        Command::Resume { target } => cli::reconcile::run_resume(target).await,
        Command::Events(args) => cli::events::run(args).await,
        Command::Tree { target } => cli::tree::run(target).await,
        Command::Version(args) => cli::version::run(args).await,
        Command::Ui(args) => cli::ui::run(args).await,
        Command::Completion { shell } => {
            cli::args::completion(shell);
            Ok(())
        }
    }
}
