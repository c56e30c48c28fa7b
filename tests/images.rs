//! Image digests through the pipeline on a real control plane and real registries (distribution, filled
//! with crane): staging resolves and pins its images and records the digests; production applies what staging
//! recorded (a tag moved afterwards never reaches it), copied by digest into the production registry
//! (multi-arch included, a repeated copy uploads nothing); every failure stops before anything is applied.

mod common;

use common::registry::{REGISTRY_PASSWORD, REGISTRY_USER, TestRegistry, docker_config_secret};
use common::*;
use ferry::api::{Environment, Promotion, PromotionPhase, RevisionPhase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use serde_json::json;

fn deployment(name: &str, images: &[&str]) -> String {
    let containers: Vec<String> = images
        .iter()
        .enumerate()
        .map(|(i, image)| format!("      - {{name: c{i}, image: \"{image}\"}}\n"))
        .collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector:\n    \
         matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      \
         containers:\n{}",
        containers.concat()
    )
}

/// Pushes, then has the GitRepository fetch now.
async fn push_and_fetch(t: &TestEnv, version: &str, images: &[&str]) -> String {
    let revision = push(t, version, images);
    request_fetch(t, "config", version).await;
    revision
}

/// Both overlays name `images`; `version` changes a ConfigMap so each push is a new revision.
fn push(t: &TestEnv, version: &str, images: &[&str]) -> String {
    let commit = push_overlays(t, version, |env| {
        vec![
            ("web.yaml", deployment(&format!("web-{env}"), images)),
            ("app.yaml", config_map(&format!("app-{env}"), &[("version", version)])),
        ]
    });
    main_revision(&commit)
}

fn record_of(env: &Environment, revision: &str) -> Option<ferry::api::RevisionRecord> {
    env.status.as_ref()?.record(revision).cloned()
}

async fn wait_record(t: &TestEnv, env: &str, revision: &str, phase: RevisionPhase) -> Environment {
    wait_for(&t.api::<Environment>(), env, |e: &Environment| {
        record_of(e, revision).map(|r| r.phase) == Some(phase)
    })
    .await
}

async fn promotion_of(t: &TestEnv, revision: &str) -> Promotion {
    eventually(&format!("a Promotion of {revision}"), || async {
        let list = t.api::<Promotion>().list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|p| p.spec.revision == revision)
    })
    .await
}

async fn images_of(t: &TestEnv, deployment: &str) -> Vec<String> {
    let d = t.api::<Deployment>().get(deployment).await.expect("deployment");
    d.spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
        .unwrap_or_default()
}

async fn create_docker_secret(t: &TestEnv, name: &str, json: &str) {
    t.api::<Secret>()
        .create(&PostParams::default(), &docker_config_secret(name, json))
        .await
        .expect("creating the registry Secret");
}

#[tokio::test]
async fn a_tag_moved_after_staging_verified_never_reaches_production() {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin");
    let reg = TestRegistry::start(&bin, true);
    let host = reg.host.clone();
    let t = TestEnv::with_workloads_and_settings("moved-tag", |s| s.registry.insecure = vec![host]).await;
    let verified = reg.push_image("team/web:v1", &[("app", b"verified build"), ("lib", b"shared")]);
    let image = reg.image("team/web:v1");
    create_docker_secret(&t, "pull", &reg.docker_config_json(REGISTRY_USER, REGISTRY_PASSWORD)).await;
    let c1 = push(&t, "v1", &[&image]);
    t.config_source("1h").await;
    t.config_env_with(
        "staging",
        "apps/staging",
        "1h",
        json!({"images": {"pinDigests": true, "pullSecretRef": {"name": "pull"}}}),
    )
    .await;
    t.approved_production("apps/production", "1h").await;

    // Staging resolved the tag through basic auth, pinned it, and verified that digest.
    let staging = wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;
    let record = record_of(&staging, &c1).expect("record");
    assert_eq!(record.images.len(), 1);
    assert_eq!(
        (record.images[0].image.as_str(), record.images[0].digest.as_str()),
        (image.as_str(), verified.as_str())
    );
    assert_eq!(images_of(&t, "web-staging").await, [format!("{image}@{verified}")]);

    // Someone moves the tag while production waits for approval.
    let promotion = promotion_of(&t, &c1).await;
    let name = promotion.metadata.name.clone().expect("name");
    wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.phase() == PromotionPhase::WaitingApproval
    })
    .await;
    let moved = reg.push_image("team/web:v1", &[("app", b"NOT what staging verified")]);
    assert_ne!(moved, verified);
    ferry::cli::approve(&t.client, &t.namespace, &name, None)
        .await
        .expect("approve");

    // Production runs the verified digest, not what the tag names now, and records it.
    let production = wait_record(&t, "production", &c1, RevisionPhase::Verified).await;
    assert_eq!(images_of(&t, "web-production").await, [format!("{image}@{verified}")]);
    let record = record_of(&production, &c1).expect("record");
    assert_eq!(record.images[0].digest, verified);
    // Staging keeps its recorded digest too (the same revision asks no registry again).
    assert_eq!(images_of(&t, "web-staging").await, [format!("{image}@{verified}")]);
    // What a person sees: `ferry images` and `ferry history`.
    let listed = ferry::cli::images(&t.client, &t.namespace, "production")
        .await
        .expect("ferry images");
    let line = listed
        .lines()
        .find(|l| l.contains("team/web"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.contains(&verified) && line.contains(" v1 ") && line.contains(&reg.host),
        "{listed}"
    );
    assert!(!listed.contains(&moved), "{listed}");
    let history = ferry::cli::history(&t.client, &t.namespace, "production")
        .await
        .expect("ferry history");
    assert!(history.contains(&verified) && !history.contains(&moved), "{history}");
}

#[tokio::test]
async fn promotion_copies_images_by_digest_to_the_prod_registry_and_a_repeated_copy_uploads_nothing() {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin");
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, true);
    let hosts = vec![nonprod.host.clone(), prod.host.clone()];
    let t = TestEnv::with_workloads_and_settings("copy", |s| s.registry.insecure = hosts).await;
    let web = nonprod.push_image("team/web:v1", &[("a", b"one"), ("b", b"two"), ("c", b"three")]);
    let multi = nonprod.push_index("team/multi:v1", "multi-arch");
    let images = [nonprod.image("team/web:v1"), nonprod.image("team/multi:v1")];
    let image_refs: Vec<&str> = images.iter().map(String::as_str).collect();
    create_docker_secret(
        &t,
        "prod-push",
        &prod.docker_config_json(REGISTRY_USER, REGISTRY_PASSWORD),
    )
    .await;
    let c1 = push(&t, "v1", &image_refs);
    t.config_source("1h").await;
    t.config_env_with("staging", "apps/staging", "1h", json!({"images": {}}))
        .await;
    let copy = json!([{"from": format!("{}/team", nonprod.host), "to": format!("{}/prod/team", prod.host),
                       "secretRef": {"name": "prod-push"}}]);
    // The platform team's fence: production runs only prod-registry digests (staging is not selected).
    t.apply_json(&json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "RegistryPolicy",
        "metadata": {"name": format!("{}-prod-only", t.namespace)},
        "spec": {"environmentSelector": {"namespaces": [t.namespace], "matchLabels": {"stage": "production"}},
                 "allowedRegistries": [format!("{}/prod/", prod.host)], "requireDigest": true,
                 "enforcement": "Deny"}}))
        .await;
    t.apply_json(&json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "production", "namespace": t.namespace, "labels": {"stage": "production"}},
        "spec": {"sourceRef": {"name": "config"}, "path": "apps/production", "interval": "1h",
                 "promotion": {"from": "staging", "copyImages": copy}}}))
        .await;

    let staging = wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;
    assert_eq!(
        images_of(&t, "web-staging").await,
        images.to_vec(),
        "without pinDigests staging records digests but applies the render as written"
    );
    assert_eq!(record_of(&staging, &c1).expect("record").images.len(), 2);

    let production = wait_record(&t, "production", &c1, RevisionPhase::Verified).await;
    let expected = [
        format!("{}/prod/team/web:v1@{web}", prod.host),
        format!("{}/prod/team/multi:v1@{multi}", prod.host),
    ];
    assert_eq!(images_of(&t, "web-production").await, expected.to_vec());
    assert_eq!(prod.digest("prod/team/web:v1"), web, "the copy has the same digest");
    assert_eq!(prod.digest("prod/team/multi:v1"), multi, "the multi-arch index too");
    let record = record_of(&production, &c1).expect("record");
    let copied: Vec<Option<&str>> = record.images.iter().map(|i| i.copied_to.as_deref()).collect();
    assert_eq!(
        copied,
        [
            Some(format!("{}/prod/team/web", prod.host).as_str()),
            Some(format!("{}/prod/team/multi", prod.host).as_str())
        ]
    );
    t.assert_event_noted("production", "Normal", "ImagesCopied", "copied 2 image(s)")
        .await;
    let uploads = prod.uploads();
    let manifests = prod.manifest_puts();
    assert!(
        uploads >= 9,
        "3 layers + config, and per platform 2 layers + config: {uploads}"
    );

    // The next revision names the same images: the copy finds everything in place and uploads nothing.
    let c2 = push_and_fetch(&t, "v2", &image_refs).await;
    wait_record(&t, "staging", &c2, RevisionPhase::Verified).await;
    wait_record(&t, "production", &c2, RevisionPhase::Verified).await;
    assert_eq!(
        (prod.uploads(), prod.manifest_puts()),
        (uploads, manifests),
        "{}",
        prod.log()
    );
    assert_eq!(images_of(&t, "web-production").await, expected.to_vec());
    let production = t.api::<Environment>().get("production").await.expect("production");
    assert!(
        production
            .status
            .as_ref()
            .and_then(|s| s.policy_violations.as_ref())
            .is_none(),
        "the Deny policy found nothing to refuse in production"
    );
}

#[tokio::test]
async fn a_failed_copy_fails_the_promotion_and_applies_nothing() {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin");
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, true);
    let hosts = vec![nonprod.host.clone(), prod.host.clone()];
    let t = TestEnv::with_workloads_and_settings("copy-fails", |s| s.registry.insecure = hosts).await;
    nonprod.push_image("team/web:v1", &[("a", b"one")]);
    let image = nonprod.image("team/web:v1");
    let wrong = "wrong-password-1234";
    create_docker_secret(&t, "prod-push", &prod.docker_config_json(REGISTRY_USER, wrong)).await;
    let c1 = push(&t, "v1", &[&image]);
    t.config_source("1h").await;
    t.config_env_with("staging", "apps/staging", "1h", json!({"images": {}}))
        .await;
    let copy = json!([{"from": format!("{}/team", nonprod.host), "to": format!("{}/team", prod.host),
                       "secretRef": {"name": "prod-push"}}]);
    t.config_env_with(
        "production",
        "apps/production",
        "1h",
        json!({"promotion": {"from": "staging", "copyImages": copy}}),
    )
    .await;
    wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;

    let promotion = promotion_of(&t, &c1).await;
    let name = promotion.metadata.name.clone().expect("name");
    let failed = wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.phase() == PromotionPhase::Failed
    })
    .await;
    let (_, reason, message) = ready_of(&failed.status.expect("status").conditions).expect("Ready");
    assert_eq!(reason, "ImageCopyFailed", "{message}");
    assert!(
        message.contains("copying images failed") && message.contains("refused access"),
        "{message}"
    );
    let production = t.api::<Environment>().get("production").await.expect("production");
    let (status, reason, env_message) = env_ready(&production).expect("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ImageCopyFailed"),
        "{env_message}"
    );
    assert!(
        production
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.clone())
            .is_none(),
        "nothing applied"
    );
    assert!(
        t.api::<Deployment>()
            .get_opt("web-production")
            .await
            .expect("get")
            .is_none(),
        "nothing applied"
    );
    assert_eq!(prod.manifest_puts(), 0, "no manifest reached the prod registry");
    let events = t.wait_event("production", "Warning", "ImageCopyFailed").await;
    for text in events.iter().map(|(_, _, n)| n).chain([&message, &env_message]) {
        assert!(
            !text.contains(wrong) && !text.contains(REGISTRY_PASSWORD),
            "a credential leaked: {text}"
        );
    }
}

#[tokio::test]
async fn unresolvable_images_stop_staging_before_anything_is_applied() {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin");
    let mut reg = TestRegistry::start(&bin, false);
    let host = reg.host.clone();
    let t = TestEnv::with_settings("unresolvable", |s| s.registry.insecure = vec![host]).await;
    let c1 = push(&t, "v1", &[&reg.image("team/web:missing")]);
    t.config_source("1h").await;
    t.config_env_with("staging", "apps/staging", "2s", json!({"images": {"pinDigests": true}}))
        .await;
    let not_found = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, _)| s == "False" && r == "ImageResolutionFailed")
    })
    .await;
    let (_, _, message) = env_ready(&not_found).expect("Ready");
    assert!(message.contains("not found") && message.contains(&c1), "{message}");
    assert!(
        t.api::<Deployment>()
            .get_opt("web-staging")
            .await
            .expect("get")
            .is_none()
    );
    t.wait_event("staging", "Warning", "ImageResolutionFailed").await;

    // An image that is not a reference at all.
    let c2 = push_and_fetch(&t, "v2", &["Not A/Reference::"]).await;
    wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, m)| s == "False" && r == "InvalidImageReference" && m.contains(&c2))
    })
    .await;

    // The image exists now, and the registry goes down before Ferry asks: retried, still nothing applied.
    reg.push_image("team/web:v3", &[("a", b"x")]);
    reg.stop();
    let c3 = push_and_fetch(&t, "v3", &[&reg.image("team/web:v3")]).await;
    let down = wait_for(&t.api::<Environment>(), "staging", |e: &Environment| {
        env_ready(e).is_some_and(|(s, r, m)| s == "False" && r == "ImageResolutionFailed" && m.contains(&c3))
    })
    .await;
    let (_, _, message) = env_ready(&down).expect("Ready");
    assert!(message.contains("could not be reached"), "{message}");
    assert!(
        t.api::<Deployment>()
            .get_opt("web-staging")
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn content_that_does_not_match_its_digest_is_never_copied_or_applied() {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin");
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, false);
    let hosts = vec![nonprod.host.clone(), prod.host.clone()];
    let t = TestEnv::with_workloads_and_settings("copy-mismatch", |s| s.registry.insecure = hosts).await;
    nonprod.push_image("team/web:v1", &[("a", b"the layer staging verified")]);
    let image = nonprod.image("team/web:v1");
    let c1 = push(&t, "v1", &[&image]);
    t.config_source("1h").await;
    t.config_env_with("staging", "apps/staging", "1h", json!({"images": {}}))
        .await;
    let copy = json!([{"from": format!("{}/team", nonprod.host), "to": format!("{}/team", prod.host)}]);
    t.config_env_with(
        "production",
        "apps/production",
        "1h",
        json!({"promotion": {"from": "staging", "requireApproval": true, "copyImages": copy}}),
    )
    .await;
    wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;

    // After staging verified, the layer's bytes change in the nonprod registry's storage.
    nonprod.corrupt_first_layer("team/web:v1");

    let promotion = promotion_of(&t, &c1).await;
    let name = promotion.metadata.name.clone().expect("name");
    wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.phase() == PromotionPhase::WaitingApproval
    })
    .await;
    ferry::cli::approve(&t.client, &t.namespace, &name, None)
        .await
        .expect("approve");
    let failed = wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.phase() == PromotionPhase::Failed
    })
    .await;
    let (_, reason, message) = ready_of(&failed.status.expect("status").conditions).expect("Ready");
    assert_eq!(reason, "ImageCopyFailed", "{message}");
    assert!(message.contains("does not match its digest"), "{message}");
    assert!(
        t.api::<Deployment>()
            .get_opt("web-production")
            .await
            .expect("get")
            .is_none(),
        "nothing applied"
    );
    assert_eq!(prod.manifest_puts(), 0, "no manifest points at unverified content");
    t.wait_event("production", "Warning", "ImageCopyFailed").await;
}

/// `ferry diff --environment` goes through the controller's own pipeline: it shows the digests the controller
/// pins and the registry a promotion copies to. Before the promotion it plans the copy without making it; once
/// applied, there is no difference at all.
#[tokio::test]
async fn diff_shows_the_pinned_and_copied_images_the_controller_applies() {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).expect("bin");
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, true);
    let hosts = vec![nonprod.host.clone(), prod.host.clone()];
    let insecure = hosts.clone();
    let t = TestEnv::with_workloads_and_settings("diff-images", |s| s.registry.insecure = insecure).await;
    let web = nonprod.push_image("team/web:v1", &[("a", b"one")]);
    let image = nonprod.image("team/web:v1");
    create_docker_secret(
        &t,
        "prod-push",
        &prod.docker_config_json(REGISTRY_USER, REGISTRY_PASSWORD),
    )
    .await;
    let c1 = push(&t, "v1", &[&image]);
    t.config_source("1h").await;
    t.config_env_with("staging", "apps/staging", "1h", json!({"images": {"pinDigests": true}}))
        .await;
    let copy = json!([{"from": format!("{}/team", nonprod.host), "to": format!("{}/prod/team", prod.host),
                       "secretRef": {"name": "prod-push"}}]);
    t.config_env_with(
        "production",
        "apps/production",
        "1h",
        json!({"promotion": {"from": "staging", "requireApproval": true, "copyImages": copy}}),
    )
    .await;
    wait_record(&t, "staging", &c1, RevisionPhase::Verified).await;
    assert_eq!(images_of(&t, "web-staging").await, [format!("{image}@{web}")]);

    let kubeconfig = kube::config::Kubeconfig::read_from(&t.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let settings = ferry::render::RenderSettings {
        kustomize: t.bin_dir.join("kustomize"),
        ..Default::default()
    };
    let registry = ferry::registry::RegistrySettings { insecure: hosts };
    let diff = |name: &'static str, revision: Option<String>| {
        let (client, config) = (t.client.clone(), config.clone());
        let (settings, registry, namespace) = (&settings, &registry, t.namespace.clone());
        async move {
            let target = |env: &Environment| {
                let (client, config, env) = (client.clone(), config.clone(), env.clone());
                async move { ferry::cli::environment_target(&client, &config, &env).await }
            };
            ferry::cli::diff_environment_at(
                client.clone(),
                &namespace,
                name,
                revision,
                settings,
                registry,
                true,
                ferry::secrets::Readers::Caller(&client),
                target,
            )
            .await
            .unwrap_or_else(|e| panic!("ferry diff {name}: {e}"))
            .diffs
        }
    };

    // Staging runs its render pinned to the digest it resolved: in sync.
    let diffs = diff("staging", None).await;
    assert!(diffs.is_empty(), "staging runs what it would apply: {diffs:?}");

    // Production, before its promotion is approved: staging's digest, at the prod registry; nothing copied yet.
    let promotion = promotion_of(&t, &c1).await;
    let name = promotion.metadata.name.clone().expect("name");
    wait_for(&t.api::<Promotion>(), &name, |p: &Promotion| {
        p.phase() == PromotionPhase::WaitingApproval
    })
    .await;
    let diffs = diff("production", Some(c1.clone())).await;
    let deployment = diffs
        .iter()
        .find(|d| d.desired["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("{diffs:?}"));
    assert_eq!(
        deployment.desired["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{}/prod/team/web:v1@{web}", prod.host),
        "{deployment:?}"
    );
    assert_eq!((prod.uploads(), prod.manifest_puts()), (0, 0), "a diff copies nothing");

    // Once promoted, production runs exactly what the diff showed.
    ferry::cli::approve(&t.client, &t.namespace, &name, None)
        .await
        .expect("approve");
    wait_record(&t, "production", &c1, RevisionPhase::Verified).await;
    assert_eq!(
        images_of(&t, "web-production").await,
        [format!("{}/prod/team/web:v1@{web}", prod.host)]
    );
    let diffs = diff("production", None).await;
    assert!(diffs.is_empty(), "production runs what it would apply: {diffs:?}");
}
