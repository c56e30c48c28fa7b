//! The registry client on real registries (distribution's `registry`, filled with crane): tags resolved to
//! manifest and index digests, anonymous and basic auth, copies by digest (multi-arch included) that skip
//! what the target has, and each way a registry can fail, with errors that never carry a credential.

mod common;

use std::path::PathBuf;

use common::registry::{REGISTRY_PASSWORD, REGISTRY_USER, TestRegistry};
use ferry::registry::{Credentials, Registry, RegistryError, RegistrySettings, parse};

fn bin_dir() -> PathBuf {
    ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin dir")
}

fn client(hosts: &[&TestRegistry], credentials: Credentials) -> Registry {
    let settings = RegistrySettings {
        insecure: hosts.iter().map(|r| r.host.clone()).collect(),
    };
    Registry::new(&settings, credentials)
}

fn creds(registry: &TestRegistry, user: &str, password: &str) -> Credentials {
    Credentials::parse(registry.docker_config_json(user, password).as_bytes()).expect("credentials")
}

#[tokio::test]
async fn resolves_tags_to_manifest_and_index_digests() {
    let bin = bin_dir();
    let reg = TestRegistry::start(&bin, false);
    let single = reg.push_image(
        "team/web:v1",
        &[("a.txt", b"one"), ("b.txt", b"two"), ("c.txt", b"three")],
    );
    let index = reg.push_index("team/multi:v1", "multi");
    let registry = client(&[&reg], Credentials::default());
    assert_eq!(
        registry.resolve(&reg.image("team/web:v1")).await.expect("resolve"),
        single
    );
    let resolved = registry
        .resolve(&reg.image("team/multi:v1"))
        .await
        .expect("resolve index");
    assert_eq!(
        resolved, index,
        "a multi-arch tag resolves to its index, not one platform"
    );
    assert!(reg.manifest("team/multi:v1").contains("manifests"));
    // A digest reference is its own answer: no lookup, so a moved tag cannot change it.
    let pinned = format!("{}@{single}", reg.image("team/web:v1"));
    reg.push_image("team/web:v1", &[("a.txt", b"moved")]);
    assert_eq!(registry.resolve(&pinned).await.expect("pinned"), single);
    assert_ne!(
        registry.resolve(&reg.image("team/web:v1")).await.expect("moved"),
        single
    );
}

#[tokio::test]
async fn basic_auth_from_a_docker_config_and_errors_without_the_password() {
    let bin = bin_dir();
    let reg = TestRegistry::start(&bin, true);
    let digest = reg.push_image("team/web:v1", &[("a.txt", b"secured")]);
    let image = reg.image("team/web:v1");
    let ok = client(&[&reg], creds(&reg, REGISTRY_USER, REGISTRY_PASSWORD));
    assert_eq!(ok.resolve(&image).await.expect("with credentials"), digest);

    let anonymous = client(&[&reg], Credentials::default());
    let e = anonymous.resolve(&image).await.expect_err("anonymous is refused");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");

    let wrong_password = "not-the-pw-4711";
    let wrong = client(&[&reg], creds(&reg, REGISTRY_USER, wrong_password));
    let e = wrong.resolve(&image).await.expect_err("a wrong password is refused");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(wrong_password) && !text.contains(REGISTRY_PASSWORD),
        "{text}"
    );
}

#[tokio::test]
async fn copies_a_multi_arch_index_and_a_repeated_copy_uploads_nothing() {
    let bin = bin_dir();
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, true);
    let index = nonprod.push_index("team/multi:v1", "copy me");
    let single = nonprod.push_image("team/web:v1", &[("a.txt", b"1"), ("b.txt", b"2"), ("c.txt", b"3")]);
    let registry = client(&[&nonprod, &prod], creds(&prod, REGISTRY_USER, REGISTRY_PASSWORD));

    let source = parse(&format!("{}@{index}", nonprod.image("team/multi"))).expect("source");
    let target = parse(&prod.image("team/multi:v1")).expect("target");
    let first = registry.copy(&source, &target).await.expect("copy");
    // The index, two platform manifests; per platform a config and two layers (seed.txt is shared).
    assert_eq!(first.manifests_pushed, 3, "{first:?}");
    assert!(first.blobs_uploaded >= 5, "{first:?}");
    assert_eq!(prod.uploads(), first.blobs_uploaded, "the target's log agrees");
    assert_eq!(prod.digest("team/multi:v1"), index, "same index digest in the target");
    let arm = nonprod.digest("team/multi:arm64-v1");
    assert!(
        prod.manifest(&format!("team/multi@{arm}")).contains("layers"),
        "each platform is there"
    );

    let uploads = prod.uploads();
    let manifests = prod.manifest_puts();
    let again = registry.copy(&source, &target).await.expect("copy again");
    assert!(!again.transferred(), "{again:?}");
    assert_eq!(
        (prod.uploads(), prod.manifest_puts()),
        (uploads, manifests),
        "nothing reached the target"
    );

    // Another image sharing nothing uploads its own blobs only; with the same registry blobs are mounted.
    let source = parse(&format!("{}@{single}", nonprod.image("team/web"))).expect("source");
    let copied = registry
        .copy(&source, &parse(&prod.image("team/web:v1")).expect("t"))
        .await
        .expect("copy");
    assert_eq!((copied.manifests_pushed, copied.blobs_uploaded), (1, 4), "{copied:?}");
    let mounted = registry
        .copy(&source, &parse(&nonprod.image("other/web:v1")).expect("t"))
        .await
        .expect("copy within a registry");
    assert_eq!((mounted.blobs_uploaded, mounted.blobs_mounted), (0, 4), "{mounted:?}");
}

#[tokio::test]
async fn a_corrupted_blob_is_a_digest_mismatch_and_nothing_is_tagged() {
    let bin = bin_dir();
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, false);
    let digest = nonprod.push_image("team/web:v1", &[("a.txt", b"original layer content")]);
    nonprod.corrupt_first_layer("team/web:v1");

    let registry = client(&[&nonprod, &prod], Credentials::default());
    let source = parse(&format!("{}@{digest}", nonprod.image("team/web"))).expect("source");
    let e = registry
        .copy(&source, &parse(&prod.image("team/web:v1")).expect("t"))
        .await
        .expect_err("corrupted content is refused");
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
    assert_eq!(
        prod.manifest_puts(),
        0,
        "no manifest points at content that was not verified"
    );
}

#[tokio::test]
async fn missing_down_and_failing_registries_are_told_apart() {
    let bin = bin_dir();
    let mut reg = TestRegistry::start(&bin, false);
    reg.push_image("team/web:v1", &[("a.txt", b"x")]);
    let registry = client(&[&reg], Credentials::default());
    let e = registry
        .resolve(&reg.image("team/web:v404"))
        .await
        .expect_err("missing tag");
    assert!(
        matches!(e, RegistryError::NotFound { .. }) && !e.is_transient(),
        "{e:?}"
    );
    let e = registry.resolve("Not A/Reference::").await.expect_err("unparsable");
    assert!(matches!(e, RegistryError::InvalidReference { .. }), "{e:?}");

    // A registry answering 500 to everything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let failing = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!")
                .await;
        }
    });
    let settings = RegistrySettings {
        insecure: vec![failing.clone(), reg.host.clone()],
    };
    let e = Registry::new(&settings, Credentials::default())
        .resolve(&format!("{failing}/team/web:v1"))
        .await
        .expect_err("500");
    assert!(
        matches!(e, RegistryError::Status { status: 500, .. }) && e.is_transient(),
        "{e:?}"
    );

    let image = reg.image("team/web:v1");
    reg.stop();
    let e = registry.resolve(&image).await.expect_err("down");
    assert!(
        matches!(e, RegistryError::Unreachable { .. }) && e.is_transient(),
        "{e:?}"
    );

    // HTTPS unless the operator said otherwise: the same host without the opt-in is not asked in plain HTTP.
    let e = Registry::new(&RegistrySettings::default(), Credentials::default())
        .resolve(&format!("{failing}/team/web:v1"))
        .await
        .expect_err("TLS to a plain-HTTP server");
    assert!(matches!(e, RegistryError::Unreachable { .. }), "{e:?}");
}

/// A registry front that answers only bearer tokens, issued by its own token endpoint for basic credentials:
/// the challenge flow of Docker Hub, GHCR and distribution's token auth, small enough to read.
/// `realm` overrides where the challenge sends clients for a token (by default this server's own `/token`).
async fn bearer_registry(
    digest: &'static str,
    realm: Option<String>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let token_requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = token_requests.clone();
    let realm = realm.unwrap_or_else(|| format!("http://{host}/token"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let target = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            let auth = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or_default()
                .to_string();
            let good_basic = format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}")
                )
            );
            let response = if target.starts_with("/token") {
                seen.lock().expect("lock").push(target.clone());
                if auth == good_basic {
                    let body = r#"{"token": "tok-ferry-test", "expires_in": 300}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                }
            } else if auth == "Bearer tok-ferry-test" && target.contains("/manifests/") {
                format!(
                    "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"ferry-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            };
            let _ = s.write_all(response.as_bytes()).await;
        }
    });
    (host, token_requests)
}

#[tokio::test]
async fn bearer_token_challenges_are_answered_with_the_secrets_credentials() {
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let (host, token_requests) = bearer_registry(DIGEST, None).await;
    let settings = RegistrySettings {
        insecure: vec![host.clone()],
    };
    let json = serde_json::json!({"auths": {host.clone(): {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}}});
    let credentials = Credentials::parse(json.to_string().as_bytes()).expect("credentials");
    let image = format!("{host}/team/web:v1");
    let digest = Registry::new(&settings, credentials)
        .resolve(&image)
        .await
        .expect("resolve through a token");
    assert_eq!(digest, DIGEST);
    let asked = token_requests.lock().expect("lock").clone();
    assert!(
        asked
            .iter()
            .any(|t| t.contains("scope=repository%3Ateam%2Fweb%3Apull") && t.contains("service=ferry-test")),
        "the token was asked for this repository's pull scope: {asked:?}"
    );

    let e = Registry::new(&settings, Credentials::default())
        .resolve(&image)
        .await
        .expect_err("anonymous gets no token");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    let wrong = "wrong-token-pw-99";
    let json = serde_json::json!({"auths": {host.clone(): {"username": REGISTRY_USER, "password": wrong}}});
    let e = Registry::new(&settings, Credentials::parse(json.to_string().as_bytes()).expect("c"))
        .resolve(&image)
        .await
        .expect_err("wrong password gets no token");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(wrong));
}

/// A registry whose challenge names a plain-HTTP token realm on a host the operator did not list as insecure
/// never gets the pull secret's credentials sent there: oci-client alone would send them in clear text.
#[tokio::test]
async fn credentials_are_never_sent_to_a_plain_http_realm_that_is_not_listed() {
    use tokio::io::AsyncReadExt;
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    // Stands for an eavesdropper: records every byte sent to it.
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector_host = collector.local_addr().expect("addr").to_string();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = collector.accept().await {
            let mut chunk = [0u8; 4096];
            if let Ok(n) = s.read(&mut chunk).await {
                sink.lock().expect("lock").extend_from_slice(&chunk[..n]);
            }
        }
    });
    let (host, _) = bearer_registry(DIGEST, Some(format!("http://{collector_host}/token"))).await;
    let settings = RegistrySettings {
        insecure: vec![host.clone()],
    };
    let json = serde_json::json!({"auths": {host.clone(): {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}}});
    let credentials = Credentials::parse(json.to_string().as_bytes()).expect("credentials");
    let e = Registry::new(&settings, credentials)
        .resolve(&format!("{host}/team/web:v1"))
        .await
        .expect_err("an unlisted plain-HTTP realm is refused");
    assert!(matches!(e, RegistryError::InsecureRealm { .. }), "{e:?}");
    assert!(e.to_string().contains(&collector_host), "{e}");
    assert!(!format!("{e} {e:?}").contains(REGISTRY_PASSWORD));
    assert!(
        received.lock().expect("lock").is_empty(),
        "nothing, least of all the credentials, went to the unlisted realm"
    );
}
