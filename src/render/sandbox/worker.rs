//! `ferry render-worker`: the child side. Reads the request (from the controller, on stdin), raises its walls
//! while it is still one thread, renders with a single-threaded runtime (every thread and process it starts
//! inherits the walls), and writes the answer as JSON on stdout.

use std::io::{Read, Write};
use std::time::Duration;

use super::{DecryptJob, Request, Response, confine};
use crate::decrypt::{DecryptError, Keyring, decrypt_in_process};
use crate::render::RenderError;
use crate::render::disk::{RenderSettings, Rendered, render_in_process};

/// A request is paths, limits and helm values, and for a decryption the render (bounded by
/// `--max-render-bytes`, about three times over as JSON): far below this.
const MAX_REQUEST: u64 = 1 << 30;

/// The worker's whole life; returns the exit code. Called from `main` before any runtime or thread exists.
pub fn worker_main() -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_REQUEST).read_to_end(&mut input) {
        eprintln!("render worker: reading the request: {e}");
        return 2;
    }
    let request: Request = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("render worker: the request is not understood: {e}");
            return 2;
        }
    };
    drop(input);
    let walls = confine::confine(&request.policy);
    let exec_refusal = (!walls.holds() && !request.allow_unconfined).then(|| walls.problems.join("; "));
    let empty = || Rendered::new(String::new(), Vec::new(), false, Vec::new());
    let settings = settings(&request, exec_refusal);
    let (result, decrypted) = match (&request.decrypt, request.probe) {
        (_, true) => (Ok(empty()), None),
        (Some(job), false) => (Ok(empty()), Some(decrypt(&request, job, &settings))),
        (None, false) => (render(&request, &settings), None),
    };
    let mut response = Response {
        walls,
        result,
        decrypted,
    };
    let Ok(mut answer) = serde_json::to_vec(&response) else {
        return 3;
    };
    // Never more than the controller reads: YAML anchors in a chart's output can make the objects far larger
    // than the YAML the limit was checked on.
    let limit = super::answer_limit(request.max_bytes);
    if answer.len() as u64 > limit {
        let too_many = || RenderError::TooManyBytes {
            what: "the rendered objects".to_string(),
            limit,
        };
        response.result = Err(too_many());
        response.decrypted = response.decrypted.map(|_| Err(too_many().into()));
        let Ok(refusal) = serde_json::to_vec(&response) else {
            return 3;
        };
        answer = refusal;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(&answer).is_err() || stdout.flush().is_err() {
        return 3;
    }
    0
}

fn settings(request: &Request, exec_refusal: Option<String>) -> RenderSettings {
    RenderSettings {
        kustomize: request.kustomize.clone(),
        helm: request.helm.clone(),
        timeout: Duration::from_millis(request.timeout_ms),
        max_objects: request.max_objects,
        max_bytes: request.max_bytes,
        cache_bytes: 0,
        sandbox: Default::default(),
        exec_refusal,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RenderError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RenderError::Io(format!("starting the worker's runtime: {e}")))
}

fn render(request: &Request, settings: &RenderSettings) -> Result<Rendered, RenderError> {
    runtime()?.block_on(render_in_process(
        &request.root,
        &request.path,
        settings,
        &request.helm_inputs,
    ))
}

fn decrypt(request: &Request, job: &DecryptJob, settings: &RenderSettings) -> Result<Option<Rendered>, DecryptError> {
    let keys = Keyring::parse(job.identities.as_bytes(), "the controller's identities")?;
    runtime()?.block_on(decrypt_in_process(
        &request.root,
        &request.path,
        &job.rendered,
        &keys,
        settings,
    ))
}
