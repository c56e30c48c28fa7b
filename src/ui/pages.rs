//! The pages, as pure functions from API objects (and what the server looked up for them) to HTML. Nothing
//! here talks to a cluster, so pages are unit-tested and benchmarked from fixtures. maud escapes every value;
//! Secret data never reaches these functions (diffs come masked by [`crate::format::unified`]).

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, html};

use crate::api::{
    Environment, InventoryEntry, Promotion, PromotionPhase, READY, RevisionPhase, RevisionRecord, VERIFIED,
};
use crate::cli::EventRow;
use crate::format::{group_inventory, short_revision};
use crate::source::Revision;

/// A commit as the repository records it: shown next to a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The first line of the message.
    pub summary: String,
    pub author: String,
}

/// Commit id (40 hex) → what the repository says about it; missing commits are shown without.
pub type Commits = HashMap<String, Commit>;

/// How a status reads: each tone has its own icon, word and border, so it reads without colour too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    Busy,
    Wait,
    Idle,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Good => "badge good",
            Tone::Bad => "badge bad",
            Tone::Busy => "badge busy",
            Tone::Wait => "badge wait",
            Tone::Idle => "badge idle",
        }
    }

    fn icon(self) -> &'static str {
        match self {
            Tone::Good => "✓",
            Tone::Bad => "✕",
            Tone::Busy => "↻",
            Tone::Wait => "‖",
            Tone::Idle => "–",
        }
    }
}

/// An object's health in the inventory tree, as far as the viewer may know it.
#[derive(Clone, Debug)]
pub enum Cell {
    Health(crate::health::Health),
    NotFound,
    /// The viewer may not read this kind there: only its name (from the Environment's status) is shown.
    Hidden,
    /// In another cluster whose kubeconfig Secret the viewer may not read: only its name is shown.
    Withheld,
    Error(String),
}

/// One inventory object as the tree shows it: its health, and the container images it runs (workloads and
/// Pods, as their live spec says; tags and digests as written).
#[derive(Clone, Debug)]
pub struct Live {
    pub cell: Cell,
    pub images: Vec<String>,
}

/// The images of a workload (Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet) or Pod, in order.
pub fn images(object: &serde_json::Value) -> Vec<String> {
    let spec = &object["spec"];
    let pod = if spec["jobTemplate"].is_object() {
        &spec["jobTemplate"]["spec"]["template"]["spec"]
    } else if spec["template"].is_object() {
        &spec["template"]["spec"]
    } else {
        spec
    };
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[k].as_array())
        .flatten()
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect()
}

/// The inventory section of an Environment page.
#[derive(Clone, Copy, Debug)]
pub enum Inventory<'a> {
    /// Each object with what its live state says (as far as the viewer may read it).
    Live(&'a [(InventoryEntry, Live)]),
    /// The objects by name only (from the Environment's status): they live in another cluster, reached with
    /// kubeconfig Secret `secret` (`namespace/name`), which the viewer may not read.
    Withheld {
        entries: &'a [InventoryEntry],
        secret: &'a str,
    },
}

/// What a viewer without `get` on kubeconfig Secret `secret` (`namespace/name`) is told instead of the live view.
pub fn needs_secret(secret: &str) -> String {
    format!("The live view of the other cluster needs get on Secret {secret}.")
}

/// What every page shows around its content.
#[derive(Clone, Debug, Default)]
pub struct Chrome {
    /// The signed-in user (cluster mode), shown with a sign-out button.
    pub user: Option<String>,
    /// The namespace whose changes the page follows live (server-sent events).
    pub live: Option<String>,
    /// Breadcrumbs after "Ferry": (label, link).
    pub crumbs: Vec<(String, String)>,
}

pub fn badge(tone: Tone, text: &str) -> Markup {
    html! {
        span class=(tone.class()) {
            span.icon aria-hidden="true" { (tone.icon()) }
            " " (text)
        }
    }
}

/// A condition's status as a tone: True is good, False bad, Unknown waiting at a gate or in progress.
fn condition_tone(c: Option<&Condition>) -> Tone {
    let waiting = |reason: &str| {
        reason.starts_with("Waiting") || matches!(reason, "Pending" | "Soaking" | "OutsideWindow" | "Frozen" | "Queued")
    };
    match c {
        Some(c) if c.status == "True" => Tone::Good,
        Some(c) if c.status == "False" => Tone::Bad,
        Some(c) if waiting(&c.reason) => Tone::Wait,
        Some(_) => Tone::Busy,
        None => Tone::Idle,
    }
}

pub fn phase_tone(phase: PromotionPhase) -> Tone {
    match phase {
        PromotionPhase::Succeeded => Tone::Good,
        PromotionPhase::Failed | PromotionPhase::Aborted => Tone::Bad,
        PromotionPhase::Applying | PromotionPhase::Verifying => Tone::Busy,
        PromotionPhase::Pending | PromotionPhase::WaitingApproval => Tone::Wait,
        PromotionPhase::Superseded => Tone::Idle,
    }
}

fn revision_tone(phase: RevisionPhase) -> Tone {
    match phase {
        RevisionPhase::Verified => Tone::Good,
        RevisionPhase::Failed => Tone::Bad,
        RevisionPhase::Applying | RevisionPhase::Verifying => Tone::Busy,
        RevisionPhase::Superseded => Tone::Idle,
    }
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// "3m ago" at `now`, with the exact time on hover.
fn ago(now: Timestamp, t: &Time) -> Markup {
    let secs = now.as_second() - t.0.as_second();
    let text = match secs {
        s if s < 0 => "just now".to_string(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    };
    html! { time datetime=(t.0.to_string()) title=(t.0.to_string()) { (text) } }
}

fn commit_of(revision: &str) -> Option<String> {
    Revision::parse(revision).map(|r| r.commit)
}

/// A revision: its ref and short commit, and the commit's message and author where known.
fn revision_block(revision: Option<&str>, commits: &Commits) -> Markup {
    let Some(revision) = revision else {
        return html! { p.muted { "nothing applied yet" } };
    };
    let commit = commit_of(revision).and_then(|c| commits.get(&c));
    html! {
        div.revision {
            code title=(revision) { (short_revision(revision)) }
            @if let Some(c) = commit {
                div.commit-msg { (c.summary) }
                div.muted { "by " (c.author) }
            }
        }
    }
}

fn env_href(ns: &str, name: &str) -> String {
    format!("/ns/{ns}/environments/{name}")
}

fn promotion_href(ns: &str, name: &str) -> String {
    format!("/ns/{ns}/promotions/{name}")
}

/// The whole document around `content`.
pub fn layout(chrome: &Chrome, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Ferry" }
                link rel="stylesheet" href="/static/style.css";
                @if chrome.live.is_some() {
                    script src="/static/live.js" defer {}
                }
            }
            body data-live=[chrome.live.as_deref()] {
                header.top {
                    nav.crumbs aria-label="breadcrumbs" {
                        a.brand href="/" { span.mark aria-hidden="true" { "≋" } " Ferry" }
                        @for (label, href) in &chrome.crumbs {
                            span.sep aria-hidden="true" { "/" }
                            a href=(href) { (label) }
                        }
                    }
                    div.who {
                        @if chrome.live.is_some() {
                            span id="live" class="live" title="updates as the cluster changes" { "● live" }
                        }
                        @if let Some(user) = &chrome.user {
                            span.user { (user) }
                            form method="post" action="/logout" { button type="submit" { "Sign out" } }
                        }
                    }
                }
                main id="main" { (content) }
            }
        }
    }
}

/// `/`: the namespaces with Environments the viewer may list.
pub fn index_page(chrome: &Chrome, namespaces: &[(String, usize)]) -> Markup {
    layout(
        chrome,
        "Pipelines",
        html! {
            h1 { "Pipelines" }
            @if namespaces.is_empty() {
                p.empty { "No Environments you may list." }
            } @else {
                ul.namespaces {
                    @for (ns, count) in namespaces {
                        li { a href=(format!("/ns/{ns}")) { (ns) } span.muted { " " (count) " environment" @if *count != 1 { "s" } } }
                    }
                }
            }
        },
    )
}

/// The promotion shown for an Environment: the one in its status, else its newest unfinished one.
fn current_promotion<'a>(env: &Environment, promotions: &'a [Promotion]) -> Option<&'a Promotion> {
    let name = env.name_any();
    let ours = || promotions.iter().filter(|p| p.spec.environment == name);
    if let Some(summary) = env.status.as_ref().and_then(|s| s.promotion.as_ref())
        && let Some(p) = ours().find(|p| p.name_any() == summary.name)
    {
        return Some(p);
    }
    ours()
        .filter(|p| !p.phase().is_final())
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// What a promotion waits on, in words: the reason and message of its Ready condition while it is gated.
fn gate(p: &Promotion) -> Option<(String, String)> {
    let phase = p.phase();
    if !matches!(phase, PromotionPhase::Pending | PromotionPhase::WaitingApproval) {
        return None;
    }
    let status = p.status.as_ref()?;
    let c = condition(&status.conditions, READY)?;
    Some((c.reason.clone(), c.message.clone()))
}

/// `/ns/{ns}`: Environments in promotion order, as columns.
pub fn pipeline_page(
    chrome: &Chrome,
    namespace: &str,
    envs: &[Environment],
    promotions: Option<&[Promotion]>,
    commits: &Commits,
    now: Timestamp,
) -> Markup {
    let order = crate::format::promotion_order(envs);
    layout(
        chrome,
        namespace,
        html! {
            h1 { "Pipeline " span.muted { (namespace) } }
            @if order.is_empty() {
                p.empty { "No Environments in this namespace." }
            }
            ol.pipeline {
                @for env in &order {
                    (env_card(namespace, env, promotions, commits, now))
                }
            }
        },
    )
}

fn env_card(
    ns: &str,
    env: &Environment,
    promotions: Option<&[Promotion]>,
    commits: &Commits,
    now: Timestamp,
) -> Markup {
    let name = env.name_any();
    let status = env.status.clone().unwrap_or_default();
    let ready = condition(&status.conditions, READY);
    let verified = condition(&status.conditions, VERIFIED);
    let from = env.spec.promotion.as_ref().map(|p| p.from.as_str());
    let promotion = promotions.and_then(|ps| current_promotion(env, ps));
    let applied_at = status
        .last_applied_revision
        .as_deref()
        .and_then(|r| status.record(r))
        .and_then(|r| r.applied_at.as_ref());
    html! {
        li.card id=(format!("env-{name}")) data-env=(name) {
            header {
                h2 { a href=(env_href(ns, &name)) { (name) } }
                @if let Some(from) = from {
                    span.from { "from " a href=(env_href(ns, from)) { (from) } }
                }
            }
            div.badges {
                (badge(condition_tone(ready), &format!("Ready: {}", ready.map(|c| c.reason.as_str()).unwrap_or("Unknown"))))
                @if let Some(v) = verified {
                    (badge(condition_tone(Some(v)), &format!("Verified: {}", v.reason)))
                }
                @if env.spec.suspend {
                    (badge(Tone::Idle, "Suspended"))
                }
            }
            div.applied data-revision=[status.last_applied_revision.as_deref()] {
                (revision_block(status.last_applied_revision.as_deref(), commits))
                @if let Some(at) = applied_at { div.muted { "applied " (ago(now, at)) } }
            }
            @if let Some(p) = promotion {
                div.promotion data-phase=(p.phase().as_str()) {
                    div.row {
                        a href=(promotion_href(ns, &p.name_any())) { (p.name_any()) }
                        (badge(phase_tone(p.phase()), p.phase().as_str()))
                    }
                    div.muted { "revision " code { (short_revision(&p.spec.revision)) } }
                    @if let Some(a) = &p.spec.approval {
                        div.decision data-decision=(format!("{:?}", a.decision)) {
                            (badge(if a.decision == crate::api::Decision::Approved { Tone::Good } else { Tone::Bad }, &format!("{:?}", a.decision)))
                            " by " strong { (a.by.as_deref().unwrap_or("unknown")) }
                        }
                    }
                    @if let Some((reason, message)) = gate(p).filter(|_| p.spec.approval.is_none()) {
                        div.gate { strong { (reason) } ": " (message) }
                    }
                }
            }
            // Why it is not ready; a waiting promotion already says so above.
            @if let Some(c) = ready.filter(|c| c.status == "False") {
                p.message { (c.message) }
            }
        }
    }
}

/// `/ns/{ns}/environments/{name}`: status, inventory tree, history, promotions, Events.
#[allow(clippy::too_many_arguments)]
pub fn environment_page(
    chrome: &Chrome,
    namespace: &str,
    env: &Environment,
    promotions: Option<&[Promotion]>,
    inventory: Inventory,
    events: Option<&[EventRow]>,
    commits: &Commits,
    now: Timestamp,
) -> Markup {
    let name = env.name_any();
    let status = env.status.clone().unwrap_or_default();
    let ready = condition(&status.conditions, READY);
    let verified = condition(&status.conditions, VERIFIED);
    let spec = &env.spec;
    layout(
        chrome,
        &name,
        html! {
            h1 { "Environment " (name) }
            div.badges {
                (badge(condition_tone(ready), &format!("Ready: {}", ready.map(|c| c.reason.as_str()).unwrap_or("Unknown"))))
                @if let Some(v) = verified { (badge(condition_tone(Some(v)), &format!("Verified: {}", v.reason))) }
                @if spec.suspend { (badge(Tone::Idle, "Suspended")) }
            }
            @if let Some(c) = ready { p.message { (c.message) } }
            section.grid2 {
                div.panel {
                    h2 { "Applied revision" }
                    (revision_block(status.last_applied_revision.as_deref(), commits))
                    @if let Some(d) = &status.last_drift_correction {
                        h3 { "Last drift correction" }
                        p { "put back to " code { (short_revision(&d.revision)) } ":" }
                        ul.compact { @for o in &d.objects { li { code { (o) } } } }
                    }
                }
                div.panel {
                    h2 { "Spec" }
                    dl.kv {
                        dt { "Source" } dd { (spec.source_ref.kind) "/" (spec.source_ref.name) }
                        dt { "Path" } dd { code { (spec.path) } }
                        @if let Some(t) = &spec.target_namespace { dt { "Target namespace" } dd { (t) } }
                        @if let Some(k) = &spec.kube_config { dt { "Cluster" } dd { "kubeconfig Secret " (k.secret_ref.name) } }
                        @if let Some(p) = &spec.promotion {
                            dt { "Promoted from" } dd { a href=(env_href(namespace, &p.from)) { (p.from) } }
                            @if let Some(s) = &p.soak_time { dt { "Soak" } dd { (s) } }
                            dt { "Approval" } dd { @if p.require_approval { "required" } @else { "not required" } }
                            @if !p.windows.is_empty() { dt { "Windows" } dd { (p.windows.len()) } }
                        }
                    }
                }
            }
            section {
                h2 { "Conditions" }
                (conditions_table(&status.conditions, now))
            }
            section {
                h2 { "Inventory" }
                @match inventory {
                    Inventory::Live(objects) => (tree_html(objects)),
                    Inventory::Withheld { entries, secret } => {
                        p.message.withheld { (needs_secret(secret)) }
                        (tree_html(&names_only(entries)))
                    }
                }
            }
            section {
                h2 { "History" }
                (history_table(namespace, &status.history, commits, now))
            }
            @if let Some(promotions) = promotions {
                section {
                    h2 { "Promotions" }
                    (promotions_table(namespace, promotions, now))
                }
            }
            section {
                h2 { "Events" }
                (events_table(events, now))
            }
        },
    )
}

/// Inventory entries without any live state, for [`tree_html`].
fn names_only(entries: &[InventoryEntry]) -> Vec<(InventoryEntry, Live)> {
    let withheld = || Live {
        cell: Cell::Withheld,
        images: Vec::new(),
    };
    entries.iter().map(|e| (e.clone(), withheld())).collect()
}

fn conditions_table(conditions: &[Condition], now: Timestamp) -> Markup {
    html! {
        @if conditions.is_empty() { p.muted { "none yet" } } @else {
            div.scroll { table {
                thead { tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } th { "Since" } } }
                tbody { @for c in conditions { tr {
                    td { (c.type_) }
                    td { (badge(condition_tone(Some(c)), &c.status)) }
                    td { (c.reason) }
                    td.msg { (c.message) }
                    td.nowrap { (ago(now, &c.last_transition_time)) }
                } } }
            } }
        }
    }
}

fn cell_badge(cell: &Cell) -> Markup {
    use crate::health::Health;
    match cell {
        Cell::Health(Health::Current) => badge(Tone::Good, "Current"),
        Cell::Health(Health::InProgress(why)) => badge(Tone::Busy, &format!("InProgress: {why}")),
        Cell::Health(Health::Failed(why)) => badge(Tone::Bad, &format!("Failed: {why}")),
        Cell::NotFound => badge(Tone::Bad, "NotFound"),
        Cell::Hidden => badge(Tone::Idle, "hidden: no access"),
        Cell::Withheld => badge(Tone::Idle, "live state not shown"),
        Cell::Error(e) => badge(Tone::Idle, &format!("Unknown: {e}")),
    }
}

/// The inventory as nested lists: namespace, kind, objects with their health.
pub fn tree_html(objects: &[(InventoryEntry, Live)]) -> Markup {
    let groups = group_inventory(objects);
    html! {
        @if groups.is_empty() { p.muted { "no objects" } } @else {
            ul.tree {
                @for (group, kinds) in &groups { li {
                    span.group { (group) }
                    ul { @for (kind, names) in kinds { li {
                        span.kind { (kind) }
                        ul { @for (name, live) in names { li.obj {
                            code { (name) } " " (cell_badge(&live.cell))
                            @for image in &live.images { span.image title="container image" { (image) } }
                        } } }
                    } } }
                } }
            }
        }
    }
}

fn history_table(ns: &str, history: &[RevisionRecord], commits: &Commits, now: Timestamp) -> Markup {
    html! {
        @if history.is_empty() { p.muted { "no revisions yet" } } @else {
            div.scroll { table {
                thead { tr { th { "Revision" } th { "Phase" } th { "Promotion" } th { "Applied" } th { "Finished" } th { "Job" } th { "Message" } } }
                tbody { @for r in history { tr {
                    td {
                        code { (short_revision(&r.revision)) }
                        @if let Some(c) = commit_of(&r.revision).and_then(|c| commits.get(&c)) { div.muted { (c.summary) } }
                    }
                    td { (badge(revision_tone(r.phase), &format!("{:?}", r.phase))) @if r.attempts > 1 { span.muted { " ×" (r.attempts) } } }
                    td { @if let Some(p) = &r.promotion { a href=(promotion_href(ns, p)) { (p) } } }
                    td.nowrap { @if let Some(t) = &r.applied_at { (ago(now, t)) } }
                    td.nowrap { @if let Some(t) = &r.finished_at { (ago(now, t)) } }
                    td { @if let Some(j) = &r.job { code { (j) } } }
                    td.msg { (r.message.as_deref().unwrap_or("")) }
                } } }
            } }
        }
    }
}

fn promotions_table(ns: &str, promotions: &[Promotion], now: Timestamp) -> Markup {
    let mut sorted: Vec<&Promotion> = promotions.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    html! {
        @if sorted.is_empty() { p.muted { "none" } } @else {
            div.scroll { table {
                thead { tr { th { "Name" } th { "Revision" } th { "Phase" } th { "Created" } } }
                tbody { @for p in sorted { tr {
                    td { a href=(promotion_href(ns, &p.name_any())) { (p.name_any()) } @if p.spec.rollback { span.muted { " (rollback)" } } }
                    td { code { (short_revision(&p.spec.revision)) } }
                    td { (badge(phase_tone(p.phase()), p.phase().as_str())) }
                    td.nowrap { @if let Some(t) = &p.metadata.creation_timestamp { (ago(now, t)) } }
                } } }
            } }
        }
    }
}

fn events_table(events: Option<&[EventRow]>, now: Timestamp) -> Markup {
    let Some(events) = events else {
        return html! { p.muted { "You may not list Events here." } };
    };
    html! {
        @if events.is_empty() { p.muted { "no events" } } @else {
            div.scroll { table {
                thead { tr { th { "When" } th { "Type" } th { "Reason" } th { "Object" } th { "Message" } } }
                tbody { @for e in events.iter().rev() { tr {
                    td.nowrap { @if let Some(t) = e.time { (ago(now, &Time(t))) } }
                    td { @if e.type_ == "Warning" { (badge(Tone::Bad, "Warning")) } @else { (e.type_) } }
                    td { (e.reason) }
                    td { (e.object) }
                    td.msg { (e.message) }
                } } }
            } }
        }
    }
}

/// `/ns/{ns}/promotions/{name}`: the transitions as a timeline, and the decision.
pub fn promotion_page(
    chrome: &Chrome,
    namespace: &str,
    p: &Promotion,
    events: Option<&[EventRow]>,
    commits: &Commits,
    now: Timestamp,
) -> Markup {
    let name = p.name_any();
    let status = p.status.clone().unwrap_or_default();
    let phase = p.phase();
    let diffable = matches!(phase, PromotionPhase::Pending | PromotionPhase::WaitingApproval);
    layout(
        chrome,
        &name,
        html! {
            h1 { "Promotion " (name) }
            div.badges data-phase=(phase.as_str()) {
                (badge(phase_tone(phase), phase.as_str()))
                @if p.spec.rollback { (badge(Tone::Idle, "Rollback")) }
            }
            @if let Some((reason, message)) = gate(p) { p.gate { strong { (reason) } ": " (message) } }
            section.grid2 {
                div.panel {
                    h2 { "What" }
                    dl.kv {
                        dt { "Environment" } dd { a href=(env_href(namespace, &p.spec.environment)) { (p.spec.environment) } }
                        dt { "Revision" } dd { (revision_block(Some(&p.spec.revision), commits)) }
                        @if let Some(t) = &status.upstream_verified_at { dt { "Verified upstream" } dd { (ago(now, t)) } }
                        @if let Some(r) = &status.rollback_promotion { dt { "Rolled back by" } dd { a href=(promotion_href(namespace, r)) { (r) } } }
                    }
                    @if diffable {
                        p { a.button href=(format!("{}/diff", promotion_href(namespace, &name))) { "What would change →" } }
                    }
                }
                div.panel {
                    h2 { "Decision" }
                    @match &p.spec.approval {
                        Some(a) => {
                            p.decision {
                                (badge(if a.decision == crate::api::Decision::Approved { Tone::Good } else { Tone::Bad }, &format!("{:?}", a.decision)))
                                " by " strong { (a.by.as_deref().unwrap_or("unknown")) }
                                @if let Some(t) = &a.at { " " (ago(now, t)) }
                            }
                            @if let Some(m) = &a.message { blockquote { (m) } }
                        }
                        None => p.muted { "no decision recorded" },
                    }
                }
            }
            section {
                h2 { "Timeline" }
                @if status.transitions.is_empty() { p.muted { "no transitions yet" } } @else {
                    ol.timeline {
                        @for t in &status.transitions {
                            li data-phase=(t.phase.as_str()) {
                                div.when { (ago(now, &t.time)) }
                                div {
                                    (badge(phase_tone(t.phase), t.phase.as_str()))
                                    " " span.reason { (t.reason) }
                                    @if !t.message.is_empty() { div.msg { (t.message) } }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Events" }
                (events_table(events, now))
            }
        },
    )
}

/// One object of a diff: its name, and the masked unified diff (None: the viewer may not read the kind).
pub struct DiffItem {
    pub object: String,
    pub text: Option<String>,
}

/// `/ns/{ns}/promotions/{name}/diff`: what applying the promotion's revision would change. The dry run costs a
/// fetch, a render and requests to the API server, so it runs only when asked: `csrf` is the token of the form
/// that asks (None: the viewer may not ask), `result` the dry run once asked (or why there is none).
pub fn diff_page(
    chrome: &Chrome,
    p: &Promotion,
    revision: &str,
    csrf: Option<&str>,
    result: Option<Result<&[DiffItem], &str>>,
) -> Markup {
    let name = p.name_any();
    let action = format!("{}/diff", promotion_href(&p.namespace().unwrap_or_default(), &name));
    layout(
        chrome,
        &format!("diff {name}"),
        html! {
            h1 { "What " (name) " would change" }
            p.muted { "Dry run of " code { (short_revision(revision)) } " against what runs in " (p.spec.environment) " now. Secret values are shown as digests." }
            @if let Some(token) = csrf {
                form.dry-run method="post" action=(action) {
                    input type="hidden" name=(super::csrf::FIELD) value=(token);
                    button type="submit" { @if result.is_some() { "Dry-run again" } @else { "Dry-run the diff" } }
                }
            }
            @match result {
                None => {},
                Some(Err(message)) => p.message { (message) },
                Some(Ok(items)) if items.is_empty() => p.empty { "No changes." },
                Some(Ok(items)) => {
                    @for item in items {
                        details.diff open {
                            summary { code { (item.object) } }
                            @match &item.text {
                                Some(text) => pre { (diff_lines(text)) },
                                None => p.muted { "hidden: you may not read this kind here" },
                            }
                        }
                    }
                }
            }
        },
    )
}

fn diff_lines(text: &str) -> Markup {
    html! {
        @for line in text.lines() {
            @let class = if line.starts_with("+++") || line.starts_with("---") { "h" }
                else if line.starts_with('+') { "add" }
                else if line.starts_with('-') { "del" }
                else if line.starts_with("@@") { "hunk" } else { "ctx" };
            span class=(class) { (line) } "\n"
        }
    }
}

/// Sign-in (cluster mode): a Kubernetes bearer token, kept in an HttpOnly cookie.
pub fn login_page(error: Option<&str>) -> Markup {
    layout(
        &Chrome::default(),
        "Sign in",
        html! {
            div.login.panel {
                h1 { "Sign in" }
                p { "Paste a Kubernetes bearer token. You will see what that token may list, nothing more." }
                p.muted { code { "kubectl create token NAME -n NAMESPACE" } " makes one for a ServiceAccount." }
                @if let Some(e) = error { p.message role="alert" { (e) } }
                form method="post" action="/login" {
                    label for="token" { "Token" }
                    input id="token" type="password" name="token" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// An error or refusal, as a page.
pub fn message_page(chrome: &Chrome, title: &str, message: &str) -> Markup {
    layout(
        chrome,
        title,
        html! {
            h1 { (title) }
            p.message { (message) }
            p { a href="/" { "← All pipelines" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str, from: Option<&str>, revision: Option<&str>) -> Environment {
        let mut spec = json!({"sourceRef": {"kind": "GitRepository", "name": "config"}, "path": "./deploy"});
        if let Some(f) = from {
            spec["promotion"] = json!({"from": f, "requireApproval": true});
        }
        let mut e: Environment = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": spec,
        }))
        .unwrap();
        e.status = Some(serde_json::from_value(json!({
            "lastAppliedRevision": revision,
            "conditions": [{"type": "Ready", "status": if revision.is_some() {"True"} else {"Unknown"}, "reason": "Succeeded",
                            "message": "applied <b>", "lastTransitionTime": "2026-11-25T10:00:00Z"}],
        })).unwrap());
        e
    }

    fn waiting(name: &str, env: &str, revision: &str) -> Promotion {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Promotion",
            "metadata": {"name": name, "namespace": "demo", "creationTimestamp": "2026-11-25T10:00:00Z"},
            "spec": {"environment": env, "revision": revision},
            "status": {"phase": "WaitingApproval", "conditions": [{"type": "Ready", "status": "False", "reason": "WaitingApproval",
                "message": "waits for ferry approve", "lastTransitionTime": "2026-11-25T10:00:00Z"}],
                "transitions": [{"phase": "WaitingApproval", "reason": "WaitingApproval", "message": "needs approval", "time": "2026-11-25T10:00:00Z"}]},
        }))
        .unwrap()
    }

    const REV: &str = "main@sha1:7ddfd16ec7c51bcd26ed54d8bd231aeaafd321d0";

    #[test]
    fn the_pipeline_shows_environments_in_promotion_order_with_their_revision_and_gate() {
        let envs = vec![
            env("production", Some("staging"), None),
            env("staging", None, Some(REV)),
        ];
        let promotions = vec![waiting("production-7ddfd16ec7c5", "production", REV)];
        let mut commits = Commits::new();
        commits.insert(
            "7ddfd16ec7c51bcd26ed54d8bd231aeaafd321d0".into(),
            Commit {
                summary: "replicas: 3 <script>".into(),
                author: "Dev".into(),
            },
        );
        let now = "2026-11-25T10:05:00Z".parse().unwrap();
        let html = pipeline_page(&Chrome::default(), "demo", &envs, Some(&promotions), &commits, now).into_string();
        let staging = html.find("data-env=\"staging\"").unwrap();
        let production = html.find("data-env=\"production\"").unwrap();
        assert!(staging < production, "staging comes first");
        assert!(html.contains("main@sha1:7ddfd16ec7c5"), "{html}");
        assert!(
            html.contains("replicas: 3 &lt;script&gt;"),
            "commit messages are escaped: {html}"
        );
        assert!(
            html.contains("WaitingApproval</strong>: waits for ferry approve"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "messages are escaped");
    }

    #[test]
    fn images_come_from_pod_templates_and_pods() {
        let deployment = json!({"spec": {"template": {"spec": {
            "initContainers": [{"image": "busybox:1.36"}],
            "containers": [{"image": "registry.example/web@sha256:abc"}]}}}});
        assert_eq!(images(&deployment), ["busybox:1.36", "registry.example/web@sha256:abc"]);
        let cron =
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "job:1"}]}}}}}});
        assert_eq!(images(&cron), ["job:1"]);
        assert_eq!(
            images(&json!({"spec": {"containers": [{"image": "pod:1"}]}})),
            ["pod:1"]
        );
        assert!(images(&json!({"data": {"a": "b"}})).is_empty());
    }

    #[test]
    fn secret_values_in_a_diff_are_digests() {
        let d = crate::apply::ObjectDiff {
            object: "v1/Secret demo/s".into(),
            live: None,
            desired: json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}}),
        };
        let items = [DiffItem {
            object: d.object.clone(),
            text: Some(crate::format::unified(&d, false)),
        }];
        let p = waiting("p", "production", REV);
        let html = diff_page(&Chrome::default(), &p, REV, Some("tok"), Some(Ok(&items))).into_string();
        assert!(!html.contains("aHVudGVyMg=="), "{html}");
        assert!(html.contains("&lt;secret "), "{html}");
    }

    #[test]
    fn the_diff_is_asked_for_with_a_form_that_carries_the_token() {
        let p = waiting("p", "production", REV);
        let html = diff_page(&Chrome::default(), &p, REV, Some("tok123"), None).into_string();
        assert!(
            html.contains(r#"<form class="dry-run" method="post" action="/ns/demo/promotions/p/diff">"#),
            "{html}"
        );
        assert!(html.contains(r#"name="csrf" value="tok123""#), "{html}");
        assert!(!html.contains("No changes"), "nothing computed yet: {html}");
        let refused = diff_page(&Chrome::default(), &p, REV, None, Some(Err("needs get"))).into_string();
        assert!(
            !refused.contains("<form class=\"dry-run\"") && refused.contains("needs get"),
            "{refused}"
        );
    }

    #[test]
    fn withheld_inventory_shows_names_and_what_it_would_take() {
        let mut e = env("prod", None, Some(REV));
        let entry: InventoryEntry = serde_json::from_value(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "demo", "name": "web"}),
        )
        .unwrap();
        e.status.as_mut().unwrap().inventory = vec![entry.clone()];
        let now = "2026-11-25T10:05:00Z".parse().unwrap();
        let inventory = Inventory::Withheld {
            entries: std::slice::from_ref(&entry),
            secret: "demo/prod-kubeconfig",
        };
        let html = environment_page(
            &Chrome::default(),
            "demo",
            &e,
            None,
            inventory,
            None,
            &Commits::new(),
            now,
        )
        .into_string();
        assert!(html.contains("web") && html.contains("live state not shown"), "{html}");
        assert!(
            html.contains("The live view of the other cluster needs get on Secret demo/prod-kubeconfig."),
            "{html}"
        );
    }

    #[test]
    fn the_promotion_timeline_lists_transitions() {
        let p = waiting("p", "production", REV);
        let now = "2026-11-25T10:05:00Z".parse().unwrap();
        let html = promotion_page(&Chrome::default(), "demo", &p, Some(&[]), &Commits::new(), now).into_string();
        assert!(html.contains("needs approval") && html.contains("5m ago"), "{html}");
        assert!(
            html.contains("/ns/demo/promotions/p/diff"),
            "a waiting promotion links its diff"
        );
    }
}
