//! A read-only web view of the pipeline: per namespace the Environments in promotion order with what runs
//! where and what waits for whom, an Environment's inventory and history, a Promotion's timeline, and the
//! dry-run diff of a waiting Promotion. Pages are server-rendered ([`pages`], pure functions over API objects)
//! and complete without JavaScript; a few lines of script follow server-sent events fed by watches
//! ([`data`]) to refresh a page within a second of a change.
//!
//! `ferry ui` serves it on loopback with the caller's kubeconfig; `ferry run --ui-addr` serves it in the
//! cluster, where viewers sign in with a Kubernetes token and see only what they may list ([`auth`]); what
//! Ferry reads through an Environment's kubeconfig Secret only if they may read that Secret ([`redact`]).

pub mod auth;
pub mod csrf;
pub mod data;
pub mod pages;
pub mod redact;
pub mod server;

pub use data::{Backend, Change, Data};
pub use server::{Mode, Ui, router, serve};
