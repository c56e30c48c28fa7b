//! `ferry render`: what would be applied for a path of a local checkout, optionally decrypted and checked
//! against RegistryPolicy files.

use anyhow::Context as _;

use crate::cli::args::RenderArgs;

/// Renders of the CLI run in the same sandbox as the controller's.
pub(crate) fn sandboxed() -> anyhow::Result<crate::render::Sandbox> {
    Ok(crate::render::Sandbox::Worker(
        crate::render::WorkerSettings::this_binary().context("finding the ferry binary")?,
    ))
}

/// `ferry render`: the YAML on stdout, policy violations on stderr; exits 3 when a Deny policy is violated.
pub async fn run(args: RenderArgs) -> anyhow::Result<()> {
    let RenderArgs {
        dir,
        path,
        kustomize,
        decrypt_with,
        registry_policies,
        helm,
    } = args;
    let settings = crate::render::RenderSettings {
        kustomize,
        helm,
        sandbox: sandboxed()?,
        ..Default::default()
    };
    let rendered = match decrypt_with {
        Some(keyfile) => super::render_local_decrypted(&dir, &path, &settings, &keyfile).await?,
        None => super::render_local(&dir, &path, &settings).await?,
    };
    print!("{}", rendered.yaml);
    if !registry_policies.is_empty() {
        let policies = super::policies_from_files(&registry_policies)?;
        let found = super::check_registry_policy(&policies, None, "", &rendered.objects);
        if let Some(warning) = super::unchecked_encrypted(&rendered) {
            eprintln!("{warning}");
        }
        eprint!("{}", super::format_violations(&found));
        if found.denied() {
            std::process::exit(3);
        }
    }
    Ok(())
}
