//! Container images in rendered objects: references parsed as the runtime parses them ([`reference`]),
//! registry prefixes matched at path boundaries ([`prefix`]), and every image field of every pod template
//! ([`pod_specs`]). Shared by the registry policy and by digest resolution.

pub mod pinning;
pub mod pod_specs;
pub mod prefix;
pub mod reference;

pub use pod_specs::{ContainerKind, ImageField, ImageLocation, image_fields, set_image};
pub use prefix::{PrefixError, RegistryPrefix};
pub use reference::{ImageReference, ReferenceError};
