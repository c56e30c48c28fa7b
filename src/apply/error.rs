//! How the API server's answers become [`ApplyError`]s: refusals only a change to the object can fix,
//! refusals by authorization, and the server's own trouble (retried); failure lists bounded so a status message
//! stays readable.

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The server's dry run refused objects (invalid, unknown kind, missing namespace, …): nothing of the set
    /// was applied. Every failing object is listed.
    #[error("{} object(s) would be rejected, nothing was applied: {}", failures.len(), listed(failures))]
    Invalid { failures: Vec<String> },
    /// Objects of kinds that CRDs of the same revision define can only be dry-run once those CRDs exist, so
    /// the first stage (CRDs, Namespaces) was written before they were refused. Said plainly, as the one case
    /// where a refused revision leaves something applied.
    #[error(
        "{} object(s) would be rejected, nothing of them was applied; the first stage was applied before they \
         could be checked (created: {}): {}",
        failures.len(),
        if created.is_empty() { "none".to_string() } else { created.join(", ") },
        listed(failures)
    )]
    InvalidAfterFirstStage {
        created: Vec<String>,
        failures: Vec<String>,
    },
    /// Fields are owned by another declarative applier; `spec.force` takes them over.
    #[error("{} conflict(s) with other field managers, nothing was applied (set spec.force to take ownership): {}", failures.len(), listed(failures))]
    Conflict { failures: Vec<String> },
    /// The identity the Environment applies with (its ServiceAccount, or Ferry's own) may not do this. The API
    /// server's message names the user, the verb and the object. Found by the dry run, nothing of the set was
    /// applied; found by prune, the other stale objects were still deleted.
    #[error("{} request(s) forbidden: {}", failures.len(), listed(failures))]
    Forbidden { failures: Vec<String> },
    #[error("CustomResourceDefinition {0} did not become Established")]
    NotEstablished(String),
    #[error("{object} was rejected: {message}")]
    Rejected { object: String, message: String },
    #[error("talking to the API server failed for {object}: {}", with_causes(.source))]
    Api {
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// An error and what caused it, as one line: a client's "client error (SendRequest)" says little without the
/// "connection timed out" or "connection refused" under it. Causes already quoted by their parent are not
/// repeated.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let shown = cause.to_string();
        if !shown.is_empty() && !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        next = cause.source();
    }
    text
}

/// The first failures, each cut short: a revision with thousands of refused objects still gets a message a
/// person can read and a status the API server accepts.
fn listed(failures: &[String]) -> String {
    const SHOWN: usize = 10;
    const EACH: usize = 600;
    let mut out: Vec<String> = failures
        .iter()
        .take(SHOWN)
        .map(|f| {
            if f.len() <= EACH {
                return f.clone();
            }
            // Head and tail: the object comes first, and the API server puts why last.
            let mut head = EACH / 2;
            while !f.is_char_boundary(head) {
                head -= 1;
            }
            let mut tail = f.len() - EACH / 2;
            while !f.is_char_boundary(tail) {
                tail += 1;
            }
            format!("{} ... {}", &f[..head], &f[tail..])
        })
        .collect();
    if failures.len() > SHOWN {
        out.push(format!("and {} more", failures.len() - SHOWN));
    }
    out.join("; ")
}

impl ApplyError {
    /// A refusal by authorization, for one object.
    pub(super) fn forbidden(object: String, status: &kube::core::Status) -> Self {
        ApplyError::Forbidden {
            failures: vec![format!("{object}: {}", status.message)],
        }
    }
}

/// A refusal that only a change to the object can fix. Authentication, authorization, timeouts, throttling
/// and optimistic-lock conflicts are the API server's or the install's problem and are retried.
/// Server-side apply answers 500 for an object whose fields have the wrong type ("failed to create typed patch
/// object ... expected string, got ..."): the object is what is wrong, so retrying it would never end.
pub(super) fn client_error(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(status) if [400, 404, 405, 406, 413, 415, 422].contains(&status.code) => Some(status),
        kube::Error::Api(status) if status.code == 500 && status.message.starts_with(TYPED_PATCH_FAILURE) => {
            Some(status)
        }
        _ => None,
    }
}

const TYPED_PATCH_FAILURE: &str = "failed to create typed patch object";

/// A refusal by authorization: the Environment's identity may not do this (until someone grants it).
pub(super) fn forbidden(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(status) if status.code == 403 => Some(status),
        _ => None,
    }
}

/// An API server error for `object`, told apart when it is an authorization refusal.
pub(super) fn api_or_forbidden(object: String, source: kube::Error) -> ApplyError {
    match forbidden(&source) {
        Some(status) => ApplyError::forbidden(object, status),
        None => ApplyError::Api { object, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_patch_failure_is_the_object_s_fault_and_other_500s_are_the_server_s() {
        let status = |code: u16, message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.to_string(),
                ..Default::default()
            }))
        };
        let typed = status(
            500,
            "failed to create typed patch object (ns/x; apps/v1, Kind=Deployment): .spec.replicas: expected numeric",
        );
        assert!(client_error(&typed).is_some());
        assert!(client_error(&status(500, "etcdserver: request timed out")).is_none());
        assert!(client_error(&status(422, "Deployment.apps \"x\" is invalid")).is_some());
    }

    #[test]
    fn failure_lists_are_bounded() {
        let failures: Vec<String> = (0..5000)
            .map(|i| format!("v1/ConfigMap c{i}: {}", "x".repeat(2000)))
            .collect();
        let message = ApplyError::Invalid { failures }.to_string();
        assert!(message.len() < 10 * 700, "{}", message.len());
        assert!(message.starts_with("5000 object(s)") && message.ends_with("and 4990 more"));
        let long = ApplyError::Invalid {
            failures: vec![format!(
                "v1/ConfigMap {}: must be no more than 253 characters",
                "a".repeat(900)
            )],
        };
        assert!(long.to_string().ends_with("must be no more than 253 characters"));
    }
}
