//! Registry policy: which images the rendered objects of an Environment may run. Pure: policies and image
//! fields in, violations out, so every rule is unit-tested without a cluster. The Environment controller calls
//! [`evaluate`] on the final render *before the dry run*; `ferry render`/`ferry diff` call it too.

mod selector;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use selector::{SelectorError, selects};

use crate::api::{
    Enforcement, PolicyViolation, PolicyViolationCount, PolicyViolations, RegistryPolicy, RegistryPolicySpec,
};
use crate::images::{ImageField, ImageReference, RegistryPrefix, image_fields};
use crate::render::RenderedObject;

/// Rule names, as they appear in `status.policyViolations[].rule` and messages.
pub const UNTRUSTED_REGISTRY: &str = "UntrustedRegistry";
pub const DIGEST_REQUIRED: &str = "DigestRequired";
pub const INVALID_REFERENCE: &str = "InvalidReference";
pub const INVALID_POLICY: &str = "InvalidPolicy";

/// How many violations an Environment's status lists (the total is always counted).
pub const STATUS_VIOLATIONS_MAX: usize = 50;
/// The longest condition / Event message built from violations.
pub const MESSAGE_MAX: usize = 3000;

/// What is wrong with a policy's spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("allowedRegistries is empty: list at least one registry prefix, e.g. prod.example.io/team/")]
    NoRegistries,
    #[error("allowedRegistries[{index}]: {source}")]
    Prefix {
        index: usize,
        source: crate::images::PrefixError,
    },
    #[error("environmentSelector: {0}")]
    Selector(#[from] SelectorError),
}

/// A policy's spec, checked once: its prefixes parsed.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub name: String,
    pub enforcement: Enforcement,
    pub require_digest: bool,
    prefixes: Vec<RegistryPrefix>,
}

/// Parses a policy's allowed registries and checks its selector.
pub fn compile(name: &str, spec: &RegistryPolicySpec) -> Result<CompiledPolicy, PolicyError> {
    if spec.allowed_registries.is_empty() {
        return Err(PolicyError::NoRegistries);
    }
    let prefixes = spec
        .allowed_registries
        .iter()
        .enumerate()
        .map(|(index, p)| RegistryPrefix::parse(p).map_err(|source| PolicyError::Prefix { index, source }))
        .collect::<Result<Vec<_>, _>>()?;
    selector::validate(&spec.environment_selector)?;
    Ok(CompiledPolicy {
        name: name.to_string(),
        enforcement: spec.enforcement,
        require_digest: spec.require_digest,
        prefixes,
    })
}

impl CompiledPolicy {
    /// The rules `image` breaks.
    pub fn check_image(&self, image: &str) -> Vec<&'static str> {
        let reference = match ImageReference::parse(image) {
            Ok(r) => r,
            Err(_) => return vec![INVALID_REFERENCE],
        };
        let mut broken = Vec::new();
        if !self.prefixes.iter().any(|p| p.matches(&reference)) {
            broken.push(UNTRUSTED_REGISTRY);
        }
        if self.require_digest && reference.digest().is_none() {
            broken.push(DIGEST_REQUIRED);
        }
        broken
    }
}

/// Where the Environment is: what selectors look at.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// Everything the policies found in one render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Sorted by policy, object, container, rule.
    pub violations: Vec<PolicyViolation>,
}

/// Checks `objects` (and the verification Job template, if any) against every policy that selects the
/// subject. A policy whose spec is invalid yields one `InvalidPolicy` violation: a broken Deny policy fails
/// closed rather than letting everything through.
pub fn evaluate(policies: &[RegistryPolicy], subject: &Subject, objects: &[RenderedObject]) -> Evaluation {
    evaluate_with(policies, subject, objects, None)
}

/// [`evaluate`] with one more object (the verification Job) without copying the render.
pub fn evaluate_with(
    policies: &[RegistryPolicy],
    subject: &Subject,
    objects: &[RenderedObject],
    extra: Option<&RenderedObject>,
) -> Evaluation {
    let mut fields = image_fields(objects);
    if let Some(extra) = extra {
        fields.extend(crate::images::pod_specs::object_image_fields(
            &extra.object,
            objects.len(),
        ));
    }
    let mut violations = Vec::new();
    for policy in policies {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let spec = &policy.spec;
        match selects(&spec.environment_selector, subject.namespace, subject.labels) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                violations.push(invalid(&name, spec.enforcement, &PolicyError::Selector(e)));
                continue;
            }
        }
        let compiled = match compile(&name, spec) {
            Ok(c) => c,
            Err(e) => {
                violations.push(invalid(&name, spec.enforcement, &e));
                continue;
            }
        };
        violations.extend(check_fields(&compiled, &fields));
    }
    violations.sort();
    violations.dedup();
    Evaluation { violations }
}

fn invalid(policy: &str, enforcement: Enforcement, error: &PolicyError) -> PolicyViolation {
    PolicyViolation {
        policy: policy.to_string(),
        enforcement,
        rule: INVALID_POLICY.to_string(),
        object: format!("RegistryPolicy {policy}: {error}"),
        container: String::new(),
        image: String::new(),
    }
}

/// The violations of one compiled policy among `fields`.
pub fn check_fields(policy: &CompiledPolicy, fields: &[ImageField]) -> Vec<PolicyViolation> {
    let mut out = Vec::new();
    for field in fields {
        for rule in policy.check_image(&field.image) {
            let l = &field.location;
            let object = match &l.namespace {
                Some(ns) => format!("{} {}/{}", l.kind, ns, l.name),
                None => format!("{} {}", l.kind, l.name),
            };
            out.push(PolicyViolation {
                policy: policy.name.clone(),
                enforcement: policy.enforcement,
                rule: rule.to_string(),
                object,
                container: format!("{} {}", l.container_kind, l.container),
                image: field.image.clone(),
            });
        }
    }
    out
}

/// The name the verification Job's template is reported under.
pub const VERIFICATION_OBJECT: &str = "spec.verification.jobTemplate";

/// Ferry's own verification Job as a rendered object, so its images are checked with the rest.
pub fn verification_object(job_template: &Value) -> Option<RenderedObject> {
    let spec = job_template.get("spec")?.clone();
    Some(RenderedObject {
        source: VERIFICATION_OBJECT.to_string(),
        object: json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": VERIFICATION_OBJECT},
            "spec": spec,
        }),
    })
}

impl Evaluation {
    /// A Deny policy found something: nothing of the revision may be applied.
    pub fn denied(&self) -> bool {
        self.violations.iter().any(|v| v.enforcement == Enforcement::Deny)
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// Only the violations of one enforcement mode.
    pub fn of(&self, enforcement: Enforcement) -> Vec<&PolicyViolation> {
        self.violations
            .iter()
            .filter(|v| v.enforcement == enforcement)
            .collect()
    }

    /// `status.policyViolations`: counts per policy, the first [`STATUS_VIOLATIONS_MAX`] violations.
    pub fn status(&self, revision: &str) -> Option<PolicyViolations> {
        if self.violations.is_empty() {
            return None;
        }
        let mut counts: BTreeMap<(&str, Enforcement), u32> = BTreeMap::new();
        for v in &self.violations {
            *counts.entry((v.policy.as_str(), v.enforcement)).or_default() += 1;
        }
        Some(PolicyViolations {
            revision: revision.to_string(),
            total: u32::try_from(self.violations.len()).unwrap_or(u32::MAX),
            policies: counts
                .into_iter()
                .map(|((policy, enforcement), violations)| PolicyViolationCount {
                    policy: policy.to_string(),
                    enforcement,
                    violations,
                })
                .collect(),
            violations: self.violations.iter().take(STATUS_VIOLATIONS_MAX).cloned().collect(),
        })
    }

    /// One line per violation of the given mode, cut at [`MESSAGE_MAX`] characters with a count of the rest.
    pub fn message(&self, enforcement: Enforcement) -> String {
        let list = self.of(enforcement);
        let mut out = format!(
            "{} image policy violation{}: ",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        );
        for (i, v) in list.iter().enumerate() {
            let line = describe(v);
            let sep = if i == 0 { "" } else { "; " };
            if out.len() + sep.len() + line.len() > MESSAGE_MAX {
                out.push_str(&format!(
                    "; and {} more (see status.policyViolations or `ferry diff`)",
                    list.len() - i
                ));
                break;
            }
            out.push_str(sep);
            out.push_str(&line);
        }
        out
    }
}

/// `Deployment team/web, container app: image "evil.io/x:1" is not from an allowed registry (RegistryPolicy prod)`.
pub fn describe(v: &PolicyViolation) -> String {
    let image: String = v.image.chars().take(300).collect();
    let what = match v.rule.as_str() {
        UNTRUSTED_REGISTRY => format!("image {image:?} is not from an allowed registry"),
        DIGEST_REQUIRED => format!("image {image:?} is not pinned by digest"),
        INVALID_REFERENCE => format!("image {image:?} is not a valid image reference"),
        _ => return format!("{} ({})", v.object, v.rule),
    };
    format!(
        "{}, {}: {what} ({} {}, RegistryPolicy {})",
        v.object, v.container, v.rule, v.enforcement, v.policy
    )
}

#[cfg(test)]
mod tests;
