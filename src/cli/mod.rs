//! The `ferry` commands people run, as library functions, one module per job: `render` and `diff` (the
//! engine's render and dry run), the promotion pipeline (`get`, `promote`, `approve`, `reject`, `rollback`,
//! `history`), `reconcile`/`suspend`/`resume`, `events`, `tree` and `version`.

mod diff;
mod events;
mod images;
mod pipeline;
mod policy;
mod progress;
mod reconcile;
mod target;
mod tree;
mod version;

pub use diff::{
    DiffError, EnvironmentDiff, diff_environment, diff_environment_at, diff_environment_checked, diff_local,
    environment_revision, mask_secret, render_local, render_local_decrypted, unified,
};
pub use events::{EventRow, events, ferry_events, format_events};
pub use images::{format_images, images};
pub use pipeline::{
    CliError, approve, format_history, format_pipeline, history, pipeline, promote, promotion_order, reject,
    resolve_verified, rollback, short_revision,
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
pub use tree::{Group, format_tree, group_inventory, show_health, tree};
pub use version::{controller_version, image_tag};
