//! Decryption cost: a plain-YAML path of N Secrets (default 200), each encrypted by the real `sops` for one age
//! recipient (`--encrypted-regex '^(data|stringData)$'`, 5 values each), rendered once (as the shared render
//! cache would) and decrypted as one Environment's sync does (`decrypt::decrypt_render`: each file's data key
//! unwrapped with age, every value opened, each file's MAC checked). Prints the render and the decryption time
//! (median of 10) and the cost per document. `cargo bench --bench decrypt` (FERRY_BENCH_SECRETS=N).
//! Asserts only that every value decrypts.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("FERRY_BENCH_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = ferry_testenv::bin_dir_from_env_or_build(&root)?;
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("bench.agekey");
    anyhow::ensure!(
        Command::new(bin.join("age-keygen"))
            .arg("-o")
            .arg(&key_file)
            .output()?
            .status
            .success()
    );
    let identity = std::fs::read_to_string(&key_file)?;
    let recipient = identity
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap_or_default()
        .to_string();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("apps"))?;
    let started = Instant::now();
    for i in 0..n {
        let plain = dir.path().join(format!("s{i}.yaml"));
        let values: String = (0..5).map(|v| format!("  key{v}: value-{i}-{v}\n")).collect();
        std::fs::write(
            &plain,
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\ntype: Opaque\nstringData:\n{values}"),
        )?;
        let out = Command::new(bin.join("sops"))
            .args([
                "encrypt",
                "--age",
                &recipient,
                "--encrypted-regex",
                "^(data|stringData)$",
            ])
            .arg(&plain)
            .output()?;
        anyhow::ensure!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(repo.join(format!("apps/s{i}.enc.yaml")), out.stdout)?;
    }
    println!(
        "encrypted {n} Secrets with sops in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let settings = ferry::render::RenderSettings::default();
    let keys = ferry::decrypt::Keyring::parse(identity.as_bytes(), "bench.agekey")?;
    let (mut render_ms, mut decrypt_ms) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let t = Instant::now();
        let rendered = rt.block_on(ferry::render::render_path(&repo, "apps", &settings))?;
        render_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let decrypted = rt
            .block_on(ferry::decrypt::decrypt_render(
                &repo, "apps", &rendered, &keys, &settings,
            ))?
            .ok_or_else(|| anyhow::anyhow!("nothing decrypted"))?;
        decrypt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(decrypted.objects.len() == n);
        anyhow::ensure!(
            decrypted.objects[0].object["stringData"]["key0"]
                .as_str()
                .is_some_and(|v| v.starts_with("value-"))
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, d) = (median(&mut render_ms), median(&mut decrypt_ms));
    println!("render of {n} encrypted Secrets (plain YAML): {r:.1} ms (median of 10)");
    println!(
        "decryption of that render: {d:.1} ms (median of 10), {:.2} ms per document ({} values)",
        d / n as f64,
        n * 5
    );
    Ok(())
}
