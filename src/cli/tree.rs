//! `ferry tree environment NAME`: the objects an Environment applied (its inventory), grouped by namespace
//! and kind, each with its health as the controller judges it (`crate::health::assess` on the live object in
//! the Environment's target cluster).

use kube::{Api, Client};

use super::pipeline::{CliError, get};
use super::target::environment_target;
use crate::api::{Environment, InventoryEntry, READY, condition_status};
use crate::format::{group_inventory, short_revision};
use crate::health::{Health, assess};

/// The tree of `name` in `namespace`, read live. `config` is what `client` was built from (for kubeConfig
/// targets).
pub async fn tree(client: &Client, config: &kube::Config, namespace: &str, name: &str) -> Result<String, CliError> {
    let env = get(
        &Api::<Environment>::namespaced(client.clone(), namespace),
        "Environment",
        namespace,
        name,
    )
    .await?;
    let target = environment_target(client, config, &env).await?;
    let status = env.status.clone().unwrap_or_default();
    let mut objects = Vec::with_capacity(status.inventory.len());
    for entry in &status.inventory {
        let health = match target.applier.get(entry).await {
            Ok(Some(live)) => show_health(&assess(&live)),
            Ok(None) => "NotFound".to_string(),
            // One unreadable object (RBAC, a kind gone) must not hide the others.
            Err(e) => format!("Unknown: {e}"),
        };
        objects.push((entry.clone(), health));
    }
    let revision = status
        .last_applied_revision
        .as_deref()
        .map(short_revision)
        .unwrap_or_else(|| "nothing applied".into());
    let ready = condition_status(&status.conditions, READY).unwrap_or("Unknown");
    let title = format!("Environment/{namespace}/{name}  {revision}  Ready={ready}");
    Ok(format_tree(&title, &objects))
}

/// How a health verdict reads in the tree.
pub fn show_health(health: &Health) -> String {
    match health {
        Health::Current => "Current".into(),
        Health::InProgress(why) => format!("InProgress: {why}"),
        Health::Failed(why) => format!("Failed: {why}"),
    }
}

/// `title`, then the objects as a tree: namespace (cluster-scoped last), kind, `name  health`.
pub fn format_tree(title: &str, objects: &[(InventoryEntry, String)]) -> String {
    let groups = group_inventory(objects);
    let mut out = format!("{title}\n");
    if groups.is_empty() {
        out.push_str("└── (no objects)\n");
    }
    let group_count = groups.len();
    for (g, (group, kinds)) in groups.into_iter().enumerate() {
        let last_group = g + 1 == group_count;
        out.push_str(&format!("{}{group}\n", branch(last_group)));
        let group_indent = indent(last_group);
        let kind_count = kinds.len();
        for (k, (kind, names)) in kinds.into_iter().enumerate() {
            let last_kind = k + 1 == kind_count;
            out.push_str(&format!("{group_indent}{}{kind}\n", branch(last_kind)));
            let kind_indent = format!("{group_indent}{}", indent(last_kind));
            let width = names.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0);
            let name_count = names.len();
            for (n, (name, health)) in names.into_iter().enumerate() {
                let last_name = n + 1 == name_count;
                out.push_str(&format!("{kind_indent}{}{name:<width$}  {health}\n", branch(last_name)));
            }
        }
    }
    out
}

fn branch(last: bool) -> &'static str {
    if last { "└── " } else { "├── " }
}

fn indent(last: bool) -> &'static str {
    if last { "    " } else { "│   " }
}

/// `ferry tree`.
pub async fn run(target: crate::cli::args::TreeTarget) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let crate::cli::args::TreeTarget::Environment { name, ns } = target;
    let config = kube::Config::infer().await.context("loading the kubeconfig")?;
    let client = Client::try_from(config.clone()).context("connecting to the cluster")?;
    let namespace = ns.namespace.unwrap_or_else(|| client.default_namespace().to_string());
    print!("{}", tree(&client, &config, &namespace, &name).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(Into::into),
            name: name.into(),
        }
    }

    #[test]
    fn grouped_by_namespace_then_kind_with_cluster_scoped_last() {
        let objects = vec![
            (entry("v1", "Namespace", None, "demo"), "Current".to_string()),
            (
                entry("apps/v1", "Deployment", Some("demo"), "web"),
                "InProgress: 0/1 ready".to_string(),
            ),
            (
                entry("v1", "ConfigMap", Some("demo"), "app-config"),
                "Current".to_string(),
            ),
            (entry("v1", "ConfigMap", Some("demo"), "a"), "NotFound".to_string()),
        ];
        let text = format_tree("Environment/demo/staging  main@sha1:0123456789ab  Ready=True", &objects);
        let want = "\
Environment/demo/staging  main@sha1:0123456789ab  Ready=True
├── demo
│   ├── ConfigMap
│   │   ├── a           NotFound
│   │   └── app-config  Current
│   └── Deployment
│       └── web  InProgress: 0/1 ready
└── (cluster-scoped)
    └── Namespace
        └── demo  Current
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn an_empty_inventory_says_so() {
        assert_eq!(format_tree("t", &[]), "t\n└── (no objects)\n");
    }
}
