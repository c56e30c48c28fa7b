//! A real OpenSSH `sshd` on loopback with a throw-away host key, serving git over SSH to one client key.

use std::path::Path;
use std::process::{Child, Command};

use anyhow::{Context as _, bail};
use ferry_testenv::{free_port, spawn_guarded};

pub struct Sshd {
    pub port: u16,
    /// A `known_hosts` line for this server's host key.
    pub known_hosts: String,
    /// The client's private key (OpenSSH format), accepted by the server.
    pub client_key: String,
    pub user: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

fn keygen(path: &Path, passphrase: &str) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "ferry-test", "-f"])
        .arg(path)
        .output()
        .context("running ssh-keygen")?;
    if !out.status.success() {
        bail!("ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `[127.0.0.1]:port <type> <key>` for the public key file `pub_path`.
pub fn known_hosts_line(pub_path: &Path, port: u16) -> anyhow::Result<String> {
    let public = std::fs::read_to_string(pub_path)?;
    let mut fields = public.split_whitespace();
    let (ty, key) = (fields.next().context("key type")?, fields.next().context("key")?);
    Ok(format!("[127.0.0.1]:{port} {ty} {key}\n"))
}

/// A known_hosts line for a freshly made key that is *not* the server's.
pub fn wrong_known_hosts(port: u16) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    keygen(&dir.path().join("other"), "")?;
    known_hosts_line(&dir.path().join("other.pub"), port)
}

impl Sshd {
    pub fn start(client_passphrase: &str) -> anyhow::Result<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.is_file() {
            bail!("/usr/sbin/sshd not found: install openssh-server (CI does)");
        }
        std::fs::create_dir_all("/run/sshd").ok();
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        keygen(&d.join("host_key"), "")?;
        keygen(&d.join("client_key"), client_passphrase)?;
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_string();
        let port = free_port()?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             AllowUsers {user}\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config)?;
        let mut cmd = Command::new(sshd);
        cmd.args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log"))?);
        let child = spawn_guarded(cmd)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "sshd did not listen: {}",
                    std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Sshd {
            port,
            known_hosts: known_hosts_line(&d.join("host_key.pub"), port)?,
            client_key: std::fs::read_to_string(d.join("client_key"))?,
            user,
            _child: child,
            _dir: dir,
        })
    }

    /// The `ssh://` URL of a bare repository at an absolute path on this machine.
    pub fn url(&self, bare: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, bare.display())
    }
}
