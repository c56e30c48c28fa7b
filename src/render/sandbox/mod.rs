//! The render sandbox: everything that reads tenant content (plain YAML, Flux-style trees, kustomize, helm, the
//! re-render with decrypted generator files) runs in a child process, `ferry render-worker`, that raises the
//! kernel's walls on itself (see [`confine`]) before it reads a byte of the tree, and hands back bounded JSON.
//!
//! The controller keeps three things to itself: the request (paths and limits), the kill (the worker leads a
//! process group of its own; seccomp keeps every descendant in it; the whole group is killed at the deadline and
//! after every render), and the reading of the answer (bounded, and JSON Ferry wrote, never tenant YAML). A
//! crash, a kill or a limit in the worker is a failed render; nothing is applied and the controller's memory
//! does not move.
//!
//! Where the kernel cannot raise the walls (no Landlock, a seccomp profile that refuses filters), plain YAML
//! still renders in the worker (limits and the process group still hold), but kustomize and helm are refused
//! (`SandboxUnavailable`) unless the operator chose `--insecure-render-without-sandbox`.

pub mod confine;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use confine::{Limits, Walls};
pub use worker::worker_main;

use super::RenderError;
use super::disk::{RenderSettings, Rendered};
use super::helm::HelmInputs;
use super::kustomize::resolve_program;

/// The first argument that makes `ferry` a render worker (a hidden subcommand, dispatched before anything else
/// runs: see `main.rs`).
pub const WORKER_ARG: &str = "render-worker";

/// How renders run.
#[derive(Debug, Clone, Default)]
pub enum Sandbox {
    /// In this process, without walls: unit tests, and the worker itself. Never what `ferry` commands use.
    #[default]
    InProcess,
    /// In a confined `ferry render-worker` child.
    Worker(WorkerSettings),
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The `ferry` binary to re-execute (this one, `std::env::current_exe()`, in the commands).
    pub program: PathBuf,
    pub limits: Limits,
    /// `--insecure-render-without-sandbox`: run kustomize and helm even where the walls cannot be raised.
    pub allow_unconfined: bool,
}

impl WorkerSettings {
    /// This binary as the worker, with the default limits.
    pub fn this_binary() -> std::io::Result<Self> {
        Ok(WorkerSettings {
            program: std::env::current_exe()?,
            limits: Limits::default(),
            allow_unconfined: false,
        })
    }
}

/// What the controller asks of a worker (written to its stdin).
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    root: PathBuf,
    path: String,
    helm_inputs: HelmInputs,
    kustomize: PathBuf,
    helm: PathBuf,
    timeout_ms: u64,
    max_objects: usize,
    max_bytes: u64,
    policy: confine::Policy,
    allow_unconfined: bool,
    /// Raise the walls, render nothing, report them.
    probe: bool,
    /// Decrypt this render of `path` instead of rendering it.
    decrypt: Option<DecryptJob>,
}

/// A decryption: the render as cached (encrypted) and the identities, as an identity file.
#[derive(Debug, Serialize, Deserialize)]
struct DecryptJob {
    rendered: Rendered,
    identities: String,
}

/// What a worker answers (on its stdout).
#[derive(Debug, Serialize, Deserialize)]
struct Response {
    walls: Walls,
    result: Result<Rendered, RenderError>,
    /// The answer to a [`DecryptJob`].
    decrypted: Option<Result<Option<Rendered>, crate::decrypt::DecryptError>>,
}

/// Time the worker gets beyond the render timeout (its own deadline fires first) before its group is killed.
const GRACE: Duration = Duration::from_secs(2);

/// The walls the last worker reported: what `/readyz`, `ferry version` and the metric show.
static LAST_WALLS: Mutex<Option<Walls>> = Mutex::new(None);

/// The walls the most recent worker raised, if one ran.
pub fn last_walls() -> Option<Walls> {
    LAST_WALLS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn record(walls: &Walls) {
    crate::metrics::metrics().render_sandbox(walls.holds());
    *LAST_WALLS.lock().unwrap_or_else(|e| e.into_inner()) = Some(walls.clone());
}

/// Starts a worker that raises its walls and renders nothing: which walls this kernel and runtime allow.
pub async fn probe(worker: &WorkerSettings) -> Result<Walls, RenderError> {
    let scratch = scratch_dir(false)?;
    let settings = RenderSettings::default();
    let request = request(
        worker,
        scratch.path(),
        scratch.path(),
        ".",
        &settings,
        &HelmInputs::default(),
        true,
    );
    let response = run_worker(worker, scratch.path(), &request, &settings).await?;
    record(&response.walls);
    Ok(response.walls)
}

/// Renders `path` of the tree at `root` in a confined worker.
pub async fn render(
    worker: &WorkerSettings,
    root: &Path,
    path: &str,
    settings: &RenderSettings,
    helm_inputs: &HelmInputs,
) -> Result<Rendered, RenderError> {
    let root = root
        .canonicalize()
        .map_err(|_| RenderError::PathNotFound(path.to_string()))?;
    let scratch = scratch_dir(false)?;
    let request = request(worker, &root, scratch.path(), path, settings, helm_inputs, false);
    let response = run_worker(worker, scratch.path(), &request, settings).await?;
    record(&response.walls);
    response.result
}

/// Decrypts a render of `path` (see [`crate::decrypt::decrypt_render`]) in a confined worker: the sops files
/// and kustomizations are tenant content too. Its scratch directory, where decrypted `secretGenerator` sources
/// are written for kustomize, is memory-backed.
pub async fn decrypt(
    worker: &WorkerSettings,
    root: &Path,
    path: &str,
    rendered: &Rendered,
    keys: &crate::decrypt::Keyring,
    settings: &RenderSettings,
) -> Result<Option<Rendered>, crate::decrypt::DecryptError> {
    let root = root
        .canonicalize()
        .map_err(|_| RenderError::PathNotFound(path.to_string()))?;
    let scratch = scratch_dir(true)?;
    let mut request = request(
        worker,
        &root,
        scratch.path(),
        path,
        settings,
        &HelmInputs::default(),
        false,
    );
    request.decrypt = Some(DecryptJob {
        rendered: rendered.clone(),
        identities: keys.to_identity_file(),
    });
    let response = run_worker(worker, scratch.path(), &request, settings).await?;
    record(&response.walls);
    response
        .decrypted
        .unwrap_or_else(|| Err(RenderError::Worker("the render worker did not decrypt".to_string()).into()))
}

/// A fresh scratch directory: memory-backed (`/dev/shm`) when it will hold plaintext.
fn scratch_dir(in_memory: bool) -> Result<tempfile::TempDir, RenderError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("ferry-render-");
    let made = match in_memory {
        true => builder.tempdir_in(super::disk::memory_backed_dir()),
        false => builder.tempdir(),
    };
    made.map_err(|e| RenderError::Io(format!("creating the render scratch directory: {e}")))
}

fn request(
    worker: &WorkerSettings,
    root: &Path,
    scratch: &Path,
    path: &str,
    settings: &RenderSettings,
    helm_inputs: &HelmInputs,
    probe: bool,
) -> Request {
    // The worker has no PATH: it gets the renderers' real paths, and may execute exactly those.
    let real = |p: &Path| {
        let found = resolve_program(p);
        found.canonicalize().unwrap_or(found)
    };
    let (kustomize, helm) = (real(&settings.kustomize), real(&settings.helm));
    let execute = [&kustomize, &helm]
        .into_iter()
        .filter(|p| p.is_file())
        .cloned()
        .collect();
    let mut limits = worker.limits;
    // A process may use CPU for as long as the render may last, plus a margin (threads add up).
    limits.cpu_seconds = limits.cpu_seconds.min(settings.timeout.as_secs().saturating_mul(2) + 1);
    limits.file_bytes = limits.file_bytes.max(settings.max_bytes);
    Request {
        root: root.to_path_buf(),
        path: path.to_string(),
        helm_inputs: helm_inputs.clone(),
        kustomize,
        helm,
        timeout_ms: u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX),
        max_objects: settings.max_objects,
        max_bytes: settings.max_bytes,
        policy: confine::Policy {
            read: vec![root.to_path_buf()],
            execute,
            scratch: scratch.to_path_buf(),
            limits,
            // SAFETY: no arguments.
            run_as: (unsafe { libc::geteuid() } == 0).then_some(confine::UNPRIVILEGED_UID),
        },
        allow_unconfined: worker.allow_unconfined,
        probe,
        decrypt: None,
    }
}

/// Runs one worker to its end: the request in, the answer out (bounded), the whole process group killed
/// whatever happened, the exit read.
async fn run_worker(
    worker: &WorkerSettings,
    scratch: &Path,
    request: &Request,
    settings: &RenderSettings,
) -> Result<Response, RenderError> {
    let input = serde_json::to_vec(request).map_err(|e| RenderError::Io(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(&worker.program);
    cmd.arg(WORKER_ARG)
        .env_clear()
        .env("TMPDIR", scratch)
        .current_dir(scratch)
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Tests that show the sandbox holding on its own switch the field checks off; never in release builds.
    #[cfg(debug_assertions)]
    if let Some(skip) = std::env::var_os(super::kustomize::SKIP_CHECKS_VAR) {
        cmd.env(super::kustomize::SKIP_CHECKS_VAR, skip);
    }
    let mut child = cmd.spawn().map_err(|e| {
        RenderError::Worker(format!(
            "cannot start the render worker {}: {e}",
            worker.program.display()
        ))
    })?;
    let group = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
    // Whatever happens to this future (a web view diff whose viewer left, a shutdown), the group goes with it.
    let guard = KillGroup(group);
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RenderError::Worker("the render worker has no pipes".to_string()));
    };
    let limit = answer_limit(settings.max_bytes);
    let exchange = async {
        let write = async {
            // A worker that dies early closes its stdin: what it says on stderr explains more than EPIPE.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async { stdout.take(limit + 1).read_to_end(&mut out).await };
        let read_err = super::kustomize::drain_keeping(stderr, &mut err);
        let ((), read, _) = tokio::join!(write, read_out, read_err);
        read.map_err(|e| RenderError::Io(e.to_string()))?;
        Ok::<_, RenderError>((out, err))
    };
    let exchanged = tokio::time::timeout(settings.timeout + GRACE, exchange).await;
    // Before the worker is reaped its pid cannot be reused, so the group it leads is still exactly its own:
    // whatever it left running (seccomp keeps all of it in the group) goes now.
    drop(guard);
    let status = child.wait().await.map_err(|e| RenderError::Io(e.to_string()))?;
    if let Some(group) = group {
        reap_group(group).await;
    }
    let Ok(exchanged) = exchanged else {
        return Err(RenderError::Timeout(settings.timeout.as_secs()));
    };
    let (out, err) = exchanged?;
    if out.len() as u64 > limit {
        return Err(RenderError::TooManyBytes {
            what: "the render worker's answer".to_string(),
            limit,
        });
    }
    if let Some(failure) = exit_failure(status, &err, &request.policy.limits) {
        return Err(failure);
    }
    serde_json::from_slice(&out)
        .map_err(|e| RenderError::Worker(format!("unreadable answer from the render worker: {e}")))
}

/// The largest answer a worker may give: the YAML (at most `--max-render-bytes`) and the objects parsed from
/// it. The worker refuses to send more (`TooManyBytes`), so the controller never parses more.
pub(crate) fn answer_limit(max_bytes: u64) -> u64 {
    max_bytes.saturating_mul(2).saturating_add(1 << 20)
}

/// Kills a worker's process group when dropped.
struct KillGroup(Option<libc::pid_t>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            // SAFETY: a signal to a process group this process created (its leader not reaped yet).
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    }
}

/// Reaps what the killed group leaves to this process: in a container Ferry is PID 1, and a killed
/// kustomize's children are handed to it; nothing else would ever wait for them. Stops when none is left
/// (or after a second: the rest are someone else's to reap).
async fn reap_group(group: libc::pid_t) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a process group this process created, without blocking.
        let r = unsafe { libc::waitpid(-group, &mut status, libc::WNOHANG) };
        if r < 0 || std::time::Instant::now() > deadline {
            return;
        }
        if r == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why a worker that did not exit 0 failed, named by the limit when one was hit.
fn exit_failure(status: std::process::ExitStatus, stderr: &[u8], limits: &Limits) -> Option<RenderError> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return None;
    }
    let said = String::from_utf8_lossy(stderr);
    if said.contains("memory allocation of") || said.contains("out of memory") {
        return Some(RenderError::LimitExceeded(format!(
            "memory ({} MiB per process)",
            limits.memory_bytes >> 20
        )));
    }
    if status.signal() == Some(libc::SIGXCPU) {
        return Some(RenderError::LimitExceeded(format!(
            "CPU time ({} s per process)",
            limits.cpu_seconds
        )));
    }
    let tail: String = said
        .trim()
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let how = match (status.signal(), status.code()) {
        (Some(sig), _) => format!("was killed by signal {sig}"),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_string(),
    };
    Some(RenderError::Worker(if tail.is_empty() {
        format!("the render worker {how}")
    } else {
        format!("the render worker {how}: {tail}")
    }))
}
