//! Registry benchmark on two local registries (distribution's `registry` on loopback, filled with crane):
//! resolving 100 image tags to digests (one after another, and 16 at a time), and copying a 50 MiB image
//! (two layers of random bytes, so gzip cannot shrink them) from one registry to the other, first and
//! repeated. `cargo bench --bench registry`. Prints the figures; asserts only that everything completes.

#[allow(dead_code)]
#[path = "../tests/common/registry.rs"]
mod registry;

use std::time::{Duration, Instant};

use ferry::registry::{Credentials, Registry, RegistrySettings, parse};
use futures::StreamExt;
use registry::TestRegistry;

/// What the registry helper waits for at most.
const DEADLINE: Duration = Duration::from_secs(60);
const IMAGES: usize = 100;
const MIB: usize = 1 << 20;

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough, reproducible, no extra crate.
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = ferry_testenv::bin_dir_from_env_or_build(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let nonprod = TestRegistry::start(&bin, false);
    let prod = TestRegistry::start(&bin, true);
    let settings = RegistrySettings {
        insecure: vec![nonprod.host.clone(), prod.host.clone()],
    };

    // 100 tags (of one image, tagged 100 times: what is timed is the lookup, not the content).
    nonprod.push_image("team/app:base", &[("a", b"one"), ("b", b"two")]);
    let base = nonprod.image("team/app:base");
    let tags: Vec<String> = (0..IMAGES).map(|i| format!("t{i}")).collect();
    for tag in &tags {
        nonprod.crane(&["tag", &base, tag]);
    }
    let images: Vec<String> = tags.iter().map(|t| nonprod.image(&format!("team/app:{t}"))).collect();
    let client = Registry::new(&settings, Credentials::default());
    let start = Instant::now();
    for image in &images {
        client.resolve(image).await?;
    }
    let sequential = start.elapsed();
    let client = Registry::new(&settings, Credentials::default());
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(images.iter().map(|i| client.resolve(i)))
        .buffer_unordered(16)
        .collect()
        .await;
    let concurrent = start.elapsed();
    anyhow::ensure!(results.iter().all(Result::is_ok), "a resolve failed");
    println!(
        "resolve {IMAGES} tags: {:.0} ms one after another ({:.2} ms each), {:.0} ms 16 at a time",
        sequential.as_secs_f64() * 1e3,
        sequential.as_secs_f64() * 1e3 / IMAGES as f64,
        concurrent.as_secs_f64() * 1e3
    );

    // A 50 MiB image: two layers of random bytes.
    let big_a = random_bytes(30 * MIB, 1);
    let big_b = random_bytes(20 * MIB, 2);
    let digest = nonprod.push_image("team/big:v1", &[("a.bin", &big_a), ("b.bin", &big_b)]);
    let credentials = Credentials::parse(
        prod.docker_config_json(registry::REGISTRY_USER, registry::REGISTRY_PASSWORD)
            .as_bytes(),
    )?;
    let source = parse(&format!("{}@{digest}", nonprod.image("team/big")))?;
    let target = parse(&prod.image("team/big:v1"))?;
    for round in ["first", "repeated"] {
        let client = Registry::new(&settings, credentials.clone());
        let uploads = prod.uploads();
        let start = Instant::now();
        let report = client.copy(&source, &target).await?;
        let took = start.elapsed();
        println!(
            "copy 50 MiB image ({round}): {:.0} ms, {:.1} MiB uploaded in {} blob(s), {} manifest(s) written, {} \
             already there; the target logged {} upload(s)",
            took.as_secs_f64() * 1e3,
            report.bytes_uploaded as f64 / MIB as f64,
            report.blobs_uploaded,
            report.manifests_pushed,
            report.skipped,
            prod.uploads() - uploads
        );
    }
    anyhow::ensure!(prod.digest("team/big:v1") == digest, "the copy differs");
    Ok(())
}
