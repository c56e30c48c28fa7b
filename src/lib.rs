//! Ferry: a pull-based GitOps operator. Modules follow the data's path:
//! [`api`] types → [`source`] (git) → [`render`] → [`apply`] (apply and prune) → [`controllers`].
//! [`receiver`] turns push webhooks into immediate fetches.

pub mod api;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod controllers;
pub mod decrypt;
pub mod endpoints;
pub mod error;
pub mod format;
pub mod health;
pub mod images;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod promotion;
pub mod receiver;
pub mod registry;
pub mod render;
pub mod secrets;
pub mod source;
pub mod sync;
pub mod ui;
pub mod verify;
