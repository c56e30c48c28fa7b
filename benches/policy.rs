//! Registry-policy check cost: the pure evaluation the Environment controller runs on every sync before the
//! dry run. A render of N Deployments (default 5000, `FERRY_BENCH_OBJECTS`) with 3 containers each (one
//! initContainer), checked against 3 policies of 10 prefixes each (one requiring digests). Prints the median and
//! p99 time of one evaluation, and per image. `cargo bench --bench policy`.

use std::time::{Duration, Instant};

use ferry::api::{Enforcement, RegistryPolicy, RegistryPolicySpec};
use ferry::policy::{Subject, evaluate};
use ferry::render::RenderedObject;
use serde_json::json;

fn main() {
    let n: usize = std::env::var("FERRY_BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let objects: Vec<RenderedObject> = (0..n)
        .map(|i| RenderedObject {
            source: "bench.yaml".into(),
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("web-{i}"), "namespace": "bench"},
                "spec": {"template": {"spec": {
                    "initContainers": [{"name": "init", "image": format!("prod.example.io/team-{}/init:{i}", i % 10)}],
                    "containers": [
                        {"name": "app", "image": format!("prod.example.io/team-{}/app:{i}@sha256:{:064x}", i % 10, i)},
                        {"name": "side", "image": if i % 100 == 0 { "evil.example.com/x:1".to_string() } else { "envoyproxy/envoy:v1.31".to_string() }},
                    ]}}}}),
        })
        .collect();
    let policies: Vec<RegistryPolicy> = (0..3)
        .map(|p| {
            let mut registries: Vec<String> = (0..9).map(|i| format!("prod.example.io/team-{i}/")).collect();
            registries.push("docker.io/envoyproxy/".into());
            RegistryPolicy::new(
                &format!("policy-{p}"),
                RegistryPolicySpec {
                    environment_selector: Default::default(),
                    allowed_registries: registries,
                    require_digest: p == 0,
                    enforcement: if p == 0 { Enforcement::Audit } else { Enforcement::Deny },
                },
            )
        })
        .collect();
    let subject = Subject {
        namespace: "bench",
        labels: None,
    };
    let mut times: Vec<Duration> = Vec::new();
    let mut found = 0;
    for _ in 0..21 {
        let started = Instant::now();
        let e = evaluate(&policies, &subject, &objects);
        times.push(started.elapsed());
        found = e.violations.len();
    }
    times.sort();
    let images = n * 3;
    let median = times[times.len() / 2];
    println!(
        "registry policy: {n} objects, {images} images, 3 policies: median {:.1} ms, max {:.1} ms per evaluation ({:.2} µs per image × 3 policies), {found} violations",
        median.as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e6 / images as f64
    );
}
