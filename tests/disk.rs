//! The storage directory on a bad day, on a real file system: a small tmpfs mounted by the test (the tests run
//! as root) is Ferry's `--storage-dir`, filled up or remounted read-only. A commit that cannot be stored says so
//! (`StorageFailed`, naming the directory and the operating system's error, with an Event), the last good
//! revision stays applied, nothing of a partly exported tree is applied, and once there is room again (or the
//! directory is writable again) the new commit is applied without a restart.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use ferry::api::{Environment, GitRepository};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// A tmpfs mounted on a fresh directory for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
    fillers: Vec<PathBuf>,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"],
            dir.path(),
        );
        Tmpfs {
            dir,
            fillers: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        mount(&["-o", &format!("remount,{mode}")], self.path());
    }

    /// Writes 64 KiB filler files until the file system is full, then removes enough of them to leave
    /// `free_kib` KiB (rounded up to whole files) free.
    fn fill_leaving(&mut self, free_kib: usize) {
        let block = vec![0x5a_u8; 64 << 10];
        loop {
            let path = self.path().join(format!("filler-{}", self.fillers.len()));
            let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(&block));
            self.fillers.push(path);
            match written {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last file is partial; it goes first.
        for _ in 0..free_kib.div_ceil(64) + 1 {
            if let Some(path) = self.fillers.pop() {
                std::fs::remove_file(path).expect("removing a filler");
            }
        }
    }

    fn free(&mut self) {
        for path in self.fillers.drain(..) {
            std::fs::remove_file(path).expect("removing a filler");
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn mount(args: &[&str], at: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(at)
        .output()
        .expect("running mount");
    assert!(
        out.status.success(),
        "mount {args:?} {}: {} (these tests mount a tmpfs and need root)",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn value(t: &TestEnv, name: &str) -> Option<String> {
    let cm = t.api::<ConfigMap>().get_opt(name).await.ok()??;
    cm.data?.get("v").cloned()
}

/// The ConfigMaps of this test that hold `v`.
async fn holding(t: &TestEnv, v: &str) -> usize {
    t.api::<ConfigMap>()
        .list(&Default::default())
        .await
        .expect("listing ConfigMaps")
        .items
        .iter()
        .filter(|c| c.data.as_ref().and_then(|d| d.get("v")).map(String::as_str) == Some(v))
        .count()
}

/// The storage directory in a TestEnv whose controller stores its mirrors and trees on `tmpfs`.
async fn env_on(name: &str, tmpfs: &Tmpfs) -> TestEnv {
    let storage = tmpfs.path().join("storage");
    TestEnv::with_settings(name, move |s| s.storage_dir = storage).await
}

/// Asserts the last good commit is what runs: the Environment says so and the cluster holds it, none of `v`.
async fn still_runs(t: &TestEnv, good: &str, good_value: &str, v: &str) {
    let env = t.api::<Environment>().get("app").await.expect("app");
    let applied = env.status.and_then(|s| s.last_applied_revision).unwrap_or_default();
    assert!(applied.ends_with(good), "still {good}: {applied}");
    assert_eq!(value(t, "app").await.as_deref(), Some(good_value));
    assert_eq!(holding(t, v).await, 0, "nothing of {v} applied");
}

/// Waits for `Ready=False, StorageFailed` on the Environment or the GitRepository; returns the message.
async fn storage_failed<K>(t: &TestEnv, name: &str) -> String
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasReady,
{
    let obj = wait_for(&t.api::<K>(), name, |o: &K| {
        o.ready().is_some_and(|(s, r, _)| s == "False" && r == "StorageFailed")
    })
    .await;
    let message = obj.ready().expect("Ready").2;
    eprintln!("{name}: StorageFailed: {message}");
    for temporary in [".export-", ".probe-", "pack_git2_"] {
        assert!(
            !message.contains(temporary),
            "no temporary names, which change on every retry (a status write and an Event each): {message}"
        );
    }
    message
}

trait HasReady {
    fn ready(&self) -> Option<(String, String, String)>;
}
impl HasReady for Environment {
    fn ready(&self) -> Option<(String, String, String)> {
        env_ready(self)
    }
}
impl HasReady for GitRepository {
    fn ready(&self) -> Option<(String, String, String)> {
        repo_ready(self)
    }
}

/// No half-written export is left where a render could find it.
fn no_partial_trees(storage: &Path) {
    let trees = storage.join("trees");
    for mirror in std::fs::read_dir(&trees).into_iter().flatten().flatten() {
        for tree in std::fs::read_dir(mirror.path()).expect("trees").flatten() {
            let name = tree.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".export-"), "a partial export was left: {name}");
            assert!(
                tree.path().join(".ferry-complete-3").is_file(),
                "an incomplete tree is in place: {name}"
            );
        }
    }
}

#[tokio::test]
async fn a_full_storage_directory_applies_nothing_partial_and_recovers_when_there_is_room() {
    let mut tmpfs = Tmpfs::mount("8m");
    let t = env_on("disk-full", &tmpfs).await;
    let storage = tmpfs.path().join("storage");
    t.repo.write("app/app.yaml", &config_map("app", &[("v", "0")]));
    let c0 = t.repo.commit_and_push("v0");
    t.config_source("1s").await;
    t.config_env_with("app", "app", "2s", json!({"prune": true})).await;
    wait_applied(&t, "app", &c0).await;

    // Room for the fetched pack (a few KiB), not for the exported tree: 300 files take a page each.
    tmpfs.fill_leaving(256);
    t.repo.write("app/app.yaml", &config_map("app", &[("v", "1")]));
    for i in 0..300 {
        t.repo.write(
            &format!("app/cm-{i:03}.yaml"),
            &config_map(&format!("cm-{i:03}"), &[("v", "1")]),
        );
    }
    let c1 = t.repo.commit_and_push("v1: 301 objects");
    wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        r.status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .is_some_and(|a| a.revision.ends_with(&c1))
    })
    .await;
    let message = storage_failed::<Environment>(&t, "app").await;
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains(&storage.display().to_string()),
        "names the directory: {message}"
    );
    assert!(message.contains(&c1), "names the commit: {message}");
    t.assert_event_noted("app", "Warning", "StorageFailed", "No space left on device")
        .await;
    still_runs(&t, &c0, "0", "1").await;
    no_partial_trees(&storage);

    // The Git host's objects do not fit either: the fetch fails, and the GitRepository says it is the disk.
    tmpfs.fill_leaving(0);
    let mut random = vec![0u8; 256 << 10];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").expect("urandom"), &mut random)
        .expect("random bytes");
    let noise: String = random.iter().map(|b| format!("{b:02x}")).collect();
    t.repo.write("data/noise.txt", &noise);
    t.repo.write("app/app.yaml", &config_map("app", &[("v", "2")]));
    let c2 = t.repo.commit_and_push("v2: 512 KiB of hex that compress to about half");
    let message = storage_failed::<GitRepository>(&t, "config").await;
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains(&storage.join("git").display().to_string()),
        "names the mirror: {message}"
    );
    t.wait_event("config", "Warning", "StorageFailed").await;
    still_runs(&t, &c0, "0", "2").await;

    // Room again: the newest commit is fetched, exported whole and applied, without a restart.
    tmpfs.free();
    let env = wait_applied(&t, "app", &c2).await;
    assert_eq!(value(&t, "app").await.as_deref(), Some("2"));
    assert_eq!(holding(&t, "1").await, 300, "every object of the tree, not a subset");
    assert!(env.status.unwrap().inventory.len() >= 301);
    no_partial_trees(&storage);
}

#[tokio::test]
async fn a_read_only_storage_directory_keeps_the_last_revision_and_recovers_when_writable() {
    let tmpfs = Tmpfs::mount("16m");
    let t = env_on("disk-ro", &tmpfs).await;
    let storage = tmpfs.path().join("storage");
    t.repo.write("app/app.yaml", &config_map("app", &[("v", "0")]));
    let c0 = t.repo.commit_and_push("v0");
    t.config_source("1s").await;
    t.config_env("app", "app", "2s").await;
    wait_applied(&t, "app", &c0).await;

    // Read-only before the fetch: the GitRepository cannot store the new commit.
    tmpfs.remount("ro");
    t.repo.write("app/app.yaml", &config_map("app", &[("v", "1")]));
    let c1 = t.repo.commit_and_push("v1");
    let message = storage_failed::<GitRepository>(&t, "config").await;
    assert!(message.contains("Read-only file system"), "{message}");
    assert!(
        message.contains(&storage.join("git").display().to_string()),
        "{message}"
    );
    t.wait_event("config", "Warning", "StorageFailed").await;
    still_runs(&t, &c0, "0", "1").await;
    tmpfs.remount("rw");
    wait_applied(&t, "app", &c1).await;
    assert_eq!(value(&t, "app").await.as_deref(), Some("1"));

    // Read-only after the fetch, before the export: the Environment cannot export the commit.
    let suspend = |on: bool| json!({"spec": {"suspend": on}});
    t.api::<Environment>()
        .patch("app", &PatchParams::default(), &Patch::Merge(&suspend(true)))
        .await
        .expect("suspend");
    t.repo.write("app/app.yaml", &config_map("app", &[("v", "2")]));
    let c2 = t.repo.commit_and_push("v2");
    wait_for(&t.api::<GitRepository>(), "config", |r: &GitRepository| {
        r.status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .is_some_and(|a| a.revision.ends_with(&c2))
    })
    .await;
    tmpfs.remount("ro");
    t.api::<Environment>()
        .patch("app", &PatchParams::default(), &Patch::Merge(&suspend(false)))
        .await
        .expect("resume");
    let message = storage_failed::<Environment>(&t, "app").await;
    assert!(message.contains("Read-only file system"), "{message}");
    assert!(
        message.contains(&storage.join("trees").display().to_string()),
        "{message}"
    );
    assert!(message.contains(&c2), "{message}");
    t.wait_event("app", "Warning", "StorageFailed").await;
    still_runs(&t, &c1, "1", "2").await;
    tmpfs.remount("rw");
    wait_applied(&t, "app", &c2).await;
    assert_eq!(value(&t, "app").await.as_deref(), Some("2"));
}
