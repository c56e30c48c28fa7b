use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use serde_json::json;

use super::*;
use crate::api::{EnvironmentSelector, RegistryPolicySpec};

const D: &str = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

fn policy(name: &str, registries: &[&str], digest: bool, enforcement: Enforcement) -> RegistryPolicy {
    RegistryPolicy::new(
        name,
        RegistryPolicySpec {
            environment_selector: EnvironmentSelector::default(),
            allowed_registries: registries.iter().map(|s| s.to_string()).collect(),
            require_digest: digest,
            enforcement,
        },
    )
}

fn deployment(name: &str, images: &[&str]) -> RenderedObject {
    let containers: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(i, im)| json!({"name": format!("c{i}"), "image": im}))
        .collect();
    RenderedObject {
        source: "d.yaml".into(),
        object: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "team"},
            "spec": {"template": {"spec": {"containers": containers}}}}),
    }
}

fn subject() -> Subject<'static> {
    Subject {
        namespace: "team",
        labels: None,
    }
}

#[test]
fn allowed_images_pass_and_others_are_named() {
    let p = [policy("prod", &["prod.example.io/team/"], false, Enforcement::Deny)];
    let objects = [deployment(
        "web",
        &[
            "prod.example.io/team/web:1",
            "prod.example.io.evil.com/team/web:1",
            "prod.example.io/teamx/web:1",
            "nginx",
        ],
    )];
    let e = evaluate(&p, &subject(), &objects);
    let images: Vec<_> = e.violations.iter().map(|v| v.image.as_str()).collect();
    assert_eq!(
        images,
        [
            "prod.example.io.evil.com/team/web:1",
            "prod.example.io/teamx/web:1",
            "nginx"
        ]
    );
    assert!(
        e.violations
            .iter()
            .all(|v| v.rule == UNTRUSTED_REGISTRY && v.object == "Deployment team/web")
    );
    assert_eq!(e.violations[0].container, "container c1");
    assert!(e.denied());
    let message = e.message(Enforcement::Deny);
    assert!(message.starts_with("3 image policy violations: "), "{message}");
    assert!(message.contains("prod.example.io.evil.com/team/web:1"), "{message}");
    assert!(message.contains("RegistryPolicy prod"), "{message}");
}

#[test]
fn digests_can_be_required() {
    let p = [policy("pin", &["docker.io/"], true, Enforcement::Audit)];
    let pinned = format!("nginx:1.27@{D}");
    let objects = [deployment("web", &["nginx:1.27", &pinned])];
    let e = evaluate(&p, &subject(), &objects);
    assert_eq!(e.violations.len(), 1);
    assert_eq!(e.violations[0].rule, DIGEST_REQUIRED);
    assert_eq!(e.violations[0].image, "nginx:1.27");
    assert!(!e.denied(), "Audit never denies");
    let status = e.status("main@sha1:abc").unwrap();
    assert_eq!(status.total, 1);
    assert_eq!(status.policies[0].policy, "pin");
    assert_eq!(status.policies[0].enforcement, Enforcement::Audit);
}

#[test]
fn an_unparsable_image_is_a_violation() {
    let p = [policy("prod", &["docker.io/"], false, Enforcement::Deny)];
    let e = evaluate(&p, &subject(), &[deployment("web", &["UPPER/Case", ""])]);
    assert_eq!(e.violations.len(), 2);
    assert!(e.violations.iter().all(|v| v.rule == INVALID_REFERENCE));
}

#[test]
fn a_malformed_policy_fails_closed() {
    for registries in [&[][..], &["team/"][..], &["prod.example.io/", "https://x.io/"][..]] {
        let p = [policy("broken", registries, false, Enforcement::Deny)];
        let e = evaluate(&p, &subject(), &[deployment("web", &["prod.example.io/a"])]);
        assert_eq!(e.violations.len(), 1, "{registries:?}");
        assert_eq!(e.violations[0].rule, INVALID_POLICY);
        assert!(e.denied());
        assert!(
            e.message(Enforcement::Deny).contains("allowedRegistries"),
            "{}",
            e.message(Enforcement::Deny)
        );
    }
    let err = compile("x", &policy("x", &[], false, Enforcement::Deny).spec).unwrap_err();
    assert_eq!(err, PolicyError::NoRegistries);
    let err = compile("x", &policy("x", &["ok.io/", "bad"], false, Enforcement::Deny).spec).unwrap_err();
    assert!(err.to_string().starts_with("allowedRegistries[1]: "), "{err}");
}

#[test]
fn selectors_pick_environments() {
    let labels: BTreeMap<String, String> = [("tier".to_string(), "prod".to_string())].into();
    let other: BTreeMap<String, String> = [("tier".to_string(), "dev".to_string())].into();
    let mut p = policy("prod", &["prod.example.io/"], false, Enforcement::Deny);
    p.spec.environment_selector.match_labels = labels.clone();
    let objects = [deployment("web", &["nginx"])];
    let at = |ns: &'static str, l: &'static BTreeMap<String, String>| Subject {
        namespace: ns,
        labels: Some(l),
    };
    let labels: &'static _ = Box::leak(Box::new(labels));
    let other: &'static _ = Box::leak(Box::new(other));
    assert_eq!(
        evaluate(std::slice::from_ref(&p), &at("team", labels), &objects)
            .violations
            .len(),
        1
    );
    assert!(evaluate(std::slice::from_ref(&p), &at("team", other), &objects).is_empty());
    p.spec.environment_selector.namespaces = vec!["prod".into()];
    assert!(evaluate(std::slice::from_ref(&p), &at("team", labels), &objects).is_empty());
    assert_eq!(
        evaluate(std::slice::from_ref(&p), &at("prod", labels), &objects)
            .violations
            .len(),
        1
    );
    p.spec.environment_selector.match_labels.clear();
    p.spec.environment_selector.match_expressions = vec![LabelSelectorRequirement {
        key: "tier".into(),
        operator: "NotIn".into(),
        values: Some(vec!["dev".into()]),
    }];
    assert_eq!(
        evaluate(std::slice::from_ref(&p), &at("prod", labels), &objects)
            .violations
            .len(),
        1
    );
    assert!(evaluate(std::slice::from_ref(&p), &at("prod", other), &objects).is_empty());
    p.spec.environment_selector.match_expressions[0].operator = "Near".into();
    let e = evaluate(std::slice::from_ref(&p), &at("prod", other), &objects);
    assert_eq!(e.violations[0].rule, INVALID_POLICY);
}

#[test]
fn the_verification_job_is_checked() {
    let template = json!({"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "curlimages/curl"}]}}}});
    let object = verification_object(&template).unwrap();
    let p = [policy("prod", &["prod.example.io/"], false, Enforcement::Deny)];
    let e = evaluate(&p, &subject(), &[object]);
    assert_eq!(e.violations.len(), 1);
    assert_eq!(e.violations[0].object, "Job spec.verification.jobTemplate");
    assert_eq!(e.violations[0].container, "container t");
    assert!(verification_object(&json!({"metadata": {}})).is_none());
}

#[test]
fn messages_are_bounded_and_count_the_rest() {
    let p = [policy("prod", &["prod.example.io/"], false, Enforcement::Deny)];
    let images: Vec<String> = (0..500).map(|i| format!("evil.io/{}/{i}", "x".repeat(40))).collect();
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let e = evaluate(&p, &subject(), &[deployment("web", &refs)]);
    assert_eq!(e.violations.len(), 500);
    let m = e.message(Enforcement::Deny);
    assert!(m.len() < MESSAGE_MAX + 100, "{}", m.len());
    assert!(m.contains("more (see status.policyViolations"), "{m}");
    let status = e.status("r").unwrap();
    assert_eq!(status.total, 500);
    assert_eq!(status.violations.len(), STATUS_VIOLATIONS_MAX);
}

#[test]
fn several_policies_each_report() {
    let p = [
        policy("deny", &["prod.example.io/"], false, Enforcement::Deny),
        policy("audit", &["docker.io/"], true, Enforcement::Audit),
    ];
    let e = evaluate(&p, &subject(), &[deployment("web", &["prod.example.io/a:1"])]);
    let rules: Vec<_> = e
        .violations
        .iter()
        .map(|v| (v.policy.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(rules, [("audit", DIGEST_REQUIRED), ("audit", UNTRUSTED_REGISTRY)]);
    assert!(!e.denied());
    assert!(e.of(Enforcement::Deny).is_empty());
}
