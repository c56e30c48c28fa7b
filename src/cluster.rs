//! Target clusters and the identity requests are made with. An Environment applies to the cluster Ferry runs
//! in, or to another one reached with the kubeconfig in a Secret (`spec.kubeConfig.secretRef`). In the local
//! cluster an Environment with a ServiceAccount (its own `serviceAccountName`, or `ferry run
//! --default-service-account`) gets a client that impersonates that account, so it can do only what the
//! account may. Clients are cached: per Secret version for kubeconfigs (a rotated kubeconfig takes effect on
//! the next reconcile, an unchanged one costs one Secret read), per account for impersonation.
//!
//! The kubeconfig Secret itself is read as the Environment's ServiceAccount too (see [`crate::secrets`]): naming
//! a Secret in `spec.kubeConfig` uses it only when that account may `get` it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::{Digest, Sha256};

use crate::api::KubeConfigReference;
use crate::apply::Applier;
use crate::secrets::{SecretError, SecretReader};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig Secret {0} not found")]
    SecretNotFound(String),
    /// The Environment's ServiceAccount may not read the kubeconfig Secret.
    #[error("spec.kubeConfig: {0}")]
    Forbidden(String),
    #[error("kubeconfig Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: String },
    #[error("kubeconfig in Secret {secret} is invalid: {message}")]
    Invalid { secret: String, message: String },
    #[error("kubeconfig in Secret {secret} is refused: {message}")]
    Refused { secret: String, message: String },
    #[error("service account name {0:?} is not a valid name")]
    InvalidServiceAccount(String),
    #[error("a client impersonating {user} could not be built: {message}")]
    Impersonation { user: String, message: String },
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// How long a request to a cluster reached through a kubeconfig Secret may take to connect (TCP and TLS), and
/// may then go without a byte of answer, before it fails: a cluster behind a cut network must fail the
/// reconcile (`ClusterUnreachable`, retried) rather than hold it for ever. kube's client has no read timeout by
/// default. `ferry run --remote-cluster-timeout`.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// A target cluster as one identity: the SHA-256 of its kubeconfig (never logged, never stored elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterIdentity([u8; 32]);

impl ClusterIdentity {
    pub fn of_kubeconfig(text: &str) -> Self {
        ClusterIdentity(Sha256::digest(text.as_bytes()).into())
    }
}

/// Where an Environment's objects go: a client and the applier (with its discovery cache) for it.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    pub applier: Arc<Applier>,
    /// Another cluster, reached with a kubeconfig; `None` for the cluster Ferry runs in.
    pub remote: Option<RemoteCluster>,
}

/// A target cluster reached with a kubeconfig: which identity (for its watch set), its server and Secret for
/// messages (never the credentials), and the client its watches use.
#[derive(Clone)]
pub struct RemoteCluster {
    pub identity: ClusterIdentity,
    /// `scheme://host:port`, for logs.
    pub server: String,
    /// `scheme://host:port (kubeconfig Secret ns/name)`.
    pub shown: String,
    /// The same credentials without the read timeout of [`Target::client`]: a watch is quiet for minutes by
    /// design. A dead watch is still noticed: kube's watcher gives up on a stream idle past the server-side watch
    /// timeout (290 s) plus a margin, and watches again.
    pub watch_client: Client,
}

impl std::fmt::Display for RemoteCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for RemoteCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCluster")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Target {
    pub fn new(client: Client) -> Self {
        Target {
            applier: Arc::new(Applier::new(client.clone())),
            client,
            remote: None,
        }
    }

    /// The same cluster through another client; discovery (the same for every caller) stays shared.
    fn with_client(&self, client: Client) -> Self {
        Target {
            applier: Arc::new(self.applier.with_client(client.clone())),
            client,
            remote: self.remote.clone(),
        }
    }
}

/// `scheme://host:port` of a cluster URL: what a message may show of it (no user info, no path or query).
fn server_shown(url: &http::Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("https");
    let host = url.host().unwrap_or("?");
    match url.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The user name the API server gives a ServiceAccount (and that impersonation asks for).
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// A ServiceAccount name is a DNS-1123 subdomain. Checked here too, not only by the CRD schema: the name ends
/// up in an impersonation header, where a `:` or a control character would ask for another user.
pub fn valid_service_account_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// Checks that a kubeconfig is self-contained: it may not run programs (`exec`, `auth-provider`) or read
/// files on Ferry's disk (`certificate-authority`, `client-key`, `tokenFile`, …), which would let whoever
/// writes the Secret use the controller's own identity or files. Unless `allow_insecure`
/// (`--allow-insecure-kubeconfig`), it may not turn TLS verification off either, nor send Ferry's traffic
/// through a proxy of its choosing (`proxy-url`): both hand the connection, and the credentials in it, to
/// whoever sits in the middle.
pub fn parse_kubeconfig(text: &str, allow_insecure: bool) -> Result<Kubeconfig, String> {
    // The parser quotes the input in its errors, and the input may be any Secret's value: say only where.
    let kc = Kubeconfig::from_yaml(text).map_err(|e| {
        let at = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .and_then(|s| s.rsplit_once(" at line ").map(|(_, at)| format!(" (at line {at})")))
            .unwrap_or_default();
        format!("not a kubeconfig{at}")
    })?;
    let context = kc
        .current_context
        .as_deref()
        .or_else(|| kc.contexts.first().map(|c| c.name.as_str()))
        .ok_or("no context")?;
    if !kc.contexts.iter().any(|c| c.name == context) {
        return Err(format!("current context {context:?} is not defined"));
    }
    for named in &kc.clusters {
        let Some(c) = &named.cluster else { continue };
        if c.certificate_authority.is_some() {
            return Err(format!(
                "cluster {:?} reads certificate-authority from a file; embed certificate-authority-data",
                named.name
            ));
        }
        if allow_insecure {
            continue;
        }
        if c.insecure_skip_tls_verify == Some(true) {
            return Err(format!(
                "cluster {:?} sets insecure-skip-tls-verify; embed certificate-authority-data (or run ferry with \
                 --allow-insecure-kubeconfig)",
                named.name
            ));
        }
        if c.proxy_url.is_some() {
            return Err(format!(
                "cluster {:?} sets proxy-url (run ferry with --allow-insecure-kubeconfig to allow it)",
                named.name
            ));
        }
    }
    for named in &kc.auth_infos {
        let Some(a) = &named.auth_info else { continue };
        let refused = [
            (a.exec.is_some(), "exec"),
            (a.auth_provider.is_some(), "auth-provider"),
            (a.token_file.is_some(), "tokenFile"),
            (a.client_certificate.is_some(), "client-certificate (a file)"),
            (a.client_key.is_some(), "client-key (a file)"),
        ];
        if let Some((_, what)) = refused.iter().find(|(set, _)| *set) {
            return Err(format!(
                "user {:?} uses {what}; use a token or embedded certificate data",
                named.name
            ));
        }
    }
    Ok(kc)
}

/// (namespace, Secret name, key): which kubeconfig.
type SecretKey = (String, String, String);

/// Clients for remote clusters, one per kubeconfig Secret version, and impersonating clients for the local
/// cluster, one per ServiceAccount.
pub struct Clusters {
    /// Ferry's own connection settings: what impersonating clients are built from.
    base: kube::Config,
    /// `--allow-insecure-kubeconfig`.
    allow_insecure: bool,
    /// Connect and read timeout of remote clusters' clients ([`DEFAULT_REMOTE_TIMEOUT`]).
    timeout: Duration,
    /// The Secret's resourceVersion the target was built from, and the target.
    cache: Mutex<HashMap<SecretKey, (String, Target)>>,
    /// (namespace, ServiceAccount) → a target impersonating it.
    impersonating: Mutex<HashMap<(String, String), Target>>,
}

impl Clusters {
    pub fn new(base: kube::Config, allow_insecure_kubeconfig: bool) -> Self {
        Clusters {
            base,
            allow_insecure: allow_insecure_kubeconfig,
            timeout: DEFAULT_REMOTE_TIMEOUT,
            cache: Mutex::default(),
            impersonating: Mutex::default(),
        }
    }

    /// Remote clusters' requests fail after `timeout` without a connection or without an answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// The target for an Environment in `namespace`: the cluster its kubeConfig Secret names (with that
    /// kubeconfig's identity), else `local`, impersonating `service_account` when there is one.
    pub async fn target(
        &self,
        local: &Target,
        namespace: &str,
        reference: Option<&KubeConfigReference>,
        service_account: Option<&str>,
    ) -> Result<Target, ClusterError> {
        match (reference, service_account) {
            (Some(reference), account) => {
                let reader = self.reader(local, namespace, account)?;
                self.remote(&reader, namespace, reference).await
            }
            (None, Some(account)) => self.impersonating(local, namespace, account),
            (None, None) => Ok(local.clone()),
        }
    }

    /// What reads the Secrets an object of `namespace` names, in the cluster Ferry runs in: `account`
    /// impersonated (the same client its Environment applies with), or `local`'s own identity without one.
    pub fn reader(&self, local: &Target, namespace: &str, account: Option<&str>) -> Result<SecretReader, ClusterError> {
        match account {
            Some(account) => {
                let target = self.impersonating(local, namespace, account)?;
                Ok(SecretReader::as_account(
                    target.client,
                    service_account_user(namespace, account),
                ))
            }
            None => Ok(SecretReader::own(local.client.clone())),
        }
    }

    fn impersonating(&self, local: &Target, namespace: &str, account: &str) -> Result<Target, ClusterError> {
        if !valid_service_account_name(account) {
            return Err(ClusterError::InvalidServiceAccount(account.to_string()));
        }
        let key = (namespace.to_string(), account.to_string());
        if let Some(hit) = self.impersonating.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let user = service_account_user(namespace, account);
        let mut config = self.base.clone();
        // Only the user: the API server adds a ServiceAccount's groups itself, and asking for groups would need
        // the right to impersonate any group (system:masters included).
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config).map_err(|e| ClusterError::Impersonation {
            user,
            message: e.to_string(),
        })?;
        let target = local.with_client(client);
        if let Ok(mut cache) = self.impersonating.lock() {
            cache.insert(key, target.clone());
        }
        Ok(target)
    }

    /// The target a kubeconfig Secret names, its Secret read with `reader` (the Environment's identity).
    async fn remote(
        &self,
        reader: &SecretReader,
        namespace: &str,
        reference: &KubeConfigReference,
    ) -> Result<Target, ClusterError> {
        let secret_name = &reference.secret_ref.name;
        let key = &reference.secret_ref.key;
        let shown = format!("{namespace}/{secret_name}");
        let secret = match reader.get(namespace, secret_name).await {
            Ok(found) => found.ok_or_else(|| ClusterError::SecretNotFound(shown.clone()))?,
            Err(SecretError::Forbidden(message)) => return Err(ClusterError::Forbidden(message)),
            Err(SecretError::Api(e)) => return Err(ClusterError::Api(e)),
        };
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let cache_key = (namespace.to_string(), secret_name.clone(), key.clone());
        if let Some((v, target)) = self.cache.lock().ok().and_then(|c| c.get(&cache_key).cloned())
            && v == version
        {
            return Ok(target);
        }
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(|| ClusterError::MissingKey {
                secret: shown.clone(),
                key: key.clone(),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ClusterError::Invalid {
            secret: shown.clone(),
            message: "not UTF-8".into(),
        })?;
        let kc = parse_kubeconfig(&text, self.allow_insecure).map_err(|message| ClusterError::Refused {
            secret: shown.clone(),
            message,
        })?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Invalid {
                secret: shown.clone(),
                message: e.to_string(),
            })?;
        // Every request of the target's client is bounded: a server (or a network path) that accepts and then
        // says nothing fails the request instead of holding the reconcile. The read timeout counts from the
        // request, not from when the pooled connection went idle. Watches get their own client without it.
        config.connect_timeout = Some(config.connect_timeout.map_or(self.timeout, |t| t.min(self.timeout)));
        let watch_client = Client::try_from(config.clone()).map_err(|e| ClusterError::Invalid {
            secret: shown.clone(),
            message: e.to_string(),
        })?;
        config.read_timeout = Some(self.timeout);
        config.reset_reader_on_write = true;
        let server = server_shown(&config.cluster_url);
        let remote = format!("{server} (kubeconfig Secret {shown})");
        let client = Client::try_from(config).map_err(|e| ClusterError::Invalid {
            secret: shown.clone(),
            message: e.to_string(),
        })?;
        let mut target = Target::new(client);
        target.remote = Some(RemoteCluster {
            identity: ClusterIdentity::of_kubeconfig(&text),
            server,
            shown: remote,
            watch_client,
        });
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(cache_key, (version, target.clone()));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        )
    }

    #[test]
    fn self_contained_kubeconfigs_are_accepted() {
        let kc = kubeconfig("    certificate-authority-data: Zm9v", "    token: abc");
        assert!(parse_kubeconfig(&kc, false).is_ok());
    }

    #[test]
    fn kubeconfigs_that_run_programs_or_read_files_are_refused() {
        let cases = [
            (
                kubeconfig("    certificate-authority: /etc/ca.crt", "    token: abc"),
                "certificate-authority",
            ),
            (kubeconfig("", "    tokenFile: /var/run/secrets/token"), "tokenFile"),
            (kubeconfig("", "    client-key: /root/key.pem"), "client-key"),
            (
                kubeconfig(
                    "",
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: sh",
                ),
                "exec",
            ),
        ];
        for (kc, what) in cases {
            let err = parse_kubeconfig(&kc, false).unwrap_err();
            assert!(err.contains(what), "{err} should name {what}");
        }
        assert!(parse_kubeconfig("clusters: [", false).is_err());
    }

    #[test]
    fn insecure_tls_and_proxies_are_refused_unless_allowed() {
        for (cluster, what) in [
            ("    insecure-skip-tls-verify: true", "insecure-skip-tls-verify"),
            ("    proxy-url: http://127.0.0.1:3128", "proxy-url"),
        ] {
            let kc = kubeconfig(cluster, "    token: abc");
            let err = parse_kubeconfig(&kc, false).unwrap_err();
            assert!(
                err.contains(what) && err.contains("--allow-insecure-kubeconfig"),
                "{err}"
            );
            assert!(parse_kubeconfig(&kc, true).is_ok(), "{what} is allowed with the flag");
        }
        // Files and programs stay refused with the flag.
        let kc = kubeconfig("    insecure-skip-tls-verify: true", "    tokenFile: /t");
        assert!(parse_kubeconfig(&kc, true).unwrap_err().contains("tokenFile"));
        let kc = kubeconfig("    insecure-skip-tls-verify: false", "    token: abc");
        assert!(parse_kubeconfig(&kc, false).is_ok());
    }

    #[test]
    fn service_account_names_cannot_ask_for_another_user() {
        for ok in ["default", "deployer", "ci.bot-1", "a"] {
            assert!(valid_service_account_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a:b",
            "team:system:masters",
            "Admin",
            "-x",
            "x-",
            "a..b",
            "a\nImpersonate-Group: system:masters",
            "a,b",
            &"x".repeat(254),
        ] {
            assert!(!valid_service_account_name(bad), "{bad:?}");
        }
        assert_eq!(
            service_account_user("team-a", "deployer"),
            "system:serviceaccount:team-a:deployer"
        );
    }

    #[test]
    fn errors_never_quote_the_secret() {
        for text in [
            "password: hunter2-SECRET",
            "hunter2-SECRET",
            "apiVersion: v1\nclusters: hunter2-SECRET\n",
        ] {
            let err = parse_kubeconfig(text, false).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.starts_with("not a kubeconfig") || err.contains("context"), "{err}");
        }
    }
}
