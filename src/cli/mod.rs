//! The `ferry` commands people run, as library functions, one module per job: `render` and `diff` (the
//! engine's render and dry run), the promotion pipeline (`get`, `promote`, `approve`, `reject`, `rollback`,
//! `history`), `reconcile`/`suspend`/`resume`, `events`, `tree` and `version`.
//!
//! [`args`] holds the command line (clap); each command's body is a `run` function (`run_<command>` where
//! one module serves several commands) in the module that holds its logic; [`run`] is `ferry run`, the
//! controller process.

pub mod args;
pub mod diff;
pub mod events;
pub mod images;
pub mod pipeline;
mod policy;
mod progress;
pub mod reconcile;
pub mod render;
pub mod run;
mod target;
pub mod tree;
pub mod ui;
pub mod version;

pub use crate::format::{Group, group_inventory, mask_secret, promotion_order, short_revision, unified};
pub use diff::{
    DiffError, EnvironmentDiff, diff_environment, diff_environment_at, diff_environment_checked, diff_local,
    environment_revision, render_local, render_local_decrypted,
};
pub use events::{EventRow, events, ferry_events, format_events};
pub use images::{format_images, images};
pub use pipeline::{
    CliError, approve, format_history, format_pipeline, history, pipeline, promote, reject, resolve_verified, rollback,
};
pub use policy::{
    PolicyFileError, check as check_registry_policy, cluster_policies, format_violations, policies_from_files,
    unchecked_encrypted,
};
pub use progress::{Progress, color_allowed, color_enabled};
pub use reconcile::{
    Reconcilable, Reconciled, Verdict, reconcile_environment, reconcile_gitrepository, request_reconcile,
    set_suspended, verdict, wait_reconciled,
};
pub use target::environment_target;
pub use tree::{format_tree, show_health, tree};
pub use version::{controller_version, image_tag};
