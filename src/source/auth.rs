//! Credentials for a fetch, read from a Secret, and the checks that keep them safe: SSH host keys must match
//! `known_hosts` (there is no "accept any host key"), and a custom CA replaces the system roots for HTTPS.
//!
//! Secret keys (Flux's names, so existing Secrets work): `username` + `password` (HTTPS basic), `bearerToken`,
//! `identity` (SSH private key, PEM/OpenSSH) + optional `password` (its passphrase) + `known_hosts`, `ca.crt`.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};

use super::SourceError;

#[derive(Clone, Default)]
pub struct Credentials {
    /// `namespace/name` of the Secret: part of the mirror key, so repos with different credentials never share
    /// a mirror (a repo without access must not read what another's credentials fetched).
    pub identity: String,
    pub basic: Option<(String, String)>,
    pub bearer_token: Option<String>,
    pub ssh: Option<SshKey>,
    pub known_hosts: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct SshKey {
    pub private_key: String,
    pub passphrase: Option<String>,
}

// Never print secrets, even in debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("basic", &self.basic.is_some())
            .field("bearer_token", &self.bearer_token.is_some())
            .field("ssh", &self.ssh.is_some())
            .field("known_hosts", &self.known_hosts.is_some())
            .field("ca", &self.ca_pem.is_some())
            .finish()
    }
}

impl Credentials {
    /// Builds credentials from a Secret's data for `url`, checking that what the URL's scheme needs is there.
    pub fn from_secret(identity: &str, data: &BTreeMap<String, Vec<u8>>, url: &str) -> Result<Self, SourceError> {
        let text = |key: &str| -> Result<Option<String>, SourceError> {
            data.get(key)
                .map(|v| {
                    String::from_utf8(v.clone())
                        .map_err(|_| SourceError::Auth(format!("key {key:?} of Secret {identity} is not UTF-8")))
                })
                .transpose()
        };
        let mut creds = Credentials {
            identity: identity.to_string(),
            known_hosts: text("known_hosts")?,
            ca_pem: data.get("ca.crt").or_else(|| data.get("caFile")).cloned(),
            bearer_token: text("bearerToken")?,
            ..Credentials::default()
        };
        let is_plain_http = url.starts_with("http://");
        let is_ssh = url.starts_with("ssh://") || (!url.contains("://") && url.contains('@'));
        if is_ssh {
            let Some(private_key) = text("identity")? else {
                return Err(SourceError::Auth(format!(
                    "Secret {identity} has no key \"identity\" (the SSH private key)"
                )));
            };
            if creds.known_hosts.is_none() {
                return Err(SourceError::Auth(format!(
                    "Secret {identity} has no key \"known_hosts\"; SSH needs the server's host key"
                )));
            }
            creds.ssh = Some(SshKey {
                private_key,
                passphrase: text("password")?,
            });
        } else if let Some(username) = text("username")? {
            let Some(password) = text("password")? else {
                return Err(SourceError::Auth(format!(
                    "Secret {identity} has \"username\" but no \"password\""
                )));
            };
            creds.basic = Some((username, password));
        } else if text("password")?.is_some() {
            return Err(SourceError::Auth(format!(
                "Secret {identity} has \"password\" but no \"username\""
            )));
        }
        if is_plain_http && (creds.basic.is_some() || creds.bearer_token.is_some()) {
            return Err(SourceError::Auth(format!(
                "refusing to send the credentials of Secret {identity} over plain http; use https"
            )));
        }
        Ok(creds)
    }
}

/// Host and port of an `ssh://` URL (or scp-like `user@host:path`), for `known_hosts` lookups.
pub fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit('@').next()?;
        if let Some(v6) = hostport.strip_prefix('[') {
            let (host, rest) = v6.split_once(']')?;
            let port = rest.strip_prefix(':').map(|p| p.parse().ok()).unwrap_or(Some(22))?;
            return Some((host.to_string(), port));
        }
        return match hostport.rsplit_once(':') {
            Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
            None => Some((hostport.to_string(), 22)),
        };
    }
    let (user_host, _) = url.split_once(':')?;
    Some((user_host.rsplit('@').next()?.to_string(), 22))
}

/// Whether `known_hosts` lists `key` (raw SSH wire-format key blob) for `host:port`. Supports plain, wildcard-free
/// host lists, `[host]:port` entries and hashed (`|1|salt|hash`) entries; `@revoked` lines reject the key.
pub fn known_hosts_accepts(known_hosts: &str, host: &str, port: u16, key: &[u8]) -> bool {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut accepted = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if first.starts_with('@') {
            revoked = first == "@revoked";
            if first != "@revoked" {
                continue; // @cert-authority is not supported: no CA-signed host keys
            }
            first = fields.next().unwrap_or_default();
        }
        let (Some(_key_type), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let host_matches = first.split(',').any(|pattern| host_pattern_matches(pattern, &name));
        if !host_matches {
            continue;
        }
        if b64.decode(key_b64).is_ok_and(|k| k == key) {
            if revoked {
                return false;
            }
            accepted = true;
        }
    }
    accepted
}

fn host_pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        let b64 = base64::engine::general_purpose::STANDARD;
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    pattern == name
}

/// Verifies an HTTPS server certificate (DER) against a custom CA bundle (PEM) and the expected host name.
pub fn verify_with_ca(cert_der: &[u8], ca_pem: &[u8], host: &str) -> Result<(), String> {
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509, X509StoreContext};
    let cert = X509::from_der(cert_der).map_err(|e| format!("unreadable server certificate: {e}"))?;
    let cas = X509::stack_from_pem(ca_pem).map_err(|e| format!("ca.crt is not a PEM certificate bundle: {e}"))?;
    if cas.is_empty() {
        return Err("ca.crt holds no certificate".to_string());
    }
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for ca in cas {
        store.add_cert(ca).map_err(|e| e.to_string())?;
    }
    let mut params = openssl::x509::verify::X509VerifyParam::new().map_err(|e| e.to_string())?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        params.set_ip(ip).map_err(|e| e.to_string())?;
    } else {
        params.set_host(host).map_err(|e| e.to_string())?;
    }
    store.set_param(&params).map_err(|e| e.to_string())?;
    let store = store.build();
    let chain = Stack::new().map_err(|e| e.to_string())?;
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let ok = ctx
        .init(&store, &cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok { Ok(()) } else { Err(c.error().to_string()) })
        })
        .map_err(|e| e.to_string())?;
    ok.map_err(|why| format!("server certificate not trusted by ca.crt: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn basic_auth_needs_both_fields() {
        let c =
            Credentials::from_secret("ns/s", &data(&[("username", "u"), ("password", "p")]), "https://h/r").unwrap();
        assert_eq!(c.basic, Some(("u".into(), "p".into())));
        let err = Credentials::from_secret("ns/s", &data(&[("username", "u")]), "https://h/r").unwrap_err();
        assert!(err.to_string().contains("no \"password\""), "{err}");
    }

    #[test]
    fn credentials_are_never_sent_over_plain_http() {
        let err = Credentials::from_secret("ns/s", &data(&[("bearerToken", "t")]), "http://h/r").unwrap_err();
        assert!(err.to_string().contains("plain http"), "{err}");
    }

    #[test]
    fn ssh_needs_identity_and_known_hosts() {
        let err = Credentials::from_secret("ns/s", &data(&[("identity", "k")]), "ssh://git@h/r").unwrap_err();
        assert!(err.to_string().contains("known_hosts"), "{err}");
        let err = Credentials::from_secret("ns/s", &data(&[("known_hosts", "x")]), "ssh://git@h/r").unwrap_err();
        assert!(err.to_string().contains("identity"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::from_secret(
            "ns/s",
            &data(&[("username", "u"), ("password", "hunter2")]),
            "https://h/r",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn ssh_host_and_port_from_urls() {
        assert_eq!(
            ssh_host_port("ssh://git@127.0.0.1:2222/r.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            ssh_host_port("ssh://git@example.com/r.git"),
            Some(("example.com".into(), 22))
        );
        assert_eq!(
            ssh_host_port("git@example.com:org/r.git"),
            Some(("example.com".into(), 22))
        );
    }

    #[test]
    fn known_hosts_matching() {
        let key = b"fake-key-blob";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let plain = format!("[127.0.0.1]:2222 ssh-ed25519 {b64}\n");
        assert!(known_hosts_accepts(&plain, "127.0.0.1", 2222, key));
        assert!(!known_hosts_accepts(&plain, "127.0.0.1", 22, key), "port must match");
        assert!(
            !known_hosts_accepts(&plain, "127.0.0.1", 2222, b"other"),
            "key must match"
        );
        let revoked = format!("{plain}@revoked [127.0.0.1]:2222 ssh-ed25519 {b64}\n");
        assert!(!known_hosts_accepts(&revoked, "127.0.0.1", 2222, key));

        // Hashed entry as written by `ssh-keygen -H`.
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"example.com");
        let hash = mac.finalize().into_bytes();
        let e = base64::engine::general_purpose::STANDARD;
        let hashed = format!("|1|{}|{} ssh-ed25519 {b64}\n", e.encode(salt), e.encode(hash));
        assert!(known_hosts_accepts(&hashed, "example.com", 22, key));
        assert!(!known_hosts_accepts(&hashed, "example.org", 22, key));
    }

    mod properties {
        use super::super::*;
        use base64::Engine;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn known_hosts_never_panics(text in "\\PC{0,300}", host in "\\PC{0,20}", port in any::<u16>(),
                                        key in prop::collection::vec(any::<u8>(), 0..40)) {
                let _ = known_hosts_accepts(&text, &host, port, &key);
            }

            #[test]
            fn only_the_listed_key_for_the_listed_host_is_accepted(
                host in "[a-z]{1,10}\\.example", port in 1u16..,
                key in prop::collection::vec(any::<u8>(), 1..40), other in prop::collection::vec(any::<u8>(), 1..40),
            ) {
                let b64 = base64::engine::general_purpose::STANDARD;
                let name = if port == 22 { host.clone() } else { format!("[{host}]:{port}") };
                let line = format!("{name} ssh-ed25519 {}\n", b64.encode(&key));
                prop_assert!(known_hosts_accepts(&line, &host, port, &key));
                prop_assert_eq!(known_hosts_accepts(&line, &host, port, &other), key == other);
                let elsewhere = format!("x{}", host);
                prop_assert!(!known_hosts_accepts(&line, &elsewhere, port, &key));
                let revoked = format!("{line}@revoked {name} ssh-ed25519 {}\n", b64.encode(&key));
                prop_assert!(!known_hosts_accepts(&revoked, &host, port, &key));
            }

            #[test]
            fn ssh_urls_never_panic(url in "(ssh://)?\\PC{0,60}") {
                let _ = ssh_host_port(&url);
            }
        }
    }
}
