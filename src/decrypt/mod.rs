//! Decrypt: SOPS-encrypted files of a config repo, with age identities, as Flux's `spec.decryption` does.
//!
//! Runs right after render, per Environment, before anything reads the objects (image digests, the registry
//! policy, a chart's hook filter, the steady-state check, the apply; see [`crate::sync::Pipeline`]): sops can
//! encrypt any field, a kind or an image too, so every check must see the objects as they are applied. The
//! render (and the render cache, shared by every Environment on a commit and path) holds documents as stored,
//! encrypted; the decrypted objects live in memory only, never cached or written. What is decrypted:
//!
//! - every YAML or JSON document with a `sops` section, in plain renders and in kustomize's output. The MAC is
//!   checked on the *file* as sops wrote it (kustomize may add a namespace or labels, which would break a MAC
//!   over its output; Flux skips the MAC for that reason, Ferry checks it on the source instead), and every
//!   encrypted value of the emitted object must be one that MAC-checked file holds at the same path;
//! - the files a kustomize `secretGenerator` reads (`files:`, `envs:`), decrypted before kustomize runs, into a
//!   copy of the tree in memory-backed storage (`/dev/shm`) that is deleted when kustomize is done
//!   ([`crate::render::render_path_replacing`]). Such renders are never cached.
//!
//! Errors name files, paths and recipients (all in clear in the repository), never a value or a key.

mod age;
mod generators;
mod sops;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

pub use age::Keyring;
pub use generators::{STAND_IN, stand_ins};
pub use sops::{Format, SopsError, decrypt_file};

use crate::render::{RenderError, RenderSettings, Rendered, RenderedObject};

/// The suffix of the Secret keys that hold age identities (Flux's layout).
pub const AGE_KEY_SUFFIX: &str = ".agekey";

/// Bytes of repository files read to find the source of encrypted documents in a kustomize render.
const MAX_SCAN_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DecryptError {
    #[error("{file}: {reason}")]
    Failed { file: String, reason: SopsError },
    #[error("{what} is SOPS-encrypted, but the Environment has no spec.decryption: refusing to apply it encrypted")]
    NotConfigured { what: String },
    #[error("{what} is SOPS-encrypted, but no file of the repository holds it as sops wrote it")]
    NoSource { what: String },
    #[error("{what} holds SOPS-encrypted data that is not from a secretGenerator file Ferry decrypts")]
    Leftover { what: String },
    #[error(
        "{what} holds a SOPS-encrypted value but no sops metadata (an encrypted kind: List, or a value copied from \
         another file): refusing to apply ciphertext"
    )]
    Stray { what: String },
    #[error("age identities in {origin}: {message}")]
    InvalidKey { origin: String, message: String },
    #[error(
        "spec.decryption has no secretRef: Ferry decrypts only with age identities from a Secret (no controller-wide \
         or cloud KMS keys)"
    )]
    NoSecretRef,
    #[error("Secret {0} has no key ending in .agekey")]
    NoIdentities(String),
    #[error("Secret {0} (spec.decryption.secretRef) not found")]
    SecretNotFound(String),
    /// The Environment's ServiceAccount may not read the key Secret.
    #[error("spec.decryption.secretRef: {0}")]
    Forbidden(String),
    #[error("decryption provider {0:?} is not supported (only \"sops\")")]
    Provider(String),
    #[error("rendering with decrypted generator files: {0}")]
    Render(#[from] RenderError),
    #[error("reading {0}")]
    Io(String),
}

/// The identities of a Secret: every key ending in `.agekey` (others are ignored, as Flux does).
pub fn keyring_from_secret(shown: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Keyring, DecryptError> {
    let mut keyring = Keyring::default();
    for (key, value) in data.iter().filter(|(k, _)| k.ends_with(AGE_KEY_SUFFIX)) {
        keyring.add(value, &format!("Secret {shown} key {key}"))?;
    }
    if keyring.is_empty() {
        return Err(DecryptError::NoIdentities(shown.to_string()));
    }
    Ok(keyring)
}

/// The identities an Environment's `spec.decryption` names: the Secret `secretRef.name` in `namespace` (the
/// Environment's; never another), read with `reader` (as the Environment's ServiceAccount in the controller, so
/// naming a key Secret uses it only when that account may read it). The outer error is the API server's
/// (retried).
pub async fn keyring_for(
    reader: &crate::secrets::SecretReader,
    namespace: &str,
    decryption: &crate::api::Decryption,
) -> Result<Result<Keyring, DecryptError>, kube::Error> {
    if decryption.provider != "sops" {
        return Ok(Err(DecryptError::Provider(decryption.provider.clone())));
    }
    let Some(secret_ref) = &decryption.secret_ref else {
        return Ok(Err(DecryptError::NoSecretRef));
    };
    let shown = format!("{namespace}/{}", secret_ref.name);
    let secret = match reader.get(namespace, &secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(Err(DecryptError::SecretNotFound(shown))),
        Err(crate::secrets::SecretError::Forbidden(message)) => return Ok(Err(DecryptError::Forbidden(message))),
        Err(crate::secrets::SecretError::Api(e)) => return Err(e),
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Ok(keyring_from_secret(&shown, &data))
}

/// Whether an object carries sops metadata (a `sops` mapping with a `mac`).
pub fn is_encrypted(object: &Value) -> bool {
    object
        .get("sops")
        .and_then(|s| s.get("mac"))
        .is_some_and(Value::is_string)
}

/// Whether a Secret's data looks like kustomize generated it from a SOPS-encrypted file: a `sops_mac` key (an
/// encrypted env file, split into keys) or a value holding sops' MAC line (an encrypted file).
fn holds_encrypted_data(object: &Value) -> bool {
    if object["kind"] != "Secret" {
        return false;
    }
    let Some(data) = object.get("data").and_then(Value::as_object) else {
        return false;
    };
    data.iter().any(|(k, v)| {
        k == "sops_mac"
            || v.as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .is_some_and(|bytes| {
                    bytes == STAND_IN.as_bytes()
                        || [Format::Yaml, Format::Json, Format::Dotenv]
                            .iter()
                            .any(|f| f.looks_encrypted(&bytes))
                })
    })
}

/// Whether an object without sops metadata still holds a value sops encrypted (the items of an encrypted
/// `kind: List`, which the render flattens away from their `sops` section; a value pasted from another file):
/// never applied as it is.
fn holds_stray_ciphertext(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("ENC[AES256_GCM,data:") && s.ends_with(']'),
        Value::Array(items) => items.iter().any(holds_stray_ciphertext),
        Value::Object(map) => map.values().any(holds_stray_ciphertext),
        _ => false,
    }
}

fn describe(o: &RenderedObject) -> String {
    format!(
        "{} {}/{} (from {})",
        o.kind(),
        o.namespace().unwrap_or(""),
        o.name(),
        o.source
    )
    .replace(" /", " ")
}

/// The first thing in a render that is SOPS-encrypted, described for a message; `None` when there is none.
pub fn find_encrypted(rendered: &Rendered) -> Option<String> {
    rendered
        .objects
        .iter()
        .find(|o| is_encrypted(&o.object) || holds_encrypted_data(&o.object) || holds_stray_ciphertext(&o.object))
        .map(describe)
}

/// Refuses a render with encrypted documents, for an Environment without `spec.decryption`.
pub fn refuse_encrypted(rendered: &Rendered) -> Result<(), DecryptError> {
    match find_encrypted(rendered) {
        Some(what) => Err(DecryptError::NotConfigured { what }),
        None => Ok(()),
    }
}

/// Decrypts everything encrypted in `rendered` (rendered from `path` of the tree at `root`): `None` when
/// nothing is, else the render with its objects decrypted (and its YAML rebuilt from them). Nothing of it is
/// cached or written anywhere but the memory-backed scratch copy kustomize reads generator files from.
///
/// Like a render, this reads tenant files (the sops files, the kustomizations naming generator sources): in the
/// render sandbox's worker whenever `settings.sandbox` says so, with the identities handed over its stdin.
pub async fn decrypt_render(
    root: &Path,
    path: &str,
    rendered: &Rendered,
    keys: &Keyring,
    settings: &RenderSettings,
) -> Result<Option<Rendered>, DecryptError> {
    if !rendered.holds_encrypted() {
        return Ok(None);
    }
    match &settings.sandbox {
        crate::render::Sandbox::Worker(worker) => {
            crate::render::sandbox::decrypt(worker, root, path, rendered, keys, settings).await
        }
        crate::render::Sandbox::InProcess => decrypt_in_process(root, path, rendered, keys, settings).await,
    }
}

/// [`decrypt_render`] in this process: what the worker runs.
pub(crate) async fn decrypt_in_process(
    root: &Path,
    path: &str,
    rendered: &Rendered,
    keys: &Keyring,
    settings: &RenderSettings,
) -> Result<Option<Rendered>, DecryptError> {
    if find_encrypted(rendered).is_none() {
        return Ok(None);
    }
    let mut rerendered = None;
    if rendered.kustomize && rendered.objects.iter().any(|o| holds_encrypted_data(&o.object)) {
        let (canonical_root, dirs) = crate::render::kustomization_dirs(root, path)?;
        let replaced = generators::decrypt_sources(&canonical_root, &dirs, keys)?;
        if !replaced.is_empty() {
            let rendered = crate::render::render_path_replacing(&canonical_root, path, settings, &replaced)
                .await
                .map_err(|e| match e {
                    // The same tree rendered without them: kustomize fails on the decrypted files, and its
                    // message could quote them.
                    RenderError::Kustomize(_) => RenderError::Kustomize(
                        "kustomize failed on the decrypted secretGenerator files (its message is withheld: it \
                         could quote them)"
                            .to_string(),
                    ),
                    other => other,
                })?;
            rerendered = Some(rendered);
        }
    }
    let current = rerendered.as_ref().unwrap_or(rendered);
    if let Some(left) = current.objects.iter().find(|o| holds_encrypted_data(&o.object)) {
        return Err(DecryptError::Leftover { what: describe(left) });
    }
    if let Some(stray) = current
        .objects
        .iter()
        .find(|o| !is_encrypted(&o.object) && holds_stray_ciphertext(&o.object))
    {
        return Err(DecryptError::Stray { what: describe(stray) });
    }
    let root = root.to_path_buf();
    let objects = current.objects.clone();
    let kustomize = current.kustomize;
    let notes = current.notes.clone();
    let keys = keys.clone();
    let objects = tokio::task::spawn_blocking(move || decrypt_objects(&root, &objects, kustomize, &keys))
        .await
        .map_err(|e| DecryptError::Io(e.to_string()))??;
    let mut yaml = String::new();
    for o in &objects {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml_ng::to_string(&o.object).unwrap_or_default());
    }
    Ok(Some(Rendered::new(yaml, objects, kustomize, notes)))
}

/// One MAC-checked source: its data key and, per document, every encrypted value it holds as
/// (path, `ENC[…]`).
struct Verified {
    key: sops::DataKey,
    documents: Vec<HashSet<(String, String)>>,
}

/// Decrypts every object with sops metadata. Plain renders name each object's file; for kustomize output the
/// files are found by the (encrypted, unique per file) MAC they carry.
fn decrypt_objects(
    root: &Path,
    objects: &[RenderedObject],
    kustomize: bool,
    keys: &Keyring,
) -> Result<Vec<RenderedObject>, DecryptError> {
    let mut verified: HashMap<String, Verified> = HashMap::new();
    let mut index: Option<HashMap<String, Vec<String>>> = None;
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        if !is_encrypted(&o.object) {
            out.push(o.clone());
            continue;
        }
        let mac = o.object["sops"]["mac"].as_str().unwrap_or_default().to_string();
        if !verified.contains_key(&mac) {
            let files = if kustomize {
                if index.is_none() {
                    index = Some(scan_sources(root)?);
                }
                index.as_ref().and_then(|i| i.get(&mac)).cloned().unwrap_or_default()
            } else {
                vec![o.source.clone()]
            };
            if files.is_empty() {
                return Err(DecryptError::NoSource { what: describe(o) });
            }
            let mut key = None;
            let mut documents = Vec::new();
            for file in &files {
                let failed = |reason| DecryptError::Failed {
                    file: file.clone(),
                    reason,
                };
                let content = read_in_repo(root, file)?;
                let opened = sops::decrypt_documents(&content, keys).map_err(failed)?;
                if opened.mac != mac {
                    // A document whose sops section differs from its file's first one: not as sops writes.
                    return Err(failed(SopsError::MacMismatch));
                }
                for doc in sops::parse_documents(&content).map_err(failed)? {
                    if doc.get("sops").is_some() {
                        documents.push(sops::encrypted_values(&doc).map_err(failed)?.into_iter().collect());
                    }
                }
                key = Some(opened.key);
            }
            let Some(key) = key else {
                return Err(DecryptError::NoSource { what: describe(o) });
            };
            verified.insert(mac.clone(), Verified { key, documents });
        }
        let Some(source) = verified.get(&mac) else {
            return Err(DecryptError::NoSource { what: describe(o) });
        };
        let failed = |reason| DecryptError::Failed {
            file: describe(o),
            reason,
        };
        let doc: Yaml = serde_yaml_ng::to_value(&o.object).map_err(|_| failed(SopsError::Parse("object".into())))?;
        // Every encrypted value must be one a single document of the checked file holds at that path: kustomize
        // may patch clear fields, but cannot swap in ciphertext from elsewhere (another document, an old file).
        let values: Vec<(String, String)> = sops::encrypted_values(&doc).map_err(failed)?;
        if !source.documents.iter().any(|d| values.iter().all(|v| d.contains(v))) {
            let path = values
                .iter()
                .find(|v| !source.documents.iter().any(|d| d.contains(*v)))
                .or(values.first())
                .map(|(p, _)| p.replace(':', "."))
                .unwrap_or_default();
            return Err(failed(SopsError::Value(path)));
        }
        let plain = sops::decrypt_document(&doc, &source.key).map_err(failed)?;
        let object = serde_json::to_value(&plain).map_err(|_| failed(SopsError::Parse("object".into())))?;
        out.push(RenderedObject {
            source: o.source.clone(),
            object,
        });
    }
    Ok(out)
}

/// Reads a file of the tree by its repository path, refusing one that resolves outside the tree.
fn read_in_repo(root: &Path, rel: &str) -> Result<Vec<u8>, DecryptError> {
    let real = crate::source::real_path_beneath(root, Path::new(rel)).map_err(|_| DecryptError::Io(rel.to_string()))?;
    std::fs::read(&real).map_err(|e| DecryptError::Io(format!("{rel}: {e}")))
}

/// Every YAML/JSON file of the tree (links not followed, at most [`crate::source::MAX_FILE_BYTES`] each) with
/// sops metadata, by the MAC each of its documents carries.
fn scan_sources(root: &Path) -> Result<HashMap<String, Vec<String>>, DecryptError> {
    let mut index: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let entries = std::fs::read_dir(root.join(&rel_dir)).map_err(|e| DecryptError::Io(e.to_string()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".ferry-") || name == ".git" {
                continue;
            }
            let rel = rel_dir.join(&name);
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(rel);
                continue;
            }
            let format = Format::for_path(&name);
            if !meta.is_file()
                || !matches!(format, Format::Yaml | Format::Json)
                || meta.len() > crate::source::MAX_FILE_BYTES
            {
                continue;
            }
            total += meta.len();
            if total > MAX_SCAN_BYTES {
                return Err(DecryptError::Io(format!(
                    "the repository has over {MAX_SCAN_BYTES} bytes of manifests to search for encrypted sources"
                )));
            }
            let Ok(content) = std::fs::read(entry.path()) else {
                continue;
            };
            if !format.looks_encrypted(&content) {
                continue;
            }
            let Ok(docs) = sops::parse_documents(&content) else {
                continue;
            };
            let shown = rel.to_string_lossy().into_owned();
            for mac in docs.iter().filter_map(|d| d.get("sops")?.get("mac")?.as_str()) {
                let files = index.entry(mac.to_string()).or_default();
                if !files.contains(&shown) {
                    files.push(shown.clone());
                }
            }
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(objects: Vec<Value>) -> Rendered {
        let objects = objects
            .into_iter()
            .map(|object| RenderedObject {
                source: "apps/list.yaml".to_string(),
                object,
            })
            .collect();
        Rendered::new(String::new(), objects, false, Vec::new())
    }

    #[tokio::test]
    async fn ciphertext_without_sops_metadata_is_never_applied() {
        // An item of an encrypted `kind: List`: flattened by the render, away from the List's `sops` section.
        let item = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "stringData": {"password": "ENC[AES256_GCM,data:AAAA,iv:BBBB,tag:CCCC,type:str]"}});
        let rendered = render(vec![item]);
        let err = refuse_encrypted(&rendered).unwrap_err();
        assert!(err.to_string().contains("Secret db (from apps/list.yaml)"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = decrypt_render(
            dir.path(),
            ".",
            &rendered,
            &Keyring::default(),
            &RenderSettings::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DecryptError::Stray { .. }), "{err}");
        // Text that only mentions the format is not ciphertext.
        let note = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "doc"},
            "data": {"howto": "values look like ENC[AES256_GCM,data:...] in Git"}});
        assert!(find_encrypted(&render(vec![note])).is_none());
    }
}
