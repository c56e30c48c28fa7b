//! `ferry get`, `promote`, `approve`, `reject`, `rollback` and `history`: the promotion pipeline for people.
//! Each command only creates or patches objects; the controllers do the work and enforce the gates, so the CLI
//! refuses early only what the controllers would fail anyway, with a message that says what to do instead.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{
    Decision, Environment, Promotion, PromotionPhase, READY, RevisionPhase, RevisionRecord, VERIFIED, condition_status,
};
use crate::format::{SHORT_COMMIT, promotion_order, short_revision};
use crate::source::Revision;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The request makes no sense for the objects as they are; the message says why and what would.
    #[error("{0}")]
    Refused(String),
    #[error("{kind} {name} not found in namespace {namespace}")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// Someone else changed the object between our read and our write.
    #[error("{0} changed while this command ran; look at it again and retry")]
    Conflict(String),
    /// `--wait` ran out of time; the message says what was still awaited.
    #[error("timed out after {after:?} waiting for {what}: {last}")]
    Timeout {
        what: String,
        after: std::time::Duration,
        last: String,
    },
    /// The controller handled the request and the object is not Ready: its own message says why.
    #[error("{0}")]
    Failed(String),
    /// Reaching the Environment's target cluster (its kubeConfig Secret) failed.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Longest MESSAGE cell; the full text is in the object's conditions.
const MESSAGE_WIDTH: usize = 60;

/// `ferry get`: every Environment of `namespace`, along the promotion chains.
pub async fn pipeline(client: &Client, namespace: &str) -> Result<String, CliError> {
    let envs = Api::<Environment>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    if envs.is_empty() {
        return Ok(format!("no Environments in namespace {namespace}\n"));
    }
    Ok(format_pipeline(&envs))
}

/// `ferry promote`: asks for `revision` (as verified upstream) to move into `environment`.
pub async fn promote(
    client: &Client,
    namespace: &str,
    environment: &str,
    revision: &str,
) -> Result<Promotion, CliError> {
    let envs = Api::<Environment>::namespaced(client.clone(), namespace);
    let env = get(&envs, "Environment", namespace, environment).await?;
    let Some(policy) = &env.spec.promotion else {
        return Err(CliError::Refused(format!(
            "{environment} follows its GitRepository and takes no promotions; set spec.promotion.from to promote into it"
        )));
    };
    let upstream = get(&envs, "Environment", namespace, &policy.from).await?;
    let history = upstream.status.map(|s| s.history).unwrap_or_default();
    let full = resolve_verified(&policy.from, &history, revision)?;
    let commit = Revision::parse(&full).map(|r| r.commit).unwrap_or_default();
    let short = commit.get(..SHORT_COMMIT).unwrap_or(&commit);
    let promotion = new_promotion(namespace, environment, format!("{environment}-{short}-"), full, false);
    Ok(Api::<Promotion>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &promotion)
        .await?)
}

/// `ferry approve`: lets a promotion that waits for approval go on.
pub async fn approve(
    client: &Client,
    namespace: &str,
    promotion: &str,
    message: Option<&str>,
) -> Result<Promotion, CliError> {
    decide(client, namespace, promotion, Decision::Approved, message).await
}

/// `ferry reject`: stops a promotion before it applies; the controller aborts it.
pub async fn reject(
    client: &Client,
    namespace: &str,
    promotion: &str,
    message: Option<&str>,
) -> Result<Promotion, CliError> {
    decide(client, namespace, promotion, Decision::Rejected, message).await
}

async fn decide(
    client: &Client,
    namespace: &str,
    name: &str,
    decision: Decision,
    message: Option<&str>,
) -> Result<Promotion, CliError> {
    let api = Api::<Promotion>::namespaced(client.clone(), namespace);
    let promotion = get(&api, "Promotion", namespace, name).await?;
    let phase = promotion.phase();
    // Decisions are final (the CRD enforces it too): a second one would silently undo the first.
    if let Some(prior) = &promotion.spec.approval {
        let by = prior.by.as_deref().unwrap_or("someone");
        return Err(CliError::Refused(format!(
            "promotion {name} was {:?} already by {by}; decisions are final",
            prior.decision
        )));
    }
    match decision {
        Decision::Approved if phase != PromotionPhase::WaitingApproval => {
            return Err(CliError::Refused(format!(
                "promotion {name} is {phase}; only a WaitingApproval promotion can be approved"
            )));
        }
        Decision::Rejected if !matches!(phase, PromotionPhase::Pending | PromotionPhase::WaitingApproval) => {
            return Err(CliError::Refused(format!(
                "promotion {name} is {phase}; only a promotion that has not started applying can be rejected \
                 (roll back once it has ended)"
            )));
        }
        _ => {}
    }
    let resource_version = promotion
        .resource_version()
        .ok_or_else(|| CliError::Refused(format!("promotion {name} has no resourceVersion to lock on")))?;
    let by = caller(client).await?;
    // The resourceVersion makes the merge patch conditional: a concurrent change fails with 409 instead of
    // being overwritten.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"approval": {
            "decision": decision,
            "by": by,
            "at": Time(Timestamp::now()),
            "message": message,
        }},
    });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(patched) => Ok(patched),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(CliError::Conflict(format!("promotion {name}"))),
        Err(e) => Err(e.into()),
    }
}

/// Who the API server says we are: the name an approval records must not be one the caller can choose.
async fn caller(client: &Client) -> Result<String, CliError> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_string()))
}

/// `ferry rollback`: returns `environment` to a revision that verified there before (default: the newest one
/// other than what runs now), under the Environment's rollback gates.
pub async fn rollback(
    client: &Client,
    namespace: &str,
    environment: &str,
    to: Option<&str>,
) -> Result<Promotion, CliError> {
    let env = get(
        &Api::<Environment>::namespaced(client.clone(), namespace),
        "Environment",
        namespace,
        environment,
    )
    .await?;
    if env.spec.promotion.is_none() {
        return Err(CliError::Refused(format!(
            "{environment} follows its GitRepository; revert in Git"
        )));
    }
    let status = env.status.unwrap_or_default();
    let current = status.last_applied_revision.as_deref();
    let target = match to {
        Some(wanted) => resolve_verified(environment, &status.history, wanted)?,
        None => status
            .history
            .iter()
            .find(|r| r.phase == RevisionPhase::Verified && Some(r.revision.as_str()) != current)
            .map(|r| r.revision.clone())
            .ok_or_else(|| {
                CliError::Refused(format!(
                    "no earlier revision verified in {environment}: nothing to roll back to"
                ))
            })?,
    };
    if Some(target.as_str()) == current {
        return Err(CliError::Refused(format!("{environment} runs {target} already")));
    }
    let promotion = new_promotion(namespace, environment, format!("{environment}-rollback-"), target, true);
    Ok(Api::<Promotion>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &promotion)
        .await?)
}

/// `ferry history`: the revisions `environment` applied and the promotions into it.
pub async fn history(client: &Client, namespace: &str, environment: &str) -> Result<String, CliError> {
    let env = get(
        &Api::<Environment>::namespaced(client.clone(), namespace),
        "Environment",
        namespace,
        environment,
    )
    .await?;
    let promotions = crate::promotion::promotions_of(client, namespace, environment).await?;
    Ok(format_history(&env, &promotions, Timestamp::now()))
}

pub(crate) async fn get<K>(api: &Api<K>, kind: &'static str, namespace: &str, name: &str) -> Result<K, CliError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await?.ok_or_else(|| CliError::NotFound {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

fn new_promotion(
    namespace: &str,
    environment: &str,
    generate_name: String,
    revision: String,
    rollback: bool,
) -> Promotion {
    let mut promotion = crate::promotion::new_promotion(namespace, environment, &revision, rollback);
    promotion.metadata.generate_name = Some(generate_name);
    promotion
}

/// The one revision verified in `environment` that `wanted` names: the full revision, a commit prefix of at
/// least 4 hex digits (with or without `sha1:`), or the revision without its ref name (`sha1:<hex>`).
pub fn resolve_verified(environment: &str, history: &[RevisionRecord], wanted: &str) -> Result<String, CliError> {
    let mut verified: Vec<&str> = Vec::new();
    for r in history.iter().filter(|r| r.phase == RevisionPhase::Verified) {
        if !verified.contains(&r.revision.as_str()) {
            verified.push(&r.revision);
        }
    }
    if verified.is_empty() {
        return Err(CliError::Refused(format!(
            "no revision has verified in {environment} yet"
        )));
    }
    if verified.contains(&wanted) {
        return Ok(wanted.to_string());
    }
    let hex = wanted.strip_prefix("sha1:").unwrap_or(wanted).to_ascii_lowercase();
    let is_prefix = hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit());
    let matches: Vec<&str> = verified
        .iter()
        .copied()
        .filter(|r| {
            let by_prefix = is_prefix && Revision::parse(r).is_some_and(|p| p.commit.starts_with(&hex));
            by_prefix || (wanted.contains("sha1:") && r.ends_with(wanted))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(CliError::Refused(format!(
            "no revision verified in {environment} matches {wanted:?}; verified: {}",
            verified.join(", ")
        ))),
        many => Err(CliError::Refused(format!(
            "{wanted:?} is ambiguous in {environment}: it matches {}",
            many.join(", ")
        ))),
    }
}

/// The pipeline table, in [`promotion_order`].
pub fn format_pipeline(envs: &[Environment]) -> String {
    let from = |e: &Environment| e.spec.promotion.as_ref().map(|p| p.from.clone());
    let order = promotion_order(envs);
    let rows = order
        .iter()
        .map(|e| {
            let status = e.status.clone().unwrap_or_default();
            let ready = status.conditions.iter().find(|c| c.type_ == READY);
            vec![
                e.name_any(),
                from(e).unwrap_or_default(),
                status
                    .last_applied_revision
                    .as_deref()
                    .map(short_revision)
                    .unwrap_or_default(),
                condition_status(&status.conditions, READY)
                    .unwrap_or_default()
                    .to_string(),
                condition_status(&status.conditions, VERIFIED)
                    .unwrap_or_default()
                    .to_string(),
                status.promotion.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                status
                    .promotion
                    .as_ref()
                    .map(|p| p.phase.to_string())
                    .unwrap_or_default(),
                ready.map(|c| truncate(&c.message)).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ENVIRONMENT",
            "FROM",
            "REVISION",
            "READY",
            "VERIFIED",
            "PROMOTION",
            "PHASE",
            "MESSAGE",
        ],
        rows,
    )
}

/// The history table and, below it, the promotions into the Environment, newest first.
pub fn format_history(env: &Environment, promotions: &[Promotion], now: Timestamp) -> String {
    let history = env.status.as_ref().map(|s| s.history.as_slice()).unwrap_or_default();
    let mut out = if history.is_empty() {
        format!("{} has applied no revision yet\n", env.name_any())
    } else {
        let rows = history
            .iter()
            .map(|r| {
                vec![
                    short_revision(&r.revision),
                    format!("{:?}", r.phase),
                    r.promotion.clone().unwrap_or_default(),
                    r.applied_at.as_ref().map(time).unwrap_or_default(),
                    r.finished_at.as_ref().map(time).unwrap_or_default(),
                    r.attempts.to_string(),
                    r.message.as_deref().map(truncate).unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &[
                "REVISION",
                "PHASE",
                "PROMOTION",
                "APPLIED",
                "FINISHED",
                "ATTEMPTS",
                "MESSAGE",
            ],
            rows,
        )
    };
    let image_rows: Vec<Vec<String>> = history
        .iter()
        .flat_map(|r| {
            r.images.iter().map(|i| {
                let applied = i
                    .copied_to
                    .as_deref()
                    .map(|to| format!(" (as {to})"))
                    .unwrap_or_default();
                vec![
                    short_revision(&r.revision),
                    format!("{}{applied}", i.image),
                    i.digest.clone(),
                ]
            })
        })
        .collect();
    if !image_rows.is_empty() {
        out.push('\n');
        out.push_str(&table(&["REVISION", "IMAGE", "DIGEST"], image_rows));
    }
    out.push('\n');
    if promotions.is_empty() {
        out.push_str("no promotions\n");
        return out;
    }
    let created = |p: &Promotion| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut sorted: Vec<&Promotion> = promotions.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse((created(p), p.name_any())));
    let rows = sorted
        .iter()
        .map(|p| {
            vec![
                p.name_any(),
                short_revision(&p.spec.revision),
                p.phase().to_string(),
                created(p).map(|t| age(now, t)).unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(&["NAME", "REVISION", "PHASE", "AGE"], rows));
    out
}

fn truncate(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MESSAGE_WIDTH {
        return one_line;
    }
    let cut: String = one_line.chars().take(MESSAGE_WIDTH - 1).collect();
    format!("{cut}…")
}

fn time(t: &Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Like kubectl's AGE column, coarsened to one unit.
pub(crate) fn age(now: Timestamp, then: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Columns padded to their widest cell, three spaces apart, empty cells as `-`, like `kubectl get`.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| if c.is_empty() { "-".to_string() } else { c })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `ferry get`.
pub async fn run_get(ns: crate::cli::args::Namespace) -> anyhow::Result<()> {
    let (client, namespace) = ns.connect().await?;
    print!("{}", pipeline(&client, &namespace).await?);
    Ok(())
}

/// `ferry promote`.
pub async fn run_promote(args: crate::cli::args::PromoteArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    let environment = args.environment;
    let p = promote(&client, &namespace, &environment, &args.revision).await?;
    println!(
        "promotion {} created: {} → {environment}",
        p.name_any(),
        p.spec.revision
    );
    Ok(())
}

/// `ferry approve`.
pub async fn run_approve(args: crate::cli::args::DecisionArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    let p = approve(&client, &namespace, &args.promotion, args.message.as_deref()).await?;
    print_decision(&p, "approved");
    Ok(())
}

/// `ferry reject`.
pub async fn run_reject(args: crate::cli::args::DecisionArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    let p = reject(&client, &namespace, &args.promotion, args.message.as_deref()).await?;
    print_decision(&p, "rejected");
    Ok(())
}

/// `ferry rollback`.
pub async fn run_rollback(args: crate::cli::args::RollbackArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    let environment = args.environment;
    let p = rollback(&client, &namespace, &environment, args.to.as_deref()).await?;
    println!(
        "promotion {} created: rolling {environment} back to {}",
        p.name_any(),
        p.spec.revision
    );
    Ok(())
}

/// `ferry history`.
pub async fn run_history(args: crate::cli::args::EnvironmentArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.ns.connect().await?;
    print!("{}", history(&client, &namespace, &args.environment).await?);
    Ok(())
}

fn print_decision(p: &Promotion, verb: &str) {
    let by = p
        .spec
        .approval
        .as_ref()
        .and_then(|a| a.by.as_deref())
        .unwrap_or("unknown");
    println!("promotion {} {verb} by {by}", p.name_any());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PromotionSpec;
    use crate::api::{EnvironmentStatus, PromotionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    const A: &str = "main@sha1:aaaa1111bbbb2222cccc3333dddd4444eeee5555";
    const B: &str = "main@sha1:aaaa9999bbbb2222cccc3333dddd4444eeee5555";
    const C: &str = "main@sha1:cccc1111bbbb2222cccc3333dddd4444eeee5555";

    fn env(name: &str, from: Option<&str>) -> Environment {
        let spec = serde_json::from_value(serde_json::json!({
            "sourceRef": {"name": "config"},
            "promotion": from.map(|f| serde_json::json!({"from": f})),
        }))
        .expect("a valid spec");
        Environment::new(name, spec)
    }

    fn record(revision: &str, phase: RevisionPhase) -> RevisionRecord {
        RevisionRecord {
            revision: revision.into(),
            phase,
            promotion: None,
            promotion_uid: None,
            applied_at: None,
            finished_at: None,
            attempts: 0,
            job: None,
            message: None,
            images: Vec::new(),
        }
    }

    fn first_column(table: &str) -> Vec<String> {
        table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn a_shuffled_chain_is_printed_in_promotion_order() {
        let envs = [
            env("production", Some("staging")),
            env("other", None),
            env("dev", None),
            env("staging", Some("dev")),
        ];
        let out = format_pipeline(&envs);
        assert_eq!(first_column(&out), ["dev", "staging", "production", "other"], "{out}");
        assert!(out.starts_with("ENVIRONMENT   FROM"), "{out}");
    }

    #[test]
    fn a_cycle_is_printed_once_and_ends() {
        let envs = [
            env("b", Some("a")),
            env("a", Some("b")),
            env("dev", None),
            env("x", Some("gone")),
        ];
        let out = format_pipeline(&envs);
        assert_eq!(first_column(&out), ["dev", "x", "a", "b"], "{out}");
    }

    #[test]
    fn pipeline_columns_show_status() {
        let mut prod = env("production", Some("staging"));
        prod.status = Some(EnvironmentStatus {
            last_applied_revision: Some(A.into()),
            conditions: vec![Condition {
                type_: READY.into(),
                status: "True".into(),
                reason: "Succeeded".into(),
                message: format!("applied revision {A}\nwith a very long tail {}", "x".repeat(80)),
                observed_generation: None,
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..EnvironmentStatus::default()
        });
        let out = format_pipeline(&[prod]);
        let row = out.lines().nth(1).unwrap_or_default();
        assert!(
            row.starts_with("production    staging   main@sha1:aaaa1111bbbb   True"),
            "{out}"
        );
        assert!(row.ends_with('…') && !row.contains('\n'), "{out}");
    }

    #[test]
    fn revisions_resolve_only_among_verified_ones() {
        let history = [
            record(C, RevisionPhase::Failed),
            record(B, RevisionPhase::Verified),
            record(A, RevisionPhase::Verified),
        ];
        let ok = |w: &str| resolve_verified("staging", &history, w).ok();
        assert_eq!(ok(A).as_deref(), Some(A));
        assert_eq!(ok("aaaa1111").as_deref(), Some(A));
        assert_eq!(ok("AAAA9999").as_deref(), Some(B));
        assert_eq!(ok("sha1:aaaa1111").as_deref(), Some(A));
        assert_eq!(ok(&A["main@".len()..]).as_deref(), Some(A));
        let refused = |w: &str| match resolve_verified("staging", &history, w) {
            Err(CliError::Refused(m)) => m,
            other => panic!("{w}: {other:?}"),
        };
        assert!(refused("aaaa").contains("ambiguous"));
        assert!(refused("cccc1111").contains(&format!("verified: {B}, {A}")));
        assert!(
            refused("aaa").contains("matches \"aaa\""),
            "prefixes are at least 4 digits"
        );
        assert!(matches!(
            resolve_verified("dev", &[record(C, RevisionPhase::Failed)], "cccc"),
            Err(CliError::Refused(m)) if m.contains("no revision has verified in dev")
        ));
    }

    #[test]
    fn history_lists_records_then_promotions_newest_first() {
        let mut prod = env("production", Some("staging"));
        let applied = Timestamp::from_second(1_700_000_000).expect("valid");
        prod.status = Some(EnvironmentStatus {
            history: vec![
                RevisionRecord {
                    promotion: Some("production-aaaa9999bbbb-x".into()),
                    applied_at: Some(Time(applied)),
                    attempts: 2,
                    ..record(B, RevisionPhase::Failed)
                },
                record(A, RevisionPhase::Verified),
            ],
            ..EnvironmentStatus::default()
        });
        let promotion = |name: &str, revision: &str, created: i64, phase| {
            let mut p = Promotion::new(
                name,
                PromotionSpec {
                    environment: "production".into(),
                    revision: revision.into(),
                    rollback: false,
                    approval: None,
                },
            );
            p.metadata.creation_timestamp = Some(Time(applied + k8s_openapi::jiff::SignedDuration::from_secs(created)));
            p.status = Some(PromotionStatus {
                phase: Some(phase),
                ..PromotionStatus::default()
            });
            p
        };
        let promotions = [
            promotion("production-old", A, 0, PromotionPhase::Succeeded),
            promotion("production-new", B, 600, PromotionPhase::Failed),
        ];
        let now = applied + k8s_openapi::jiff::SignedDuration::from_secs(3 * 3600);
        let out = format_history(&prod, &promotions, now);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REVISION"), "{out}");
        assert!(
            lines[1].starts_with(
                "main@sha1:aaaa9999bbbb   Failed     production-aaaa9999bbbb-x   2023-11-14T22:13:20Z   -"
            ),
            "{out}"
        );
        assert!(lines[1].contains("   2   "), "{out}");
        assert!(lines[2].starts_with("main@sha1:aaaa1111bbbb   Verified   -"), "{out}");
        assert_eq!(lines[3], "", "{out}");
        assert!(lines[4].starts_with("NAME"), "{out}");
        assert_eq!(
            lines[5], "production-new   main@sha1:aaaa9999bbbb   Failed      2h",
            "{out}"
        );
        assert_eq!(
            lines[6], "production-old   main@sha1:aaaa1111bbbb   Succeeded   3h",
            "{out}"
        );
    }

    #[test]
    fn short_revisions_keep_the_ref_name() {
        assert_eq!(short_revision(A), "main@sha1:aaaa1111bbbb");
        assert_eq!(short_revision(&A["main@".len()..]), "sha1:aaaa1111bbbb");
        assert_eq!(short_revision("not a revision"), "not a revision");
    }
}
