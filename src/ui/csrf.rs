//! Cross-site request forgery: the one costly action (the diff page's dry run) is a POST that must carry a token
//! only our own page can know, and come from our own origin.
//!
//! The token is an HMAC of the viewer's session (their bearer token) under a key drawn per process: it needs no
//! server-side state, differs per session, and another site can neither read it (same-origin policy) nor compute
//! it. The `SameSite=Strict` cookie already keeps other sites' forms unauthenticated; the token and the
//! Origin/Referer check hold where that is not enough (a browser without SameSite, a header-authenticated
//! client, a sibling subdomain).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The form field that carries the token.
pub const FIELD: &str = "csrf";

/// Per-process key for the tokens; a restart invalidates open forms (they are re-served with the page).
pub struct Csrf {
    key: [u8; 32],
}

impl Csrf {
    /// A fresh key from the operating system's random generator.
    pub fn new() -> std::io::Result<Csrf> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Csrf { key })
    }

    fn mac(&self, session: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(b"ferry-ui-csrf\0");
        mac.update(session.as_bytes());
        mac
    }

    /// The token for the forms of `session` (the viewer's bearer token; empty in local mode, which has none).
    pub fn token(&self, session: &str) -> String {
        hex::encode(self.mac(session).finalize().into_bytes())
    }

    /// Whether `given` is `session`'s token (compared in constant time).
    pub fn check(&self, session: &str, given: &str) -> bool {
        match hex::decode(given.trim()) {
            Ok(bytes) => self.mac(session).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

/// A request comes from a page of this server: its `Origin`, else its `Referer`, names the `Host` it was sent
/// to. Stricter than the sign-in's check: a request that names no origin at all (`Origin: null`, no Referer) is
/// refused, since the pages send both to themselves (`Referrer-Policy: same-origin`).
pub fn from_this_host(headers: &http::HeaderMap) -> bool {
    let host = match headers.get(http::header::HOST).and_then(|v| v.to_str().ok()) {
        Some(h) if !h.is_empty() => h,
        _ => return false,
    };
    let header = |name| headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
    let origin = header(http::header::ORIGIN).filter(|o| *o != "null");
    match origin.or_else(|| header(http::header::REFERER)) {
        Some(url) => authority(url).is_some_and(|a| a.eq_ignore_ascii_case(host)),
        None => false,
    }
}

/// `host[:port]` of an http(s) URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // A URL with user info (`http://ui@evil`) is not one our pages make.
    (!authority.is_empty() && !authority.contains('@')).then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, http::HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn tokens_are_per_session_and_per_process() {
        let (a, b) = (Csrf::new().unwrap(), Csrf::new().unwrap());
        let t = a.token("session-1");
        assert!(a.check("session-1", &t));
        assert!(!a.check("session-2", &t), "another session's token");
        assert!(!b.check("session-1", &t), "another process's token");
        assert!(!a.check("session-1", ""));
        assert!(!a.check("session-1", "not hex"));
        assert!(!a.check("session-1", &t[..10]));
    }

    #[test]
    fn only_requests_naming_this_host_as_origin_pass() {
        assert!(from_this_host(&h(&[("host", "ui:8000"), ("origin", "http://ui:8000")])));
        assert!(from_this_host(&h(&[
            ("host", "ui:8000"),
            ("origin", "https://UI:8000")
        ])));
        assert!(from_this_host(&h(&[
            ("host", "ui:8000"),
            ("referer", "http://ui:8000/ns/a/promotions/p/diff")
        ])));
        assert!(from_this_host(&h(&[
            ("host", "ui:8000"),
            ("origin", "null"),
            ("referer", "http://ui:8000/x")
        ])));
        assert!(!from_this_host(&h(&[("host", "ui:8000"), ("origin", "http://evil")])));
        assert!(!from_this_host(&h(&[
            ("host", "ui:8000"),
            ("origin", "http://ui:8000.evil")
        ])));
        assert!(!from_this_host(&h(&[
            ("host", "ui:8000"),
            ("referer", "http://evil/?ui:8000")
        ])));
        assert!(!from_this_host(&h(&[
            ("host", "ui:8000"),
            ("referer", "http://ui:8000@evil/")
        ])));
        assert!(!from_this_host(&h(&[("host", "ui:8000"), ("origin", "null")])));
        assert!(!from_this_host(&h(&[("host", "ui:8000")])), "no origin at all");
        assert!(!from_this_host(&h(&[("origin", "http://ui:8000")])), "no Host");
    }
}
