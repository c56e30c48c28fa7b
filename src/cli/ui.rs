//! `ferry ui`: the read-only web view, served locally with the caller's kubeconfig.

use std::sync::Arc;

use anyhow::Context as _;

use crate::cli::args::UiArgs;
use crate::cli::run::shutdown_signal;

/// `ferry ui`: the web view on loopback, reading with the caller's kubeconfig.
pub async fn run(args: UiArgs) -> anyhow::Result<()> {
    let UiArgs { addr, namespace } = args;
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
    let data = crate::ui::Data::start(
        client,
        crate::ui::Backend::Local {
            config: Box::new(config),
        },
        scope.as_deref(),
    )?;
    // Locally the caller's own kubeconfig reads: a stream has no viewer of its own to re-check.
    let ui = Arc::new(crate::ui::Ui::new(
        crate::ui::Mode::Local,
        data,
        crate::ui::server::DEFAULT_RECHECK,
    )?);
    let shown = listener.local_addr()?;
    match &scope {
        Some(ns) => println!("ferry ui: http://{shown}/ns/{ns}  (namespace {ns}; Ctrl-C stops)"),
        None => println!("ferry ui: http://{shown}/  (all namespaces; Ctrl-C stops)"),
    }
    crate::ui::serve(listener, ui, shutdown_signal()).await?;
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
                group: Some(crate::api::GROUP.into()),
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
