//! The SOPS file format, as `sops` 3.x writes it: decrypting values and checking the MAC exactly as sops does.
//!
//! A SOPS file keeps its structure and keys in clear; each selected value is `ENC[AES256_GCM,data:…,iv:…,tag:…,
//! type:…]`, AES-256-GCM with a 32-byte IV under the file's data key, with the value's path (`a:b:c:`) as
//! additional data, so a value cannot be moved. The data key is wrapped for each recipient (`sops.age[].enc`).
//! The MAC is SHA-512 over every value in document order (only the encrypted ones with `mac_only_encrypted`),
//! itself encrypted under the data key with `lastmodified` as additional data: it catches values removed,
//! reordered, or unencrypted ones changed.
//!
//! Which values are encrypted follows sops' own rules (`unencrypted_suffix`, `encrypted_suffix`,
//! `unencrypted_regex`, `encrypted_regex`, in that order); comment-based selectors need the comments, which
//! Ferry's YAML parser drops, so such files are refused rather than half-understood. Errors name paths (keys
//! are in clear in the file) and never a value.

use aes_gcm::aead::AeadInOut;
use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::U32;
use aes_gcm::{AesGcm, KeyInit, aes::Aes256};
use base64::Engine as _;
use regex::Regex;
use serde_yaml_ng::{Mapping, Value as Yaml};
use sha2::{Digest, Sha512};

use super::age::Keyring;

/// sops' value cipher: AES-256-GCM with a 32-byte nonce.
type Cipher = AesGcm<Aes256, U32>;

/// A file's data key (kept only for the render that needs it).
pub type DataKey = [u8; 32];

/// The bytes sops starts a `mac_only_encrypted` MAC with (SHA-256 of "sops"), so the two kinds never match.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Key types sops can wrap a data key for, other than age; Ferry cannot use them.
const OTHER_KEY_TYPES: [(&str, &str); 6] = [
    ("pgp", "PGP"),
    ("kms", "AWS KMS"),
    ("gcp_kms", "GCP KMS"),
    ("azure_kv", "Azure Key Vault"),
    ("hc_vault", "HashiCorp Vault"),
    ("hckms", "HuaweiCloud KMS"),
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SopsError {
    #[error("not SOPS-encrypted")]
    NotEncrypted,
    #[error("cannot be parsed ({0})")]
    Parse(String),
    #[error("invalid SOPS metadata: {0}")]
    Metadata(String),
    #[error("{0} are not supported")]
    Unsupported(String),
    #[error("encrypted only for {0}, which Ferry cannot use: add an age recipient")]
    UnsupportedKeys(String),
    #[error("no age identity to decrypt with")]
    NoIdentities,
    #[error("none of the {tried} age identities can decrypt it (its age recipients: {recipients})")]
    WrongKey { tried: usize, recipients: String },
    #[error("the value at {0} cannot be decrypted: it was changed, or moved from elsewhere")]
    Value(String),
    #[error("MAC mismatch: the file was changed after sops wrote it")]
    MacMismatch,
}

/// How sops stored a file: Flux's rule, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Binary,
}

impl Format {
    /// `.yaml`/`.yml` YAML, `.json` JSON, `.env` dotenv, anything else binary (as Flux and sops decide).
    pub fn for_path(path: &str) -> Format {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if lower.ends_with(".json") {
            Format::Json
        } else if lower.ends_with(".env") {
            Format::Dotenv
        } else {
            Format::Binary
        }
    }

    /// Whether `content` carries the MAC line sops writes in this format: a cheap test before parsing.
    pub fn looks_encrypted(self, content: &[u8]) -> bool {
        let marker: &[&[u8]] = match self {
            Format::Yaml => &[b"mac: ENC[", b"mac: \"ENC[", b"mac: 'ENC["],
            Format::Json | Format::Binary => &[b"\"mac\": \"ENC[", b"\"mac\":\"ENC["],
            Format::Dotenv => &[b"sops_mac=ENC["],
        };
        marker.iter().any(|m| content.windows(m.len()).any(|w| w == *m))
    }
}

/// What a file's `sops` section says, as far as decrypting goes.
#[derive(Debug)]
pub struct Metadata {
    last_modified: String,
    mac: String,
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<Regex>,
    encrypted_regex: Option<Regex>,
    mac_only_encrypted: bool,
    /// (recipient, armored wrapped data key)
    age: Vec<(String, String)>,
    other_keys: Vec<&'static str>,
}

impl Metadata {
    pub fn parse(sops: &Yaml) -> Result<Metadata, SopsError> {
        let text = |key: &str| -> Result<Option<String>, SopsError> {
            match sops.get(key) {
                None | Some(Yaml::Null) => Ok(None),
                Some(Yaml::String(s)) if s.is_empty() => Ok(None),
                Some(Yaml::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(SopsError::Metadata(format!("{key} is not a string"))),
            }
        };
        let regex = |key: &str| -> Result<Option<Regex>, SopsError> {
            text(key)?
                .map(|r| Regex::new(&r).map_err(|_| SopsError::Metadata(format!("{key} is not a valid regex"))))
                .transpose()
        };
        if text("unencrypted_comment_regex")?.is_some() || text("encrypted_comment_regex")?.is_some() {
            return Err(SopsError::Unsupported(
                "comment-based selectors (encrypted_comment_regex, unencrypted_comment_regex)".to_string(),
            ));
        }
        if sops
            .get("key_groups")
            .and_then(Yaml::as_sequence)
            .is_some_and(|g| !g.is_empty())
        {
            return Err(SopsError::Unsupported("key groups (Shamir secret sharing)".to_string()));
        }
        let mut age = Vec::new();
        for entry in sops.get("age").and_then(Yaml::as_sequence).into_iter().flatten() {
            let field = |k: &str| entry.get(k).and_then(Yaml::as_str).unwrap_or_default().to_string();
            age.push((field("recipient"), field("enc")));
        }
        let other_keys = OTHER_KEY_TYPES
            .iter()
            .filter(|(key, _)| {
                sops.get(*key)
                    .and_then(Yaml::as_sequence)
                    .is_some_and(|s| !s.is_empty())
            })
            .map(|(_, name)| *name)
            .collect();
        let mac_only_encrypted = match sops.get("mac_only_encrypted") {
            None | Some(Yaml::Null) => false,
            Some(Yaml::Bool(b)) => *b,
            Some(Yaml::String(s)) => s == "true",
            Some(_) => return Err(SopsError::Metadata("mac_only_encrypted is not a boolean".to_string())),
        };
        Ok(Metadata {
            last_modified: text("lastmodified")?.ok_or_else(|| SopsError::Metadata("no lastmodified".into()))?,
            mac: text("mac")?.ok_or_else(|| SopsError::Metadata("no mac".into()))?,
            unencrypted_suffix: text("unencrypted_suffix")?,
            encrypted_suffix: text("encrypted_suffix")?,
            unencrypted_regex: regex("unencrypted_regex")?,
            encrypted_regex: regex("encrypted_regex")?,
            mac_only_encrypted,
            age,
            other_keys,
        })
    }

    /// sops' `shouldBeEncrypted`, without the comment selectors (refused in [`Metadata::parse`]).
    fn encrypts(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = &self.unencrypted_suffix
            && path.iter().any(|p| p.ends_with(suffix.as_str()))
        {
            encrypted = false;
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = path.iter().any(|p| p.ends_with(suffix.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && path.iter().any(|p| r.is_match(p))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_regex {
            encrypted = path.iter().any(|p| r.is_match(p));
        }
        encrypted
    }

    /// Unwraps the data key with the first age entry one of `keys` can open.
    pub fn data_key(&self, keys: &Keyring) -> Result<DataKey, SopsError> {
        if self.age.is_empty() {
            return Err(if self.other_keys.is_empty() {
                SopsError::Metadata("no key the data key is encrypted for".to_string())
            } else {
                SopsError::UnsupportedKeys(self.other_keys.join(", "))
            });
        }
        if keys.is_empty() {
            return Err(SopsError::NoIdentities);
        }
        for (_, enc) in &self.age {
            if let Some(key) = keys.unwrap(enc) {
                return key
                    .try_into()
                    .map_err(|_| SopsError::Metadata("the data key is not 32 bytes".to_string()));
            }
        }
        let recipients: Vec<&str> = self.age.iter().map(|(r, _)| r.as_str()).collect();
        Err(SopsError::WrongKey {
            tried: keys.len(),
            recipients: recipients.join(", "),
        })
    }

    /// `lastmodified` as Go's RFC 3339 formatting writes it back (the MAC's additional data): without
    /// fractional seconds.
    fn mac_additional_data(&self) -> String {
        let t = &self.last_modified;
        match t.find('.') {
            Some(dot) => {
                let end = t[dot..].find(['Z', '+', '-']).map_or(t.len(), |i| dot + i);
                format!("{}{}", &t[..dot], &t[end..])
            }
            None => t.clone(),
        }
    }
}

/// The SHA-512 sops computes over a tree's values, as the uppercase hex string it encrypts.
struct Mac {
    hash: Sha512,
}

impl Mac {
    fn new(meta: &Metadata) -> Mac {
        let mut hash = Sha512::new();
        if meta.mac_only_encrypted {
            hash.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        Mac { hash }
    }

    /// sops' `ToBytes`: strings as they are, integers in decimal, floats in Go's shortest `'f'` form, booleans
    /// as `True`/`False`.
    fn add(&mut self, v: &Yaml) {
        match v {
            Yaml::String(s) => self.hash.update(s.as_bytes()),
            Yaml::Bool(true) => self.hash.update(b"True"),
            Yaml::Bool(false) => self.hash.update(b"False"),
            Yaml::Number(n) => {
                let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => i.to_string(),
                    (None, Some(u), _) => u.to_string(),
                    (None, None, Some(f)) => format!("{f}"),
                    _ => String::new(),
                };
                self.hash.update(text.as_bytes());
            }
            _ => {}
        }
    }

    fn hex(self) -> String {
        hex::encode_upper(self.hash.finalize())
    }
}

/// One `ENC[…]` value opened: the plaintext bytes and the type sops recorded.
fn open(value: &str, key: &DataKey, additional_data: &str) -> Result<(Vec<u8>, String), ()> {
    if value.is_empty() {
        // sops leaves empty values as they are.
        return Ok((Vec::new(), "str".to_string()));
    }
    let inner = value
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|v| v.strip_suffix(']'))
        .ok_or(())?;
    let mut fields = std::collections::HashMap::new();
    for part in inner.split(',') {
        let (k, v) = part.split_once(':').ok_or(())?;
        fields.insert(k, v);
    }
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(fields.get(k).ok_or(())?)
            .map_err(|_| ())
    };
    let (mut data, iv, tag) = (b64("data")?, b64("iv")?, b64("tag")?);
    let kind = fields.get("type").ok_or(())?.to_string();
    let nonce: Array<u8, U32> = Array::try_from(iv.as_slice()).map_err(|_| ())?;
    let tag = Array::try_from(tag.as_slice()).map_err(|_| ())?;
    let cipher = Cipher::new(&Array::from(*key));
    cipher
        .decrypt_inout_detached(&nonce, additional_data.as_bytes(), data.as_mut_slice().into(), &tag)
        .map_err(|_| ())?;
    Ok((data, kind))
}

/// The value sops' stores give a decrypted leaf of `kind`.
fn typed(plain: Vec<u8>, kind: &str) -> Result<Yaml, ()> {
    let text = String::from_utf8(plain).map_err(|_| ())?;
    Ok(match kind {
        "str" | "bytes" => Yaml::String(text),
        "int" => Yaml::Number(text.parse::<i64>().map_err(|_| ())?.into()),
        // Go writes whole floats without a fraction (`3`), and sops' stores read them back as integers.
        "float" => match text.parse::<i64>() {
            Ok(i) => Yaml::Number(i.into()),
            Err(_) => Yaml::Number(text.parse::<f64>().map_err(|_| ())?.into()),
        },
        "bool" => Yaml::Bool(match text.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return Err(()),
        }),
        _ => return Err(()),
    })
}

fn shown(path: &[String]) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.join(".")
    }
}

/// What [`walk`] calls on every scalar, with its path.
type Leaf<'a> = dyn FnMut(&mut Yaml, &[String]) -> Result<(), SopsError> + 'a;

/// Walks a tree as sops does (mappings in order, sequence items under their parent's path, nulls skipped),
/// calling `leaf` on every scalar.
fn walk(v: &mut Yaml, path: &mut Vec<String>, leaf: &mut Leaf) -> Result<(), SopsError> {
    match v {
        Yaml::Mapping(map) => {
            for (k, child) in map.iter_mut() {
                let Some(k) = k.as_str() else {
                    return Err(SopsError::Unsupported(format!(
                        "non-string keys (under {})",
                        shown(path)
                    )));
                };
                path.push(k.to_string());
                walk(child, path, leaf)?;
                path.pop();
            }
            Ok(())
        }
        Yaml::Sequence(items) => items.iter_mut().try_for_each(|child| walk(child, path, leaf)),
        Yaml::Tagged(tagged) => walk(&mut tagged.value, path, leaf),
        Yaml::Null => Ok(()),
        _ => leaf(v, path),
    }
}

/// Decrypts every selected value of `branches` in place and returns sops' MAC of the result.
fn decrypt_tree(branches: &mut [Yaml], meta: &Metadata, key: &DataKey) -> Result<String, SopsError> {
    let mut mac = Mac::new(meta);
    for branch in branches {
        walk(branch, &mut Vec::new(), &mut |v, path| {
            let encrypted = meta.encrypts(path);
            if encrypted {
                let additional = format!("{}:", path.join(":"));
                let Yaml::String(s) = v else {
                    return Err(SopsError::Value(shown(path)));
                };
                let (plain, kind) = open(s, key, &additional).map_err(|_| SopsError::Value(shown(path)))?;
                *v = typed(plain, &kind).map_err(|_| SopsError::Value(shown(path)))?;
            }
            if !meta.mac_only_encrypted || encrypted {
                mac.add(v);
            }
            Ok(())
        })?;
    }
    Ok(mac.hex())
}

/// Compares the MAC sops stored with the one computed over the decrypted tree.
fn check_mac(meta: &Metadata, key: &DataKey, computed: &str) -> Result<(), SopsError> {
    let (stored, _) = open(&meta.mac, key, &meta.mac_additional_data()).map_err(|_| SopsError::MacMismatch)?;
    if stored.eq_ignore_ascii_case(computed.as_bytes()) {
        Ok(())
    } else {
        Err(SopsError::MacMismatch)
    }
}

fn parse_error(e: serde_yaml_ng::Error) -> SopsError {
    // The location only: the parser's own message can quote the document.
    SopsError::Parse(match e.location() {
        Some(l) => format!("invalid YAML/JSON at line {}, column {}", l.line(), l.column()),
        None => "invalid YAML/JSON".to_string(),
    })
}

/// Parses the documents of a YAML or JSON file (JSON is read as YAML: the same tree, in order).
pub fn parse_documents(content: &[u8]) -> Result<Vec<Yaml>, SopsError> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_slice(content) {
        let v = Yaml::deserialize(doc).map_err(parse_error)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// A YAML or JSON file sops encrypted, decrypted: its documents without their `sops` sections, and its data key.
pub struct Opened {
    pub documents: Vec<Yaml>,
    pub key: DataKey,
    pub mac: String,
}

/// Decrypts a YAML or JSON file as sops wrote it (every document; one MAC over all of them) and checks the MAC.
pub fn decrypt_documents(content: &[u8], keys: &Keyring) -> Result<Opened, SopsError> {
    let mut docs = parse_documents(content)?;
    let sops = docs
        .iter()
        .find_map(|d| d.get("sops").filter(|s| s.get("mac").is_some()).cloned())
        .ok_or(SopsError::NotEncrypted)?;
    let meta = Metadata::parse(&sops)?;
    for doc in &mut docs {
        if let Some(map) = doc.as_mapping_mut() {
            map.shift_remove("sops");
        }
    }
    let key = meta.data_key(keys)?;
    let computed = decrypt_tree(&mut docs, &meta, &key)?;
    check_mac(&meta, &key, &computed)?;
    Ok(Opened {
        documents: docs,
        key,
        mac: meta.mac.clone(),
    })
}

/// Decrypts one document (e.g. an object kustomize passed through) with a data key already unwrapped from a
/// file whose MAC was checked. No MAC here: kustomize may have added fields (a namespace, labels) the MAC
/// never covered; every encrypted value is still authenticated, with its path.
pub fn decrypt_document(doc: &Yaml, key: &DataKey) -> Result<Yaml, SopsError> {
    let sops = doc.get("sops").ok_or(SopsError::NotEncrypted)?;
    let meta = Metadata::parse(sops)?;
    let mut doc = doc.clone();
    if let Some(map) = doc.as_mapping_mut() {
        map.shift_remove("sops");
    }
    decrypt_tree(std::slice::from_mut(&mut doc), &meta, key)?;
    Ok(doc)
}

/// Every encrypted value of a document with its path, as `path → ENC[…]` (for checking that a document
/// kustomize emitted holds only values of the file it came from).
pub fn encrypted_values(doc: &Yaml) -> Result<Vec<(String, String)>, SopsError> {
    let sops = doc.get("sops").ok_or(SopsError::NotEncrypted)?;
    let meta = Metadata::parse(sops)?;
    let mut doc = doc.clone();
    if let Some(map) = doc.as_mapping_mut() {
        map.shift_remove("sops");
    }
    let mut out = Vec::new();
    walk(&mut doc, &mut Vec::new(), &mut |v, path| {
        if meta.encrypts(path)
            && let Some(s) = v.as_str()
        {
            out.push((path.join(":"), s.to_string()));
        }
        Ok(())
    })?;
    Ok(out)
}

/// A dotenv file sops encrypted, decrypted to dotenv again (`KEY=value` lines, newlines in values as `\n`,
/// as `sops decrypt` writes it; comments are left out).
pub fn decrypt_dotenv(content: &[u8], keys: &Keyring) -> Result<Vec<u8>, SopsError> {
    let text = std::str::from_utf8(content).map_err(|_| SopsError::Parse("not UTF-8".to_string()))?;
    let mut data = Mapping::new();
    let mut flat = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| SopsError::Parse(format!("line {} is not KEY=VALUE", i + 1)))?;
        let v = v.replace("\\n", "\n");
        match k.strip_prefix("sops_") {
            Some(meta_key) => flat.push((meta_key.to_string(), v)),
            None => {
                data.insert(Yaml::String(k.to_string()), Yaml::String(v));
            }
        }
    }
    if flat.is_empty() {
        return Err(SopsError::NotEncrypted);
    }
    let meta = Metadata::parse(&unflatten(flat))?;
    let key = meta.data_key(keys)?;
    let mut tree = [Yaml::Mapping(data)];
    let computed = decrypt_tree(&mut tree, &meta, &key)?;
    check_mac(&meta, &key, &computed)?;
    let mut out = String::new();
    if let Yaml::Mapping(map) = &tree[0] {
        for (k, v) in map {
            let value = match v {
                Yaml::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim_end()
                    .to_string(),
            };
            out.push_str(&format!(
                "{}={}\n",
                k.as_str().unwrap_or_default(),
                value.replace('\n', "\\n")
            ));
        }
    }
    Ok(out.into_bytes())
}

/// sops' flattened dotenv metadata (`age__list_0__map_enc`) back into a tree.
fn unflatten(entries: Vec<(String, String)>) -> Yaml {
    let mut root = Yaml::Mapping(Mapping::new());
    for (key, value) in entries {
        let mut node = &mut root;
        let parts: Vec<&str> = key.split("__").collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let leaf = || {
                if last {
                    Yaml::String(value.clone())
                } else if parts[i + 1].starts_with("list_") {
                    Yaml::Sequence(Vec::new())
                } else {
                    Yaml::Mapping(Mapping::new())
                }
            };
            node = if let Some(index) = part.strip_prefix("list_").and_then(|n| n.parse::<usize>().ok()) {
                let Yaml::Sequence(items) = node else { break };
                while items.len() <= index {
                    items.push(leaf());
                }
                &mut items[index]
            } else {
                let name = part.strip_prefix("map_").unwrap_or(part);
                let Yaml::Mapping(map) = node else { break };
                map.entry(Yaml::String(name.to_string())).or_insert_with(leaf)
            };
        }
    }
    root
}

/// A binary file sops encrypted (a JSON document with one `data` value), decrypted to its bytes.
pub fn decrypt_binary(content: &[u8], keys: &Keyring) -> Result<Vec<u8>, SopsError> {
    let mut docs = parse_documents(content)?;
    let [doc] = docs.as_mut_slice() else {
        return Err(SopsError::NotEncrypted);
    };
    let sops = doc.get("sops").cloned().ok_or(SopsError::NotEncrypted)?;
    let meta = Metadata::parse(&sops)?;
    let value = doc.get("data").and_then(Yaml::as_str).ok_or(SopsError::NotEncrypted)?;
    let key = meta.data_key(keys)?;
    // Binary content need not be UTF-8: opened directly rather than through `typed`.
    let path = ["data".to_string()];
    let mut mac = Mac::new(&meta);
    let plain = if meta.encrypts(&path) {
        open(value, &key, "data:")
            .map_err(|_| SopsError::Value("data".to_string()))?
            .0
    } else {
        value.as_bytes().to_vec()
    };
    mac.hash.update(&plain);
    check_mac(&meta, &key, &mac.hex())?;
    Ok(plain)
}

/// Decrypts a file that may be any of sops' formats into what `sops decrypt` prints for it.
pub fn decrypt_file(content: &[u8], format: Format, keys: &Keyring) -> Result<Vec<u8>, SopsError> {
    match format {
        Format::Dotenv => decrypt_dotenv(content, keys),
        Format::Binary => decrypt_binary(content, keys),
        Format::Yaml => {
            let opened = decrypt_documents(content, keys)?;
            let mut out = String::new();
            for (i, doc) in opened.documents.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_yaml_ng::to_string(doc).map_err(|_| SopsError::Parse("re-emitting".into()))?);
            }
            Ok(out.into_bytes())
        }
        Format::Json => {
            let opened = decrypt_documents(content, keys)?;
            let doc = opened.documents.first().cloned().unwrap_or(Yaml::Null);
            let mut out = serde_json::to_vec_pretty(&doc).map_err(|_| SopsError::Parse("re-emitting".into()))?;
            out.push(b'\n');
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(extra: &str) -> Metadata {
        let v: Yaml =
            serde_yaml_ng::from_str(&format!("lastmodified: '2026-01-01T00:00:00Z'\nmac: x\n{extra}")).unwrap();
        Metadata::parse(&v).unwrap()
    }

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selectors_follow_sops_rules_in_sops_order() {
        let m = meta("unencrypted_suffix: _unencrypted\n");
        assert!(m.encrypts(&p(&["data", "password"])));
        assert!(!m.encrypts(&p(&["data", "user_unencrypted"])));
        let m = meta("encrypted_suffix: _secret\n");
        assert!(!m.encrypts(&p(&["data", "user"])));
        assert!(m.encrypts(&p(&["data_secret", "user"])));
        let m = meta("encrypted_regex: ^(data|stringData)$\n");
        assert!(m.encrypts(&p(&["stringData", "a"])) && !m.encrypts(&p(&["metadata", "name"])));
        let m = meta("unencrypted_regex: ^(metadata|kind)$\n");
        assert!(!m.encrypts(&p(&["metadata", "name"])) && m.encrypts(&p(&["data", "x"])));
    }

    #[test]
    fn comment_selectors_key_groups_and_kms_only_files_are_refused_by_name() {
        let v: Yaml = serde_yaml_ng::from_str("lastmodified: x\nmac: x\nencrypted_comment_regex: sops\n").unwrap();
        assert!(matches!(Metadata::parse(&v), Err(SopsError::Unsupported(_))));
        let v: Yaml = serde_yaml_ng::from_str("lastmodified: x\nmac: x\nkey_groups: [{age: []}]\n").unwrap();
        assert!(matches!(Metadata::parse(&v), Err(SopsError::Unsupported(_))));
        let m = meta("kms: [{arn: 'arn:aws:kms:x'}]\npgp: [{fp: ABC}]\n");
        assert_eq!(
            m.data_key(&Keyring::default()),
            Err(SopsError::UnsupportedKeys("PGP, AWS KMS".to_string()))
        );
    }

    #[test]
    fn lastmodified_is_reformatted_as_go_does() {
        assert_eq!(meta("").mac_additional_data(), "2026-01-01T00:00:00Z");
        let v: Yaml = serde_yaml_ng::from_str("lastmodified: '2026-01-01T00:00:00.123+02:00'\nmac: x\n").unwrap();
        assert_eq!(
            Metadata::parse(&v).unwrap().mac_additional_data(),
            "2026-01-01T00:00:00+02:00"
        );
    }

    #[test]
    fn mac_bytes_are_sops_to_bytes() {
        let hash = |v: Yaml| {
            let mut m = Mac::new(&meta(""));
            m.add(&v);
            m.hex()
        };
        let expect = |s: &str| hex::encode_upper(Sha512::digest(s.as_bytes()));
        assert_eq!(hash(Yaml::Bool(true)), expect("True"));
        assert_eq!(hash(Yaml::Number(3.into())), expect("3"));
        assert_eq!(hash(Yaml::Number(1.5.into())), expect("1.5"));
        assert_eq!(hash(Yaml::Number(2.0.into())), expect("2"));
    }

    #[test]
    fn dotenv_metadata_unflattens() {
        let tree = unflatten(vec![
            ("age__list_0__map_enc".into(), "E0".into()),
            ("age__list_0__map_recipient".into(), "R0".into()),
            ("age__list_1__map_enc".into(), "E1".into()),
            ("mac".into(), "M".into()),
        ]);
        assert_eq!(tree["age"][1]["enc"], Yaml::String("E1".into()));
        assert_eq!(tree["age"][0]["recipient"], Yaml::String("R0".into()));
        assert_eq!(tree["mac"], Yaml::String("M".into()));
    }

    #[test]
    fn formats_follow_file_names() {
        assert_eq!(Format::for_path("a/secret.enc.yaml"), Format::Yaml);
        assert_eq!(Format::for_path("x.JSON"), Format::Json);
        assert_eq!(Format::for_path("app.env"), Format::Dotenv);
        assert_eq!(Format::for_path("tls.key"), Format::Binary);
        assert!(Format::Dotenv.looks_encrypted(b"A=ENC[x]\nsops_mac=ENC[AES"));
        assert!(!Format::Yaml.looks_encrypted(b"mac: plain"));
    }
}
