//! Where a kubeconfig Secret points is as much the Secret's as its credentials: a viewer who may not `get` the
//! Secret of an Environment that applies to another cluster must not learn that cluster's address from the
//! web view either. The controller writes it into messages ("cannot reach the target cluster
//! https://10.0.0.7:6443 (kubeconfig Secret team-a/prod)"), which land in the Environment's conditions and
//! history, its Promotions' transitions, and Events.
//!
//! So for such a viewer every message shown in that namespace loses the servers of the Secrets they may not
//! read (as `scheme://host:port`, `host:port` and the bare host), and the address part of every URL (a message
//! written before the Secret was rotated names a server the current Secret no longer does). Only text is
//! touched; names, phases and times stay as they are.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Environment, Promotion};
use crate::cli::EventRow;

/// What stands where an address was.
pub const HIDDEN: &str = "‹server hidden›";

/// `scheme://authority` of any URL in a message.
static URL_AUTHORITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)\b[a-z][a-z0-9+.-]*://[^\s/?#"'<>()]+"#).expect("a valid pattern"));

/// Rewrites the messages a viewer sees; [`Redactor::none`] leaves everything as it is.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    active: bool,
    /// Server addresses to hide, longest first (so `host:port` goes before `host`).
    needles: Vec<String>,
}

impl Redactor {
    /// Shows everything: the viewer may read every kubeconfig Secret in the namespace (or there is none).
    pub fn none() -> Self {
        Redactor::default()
    }

    /// Hides `servers` (`scheme://host[:port]`, as [`crate::cluster::RemoteCluster::server`] says them) and
    /// the address of every URL.
    pub fn hiding(servers: impl IntoIterator<Item = String>) -> Self {
        let mut needles: Vec<String> = servers.into_iter().flat_map(|s| forms(&s)).collect();
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { active: true, needles }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// `text` without the addresses.
    pub fn text(&self, text: &str) -> String {
        if !self.active {
            return text.to_string();
        }
        let mut out = URL_AUTHORITY.replace_all(text, HIDDEN).into_owned();
        for needle in &self.needles {
            out = replace_token(&out, needle);
        }
        out
    }

    /// Every string in `value`, rewritten.
    fn value(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.text(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }

    /// `status` with every string rewritten, through its JSON form (so a field added later is covered too);
    /// None if it does not come back from JSON, and the page then shows no status rather than an unredacted one.
    /// Only the status: it holds the messages, while names and references in metadata and spec drive the
    /// pages' links and order.
    fn status<T: Serialize + DeserializeOwned>(&self, status: Option<T>) -> Option<T> {
        let mut value = serde_json::to_value(status?).ok()?;
        self.value(&mut value);
        serde_json::from_value(value).ok()
    }

    pub fn environment(&self, env: Environment) -> Environment {
        if !self.active {
            return env;
        }
        Environment {
            status: self.status(env.status),
            ..env
        }
    }

    pub fn promotion(&self, p: Promotion) -> Promotion {
        if !self.active {
            return p;
        }
        Promotion {
            status: self.status(p.status),
            ..p
        }
    }

    pub fn event(&self, e: EventRow) -> EventRow {
        EventRow {
            reason: self.text(&e.reason),
            object: self.text(&e.object),
            message: self.text(&e.message),
            ..e
        }
    }
}

/// The ways a message may say a server: the URL, `host:port`, and the host when it is an address or a dotted
/// name (a single label such as `prod` is too likely to be an ordinary word or an object's name).
fn forms(server: &str) -> Vec<String> {
    let authority = server.split_once("://").map_or(server, |(_, a)| a);
    let host = match authority.rsplit_once(':') {
        // `[::1]:6443` or `host:6443`; a bare IPv6 address has more colons and no brackets.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && (h.starts_with('[') || !h.contains(':')) => h,
        _ => authority,
    };
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    let distinctive = |h: &&str| h.contains('.') || h.contains(':');
    [server, authority]
        .into_iter()
        .chain([host, unbracketed].into_iter().filter(distinctive))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `text` with each whole-token occurrence of `needle` replaced: `10.0.0.1` goes, `10.0.0.15` stays.
fn replace_token(text: &str, needle: &str) -> String {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in text.match_indices(needle) {
        if at < rest {
            continue;
        }
        let end = at + needle.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        // A trailing dot ends a sentence, not a name.
        let after_is_name = after.is_some_and(|c| part_of_name(c) && c != '.')
            || (after == Some('.')
                && text[end + 1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric()));
        if before.is_some_and(part_of_name) || after_is_name {
            continue;
        }
        out.push_str(&text[rest..at]);
        out.push_str(HIDDEN);
        rest = end;
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn servers_go_in_every_form_and_other_names_stay() {
        let r = Redactor::hiding(["https://10.0.0.1:6443".to_string()]);
        assert_eq!(
            r.text("cannot reach the target cluster https://10.0.0.1:6443 (kubeconfig Secret a/prod): refused"),
            format!("cannot reach the target cluster {HIDDEN} (kubeconfig Secret a/prod): refused")
        );
        assert_eq!(r.text("dial 10.0.0.1:6443: timeout"), format!("dial {HIDDEN}: timeout"));
        assert_eq!(r.text("not valid for 10.0.0.1."), format!("not valid for {HIDDEN}."));
        assert_eq!(r.text("peer 10.0.0.15 and 110.0.0.1"), "peer 10.0.0.15 and 110.0.0.1");
        assert_eq!(
            r.text("fetching https://git.example/org/repo.git"),
            format!("fetching {HIDDEN}/org/repo.git"),
            "any URL's address: a server from before a rotation too"
        );
        assert_eq!(r.text("Ready"), "Ready");
        let v6 = Redactor::hiding(["https://[fd00::1]:6443".to_string()]);
        assert_eq!(v6.text("dial [fd00::1]:6443"), format!("dial {HIDDEN}"));
        assert_eq!(v6.text("name fd00::1 mismatch"), format!("name {HIDDEN} mismatch"));
        let single = Redactor::hiding(["https://prod:6443".to_string()]);
        assert_eq!(
            single.text("prod is down: prod:6443"),
            format!("prod is down: {HIDDEN}")
        );
        let named = Redactor::hiding(["https://kube.prod.example".to_string()]);
        assert_eq!(
            named.text("certificate is not valid for name \"kube.prod.example\""),
            format!("certificate is not valid for name \"{HIDDEN}\"")
        );
    }

    #[test]
    fn nothing_changes_without_hidden_secrets() {
        let r = Redactor::none();
        assert!(!r.is_active());
        assert_eq!(r.text("https://10.0.0.1:6443"), "https://10.0.0.1:6443");
    }

    #[test]
    fn every_message_of_an_environment_is_rewritten() {
        let env: Environment = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "prod", "namespace": "a"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "config"}, "path": "./deploy",
                     "kubeConfig": {"secretRef": {"name": "prod"}}},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "ClusterUnreachable",
                    "message": "cannot reach the target cluster https://10.0.0.1:6443", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "history": [{"revision": "main@sha1:abc", "phase": "Failed", "attempts": 1, "message": "dial 10.0.0.1:6443"}],
            },
        }))
        .unwrap();
        let r = Redactor::hiding(["https://10.0.0.1:6443".to_string()]);
        let shown = serde_json::to_string(&r.environment(env)).unwrap();
        assert!(!shown.contains("10.0.0.1"), "{shown}");
        assert!(
            shown.contains("ClusterUnreachable") && shown.contains("\"prod\""),
            "{shown}"
        );
    }
}
