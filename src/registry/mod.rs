//! Registries over the OCI distribution API (the `oci-client` crate): an image reference resolved to the
//! digest of its manifest or multi-arch index, and an image copied by digest from one registry to another
//! (index, manifests and every blob, skipping what the target already has).
//!
//! Registries are reached over HTTPS; plain HTTP only for the hosts the operator lists
//! (`ferry run --insecure-registry`), since a tenant naming a registry must not be able to turn TLS off.
//! Errors name the image and what went wrong, never a credential: authentication goes in headers, and
//! registry answers are reduced to their status and error code.

pub mod credentials;

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
    OciDescriptor,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub use credentials::{Credentials, CredentialsError, DOCKER_CONFIG_KEY};

/// The manifest media types asked for: a multi-arch index or list resolves to the index's digest, so every
/// platform runs what was verified.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// How registries are reached: the operator's choices, not a tenant's.
#[derive(Clone, Debug, Default)]
pub struct RegistrySettings {
    /// Registry hosts (`host[:port]`) reached over plain HTTP instead of HTTPS.
    pub insecure: Vec<String>,
}

/// What went wrong talking to a registry. The messages name the image, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{image:?} is not a valid image reference: {why}")]
    InvalidReference { image: String, why: String },
    #[error("{image}: the registry refused access ({status}); check the pull secret")]
    Unauthorized { image: String, status: u16 },
    #[error("{image}: not found in the registry")]
    NotFound { image: String },
    #[error("{image}: the registry could not be reached: {why}")]
    Unreachable { image: String, why: String },
    #[error("{image}: the registry answered {status}")]
    Status { image: String, status: u16 },
    #[error("{image}: content does not match its digest (expected {expected}, got {actual})")]
    DigestMismatch {
        image: String,
        expected: String,
        actual: String,
    },
    #[error("{image}: {why}")]
    Protocol { image: String, why: String },
    #[error(
        "{image}: the registry asks for credentials to be sent to {realm} over plain HTTP; refused (list that host \
         with --insecure-registry if it is meant to be reached without TLS)"
    )]
    InsecureRealm { image: String, realm: String },
}

impl RegistryError {
    fn from_oci(image: &str, e: OciDistributionError) -> RegistryError {
        let image = image.to_string();
        match e {
            OciDistributionError::UnauthorizedError { .. } => RegistryError::Unauthorized { image, status: 401 },
            OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized { image, status: 401 },
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound { image },
            OciDistributionError::RegistryError { envelope, .. } => {
                use oci_client::errors::OciErrorCode as C;
                let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
                let any = |f: fn(&C) -> bool| codes.iter().any(|c| f(c));
                if any(|c| matches!(c, C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound)) {
                    RegistryError::NotFound { image }
                } else if any(|c| matches!(c, C::Unauthorized | C::Denied)) {
                    RegistryError::Unauthorized { image, status: 403 }
                } else {
                    let shown: Vec<String> = codes.iter().map(|c| format!("{c:?}")).collect();
                    RegistryError::Protocol {
                        image,
                        why: format!("the registry refused the request ({})", shown.join(", ")),
                    }
                }
            }
            OciDistributionError::ServerError { code, .. } => match code {
                401 | 403 => RegistryError::Unauthorized { image, status: code },
                404 => RegistryError::NotFound { image },
                _ => RegistryError::Status { image, status: code },
            },
            OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
                expected,
                actual,
            }) => RegistryError::DigestMismatch {
                image,
                expected,
                actual,
            },
            OciDistributionError::RequestError(e) => RegistryError::Unreachable {
                image,
                // reqwest's text names the URL (no credentials: they travel in headers) and the cause.
                why: error_chain(&e),
            },
            other => RegistryError::Protocol {
                image,
                why: other.to_string(),
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `realm` of a `Bearer` challenge (`WWW-Authenticate: Bearer realm="…",service="…"`), if there is one.
fn bearer_realm(challenge: &str) -> Option<String> {
    let (scheme, params) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    params.split(',').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("realm")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Whether credentials may be sent to `realm`: over HTTPS, or over HTTP to a host the operator listed as
/// insecure. Anything else (other schemes, unparsable URLs) is refused.
fn realm_allowed(realm: &str, insecure: &[String]) -> bool {
    let lower = realm.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return true;
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.contains('@') && insecure.iter().any(|h| h.eq_ignore_ascii_case(authority))
}

/// Parses an image reference as the distribution API needs it (`docker.io` and `library/` defaults, ports,
/// tags, digests).
pub fn parse(image: &str) -> Result<Reference, RegistryError> {
    image.parse::<Reference>().map_err(|e| RegistryError::InvalidReference {
        image: image.to_string(),
        why: e.to_string(),
    })
}

/// What a copy did, to report and to prove a repeated copy transfers nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Manifests and indexes written to the target.
    pub manifests_pushed: usize,
    /// Blobs uploaded to the target, and their bytes.
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository of the same registry (no bytes moved).
    pub blobs_mounted: usize,
    /// Blobs and manifests the target already had.
    pub skipped: usize,
}

impl CopyReport {
    /// Whether anything was written to the target.
    pub fn transferred(&self) -> bool {
        self.manifests_pushed + self.blobs_uploaded + self.blobs_mounted > 0
    }
}

/// Just enough of a manifest or index to find what it references.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    media_type: String,
}

/// A client for one reconcile's registry work, with the credentials it may use.
pub struct Registry {
    client: Client,
    credentials: Credentials,
    insecure: Vec<String>,
    /// Registry hosts whose token realm was checked (see [`Registry::check_realm`]), with the verdict.
    realms: tokio::sync::Mutex<std::collections::HashMap<String, Result<(), String>>>,
}

impl Registry {
    pub fn new(settings: &RegistrySettings, credentials: Credentials) -> Registry {
        // reqwest builds its TLS config from the process-wide provider; without one it panics. An error here
        // means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if settings.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(settings.insecure.clone())
            },
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            use_monolithic_push: true,
            ..ClientConfig::default()
        };
        Registry {
            client: Client::new(config),
            credentials,
            insecure: settings.insecure.clone(),
            realms: Default::default(),
        }
    }

    /// The credentials to use for `reference`'s registry, once its token realm is known to be safe for them.
    async fn auth(&self, reference: &Reference) -> Result<RegistryAuth, RegistryError> {
        match self.credentials.for_host(reference.registry()) {
            Some(basic) => {
                self.check_realm(reference).await?;
                Ok(RegistryAuth::Basic(basic.username.clone(), basic.password.clone()))
            }
            None => Ok(RegistryAuth::Anonymous),
        }
    }

    /// oci-client answers a bearer challenge by sending the basic credentials to whatever `realm` the registry
    /// names, over whatever scheme it names. A registry reached over TLS that names an `http://` realm would
    /// have the pull secret's password cross the network in clear text, so the challenge is read here first and
    /// such a realm refused, unless the operator listed its host as insecure. Checked once per registry host.
    async fn check_realm(&self, reference: &Reference) -> Result<(), RegistryError> {
        let host = reference.resolve_registry().to_string();
        let mut realms = self.realms.lock().await;
        if !realms.contains_key(&host) {
            let verdict = self.read_realm(&host).await?;
            realms.insert(host.clone(), verdict);
        }
        match realms.get(&host) {
            Some(Err(realm)) => Err(RegistryError::InsecureRealm {
                image: reference.whole(),
                realm: realm.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// `Ok(Err(realm))` when `host`'s bearer challenge names a realm credentials must not be sent to.
    async fn read_realm(&self, host: &str) -> Result<Result<(), String>, RegistryError> {
        let scheme = if self.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://{host}/v2/");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::Unreachable {
                image: host.to_string(),
                why: error_chain(&e),
            })?;
        let response = client.get(&url).send().await.map_err(|e| RegistryError::Unreachable {
            image: host.to_string(),
            why: error_chain(&e),
        })?;
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(match bearer_realm(challenge) {
            Some(realm) if !realm_allowed(&realm, &self.insecure) => Err(realm),
            _ => Ok(()),
        })
    }

    async fn authorize(&self, reference: &Reference) -> Result<(), RegistryError> {
        let auth = self.auth(reference).await?;
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        Ok(())
    }

    /// The digest `image` names: its own, or the one its tag points at now (a HEAD, or a GET where the
    /// registry sends no digest header, asking for indexes and manifests).
    pub async fn resolve(&self, image: &str) -> Result<String, RegistryError> {
        let reference = parse(image)?;
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_string());
        }
        let auth = self.auth(&reference).await?;
        self.client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(|e| RegistryError::from_oci(image, e))
    }

    /// Copies the image `source` (which must carry a digest) to `target` (a repository, with the tag to give
    /// it), manifest or index and every blob, skipping blobs and manifests the target already has. Every
    /// manifest and blob read is checked against its digest before it is written.
    pub async fn copy(&self, source: &Reference, target: &Reference) -> Result<CopyReport, RegistryError> {
        let shown = source.whole();
        let Some(digest) = source.digest() else {
            return Err(RegistryError::InvalidReference {
                image: shown,
                why: "a copy needs a digest".to_string(),
            });
        };
        self.authorize(source).await?;
        self.authorize(target).await?;
        let mut report = CopyReport::default();
        self.copy_manifest(source, target, digest, target.tag(), &mut report)
            .await?;
        Ok(report)
    }

    async fn copy_manifest(
        &self,
        source: &Reference,
        target: &Reference,
        digest: &str,
        tag: Option<&str>,
        report: &mut CopyReport,
    ) -> Result<(), RegistryError> {
        let src = Reference::with_digest(
            source.registry().to_string(),
            source.repository().to_string(),
            digest.to_string(),
        );
        let dst = Reference::with_digest(
            target.registry().to_string(),
            target.repository().to_string(),
            digest.to_string(),
        );
        let shown = src.whole();
        // A registry stores a manifest only once what it references is there: present means complete.
        if self.exists(&dst).await? {
            report.skipped += 1;
            return Ok(());
        }
        let (body, _) = self
            .client
            .pull_manifest_raw(&src, &self.auth(&src).await?, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| RegistryError::from_oci(&shown, e))?;
        let actual = sha256(&body);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                image: shown,
                expected: digest.to_string(),
                actual,
            });
        }
        let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            image: shown.clone(),
            why: format!("the manifest is not understood: {e}"),
        })?;
        let media_type = match (&manifest.media_type, &manifest.manifests) {
            (Some(m), _) => m.clone(),
            (None, Some(_)) => OCI_IMAGE_INDEX_MEDIA_TYPE.to_string(),
            (None, None) => OCI_IMAGE_MEDIA_TYPE.to_string(),
        };
        if let Some(children) = &manifest.manifests {
            for child in children {
                Box::pin(self.copy_manifest(source, target, &child.digest, None, report)).await?;
            }
        } else {
            for blob in manifest.config.iter().chain(&manifest.layers) {
                self.copy_blob(&src, &dst, blob, report).await?;
            }
        }
        let put = match tag {
            Some(tag) => Reference::with_tag(
                target.registry().to_string(),
                target.repository().to_string(),
                tag.to_string(),
            ),
            None => dst.clone(),
        };
        let content_type = http::HeaderValue::from_str(&media_type).map_err(|_| RegistryError::Protocol {
            image: shown.clone(),
            why: "the manifest's media type is not a header value".to_string(),
        })?;
        self.client
            .push_manifest_raw(&put, body, content_type)
            .await
            .map_err(|e| RegistryError::from_oci(&dst.whole(), e))?;
        report.manifests_pushed += 1;
        Ok(())
    }

    /// Whether the registry has the manifest `reference` (by digest).
    async fn exists(&self, reference: &Reference) -> Result<bool, RegistryError> {
        match self
            .client
            .fetch_manifest_digest(reference, &self.auth(reference).await?)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match RegistryError::from_oci(&reference.whole(), e) {
                RegistryError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn copy_blob(
        &self,
        src: &Reference,
        dst: &Reference,
        blob: &Descriptor,
        report: &mut CopyReport,
    ) -> Result<(), RegistryError> {
        let shown = format!("{}@{}", dst.repository(), blob.digest);
        let exists = self
            .client
            .blob_exists(dst, &blob.digest)
            .await
            .map_err(|e| RegistryError::from_oci(&shown, e))?;
        if exists {
            report.skipped += 1;
            return Ok(());
        }
        if src.registry() == dst.registry()
            && self.client.mount_blob(dst, src, &blob.digest).await.is_ok()
            && self
                .client
                .blob_exists(dst, &blob.digest)
                .await
                .map_err(|e| RegistryError::from_oci(&shown, e))?
        {
            report.blobs_mounted += 1;
            return Ok(());
        }
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size,
            ..OciDescriptor::default()
        };
        let mut data: Vec<u8> = Vec::with_capacity(usize::try_from(blob.size).unwrap_or(0).min(64 << 20));
        // pull_blob checks the bytes against the descriptor's digest (and the registry's digest header).
        self.client
            .pull_blob(src, &descriptor, &mut data)
            .await
            .map_err(|e| RegistryError::from_oci(&format!("{}@{}", src.repository(), blob.digest), e))?;
        let bytes = data.len() as u64;
        self.client
            .push_blob(dst, data, &blob.digest)
            .await
            .map_err(|e| RegistryError::from_oci(&shown, e))?;
        report.blobs_uploaded += 1;
        report.bytes_uploaded += bytes;
        Ok(())
    }
}

/// `sha256:<hex>` of bytes.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realm_is_read_from_a_bearer_challenge_only() {
        assert_eq!(
            bearer_realm(r#"Bearer realm="https://auth.example/token",service="registry.example""#).as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            bearer_realm(r#"bearer service="s", REALM="http://a:5000/t""#).as_deref(),
            Some("http://a:5000/t")
        );
        assert_eq!(bearer_realm(r#"Basic realm="registry""#), None);
        assert_eq!(bearer_realm(""), None);
    }

    #[test]
    fn credentials_go_over_tls_or_to_a_listed_insecure_host_only() {
        let insecure = vec!["127.0.0.1:5000".to_string()];
        assert!(realm_allowed("https://auth.example/token", &[]));
        assert!(realm_allowed("HTTPS://auth.example/token", &[]));
        assert!(realm_allowed("http://127.0.0.1:5000/token", &insecure));
        assert!(!realm_allowed("http://127.0.0.1:5001/token", &insecure));
        assert!(!realm_allowed("http://auth.example/token", &[]));
        assert!(!realm_allowed("http://127.0.0.1:5000@evil.example/token", &insecure));
        assert!(!realm_allowed("ftp://auth.example/token", &insecure));
        assert!(!realm_allowed("/token", &insecure));
    }
}
