//! age identities (Flux's layout: one or more `AGE-SECRET-KEY-1…` lines under Secret keys ending in `.agekey`)
//! and unwrapping a SOPS data key with them.
//!
//! Identities are secret: nothing here ever puts a line of a key file, or any part of one, into an error.

use std::io::Read;

use super::DecryptError;

/// The age identities one Environment (or `ferry render --decrypt-with`) may decrypt with.
#[derive(Clone, Default)]
pub struct Keyring {
    identities: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        write!(f, "Keyring({} identities)", self.identities.len())
    }
}

impl Keyring {
    /// Parses an age identity file: `AGE-SECRET-KEY-1…` lines, `#` comments and blank lines. `origin` names the
    /// file (or `Secret ns/name key`) in errors, which give line numbers, never content.
    pub fn parse(text: &[u8], origin: &str) -> Result<Keyring, DecryptError> {
        let mut keyring = Keyring::default();
        keyring.add(text, origin)?;
        Ok(keyring)
    }

    /// Adds the identities of one more identity file.
    pub fn add(&mut self, text: &[u8], origin: &str) -> Result<(), DecryptError> {
        let text = std::str::from_utf8(text).map_err(|_| DecryptError::InvalidKey {
            origin: origin.to_string(),
            message: "not UTF-8".to_string(),
        })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |message: &str| DecryptError::InvalidKey {
                origin: origin.to_string(),
                message: format!("line {}: {message}", i + 1),
            };
            if !line.starts_with("AGE-SECRET-KEY-1") {
                return Err(invalid(
                    "not an age X25519 identity (AGE-SECRET-KEY-1…); plugin and SSH identities are not supported",
                ));
            }
            let identity = line
                .parse::<age::x25519::Identity>()
                .map_err(|_| invalid("not a valid age identity"))?;
            self.identities.push(identity);
        }
        Ok(())
    }

    /// The identities as an identity file, for the render worker that decrypts (handed over its stdin, never
    /// written anywhere). The caller keeps it no longer than that.
    pub(crate) fn to_identity_file(&self) -> String {
        use age::secrecy::ExposeSecret;
        self.identities
            .iter()
            .map(|i| format!("{}\n", i.to_string().expose_secret()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// The public recipients (`age1…`) of the identities, for messages that say which keys were tried.
    pub fn recipients(&self) -> Vec<String> {
        self.identities.iter().map(|i| i.to_public().to_string()).collect()
    }

    /// Decrypts one armored age file (the `enc` of a SOPS `age` entry) with any identity; `None` when none of
    /// them is a recipient or the file is not age.
    pub(super) fn unwrap(&self, armored: &str) -> Option<Vec<u8>> {
        if self.identities.is_empty() {
            return None;
        }
        let reader = age::armor::ArmoredReader::new(armored.trim().as_bytes());
        let decryptor = age::Decryptor::new(reader).ok()?;
        if decryptor.is_scrypt() {
            return None;
        }
        let mut out = Vec::new();
        let mut plain = decryptor
            .decrypt(self.identities.iter().map(|i| i as &dyn age::Identity))
            .ok()?;
        plain.read_to_end(&mut out).ok()?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_files_parse_and_errors_never_quote_them() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string();
        let secret = secret.expose_secret_str();
        let text = format!("# created: today\n# public key: {}\n{secret}\n\n", id.to_public());
        let k = Keyring::parse(text.as_bytes(), "keys.agekey").unwrap();
        assert_eq!(k.len(), 1);
        assert_eq!(k.recipients(), vec![id.to_public().to_string()]);
        assert!(!format!("{k:?}").contains("AGE-SECRET"));

        // A damaged key: the error names the line, never the key.
        let broken = format!("{}x\n", &secret[..secret.len() - 1]);
        let err = Keyring::parse(broken.as_bytes(), "keys.agekey")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.agekey") && err.contains("line 1"), "{err}");
        assert!(!err.contains(&secret[20..40]), "{err}");
        let err = Keyring::parse(b"AGE-PLUGIN-YUBIKEY-1QQQ\n", "k")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not supported") && !err.contains("YUBIKEY"), "{err}");
    }

    trait Expose {
        fn expose_secret_str(&self) -> &str;
    }
    impl Expose for age::secrecy::SecretString {
        fn expose_secret_str(&self) -> &str {
            use age::secrecy::ExposeSecret;
            self.expose_secret()
        }
    }
}
