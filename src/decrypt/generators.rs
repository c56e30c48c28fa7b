//! The files a kustomize `secretGenerator` reads (`files:`, `envs:`, `env:`), decrypted before kustomize runs,
//! as Flux does: kustomize then hashes and encodes the plaintext, so generated names match Flux's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sops::{Format, decrypt_file};
use super::{DecryptError, Keyring};
use crate::render::KUSTOMIZATION_FILES;
use crate::source::real_path_beneath;

/// (file as the generator names it, format sops wrote it in) for every generator source of one kustomization.
fn sources(kustomization: &Value) -> Vec<(String, Format)> {
    let mut out = Vec::new();
    for generator in kustomization["secretGenerator"].as_array().into_iter().flatten() {
        for entry in generator["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            // `key=path` or `path`; the key's extension picks the format (Flux's rule).
            let (key, path) = entry.split_once('=').unwrap_or((entry, entry));
            out.push((path.to_string(), Format::for_path(key)));
        }
        let envs = generator["envs"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(generator.get("env"));
        for path in envs.filter_map(Value::as_str) {
            let format = match Format::for_path(path) {
                Format::Binary => Format::Dotenv,
                other => other,
            };
            out.push((path.to_string(), format));
        }
    }
    out
}

/// What kustomize reads instead of an encrypted generator source in a render without keys: for an env file
/// its keys (sops' own `sops_*` entries left out) with this value, for any other file this text. So the
/// shared render has the shape of the decrypted one, and two encrypted env files of one generator do not both
/// add `sops_mac`.
pub const STAND_IN: &str = "ferry:sops-encrypted";

/// Every generator source of the kustomizations in `dirs` (absolute, below `root`) that sops encrypted:
/// (path relative to `root`, format, content). Sources that are not encrypted are left to kustomize.
fn encrypted_sources(root: &Path, dirs: &[PathBuf]) -> Result<Vec<(PathBuf, Format, Vec<u8>)>, DecryptError> {
    let mut out: Vec<(PathBuf, Format, Vec<u8>)> = Vec::new();
    for dir in dirs {
        let Some(file) = KUSTOMIZATION_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file()) else {
            continue;
        };
        // The static check already parsed it; a file it cannot read again is kustomize's to report.
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(kustomization) = serde_yaml_ng::from_str::<Value>(&text) else {
            continue;
        };
        let rel_dir = dir.strip_prefix(root).unwrap_or(dir);
        for (path, format) in sources(&kustomization) {
            let Ok(real) = real_path_beneath(root, &rel_dir.join(&path)) else {
                continue; // kustomize refuses it with its own message
            };
            let rel = real.strip_prefix(root).unwrap_or(&real).to_path_buf();
            if out.iter().any(|(r, _, _)| *r == rel) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&real) else { continue };
            if !meta.is_file() || meta.len() > crate::source::MAX_FILE_BYTES {
                continue;
            }
            let content = std::fs::read(&real).map_err(|e| DecryptError::Io(e.to_string()))?;
            if format.looks_encrypted(&content) {
                out.push((rel, format, content));
            }
        }
    }
    Ok(out)
}

/// The encrypted generator sources of the kustomizations in `dirs`, decrypted: (path relative to `root` →
/// plaintext), for kustomize to read from a memory-backed copy.
pub fn decrypt_sources(
    root: &Path,
    dirs: &[PathBuf],
    keys: &Keyring,
) -> Result<BTreeMap<PathBuf, Vec<u8>>, DecryptError> {
    let mut out = BTreeMap::new();
    for (rel, format, content) in encrypted_sources(root, dirs)? {
        let plain = decrypt_file(&content, format, keys).map_err(|reason| DecryptError::Failed {
            file: rel.to_string_lossy().into_owned(),
            reason,
        })?;
        out.insert(rel, plain);
    }
    Ok(out)
}

/// [`STAND_IN`]s for the encrypted generator sources of the kustomizations in `dirs` (empty when there are
/// none: the usual case, where kustomize reads the tree as it is).
pub fn stand_ins(root: &Path, dirs: &[PathBuf]) -> Result<BTreeMap<PathBuf, Vec<u8>>, DecryptError> {
    let mut out = BTreeMap::new();
    for (rel, format, content) in encrypted_sources(root, dirs)? {
        let stand_in = match format {
            Format::Dotenv => String::from_utf8_lossy(&content)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("sops_"))
                .filter_map(|l| l.split_once('=').map(|(k, _)| format!("{k}={STAND_IN}\n")))
                .collect::<String>(),
            _ => STAND_IN.to_string(),
        };
        out.insert(rel, stand_in.into_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_sources_and_their_formats() {
        let k: Value = serde_yaml_ng::from_str(
            "secretGenerator:\n- name: a\n  files: [tls.crt=certs/tls.enc, config.yaml, x.env]\n  envs: [app.env, more.json, plain]\n  env: old.env\n",
        )
        .unwrap();
        assert_eq!(
            sources(&k),
            vec![
                ("certs/tls.enc".to_string(), Format::Binary),
                ("config.yaml".to_string(), Format::Yaml),
                ("x.env".to_string(), Format::Dotenv),
                ("app.env".to_string(), Format::Dotenv),
                ("more.json".to_string(), Format::Json),
                ("plain".to_string(), Format::Dotenv),
                ("old.env".to_string(), Format::Dotenv),
            ]
        );
    }
}
