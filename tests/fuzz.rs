//! Property tests ("fuzzing") of every parser that takes outside input: whatever the bytes, no panic, and the
//! properties that keep Ferry safe hold. CI runs a short, bounded number of cases; run longer by hand with
//! `FERRY_FUZZ_CASES=100000 cargo test --test fuzz`. A failure proptest finds is shrunk to a minimal input and
//! kept in `tests/fuzz.proptest-regressions`; turn it into a named regression test as well.

use std::time::Duration;

use ferry::api::{GitRef, parse_duration};
use ferry::receiver::{Verdict, push_affects, verify};
use ferry::render::render_plain;
use ferry::source::{ManifestFile, Revision, normalize_path, resolve_ref_spec};
use hmac::{Hmac, Mac};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("FERRY_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// YAML-looking text: keys, anchors, aliases, flow and block collections, tags, document markers, quotes.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: v1\n".to_string()),
        Just("kind: ConfigMap\n".to_string()),
        Just("metadata: {name: x}\n".to_string()),
        Just("---\n".to_string()),
        Just("- ".to_string()),
        Just("  ".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: *a\n".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(": ".to_string()),
        Just("!!binary ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\n".to_string()),
        Just("kind: List\nitems:\n".to_string()),
        "[a-z0-9]{1,8}",
        "\\PC{0,6}",
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_manifest_reader_never_panics_on_bytes(content in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = render_plain(&[ManifestFile { path: "f.yaml".to_string(), content }]);
    }

    #[test]
    fn the_manifest_reader_never_panics_on_yaml_shapes(text in yamlish()) {
        let result = render_plain(&[ManifestFile { path: "f.yaml".to_string(), content: text.into_bytes() }]);
        // Whatever it accepts is an object with the fields every request needs.
        for o in result.unwrap_or_default() {
            prop_assert!(!o.api_version().is_empty() && !o.kind().is_empty() && !o.name().is_empty());
        }
    }

    #[test]
    fn durations_never_panic_and_are_bounded(input in "[0-9.]{0,30}(ms|s|m|h|x)?([0-9]{0,30}(ms|s|m|h))?") {
        if let Ok(d) = parse_duration(&input) {
            prop_assert!(d <= Duration::from_secs(9_223_372_037));
        }
    }

    #[test]
    fn durations_read_what_they_say(h in 0u64..1000, m in 0u64..60, s in 0u64..60) {
        prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s")).unwrap(), Duration::from_secs(h * 3600 + m * 60 + s));
    }

    #[test]
    fn repository_paths_never_leave_the_repository(path in "(\\.{1,3}|/|[a-z]{1,3}|\\\\|%2e){0,12}") {
        if let Ok(parts) = normalize_path(&path) {
            for p in parts {
                prop_assert!(p != ".." && p != "." && !p.is_empty() && !p.contains('/'));
            }
        }
    }

    #[test]
    fn revisions_round_trip(name in "[a-zA-Z0-9/._-]{0,30}", commit in "[0-9a-f]{40}") {
        let r = Revision { name: name.clone(), commit: commit.clone() };
        prop_assert_eq!(Revision::parse(&r.render()), Some(r));
    }

    #[test]
    fn revision_parsing_never_panics(s in "\\PC{0,80}") {
        if let Some(r) = Revision::parse(&s) {
            prop_assert!(r.commit.len() == 40);
        }
    }

    #[test]
    fn refs_never_panic(branch in proptest::option::of("\\PC{0,40}"), tag in proptest::option::of("\\PC{0,40}"),
                        semver in proptest::option::of("[<>=~^*., 0-9a-z|-]{0,30}"),
                        commit in proptest::option::of("[0-9a-fA-Fx]{0,45}")) {
        let r = GitRef { branch, tag, semver, commit };
        let _ = resolve_ref_spec(&r);
    }

    #[test]
    fn webhook_verification_never_panics(
        headers in prop::collection::vec(("(x-hub-signature-256|x-github-event|x-gitlab-token|x-gitlab-event|x-gitea-signature|authorization|x-signature-256|\\PC{0,10})", "\\PC{0,80}"), 0..6),
        body in prop::collection::vec(any::<u8>(), 0..512),
        secret in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let verdict = verify(headers.as_slice(), &body, &secret);
        // Nothing is authentic without the secret: random headers never pass, except by knowing it.
        if secret.len() >= 8 {
            prop_assert!(verdict.is_err() || headers.iter().any(|(_, v)| v.contains(&String::from_utf8_lossy(&secret).to_string())));
        }
    }

    #[test]
    fn a_signed_push_verifies_and_any_changed_byte_does_not(
        reference in "refs/heads/[a-z]{1,10}",
        secret in prop::collection::vec(any::<u8>(), 1..32),
        flip in any::<prop::sample::Index>(),
    ) {
        let body = serde_json::to_vec(&serde_json::json!({"ref": reference})).unwrap();
        let sign = |body: &[u8]| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        };
        let signature = sign(&body);
        let headers = [("x-github-event", "push"), ("x-hub-signature-256", signature.as_str())];
        match verify(headers.as_slice(), &body, &secret) {
            Ok(Verdict::Push { pushed_ref }) => prop_assert_eq!(pushed_ref.as_deref(), Some(reference.as_str())),
            other => prop_assert!(false, "{other:?}"),
        }
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 1;
        prop_assert!(verify(headers.as_slice(), &tampered, &secret).is_err());
    }

    #[test]
    fn push_matching_never_panics(branch in "\\PC{0,20}", pushed in proptest::option::of("\\PC{0,40}")) {
        let r = GitRef { branch: Some(branch), ..GitRef::default() };
        let _ = push_affects(&r, pushed.as_deref());
    }

    #[test]
    fn kubeconfig_validation_never_panics(text in "\\PC{0,400}") {
        let _ = ferry::cluster::parse_kubeconfig(&text, false);
    }

    #[test]
    fn kubeconfigs_that_turn_tls_off_or_proxy_are_refused(
        (insecure, proxy) in prop_oneof![Just((true, false)), Just((false, true)), Just((true, true))],
        server in "https://[a-z]{1,10}\\.example:[0-9]{2,4}",
    ) {
        let mut cluster = serde_json::json!({"server": server});
        if insecure { cluster["insecure-skip-tls-verify"] = true.into(); }
        if proxy { cluster["proxy-url"] = "http://10.0.0.1:3128".into(); }
        let kc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": cluster}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        });
        let text = serde_yaml_ng::to_string(&kc).unwrap();
        prop_assert!(ferry::cluster::parse_kubeconfig(&text, false).is_err());
    }
}

/// Regressions proptest found, kept by name.
#[test]
fn a_duration_too_long_for_the_clock_is_an_error_not_a_panic() {
    assert!(parse_duration("99999999999999999999999h").is_err());
    assert!(parse_duration(&format!("{}s", "9".repeat(400))).is_err());
}
