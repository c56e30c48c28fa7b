//! Digests in the render, pure: which images a render names, which recorded digest stands for each (matched
//! on the normalized reference, so `nginx:1.27` and `docker.io/library/nginx:1.27` are one image), where
//! `promotion.copyImages` sends an image, and the render rewritten to `repo:tag@sha256:…`.

use std::collections::BTreeMap;

use super::pod_specs::{image_fields, set_image};
use super::prefix::{PrefixError, RegistryPrefix};
use super::reference::{ImageReference, ReferenceError};
use crate::api::{CopyImages, ImageRecord};
use crate::render::RenderedObject;

/// The distinct images of a render, as written, in first-seen order.
pub fn distinct_images(objects: &[RenderedObject]) -> Result<Vec<(String, ImageReference)>, ReferenceError> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for field in image_fields(objects) {
        if seen.contains_key(&field.image) {
            continue;
        }
        let parsed = ImageReference::parse(&field.image)?;
        seen.insert(field.image.clone(), ());
        out.push((field.image, parsed));
    }
    Ok(out)
}

/// What identifies an image across renders: the normalized repository and the tag the runtime would pull
/// (or the digest, for a reference without a tag).
pub fn key(image: &ImageReference) -> String {
    match (image.effective_tag(), image.digest()) {
        (Some(tag), _) => format!("{}:{tag}", image.repository()),
        (None, Some(digest)) => format!("{}@{digest}", image.repository()),
        (None, None) => image.repository(),
    }
}

/// The record in `records` that stands for `image`, if any.
pub fn recorded<'a>(records: &'a [ImageRecord], image: &ImageReference) -> Option<&'a ImageRecord> {
    let wanted = key(image);
    records
        .iter()
        .find(|r| ImageReference::parse(&r.image).is_ok_and(|parsed| key(&parsed) == wanted))
}

/// Whether every image of the render has a record.
pub fn covers(records: &[ImageRecord], images: &[(String, ImageReference)]) -> bool {
    images.iter().all(|(_, parsed)| recorded(records, parsed).is_some())
}

/// A `copyImages` rule, checked.
#[derive(Debug, Clone)]
pub struct CopyRule {
    from: RegistryPrefix,
    /// Path components of `from` after the host: what is replaced.
    from_depth: usize,
    to_host: String,
    to_path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyRuleError {
    #[error("copyImages from {0}")]
    From(PrefixError),
    #[error("copyImages to {0}")]
    To(PrefixError),
}

impl CopyRule {
    pub fn parse(rule: &CopyImages) -> Result<CopyRule, CopyRuleError> {
        // `from` names a registry or a path in it: everything under it, at a path boundary.
        let from_text = format!("{}/", rule.from.trim().trim_end_matches('/'));
        let from = RegistryPrefix::parse(&from_text).map_err(CopyRuleError::From)?;
        RegistryPrefix::parse(&format!("{}/", rule.to.trim().trim_end_matches('/'))).map_err(CopyRuleError::To)?;
        let from_body = from_text.trim_end_matches('/');
        let from_depth = from_body.split('/').count() - 1;
        let to = rule.to.trim().trim_end_matches('/');
        let (to_host, to_path) = to.split_once('/').unwrap_or((to, ""));
        Ok(CopyRule {
            from,
            from_depth,
            to_host: to_host.to_ascii_lowercase(),
            to_path: to_path.to_string(),
        })
    }

    /// Where `image` goes (same tag, no digest), if it is under `from`.
    pub fn target(&self, image: &ImageReference) -> Option<ImageReference> {
        if !self.from.matches(image) {
            return None;
        }
        let rest: Vec<&str> = image.path().split('/').skip(self.from_depth).collect();
        let path = match self.to_path.is_empty() {
            true => rest.join("/"),
            false => format!("{}/{}", self.to_path, rest.join("/")),
        };
        let moved = image.with_repository(&self.to_host, &path).ok()?;
        let mut text = moved.repository();
        if let Some(tag) = image.effective_tag() {
            text = format!("{text}:{tag}");
        }
        ImageReference::parse(&text).ok()
    }
}

/// The image to apply for a record: its copy's repository if it was copied, pinned to the digest.
pub fn applied_image(record: &ImageRecord) -> Option<String> {
    let original = ImageReference::parse(&record.image).ok()?;
    let base = match &record.copied_to {
        Some(repository) => {
            let mut text = repository.clone();
            if let Some(tag) = original.effective_tag() {
                text = format!("{text}:{tag}");
            }
            ImageReference::parse(&text).ok()?
        }
        None => original,
    };
    Some(base.with_digest(&record.digest).ok()?.to_string())
}

/// The render with every image that has a record replaced by [`applied_image`].
pub fn rewrite(objects: &[RenderedObject], records: &[ImageRecord]) -> Vec<RenderedObject> {
    let mut out = objects.to_vec();
    for field in image_fields(objects) {
        let Ok(parsed) = ImageReference::parse(&field.image) else {
            continue;
        };
        let Some(new) = recorded(records, &parsed).and_then(applied_image) else {
            continue;
        };
        if let Some(object) = out.get_mut(field.object) {
            // The pointer came from this very object: it is an image field.
            let _ = set_image(&mut object.object, &field.pointer, &new);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn deployment(images: &[&str]) -> RenderedObject {
        let containers: Vec<serde_json::Value> = images
            .iter()
            .enumerate()
            .map(|(i, image)| serde_json::json!({"name": format!("c{i}"), "image": image}))
            .collect();
        RenderedObject {
            source: "web.yaml".into(),
            object: serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"template": {"spec": {"containers": containers, "initContainers": [{"name": "init", "image": "nginx:1.27"}]}}}
            }),
        }
    }

    fn record(image: &str, copied_to: Option<&str>) -> ImageRecord {
        ImageRecord {
            image: image.into(),
            digest: D.into(),
            copied_to: copied_to.map(String::from),
        }
    }

    #[test]
    fn images_are_found_once_and_matched_normalized() {
        let objects = vec![deployment(&["nonprod.io/team/web:1", "nonprod.io/team/web:1"])];
        let images = distinct_images(&objects).unwrap();
        let written: Vec<&str> = images.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(written, ["nonprod.io/team/web:1", "nginx:1.27"]);
        let records = [record("docker.io/library/nginx:1.27", None)];
        assert!(
            recorded(&records, &images[1].1).is_some(),
            "the same image written another way"
        );
        assert!(recorded(&records, &images[0].1).is_none());
        assert!(!covers(&records, &images));
        let bad = vec![deployment(&["Not A Reference"])];
        assert!(distinct_images(&bad).is_err());
    }

    #[test]
    fn pinning_rewrites_every_field_that_has_a_record() {
        let objects = vec![deployment(&["nonprod.io/team/web:1"])];
        let records = [record("nonprod.io/team/web:1", None), record("nginx:1.27", None)];
        let out = rewrite(&objects, &records);
        let spec = &out[0].object["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["image"], format!("nonprod.io/team/web:1@{D}"));
        assert_eq!(
            spec["initContainers"][0]["image"],
            format!("docker.io/library/nginx:1.27@{D}")
        );
        // A digest already written is replaced by the recorded one: what was verified is what runs.
        let written = vec![deployment(&[&format!(
            "nonprod.io/team/web:1@sha256:{}",
            "f".repeat(64)
        )])];
        let out = rewrite(&written, &records);
        assert_eq!(
            out[0].object["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("nonprod.io/team/web:1@{D}")
        );
    }

    #[test]
    fn copy_rules_move_images_at_a_path_boundary() {
        let rule = CopyRule::parse(&CopyImages {
            from: "nonprod.io/team".into(),
            to: "prod.io:5000/apps/team".into(),
            secret_ref: None,
        })
        .unwrap();
        let target = |s: &str| rule.target(&ImageReference::parse(s).unwrap()).map(|r| r.to_string());
        assert_eq!(
            target("nonprod.io/team/web:1").as_deref(),
            Some("prod.io:5000/apps/team/web:1")
        );
        assert_eq!(
            target("nonprod.io/team/sub/web").as_deref(),
            Some("prod.io:5000/apps/team/sub/web:latest")
        );
        assert_eq!(target("nonprod.io/teamx/web:1"), None, "not at a path boundary");
        assert_eq!(target("nonprod.io.evil.com/team/web:1"), None, "another host");
        assert_eq!(
            target("nonprod.io/team"),
            None,
            "the prefix itself is no image under it"
        );
        let copied = record("nonprod.io/team/web:1", Some("prod.io:5000/apps/team/web"));
        assert_eq!(
            applied_image(&copied).unwrap(),
            format!("prod.io:5000/apps/team/web:1@{D}")
        );
        assert!(
            CopyRule::parse(&CopyImages {
                from: "team".into(),
                to: "prod.io".into(),
                secret_ref: None
            })
            .is_err(),
            "from must name a registry host"
        );
    }
}
