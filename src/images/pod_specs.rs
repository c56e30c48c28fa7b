//! Every image field of every pod template in a render: containers, initContainers and ephemeralContainers
//! of Pods and of the workload kinds that embed a pod template. Each field comes with a location (object,
//! container kind and name) for messages, and a JSON pointer into the object so it can be rewritten in place
//! (pinning `repo:tag@sha256:…`, moving an image to another registry).

use std::fmt;

use serde_json::Value;

use crate::render::RenderedObject;

/// Which list of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerKind {
    Container,
    InitContainer,
    EphemeralContainer,
}

impl ContainerKind {
    pub const ALL: [ContainerKind; 3] = [
        ContainerKind::Container,
        ContainerKind::InitContainer,
        ContainerKind::EphemeralContainer,
    ];

    /// The pod spec field holding this kind's list.
    pub fn field(self) -> &'static str {
        match self {
            ContainerKind::Container => "containers",
            ContainerKind::InitContainer => "initContainers",
            ContainerKind::EphemeralContainer => "ephemeralContainers",
        }
    }
}

impl fmt::Display for ContainerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerKind::Container => "container",
            ContainerKind::InitContainer => "initContainer",
            ContainerKind::EphemeralContainer => "ephemeralContainer",
        })
    }
}

/// Where an image field is: which object, which container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageLocation {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub container_kind: ContainerKind,
    pub container: String,
}

impl fmt::Display for ImageLocation {
    /// `Deployment team/web, initContainer migrate`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name)?,
            None => write!(f, "{} {}", self.kind, self.name)?,
        }
        write!(f, ", {} {}", self.container_kind, self.container)
    }
}

/// One image field of a rendered object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageField {
    /// Index of the object in the slice given to [`image_fields`].
    pub object: usize,
    pub location: ImageLocation,
    /// JSON pointer (RFC 6901) to the `image` string inside the object, e.g.
    /// `/spec/template/spec/containers/0/image`; list indices, so no escaping is ever needed.
    pub pointer: String,
    /// The image as written; empty when the field is missing or not a string (which the runtime cannot pull).
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodSpecError {
    #[error("{0} is not an image field of this object")]
    NotAnImageField(String),
}

/// The JSON pointer of the pod spec in an object of this apiVersion/kind, if it has one.
pub fn pod_spec_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match (group, kind) {
        ("", "Pod") => Some("/spec"),
        ("", "PodTemplate") => Some("/template/spec"),
        ("", "ReplicationController") => Some("/spec/template/spec"),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template/spec")
        }
        ("batch", "Job") => Some("/spec/template/spec"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The image fields of one object, in pod-spec order (containers, initContainers, ephemeralContainers).
pub fn object_image_fields(object: &Value, index: usize) -> Vec<ImageField> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(spec_pointer) = pod_spec_pointer(api_version, kind) else {
        return Vec::new();
    };
    let Some(spec) = object.pointer(spec_pointer) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for container_kind in ContainerKind::ALL {
        let Some(list) = spec.get(container_kind.field()).and_then(Value::as_array) else {
            continue;
        };
        for (i, container) in list.iter().enumerate() {
            out.push(ImageField {
                object: index,
                location: ImageLocation {
                    kind: kind.to_string(),
                    namespace: object["metadata"]["namespace"].as_str().map(str::to_string),
                    name: object["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    container_kind,
                    container: container["name"].as_str().unwrap_or_default().to_string(),
                },
                pointer: format!("{spec_pointer}/{}/{i}/image", container_kind.field()),
                image: container["image"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    out
}

/// Every image field of every rendered object.
pub fn image_fields(objects: &[RenderedObject]) -> Vec<ImageField> {
    objects
        .iter()
        .enumerate()
        .flat_map(|(i, o)| object_image_fields(&o.object, i))
        .collect()
}

/// Replaces the image at `pointer` (from [`ImageField::pointer`]) in `object`.
pub fn set_image(object: &mut Value, pointer: &str, image: &str) -> Result<(), PodSpecError> {
    if !pointer.ends_with("/image") {
        return Err(PodSpecError::NotAnImageField(pointer.to_string()));
    }
    let container_pointer = &pointer[..pointer.len() - "/image".len()];
    match object.pointer_mut(container_pointer).and_then(Value::as_object_mut) {
        Some(container) => {
            container.insert("image".to_string(), Value::String(image.to_string()));
            Ok(())
        }
        None => Err(PodSpecError::NotAnImageField(pointer.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(object: Value) -> RenderedObject {
        RenderedObject {
            source: "x.yaml".to_string(),
            object,
        }
    }

    fn pod_spec() -> Value {
        json!({
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "prod.example.io/team/app:1"}, {"name": "side", "image": "envoy"}],
            "ephemeralContainers": [{"name": "debug", "image": "debian"}],
        })
    }

    #[test]
    fn finds_images_in_every_workload_kind() {
        let objects = vec![
            obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": pod_spec()}),
            ),
            obj(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
            obj(
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
            obj(
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
            obj(
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
            obj(
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
            obj(
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}}),
            ),
            obj(
                json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
            obj(
                json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "pt"}, "template": {"spec": pod_spec()}}),
            ),
            obj(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"image": "x"}})),
            // a custom kind that happens to be called Deployment runs no pods
            obj(
                json!({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": pod_spec()}}}),
            ),
        ];
        let fields = image_fields(&objects);
        assert_eq!(fields.len(), 9 * 4);
        for (i, o) in objects.iter().enumerate().take(9) {
            let mine: Vec<_> = fields.iter().filter(|f| f.object == i).collect();
            assert_eq!(mine.len(), 4, "{}", o.kind());
            for f in mine {
                assert_eq!(
                    o.object.pointer(&f.pointer).and_then(Value::as_str),
                    Some(f.image.as_str())
                );
                assert_eq!(f.location.kind, o.kind());
            }
        }
        let cron: Vec<_> = fields.iter().filter(|f| f.location.kind == "CronJob").collect();
        assert_eq!(
            cron[0].pointer,
            "/spec/jobTemplate/spec/template/spec/containers/0/image"
        );
        assert_eq!(cron[0].location.to_string(), "CronJob c, container app");
        let pod: Vec<_> = fields.iter().filter(|f| f.location.kind == "Pod").collect();
        let kinds: Vec<_> = pod
            .iter()
            .map(|f| (f.location.container_kind, f.location.container.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ContainerKind::Container, "app"),
                (ContainerKind::Container, "side"),
                (ContainerKind::InitContainer, "init"),
                (ContainerKind::EphemeralContainer, "debug"),
            ]
        );
        assert_eq!(pod[2].location.to_string(), "Pod ns/p, initContainer init");
    }

    #[test]
    fn missing_or_odd_fields_do_not_panic() {
        let objects = vec![
            obj(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}})),
            obj(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": "nope"}}}}),
            ),
            obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": 5}, {"name": "b"}, 7]}}),
            ),
        ];
        let fields = image_fields(&objects);
        assert_eq!(fields.len(), 3);
        assert!(fields.iter().all(|f| f.image.is_empty()));
        assert_eq!(fields[0].location.container, "a");
    }

    #[test]
    fn rewrites_an_image_in_place() {
        let mut o = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec()}}}}});
        let fields = object_image_fields(&o, 0);
        let init = fields.iter().find(|f| f.location.container == "init").unwrap();
        set_image(&mut o, &init.pointer, "docker.io/library/busybox:1@sha256:abc").unwrap();
        let after = object_image_fields(&o, 0);
        assert_eq!(
            after.iter().find(|f| f.location.container == "init").unwrap().image,
            "docker.io/library/busybox:1@sha256:abc"
        );
        assert_eq!(after.iter().filter(|f| f.image.contains("@")).count(), 1);
        assert!(set_image(&mut o, "/spec/nope/0/image", "x").is_err());
        assert!(set_image(&mut o, "/metadata/name", "x").is_err());
    }
}
