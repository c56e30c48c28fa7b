//! SOPS decryption (Environment `spec.decryption`): files written by the real `sops` with keys from the real
//! `age-keygen` (both built by hack/controlplane-build.sh), decrypted by Ferry's own code, then applied on the
//! real control plane.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use ferry::api::Environment;
use ferry::decrypt::{Format, Keyring, SopsError, decrypt_file};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use serde_yaml_ng::Value as Yaml;

/// The real tools and one age key pair.
struct Sops {
    bin: PathBuf,
    dir: tempfile::TempDir,
    key_file: PathBuf,
    recipient: String,
}

impl Sops {
    fn new() -> Sops {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = ferry_testenv::bin_dir_from_env_or_build(&root).expect("tools");
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.agekey");
        let out = Command::new(bin.join("age-keygen"))
            .arg("-o")
            .arg(&key_file)
            .output()
            .expect("age-keygen");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&key_file).unwrap();
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("public key line")
            .to_string();
        Sops {
            bin,
            dir,
            key_file,
            recipient,
        }
    }

    fn identity(&self) -> String {
        std::fs::read_to_string(&self.key_file).unwrap()
    }

    fn keyring(&self) -> Keyring {
        Keyring::parse(self.identity().as_bytes(), "key.agekey").unwrap()
    }

    /// `sops encrypt --age <recipient> <args> <name>` of `plain`; the name's extension picks the format.
    fn encrypt(&self, name: &str, plain: &[u8], args: &[&str]) -> Vec<u8> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let mut cmd = Command::new(self.bin.join("sops"));
        if let Some(rule) = args.first().and_then(|a| a.strip_prefix("rule:")) {
            // Settings sops takes only from a creation rule (mac_only_encrypted).
            let config = self.dir.path().join("sops-config.yaml");
            let text = format!(
                "creation_rules:\n  - age: {}\n    {}\n",
                self.recipient,
                rule.replace(',', "\n    ")
            );
            std::fs::write(&config, text).unwrap();
            cmd.arg("--config").arg(&config).arg("encrypt");
        } else {
            cmd.args(["encrypt", "--age", &self.recipient]).args(args);
        }
        let out = cmd.arg(&path).output().expect("sops");
        assert!(
            out.status.success(),
            "sops encrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `sops decrypt` of an encrypted file named `name`: what the real tool makes of it.
    fn decrypt(&self, name: &str, encrypted: &[u8]) -> Result<Vec<u8>, String> {
        let path = self.dir.path().join(format!("dec-{name}"));
        std::fs::write(&path, encrypted).unwrap();
        let format = match Format::for_path(name) {
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Dotenv => "dotenv",
            Format::Binary => "binary",
        };
        let out = Command::new(self.bin.join("sops"))
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .args(["decrypt", "--input-type", format, "--output-type", format])
            .arg(&path)
            .output()
            .expect("sops");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn docs(bytes: &[u8]) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_slice(bytes)
        .map(|d| Yaml::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

const MIXED: &str = "apiVersion: v1
kind: Secret
metadata:
  name: mixed
  labels: {tier: db}
type: Opaque
stringData:
  password: s3cr3t-value
  token_plain: visible
  port: 5432
  ratio: 0.25
  whole: 3.0
  enabled: true
  nothing: null
  empty: ''
  multi: |
    line one
    line two
  list:
  - a
  - 2
  - false
  nested:
    deeper: {x: y, n: -7}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: second}
data: {k: v}
";

#[test]
fn yaml_and_json_written_by_sops_decrypt_as_sops_decrypts_them_with_every_selector() {
    let s = Sops::new();
    let keys = s.keyring();
    for args in [
        vec![],
        vec!["--encrypted-regex", "^(data|stringData)$"],
        vec!["--unencrypted-regex", "^(apiVersion|kind|metadata|type)$"],
        vec!["--encrypted-suffix", "word"],
        vec!["--unencrypted-suffix", "_plain"],
        vec!["rule:mac_only_encrypted: true,encrypted_regex: ^stringData$"],
        vec!["rule:mac_only_encrypted: true"],
    ] {
        let encrypted = s.encrypt("mixed.yaml", MIXED.as_bytes(), &args);
        if args.iter().any(|a| a.contains("mac_only")) {
            assert!(String::from_utf8_lossy(&encrypted).contains("mac_only_encrypted: true"));
        }
        let ours = decrypt_file(&encrypted, Format::Yaml, &keys).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let theirs = s.decrypt("mixed.yaml", &encrypted).unwrap();
        assert_eq!(docs(&ours), docs(&theirs), "{args:?}");
        assert_eq!(
            docs(&ours)[0]["stringData"]["password"],
            Yaml::String("s3cr3t-value".into())
        );
    }
    let json_plain = br#"{"a": 1, "b": {"c": "d", "e": [true, 1.5, "x"]}, "f_plain": "g"}"#;
    for args in [vec![], vec!["--unencrypted-suffix", "_plain"]] {
        let encrypted = s.encrypt("doc.json", json_plain, &args);
        let ours = decrypt_file(&encrypted, Format::Json, &keys).unwrap();
        let theirs = s.decrypt("doc.json", &encrypted).unwrap();
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(parse(&ours), parse(&theirs), "{args:?}");
        assert_eq!(parse(&ours), parse(json_plain));
    }
}

#[test]
fn dotenv_and_binary_files_decrypt_byte_for_byte_as_sops_does() {
    let s = Sops::new();
    let keys = s.keyring();
    let env = b"DB_PASSWORD=hunter2\n# a comment\nEMPTY=\nSPACES=two words = three\nESCAPED=a\\nb\n";
    let encrypted = s.encrypt("app.env", env, &[]);
    let ours = decrypt_file(&encrypted, Format::Dotenv, &keys).unwrap();
    let theirs = s.decrypt("app.env", &encrypted).unwrap();
    let without_comments: Vec<&[u8]> = theirs.split(|b| *b == b'\n').filter(|l| !l.starts_with(b"#")).collect();
    assert_eq!(ours, without_comments.join(&b'\n'));

    let binary = b"\x00\x01binary\xff\xfe\nwith lines\n".to_vec();
    let encrypted = s.encrypt("blob.bin", &binary, &[]);
    assert_eq!(decrypt_file(&encrypted, Format::Binary, &keys).unwrap(), binary);
    assert_eq!(s.decrypt("blob.bin", &encrypted).unwrap(), binary);
}

/// Each change sops' MAC or its per-value authentication catches: Ferry refuses what the real sops refuses.
#[test]
fn tampered_files_are_refused_as_sops_refuses_them_and_errors_never_quote_values() {
    let s = Sops::new();
    let keys = s.keyring();
    let encrypted =
        String::from_utf8(s.encrypt("t.yaml", MIXED.as_bytes(), &["--encrypted-regex", "^stringData$"])).unwrap();
    let flip_value = {
        // One byte of the password's ciphertext.
        let at = encrypted.find("password: ENC[AES256_GCM,data:").unwrap() + "password: ENC[AES256_GCM,data:".len();
        let mut b = encrypted.clone().into_bytes();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let cases = [
        ("an encrypted value changed", flip_value),
        (
            "an unencrypted value changed",
            encrypted.replacen("name: mixed", "name: other", 1),
        ),
        ("a value removed", {
            let line = encrypted.lines().find(|l| l.trim_start().starts_with("port:")).unwrap();
            encrypted.replacen(&format!("{line}\n"), "", 1)
        }),
        ("documents reordered", {
            let (first, second) = encrypted.split_once("\n---\napiVersion").unwrap();
            format!("apiVersion{second}---\n{first}\n")
        }),
        ("a value moved to another key", {
            let pw = encrypted.lines().find(|l| l.contains("password: ENC")).unwrap();
            let tok = encrypted.lines().find(|l| l.contains("token_plain: ENC")).unwrap();
            let (pw_value, tok_value) = (pw.split_once(": ").unwrap().1, tok.split_once(": ").unwrap().1);
            encrypted.replacen(pw, &pw.replace(pw_value, tok_value), 1).replacen(
                tok,
                &tok.replace(tok_value, pw_value),
                1,
            )
        }),
    ];
    for (what, tampered) in cases {
        let err = decrypt_file(tampered.as_bytes(), Format::Yaml, &keys).expect_err(what);
        assert!(
            matches!(err, SopsError::MacMismatch | SopsError::Value(_)),
            "{what}: {err}"
        );
        assert!(
            s.decrypt("t.yaml", tampered.as_bytes()).is_err(),
            "{what}: sops accepts it"
        );
        for plain in ["s3cr3t-value", "visible", "line one"] {
            assert!(!err.to_string().contains(plain), "{what}: {err}");
        }
    }
    // The untouched file decrypts: the cases above fail for their change alone.
    assert!(decrypt_file(encrypted.as_bytes(), Format::Yaml, &keys).is_ok());

    // Another key: named by its recipients, never the identity.
    let other = Sops::new();
    let err = decrypt_file(encrypted.as_bytes(), Format::Yaml, &other.keyring()).unwrap_err();
    assert!(matches!(err, SopsError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(&s.recipient), "{err}");
    // Only a KMS key (the age entry replaced): unsupported, by name.
    let start = encrypted.find("    age:").unwrap();
    let end = encrypted[start..].find("    encrypted_regex").unwrap() + start;
    let kms_only = format!(
        "{}    kms:\n        - arn: arn:aws:kms:eu-west-1:1:key/x\n          enc: AQID\n{}",
        &encrypted[..start],
        &encrypted[end..]
    );
    let err = decrypt_file(kms_only.as_bytes(), Format::Yaml, &keys).unwrap_err();
    assert_eq!(err, SopsError::UnsupportedKeys("AWS KMS".to_string()));
}

// ---------------------------------------------------------------------------------------------------------------
// On the control plane.

/// Every line the controllers log (all targets, debug), for the test that looks for plaintext in them.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || LogWriter(sink.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secret_yaml(name: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n  password: {password}\n  user: admin\n"
    )
}

fn write_bytes(t: &TestEnv, rel: &str, content: &[u8]) {
    let path = t.repo.work.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The spec fields that decrypt with sops and the key in the Secret `sops-age`.
fn sops_decryption() -> serde_json::Value {
    json!({"decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}})
}

async fn key_secret(t: &TestEnv, s: &Sops) {
    t.create_secret(
        "sops-age",
        &[("identity.agekey", &s.identity()), ("notes", "not a key")],
    )
    .await;
}

async fn refused(t: &TestEnv, env: &str, commit: &str) -> (String, String) {
    let e = wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        e.status
            .as_ref()
            .and_then(|s| s.last_attempted_revision.as_deref())
            .is_some_and(|r| r.ends_with(commit))
            && env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == "DecryptionFailed")
    })
    .await;
    let (_, reason, message) = env_ready(&e).unwrap();
    (reason, message)
}

fn secret_value(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn encrypted_secrets_plain_and_through_kustomize_with_generated_ones_are_applied_decrypted() {
    let s = Sops::new();
    let t = TestEnv::new("sops-apply").await;
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    // Plain YAML: an encrypted Secret beside a plain ConfigMap.
    write_bytes(
        &t,
        "plain/secret.enc.yaml",
        &s.encrypt("p.yaml", secret_yaml("db", "plain-pw-1").as_bytes(), &regex),
    );
    t.repo.write(
        "plain/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {a: b}\n",
    );
    // kustomize: a namePrefix and labels change the encrypted Secret (its MAC is checked on the file), and a
    // secretGenerator reads an encrypted env file and an encrypted binary file.
    write_bytes(
        &t,
        "kz/secret.enc.yaml",
        &s.encrypt("k.yaml", secret_yaml("api", "kz-pw-2").as_bytes(), &regex),
    );
    write_bytes(
        &t,
        "kz/app.enc.env",
        &s.encrypt("app.env", b"API_KEY=env-key-3\nMODE=fast\n", &[]),
    );
    write_bytes(
        &t,
        "kz/token.bin",
        &s.encrypt("token.bin", b"binary-token-4\x00\xff", &[]),
    );
    t.repo.write(
        "kz/kustomization.yaml",
        "namePrefix: team-\nlabels:\n- pairs: {team: a}\nresources: [secret.enc.yaml]\nsecretGenerator:\n- name: app-env\n  envs: [app.enc.env]\n- name: app-token\n  files: [token=token.bin]\n",
    );
    let commit = t.repo.commit_and_push("encrypted");
    key_secret(&t, &s).await;
    t.config_source("1h").await;
    let decryption = json!({"provider": "sops", "secretRef": {"name": "sops-age"}});
    for (env, path) in [("plain", "plain"), ("kz", "kz")] {
        t.config_env_with(env, path, "1h", json!({"decryption": decryption}))
            .await;
    }
    wait_applied(&t, "plain", &commit).await;
    wait_applied(&t, "kz", &commit).await;

    let secrets = t.api::<Secret>();
    let db = secrets.get("db").await.unwrap();
    assert_eq!(secret_value(&db, "password"), "plain-pw-1");
    assert_eq!(secret_value(&db, "user"), "admin");
    let api = secrets.get("team-api").await.unwrap();
    assert_eq!(secret_value(&api, "password"), "kz-pw-2");
    assert_eq!(api.metadata.labels.unwrap()["team"], "a");
    let all = secrets.list(&ListParams::default()).await.unwrap().items;
    let named = |prefix: &str| {
        all.iter()
            .find(|s| s.metadata.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no Secret {prefix}*"))
            .clone()
    };
    let env = named("team-app-env-");
    assert_eq!(secret_value(&env, "API_KEY"), "env-key-3");
    assert_eq!(secret_value(&env, "MODE"), "fast");
    assert!(!env.data.as_ref().unwrap().contains_key("sops_mac"));
    let token = named("team-app-token-");
    assert_eq!(token.data.as_ref().unwrap()["token"].0, b"binary-token-4\x00\xff");
    // No field of sops metadata reached the cluster.
    assert!(serde_json::to_string(&db).unwrap().find("\"sops\"").is_none());

    // `ferry diff --environment` decrypts as the controller does (the key Secret read as the CLI's user): what
    // runs is what it would apply, so no differences (encrypted, the dry run would differ or fail).
    let kubeconfig = kube::config::Kubeconfig::read_from(&t.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let settings = ferry::render::RenderSettings {
        kustomize: t.bin_dir.join("kustomize"),
        ..Default::default()
    };
    for env in ["plain", "kz"] {
        let (_, diffs) = ferry::cli::diff_environment(t.client.clone(), &config, &t.namespace, env, &settings)
            .await
            .unwrap();
        assert!(
            diffs.is_empty(),
            "{env}: {:?}",
            diffs.iter().map(|d| &d.object).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn missing_decryption_wrong_key_and_tampered_values_are_refused_and_nothing_applied() {
    let s = Sops::new();
    let t = TestEnv::new("sops-refuse").await;
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    write_bytes(
        &t,
        "app/secret.enc.yaml",
        &s.encrypt("a.yaml", secret_yaml("db", "good-pw-1").as_bytes(), &regex),
    );
    let first = t.repo.commit_and_push("good");
    key_secret(&t, &s).await;
    t.config_source("1h").await;
    t.config_env_with("app", "app", "1h", sops_decryption()).await;
    wait_applied(&t, "app", &first).await;
    let still_first = || async {
        let db = t.api::<Secret>().get("db").await.unwrap();
        assert_eq!(secret_value(&db, "password"), "good-pw-1");
        let env = t.api::<Environment>().get("app").await.unwrap();
        assert!(env.status.unwrap().last_applied_revision.unwrap().ends_with(&first));
    };

    // 1. A tampered value (one byte of its ciphertext), and a new ConfigMap that must not be applied either.
    let encrypted = String::from_utf8(s.encrypt("b.yaml", secret_yaml("db", "new-pw-2").as_bytes(), &regex)).unwrap();
    let at = encrypted.find("password: ENC[AES256_GCM,data:").unwrap() + 31;
    let mut tampered = encrypted.into_bytes();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    write_bytes(&t, "app/secret.enc.yaml", &tampered);
    t.repo.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\ndata: {a: b}\n",
    );
    let second = t.repo.commit_and_push("tampered");
    request_fetch(&t, "config", "t1").await;
    let (_, message) = refused(&t, "app", &second).await;
    assert!(
        message.contains("app/secret.enc.yaml") && message.contains("stringData.password"),
        "{message}"
    );
    assert!(
        !message.contains("new-pw-2") && !message.contains("good-pw-1"),
        "{message}"
    );
    still_first().await;
    assert!(
        t.api::<k8s_openapi::api::core::v1::ConfigMap>()
            .get_opt("new")
            .await
            .unwrap()
            .is_none()
    );
    t.wait_event("app", "Warning", "DecryptionFailed").await;

    // 2. A valid file, but the Secret holds another identity.
    write_bytes(
        &t,
        "app/secret.enc.yaml",
        &s.encrypt("c.yaml", secret_yaml("db", "new-pw-3").as_bytes(), &regex),
    );
    let third = t.repo.commit_and_push("valid again");
    let other = Sops::new();
    let patch = json!({"stringData": {"identity.agekey": other.identity()}});
    t.api::<Secret>()
        .patch("sops-age", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    request_fetch(&t, "config", "t2").await;
    let (_, message) = refused(&t, "app", &third).await;
    assert!(
        message.contains("none of the 1 age identities") && message.contains(&s.recipient),
        "{message}"
    );
    assert!(!message.contains("AGE-SECRET-KEY"), "{message}");
    still_first().await;

    // 3. No spec.decryption at all: refused rather than applied encrypted.
    let patch = json!({"spec": {"decryption": null}});
    t.api::<Environment>()
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let e = wait_for(&t.api::<Environment>(), "app", |e: &Environment| {
        env_ready(e).is_some_and(|(_, r, m)| r == "DecryptionFailed" && m.contains("no spec.decryption"))
    })
    .await;
    let (_, _, message) = env_ready(&e).unwrap();
    assert!(message.contains("Secret db (from app/secret.enc.yaml)"), "{message}");
    still_first().await;
}

#[tokio::test]
async fn plaintext_is_in_no_log_status_event_or_file_of_the_controller() {
    let logs = captured_logs();
    let s = Sops::new();
    let mut t = TestEnv::new("sops-leak").await;
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    let (pw, env_value) = ("leak-check-pw-7f3a9", "leak-check-env-c41d2");
    write_bytes(
        &t,
        "kz/secret.enc.yaml",
        &s.encrypt("l.yaml", secret_yaml("db", pw).as_bytes(), &regex),
    );
    write_bytes(
        &t,
        "kz/app.enc.env",
        &s.encrypt("l.env", format!("KEY={env_value}\n").as_bytes(), &[]),
    );
    t.repo.write(
        "kz/kustomization.yaml",
        "resources: [secret.enc.yaml]\nsecretGenerator:\n- name: app-env\n  envs: [app.enc.env]\n",
    );
    let commit = t.repo.commit_and_push("encrypted");
    key_secret(&t, &s).await;
    t.config_source("1h").await;
    t.config_env_with("app", "kz", "1h", sops_decryption()).await;
    wait_applied(&t, "app", &commit).await;
    assert_eq!(
        secret_value(&t.api::<Secret>().get("db").await.unwrap(), "password"),
        pw
    );
    // One more full sync of the same revision.
    t.reconciled("app", "again").await;

    let needles = [pw, env_value];
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains("sops-leak"), "the capture sees the controller's logs");
    let env = t.api::<Environment>().get("app").await.unwrap();
    let status = serde_json::to_string(&env.status).unwrap();
    let events = format!("{:?}", t.events("app").await);
    for needle in needles {
        assert!(!logged.contains(needle), "a log line holds {needle}");
        assert!(!status.contains(needle), "status holds {needle}");
        assert!(!events.contains(needle), "an Event holds {needle}");
    }
    // Every sync decrypts (generator files into a scratch copy on /dev/shm, deleted when kustomize is done):
    // with the controller stopped, no sync is under way, and whatever holds the plaintext was left behind.
    t.stop_controller();
    let left_behind = || {
        needles.iter().find_map(|needle| {
            [t.storage_dir(), Path::new("/dev/shm")]
                .into_iter()
                .find_map(|dir| file_containing(dir, needle.as_bytes()))
                .map(|file| format!("{} holds {needle}", file.display()))
        })
    };
    // A sync the stop cut short may still be deleting its copy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Some(found) = left_behind() {
        assert!(std::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // `ferry diff` shows Secret values masked.
    let live = serde_json::to_value(t.api::<Secret>().get("db").await.unwrap()).unwrap();
    let masked = serde_json::to_string(&ferry::cli::mask_secret(&live)).unwrap();
    let encoded = base64_of(pw);
    assert!(!masked.contains(pw) && !masked.contains(&encoded), "{masked}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The first file below `dir` (links not followed) whose bytes contain `needle`.
fn file_containing(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(entry.path())
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return Some(entry.path());
            }
        }
    }
    None
}

/// kustomize output: decrypted by the file it came from (MAC checked there, so a namePrefix does not break it),
/// and a patch cannot swap in ciphertext from another document of that file (same data key, same path: AES-GCM
/// alone would accept it). `ferry render` prints documents as stored unless `--decrypt-with` is given.
#[tokio::test]
async fn kustomize_output_decrypts_by_its_source_file_and_cannot_take_ciphertext_from_elsewhere() {
    let s = Sops::new();
    let dir = tempfile::tempdir().unwrap();
    let two = format!("{}---\n{}", secret_yaml("a", "pw-of-a"), secret_yaml("b", "pw-of-b"));
    let encrypted =
        String::from_utf8(s.encrypt("two.yaml", two.as_bytes(), &["--encrypted-regex", "^stringData$"])).unwrap();
    std::fs::create_dir_all(dir.path().join("kz")).unwrap();
    std::fs::write(dir.path().join("kz/secrets.enc.yaml"), &encrypted).unwrap();
    let kustomization = "namePrefix: p-\nresources: [secrets.enc.yaml]\n";
    std::fs::write(dir.path().join("kz/kustomization.yaml"), kustomization).unwrap();
    let settings = ferry::render::RenderSettings {
        kustomize: Sops::new().bin.join("kustomize"),
        ..Default::default()
    };
    let key_file = s.key_file.clone();

    let stored = ferry::cli::render_local(dir.path(), "kz", &settings).await.unwrap();
    assert!(stored.yaml.contains("ENC[AES256_GCM") && !stored.yaml.contains("pw-of-a"));
    let decrypted = ferry::cli::render_local_decrypted(dir.path(), "kz", &settings, &key_file)
        .await
        .unwrap();
    let password = |name: &str| {
        decrypted
            .objects
            .iter()
            .find(|o| o.name() == name)
            .map(|o| o.object["stringData"]["password"].clone())
    };
    assert_eq!(password("p-a"), Some(json!("pw-of-a")));
    assert_eq!(password("p-b"), Some(json!("pw-of-b")));
    assert!(!decrypted.yaml.contains("sops:") && decrypted.yaml.contains("pw-of-a"));

    // b's ciphertext patched into a.
    let b_doc = encrypted.split("\n---\n").nth(1).unwrap();
    let b_password = b_doc.lines().find_map(|l| l.trim().strip_prefix("password: ")).unwrap();
    std::fs::write(
        dir.path().join("kz/kustomization.yaml"),
        format!(
            "{kustomization}patches:\n- patch: |\n    apiVersion: v1\n    kind: Secret\n    metadata: {{name: a}}\n    stringData: {{password: \"{b_password}\"}}\n"
        ),
    )
    .unwrap();
    let err = ferry::cli::render_local_decrypted(dir.path(), "kz", &settings, &key_file)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Secret p-a") && err.contains("stringData.password"),
        "{err}"
    );
    assert!(!err.contains("pw-of"), "{err}");
}

/// The render every Environment shares (and `ferry render` without keys) never reads an encrypted generator
/// file as data: kustomize gets stand-ins of the same shape, so one generator can read several encrypted env
/// files (each would add sops' own `sops_mac` key otherwise, which kustomize refuses as a duplicate).
#[tokio::test]
async fn generators_reading_several_encrypted_files_render_stand_ins_without_keys_and_plaintext_with() {
    let s = Sops::new();
    let dir = tempfile::tempdir().unwrap();
    let kz = dir.path().join("kz");
    std::fs::create_dir_all(&kz).unwrap();
    std::fs::write(kz.join("a.enc.env"), s.encrypt("a.env", b"A_KEY=alpha-secret\n", &[])).unwrap();
    std::fs::write(kz.join("b.enc.env"), s.encrypt("b.env", b"B_KEY=beta-secret\n", &[])).unwrap();
    std::fs::write(
        kz.join("cfg.enc.yaml"),
        s.encrypt("cfg.yaml", b"db: {password: gamma-secret}\n", &[]),
    )
    .unwrap();
    std::fs::write(
        kz.join("kustomization.yaml"),
        "secretGenerator:\n- name: app\n  envs: [a.enc.env, b.enc.env]\n  files: [cfg.yaml=cfg.enc.yaml]\n",
    )
    .unwrap();
    let settings = ferry::render::RenderSettings {
        kustomize: s.bin.join("kustomize"),
        ..Default::default()
    };
    let data = |r: &ferry::render::Rendered| {
        let o = r.objects.iter().find(|o| o.kind() == "Secret").unwrap();
        let map = o.object["data"].as_object().unwrap().clone();
        map.into_iter()
            .map(|(k, v)| (k, String::from_utf8(base64_decode(v.as_str().unwrap())).unwrap()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };

    let stored = ferry::cli::render_local(dir.path(), "kz", &settings).await.unwrap();
    let stand_in = ferry::decrypt::STAND_IN.to_string();
    let want: std::collections::BTreeMap<String, String> =
        [("A_KEY", &stand_in), ("B_KEY", &stand_in), ("cfg.yaml", &stand_in)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
    assert_eq!(data(&stored), want);
    assert_eq!(
        ferry::decrypt::find_encrypted(&stored).map(|w| w.starts_with("Secret app-")),
        Some(true)
    );

    let decrypted = ferry::cli::render_local_decrypted(dir.path(), "kz", &settings, &s.key_file)
        .await
        .unwrap();
    let got = data(&decrypted);
    assert_eq!(
        (got["A_KEY"].as_str(), got["B_KEY"].as_str()),
        ("alpha-secret", "beta-secret")
    );
    let cfg: Yaml = serde_yaml_ng::from_str(&got["cfg.yaml"]).unwrap();
    assert_eq!(cfg["db"]["password"], Yaml::String("gamma-secret".into()));
    assert!(ferry::decrypt::find_encrypted(&decrypted).is_none());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// As installed (Ferry's ServiceAccount with the install's RBAC, Environments applying as the namespace's
/// `default` account): the key Secret is read as that account (which the test's Role lets read Secrets) and only
/// in the Environment's namespace (one of the same name elsewhere is not found), and the decrypted Secret is
/// applied as the tenant.
#[tokio::test]
async fn as_installed_the_key_is_read_only_in_the_environments_namespace_and_applied_as_the_tenant() {
    let s = Sops::new();
    let t = TestEnv::installed("sops-installed", |_| {}).await;
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    write_bytes(
        &t,
        "app/secret.enc.yaml",
        &s.encrypt("i.yaml", secret_yaml("db", "tenant-pw-9").as_bytes(), &regex),
    );
    let commit = t.repo.commit_and_push("encrypted");
    // The right key, under the referenced name, but in another namespace.
    let other = format!("{}-other", t.namespace);
    t.apply_json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}))
        .await;
    let elsewhere = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sops-age", "namespace": other},
                           "stringData": {"identity.agekey": s.identity()}});
    kube::Api::<Secret>::namespaced(t.client.clone(), &other)
        .create(&Default::default(), &serde_json::from_value(elsewhere).unwrap())
        .await
        .unwrap();
    t.grant_account(
        "apply",
        "default",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]),
    )
    .await;
    t.config_source("2s").await;
    t.config_env_with("app", "app", "2s", sops_decryption()).await;
    let message = wait_not_ready(&t, "app", "SecretNotFound").await;
    assert!(
        message.contains(&format!("Secret {}/sops-age", t.namespace)),
        "{message}"
    );
    assert!(t.api::<Secret>().get_opt("db").await.unwrap().is_none());

    // The key in the Environment's own namespace: applied, as the tenant's account.
    key_secret(&t, &s).await;
    wait_applied(&t, "app", &commit).await;
    let db = t.api::<Secret>().get("db").await.unwrap();
    assert_eq!(secret_value(&db, "password"), "tenant-pw-9");
}

/// A Deployment `name` running `image`, as a manifest.
fn deployment_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n"
    )
}

fn deployment_image(d: &k8s_openapi::api::apps::v1::Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

/// A CronJob `name` (suspended: it never runs) whose jobs run `image`, as a manifest. Healthy as soon as it
/// exists, so its revision verifies on a control plane without workloads.
fn cronjob_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {name}\nspec:\n  schedule: \"0 0 1 1 *\"\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n          - {{name: app, image: \"{image}\"}}\n"
    )
}

/// sops can encrypt any field with nothing but the team's public key: a Deployment whose kind (and image)
/// is ciphertext looks like no Deployment to anything that reads the render as stored. The registry policy
/// reads it decrypted, as it is applied: a Deny policy stops the revision and names the image; a good image
/// hidden the same way (in a CronJob, which verifies without workloads) is applied, and the policy still sees
/// it in `ferry diff --environment` and in the steady state once tightened.
#[tokio::test]
async fn a_registry_policy_sees_kinds_and_images_that_sops_hides() {
    let s = Sops::new();
    let t = TestEnv::new("sops-policy").await;
    let evil = "evil.example.io/app:1";
    let good = "registry.example.com/app:1";
    for (dir, regex, image) in [
        ("kind", "^kind$", evil),
        ("image", "^(image|kind)$", evil),
        ("good", "^(image|kind)$", good),
    ] {
        t.repo.write(
            &format!("apps/{dir}/app.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-{dir}}}\ndata: {{a: b}}\n"),
        );
        let plain = match dir {
            "good" => cronjob_yaml("web-good", image),
            _ => deployment_yaml(&format!("web-{dir}"), image),
        };
        let encrypted = s.encrypt(&format!("{dir}.yaml"), plain.as_bytes(), &["--encrypted-regex", regex]);
        let text = String::from_utf8(encrypted.clone()).unwrap();
        assert!(
            !text.contains("Deployment") && (dir == "kind" || !text.contains(image)),
            "{dir}: {text}"
        );
        write_bytes(&t, &format!("apps/{dir}/web.enc.yaml"), &encrypted);
    }
    let commit = t.repo.commit_and_push("hidden images");
    let policy = format!("{}-only-ours", t.namespace);
    let policy_object = |allowed: &str| {
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RegistryPolicy", "metadata": {"name": policy},
            "spec": {"environmentSelector": {"namespaces": [t.namespace]}, "allowedRegistries": [allowed],
                     "enforcement": "Deny"}})
    };
    t.apply_json(&policy_object("registry.example.com/")).await;
    key_secret(&t, &s).await;
    t.config_source("1h").await;
    for dir in ["kind", "image", "good"] {
        t.create_env(
            dir,
            json!({"sourceRef": {"name": "config"}, "path": format!("apps/{dir}"), "interval": "1h",
                   "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}}),
        )
        .await;
    }
    let envs = t.api::<Environment>();
    let denied = |env: &'static str| {
        wait_for(&envs, env, |e: &Environment| {
            env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == "PolicyViolation")
        })
    };
    let deployments = t.api::<k8s_openapi::api::apps::v1::Deployment>();
    let config_maps = t.api::<k8s_openapi::api::core::v1::ConfigMap>();
    for dir in ["kind", "image"] {
        let env = denied(dir).await;
        let (_, _, message) = env_ready(&env).unwrap();
        let named = format!("Deployment web-{dir}, container app: image \"{evil}\"");
        assert!(
            message.contains(&named) && message.contains("UntrustedRegistry"),
            "{dir}: {message}"
        );
        assert!(
            message.contains("was not applied") && message.contains(&commit),
            "{message}"
        );
        let found = env.status.as_ref().and_then(|s| s.policy_violations.clone());
        let found = found.unwrap_or_else(|| panic!("{dir}: no status.policyViolations"));
        assert!(
            found.revision.ends_with(&commit) && found.total == 1,
            "{dir}: {found:?}"
        );
        assert!(
            serde_json::to_string(&found).unwrap().contains(evil),
            "{dir}: {found:?}"
        );
        // Nothing of the revision: not the Deployment, not the ConfigMap beside it.
        let web = deployments.get_opt(&format!("web-{dir}")).await.unwrap();
        assert!(web.is_none(), "{dir}: {web:?}");
        let app = config_maps.get_opt(&format!("app-{dir}")).await.unwrap();
        assert!(app.is_none(), "{dir}: {app:?}");
        assert!(env.status.unwrap().last_applied_revision.is_none());
    }

    // The good image, hidden the same way: decrypted, checked, applied and verified (so the next sync is a
    // full one: a verifying revision is only polled for health).
    wait_applied(&t, "good", &commit).await;
    wait_for(&envs, "good", |e: &Environment| {
        e.status.as_ref().is_some_and(|s| {
            s.history
                .iter()
                .any(|r| r.revision.ends_with(&commit) && r.phase == ferry::api::RevisionPhase::Verified)
        })
    })
    .await;
    let web = t
        .api::<k8s_openapi::api::batch::v1::CronJob>()
        .get("web-good")
        .await
        .unwrap();
    let pod = web.spec.job_template.spec.and_then(|s| s.template.spec);
    let image = pod.and_then(|p| p.containers.into_iter().next()?.image);
    assert_eq!(image.as_deref(), Some(good));
    assert!(config_maps.get_opt("app-good").await.unwrap().is_some());

    // `ferry diff --environment` checks the objects as the controller applies them, decrypted.
    let kubeconfig = kube::config::Kubeconfig::read_from(&t.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let settings = ferry::render::RenderSettings::default();
    let registry = ferry::registry::RegistrySettings::default();
    let tighten = policy_object("registry.example.org/");
    t.apply_json(&tighten).await;
    let diff =
        ferry::cli::diff_environment_checked(t.client.clone(), &config, &t.namespace, "good", &settings, &registry)
            .await
            .unwrap();
    assert!(
        diff.diffs.is_empty(),
        "{:?}",
        diff.diffs.iter().map(|d| &d.object).collect::<Vec<_>>()
    );
    let evaluation = diff.policy.expect("the policies were read");
    assert!(
        evaluation.denied(),
        "{}",
        evaluation.message(ferry::api::Enforcement::Deny)
    );
    assert!(evaluation.message(ferry::api::Enforcement::Deny).contains(good));

    // Tightened while the revision stays the same: the steady state is no way around the policy.
    t.reconciled("good", "tightened").await;
    let env = denied("good").await;
    let (_, _, message) = env_ready(&env).unwrap();
    assert!(
        message.contains(&format!("CronJob web-good, container app: image \"{good}\"")),
        "{message}"
    );
}

/// Digests are resolved and pinned for an image sops hid (`--encrypted-regex '^(image|kind)$'`): the
/// Deployment is applied decrypted, pinned to the digest its tag points at, and the digest is recorded.
#[tokio::test]
async fn images_that_sops_hides_are_resolved_pinned_and_recorded() {
    let s = Sops::new();
    let reg = common::registry::TestRegistry::start(&s.bin, false);
    let host = reg.host.clone();
    let t = TestEnv::with_settings("sops-pin", |settings| settings.registry.insecure = vec![host]).await;
    let digest = reg.push_image("team/web:v1", &[("app", b"the build")]);
    let image = reg.image("team/web:v1");
    let plain = deployment_yaml("web", &image);
    let encrypted = s.encrypt("web.yaml", plain.as_bytes(), &["--encrypted-regex", "^(image|kind)$"]);
    write_bytes(&t, "apps/web/web.enc.yaml", &encrypted);
    let commit = t.repo.commit_and_push("hidden image");
    key_secret(&t, &s).await;
    t.config_source("1h").await;
    t.config_env_with(
        "app",
        "apps/web",
        "1h",
        json!({"images": {"pinDigests": true},
               "decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}}),
    )
    .await;
    let env = wait_applied(&t, "app", &commit).await;
    let web = t
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .get("web")
        .await
        .unwrap();
    assert_eq!(deployment_image(&web), Some(format!("{image}@{digest}")));
    let status = env.status.unwrap();
    let record = status
        .history
        .iter()
        .find(|r| r.revision.ends_with(&commit))
        .expect("record");
    let recorded: Vec<(&str, &str)> = record
        .images
        .iter()
        .map(|r| (r.image.as_str(), r.digest.as_str()))
        .collect();
    assert_eq!(recorded, [(image.as_str(), digest.as_str())]);
}
