//! `ferry images <environment>`: the images of the revision an Environment runs, each with its tag, the
//! digest it was pinned to (resolved there, or verified upstream), the registry it came from and where
//! `copyImages` put it.

use kube::{Api, Client, ResourceExt};

use super::pipeline::{CliError, get, table};
use crate::api::{Environment, ImageRecord};
use crate::format::short_revision;
use crate::images::ImageReference;

pub async fn images(client: &Client, namespace: &str, environment: &str) -> Result<String, CliError> {
    let env = get(
        &Api::<Environment>::namespaced(client.clone(), namespace),
        "Environment",
        namespace,
        environment,
    )
    .await?;
    Ok(format_images(&env))
}

/// The applied revision's images as a table.
pub fn format_images(env: &Environment) -> String {
    let status = env.status.as_ref();
    let Some(revision) = status.and_then(|s| s.last_applied_revision.as_deref()) else {
        return format!("{} has applied no revision yet\n", env.name_any());
    };
    let records = status
        .and_then(|s| {
            s.history
                .iter()
                .find(|r| r.revision == revision && !r.images.is_empty())
        })
        .map(|r| r.images.as_slice())
        .unwrap_or_default();
    if records.is_empty() {
        return format!(
            "{} runs {}; no image digests recorded (set spec.images, or promote from an Environment that does)\n",
            env.name_any(),
            short_revision(revision)
        );
    }
    let rows = records.iter().map(row).collect();
    let mut out = format!("{} runs {}\n", env.name_any(), short_revision(revision));
    out.push_str(&table(&["IMAGE", "TAG", "DIGEST", "REGISTRY", "COPIED TO"], rows));
    out
}

fn row(record: &ImageRecord) -> Vec<String> {
    let parsed = ImageReference::parse(&record.image).ok();
    vec![
        parsed
            .as_ref()
            .map(|p| p.repository())
            .unwrap_or_else(|| record.image.clone()),
        parsed
            .as_ref()
            .and_then(|p| p.effective_tag().map(str::to_string))
            .unwrap_or_else(|| "-".into()),
        record.digest.clone(),
        parsed.as_ref().map(|p| p.domain().to_string()).unwrap_or_default(),
        record.copied_to.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// `ferry images`.
pub async fn run(args: crate::cli::args::EnvironmentArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    print!("{}", images(&client, &namespace, &args.environment).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvironmentSpec, EnvironmentStatus, RevisionPhase, RevisionRecord};

    #[test]
    fn lists_the_applied_revisions_images() {
        let spec: EnvironmentSpec =
            serde_json::from_value(serde_json::json!({"sourceRef": {"name": "config"}})).unwrap();
        let mut env = Environment::new("production", spec);
        assert!(format_images(&env).contains("no revision yet"));
        let revision = format!("main@sha1:{}", "a".repeat(40));
        let digest = format!("sha256:{}", "b".repeat(64));
        env.status = Some(EnvironmentStatus {
            last_applied_revision: Some(revision.clone()),
            history: vec![RevisionRecord {
                revision,
                phase: RevisionPhase::Verified,
                promotion: None,
                promotion_uid: None,
                applied_at: None,
                finished_at: None,
                attempts: 0,
                job: None,
                message: None,
                images: vec![ImageRecord {
                    image: "nonprod.io/team/web:1.4".into(),
                    digest: digest.clone(),
                    copied_to: Some("prod.io/team/web".into()),
                }],
            }],
            ..EnvironmentStatus::default()
        });
        let out = format_images(&env);
        let line = out.lines().find(|l| l.contains("web")).unwrap();
        for column in [
            "nonprod.io/team/web",
            "1.4",
            digest.as_str(),
            "nonprod.io",
            "prod.io/team/web",
        ] {
            assert!(line.contains(column), "{column} in {out}");
        }
    }
}
