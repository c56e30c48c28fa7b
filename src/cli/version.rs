//! `ferry version`: this binary's version and, when one can be found, the running controller's, read from the
//! image tag of its Deployment (`ferry-system/ferry` as the install manifests create it).

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};

use super::pipeline::CliError;

/// The controller's container in the install manifests.
const CONTAINER: &str = "ferry";

/// The image tag of the controller Deployment `namespace/name`, or `None` when there is no such Deployment or
/// the caller may not read it (a version is nice to know, not worth an error).
pub async fn controller_version(client: &Client, namespace: &str, name: &str) -> Result<Option<String>, CliError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = match deployments.get_opt(name).await {
        Ok(d) => d,
        Err(kube::Error::Api(s)) if s.code == 403 => None,
        Err(e) => return Err(e.into()),
    };
    let containers = deployment
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .map(|s| s.containers)
        .unwrap_or_default();
    let container = containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .or_else(|| containers.first());
    Ok(container.and_then(|c| c.image.as_deref()).map(image_tag))
}

/// The version an image reference names: its tag (`ghcr.io/org/ferry:v1.2.0` → `v1.2.0`), else its digest,
/// else `latest` (what a reference without either pulls).
pub fn image_tag(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    // A registry port (`host:5000/ferry`) is not a tag: only the last path segment can carry one.
    let last = name.rsplit('/').next().unwrap_or(name);
    match (last.split_once(':'), digest) {
        (Some((_, tag)), _) if !tag.is_empty() => tag.to_string(),
        (_, Some(digest)) => digest.to_string(),
        _ => "latest".to_string(),
    }
}

/// `ferry version`: this binary's version, the controller's, and the render sandbox this machine allows.
pub async fn run(args: crate::cli::args::VersionArgs) -> anyhow::Result<()> {
    let crate::cli::args::VersionArgs {
        controller_namespace,
        controller_deployment,
    } = args;
    println!("client: {}", env!("CARGO_PKG_VERSION"));
    let shown = format!("{controller_namespace}/{controller_deployment}");
    // The client's version is worth printing even without a cluster.
    let controller = match Client::try_default().await {
        Ok(client) => match controller_version(&client, &controller_namespace, &controller_deployment).await {
            Ok(Some(version)) => format!("{version} (Deployment {shown})"),
            Ok(None) => format!("unknown (no readable Deployment {shown})"),
            Err(e) => format!("unknown ({e})"),
        },
        Err(e) => format!("unknown (no cluster: {e})"),
    };
    println!("controller: {controller}");
    // What this machine's kernel allows a render worker (the controller's node may differ: its
    // /readyz and the ferry_render_sandbox metric say there).
    match crate::render::sandbox::probe(&crate::render::WorkerSettings::this_binary()?).await {
        Ok(walls) => println!("render sandbox (this machine): {}", walls.summary()),
        Err(e) => println!("render sandbox (this machine): unknown ({e})"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn tags_digests_and_registry_ports() {
        assert_eq!(image_tag("ferry:0.1.0"), "0.1.0");
        assert_eq!(image_tag("ghcr.io/org/ferry:v1.2.0"), "v1.2.0");
        assert_eq!(image_tag("registry.local:5000/ferry"), "latest");
        assert_eq!(image_tag("registry.local:5000/ferry:v2@sha256:abc"), "v2");
        assert_eq!(image_tag("ferry@sha256:abc"), "sha256:abc");
    }
}
