//! A real `git daemon` on loopback with push enabled, and working clones that commit and push to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context as _, bail};
use ferry_testenv::{free_port, spawn_guarded};

pub struct GitDaemon {
    pub base: tempfile::TempDir,
    pub port: u16,
    _child: Child,
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Ferry Test",
            "-c",
            "user.email=test@ferry.dev",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!("git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl GitDaemon {
    pub fn start() -> anyhow::Result<GitDaemon> {
        let base = tempfile::tempdir()?;
        let port = free_port()?;
        // Run git-daemon itself, not the `git daemon` wrapper: the wrapper forks it, and the fork would not
        // inherit the parent-death signal that keeps test processes from outliving the test binary.
        let exec_path = git(base.path(), &["--exec-path"])?;
        let mut cmd = Command::new(Path::new(&exec_path).join("git-daemon"));
        cmd.arg(format!("--base-path={}", base.path().display()))
            .args([
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(base.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = spawn_guarded(cmd)?;
        // Ready when it accepts connections.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("git daemon did not listen on {port}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(GitDaemon {
            base,
            port,
            _child: child,
        })
    }

    /// A new empty bare repo served at `git://127.0.0.1:<port>/<name>.git`, with a working clone to push from.
    pub fn create_repo(&self, name: &str) -> anyhow::Result<GitRepo> {
        let bare = self.base.path().join(format!("{name}.git"));
        std::fs::create_dir_all(&bare)?;
        git(&bare, &["init", "--bare", "-q", "-b", "main"])?;
        let work = tempfile::tempdir()?;
        git(work.path(), &["init", "-q", "-b", "main"])?;
        let url = format!("git://127.0.0.1:{}/{name}.git", self.port);
        git(work.path(), &["remote", "add", "origin", &url])?;
        Ok(GitRepo {
            url,
            name: format!("{name}.git"),
            bare,
            work,
        })
    }
}

pub struct GitRepo {
    /// `git://` URL (pushes go here).
    pub url: String,
    /// `<name>.git`, the path under any server's root.
    pub name: String,
    pub bare: PathBuf,
    pub work: tempfile::TempDir,
}

impl GitRepo {
    pub fn write(&self, path: &str, content: &str) {
        let p: PathBuf = self.work.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write");
    }

    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.work.path().join(path)).expect("remove");
    }

    /// Commits everything and pushes `branch`; returns the new commit id.
    pub fn commit_and_push(&self, message: &str) -> String {
        self.commit_and_push_to("main", message)
    }

    pub fn commit_and_push_to(&self, branch: &str, message: &str) -> String {
        let dir = self.work.path();
        git(dir, &["add", "-A"]).expect("git add");
        git(dir, &["commit", "-q", "--allow-empty", "-m", message]).expect("git commit");
        git(dir, &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")]).expect("git push");
        git(dir, &["rev-parse", "HEAD"]).expect("rev-parse")
    }
}
