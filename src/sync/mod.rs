//! The sync engine, in one place. [`plan`] is the pipeline from a revision to the objects to apply (fetch,
//! render, image digests in [`images`], decryption), shared by the Environment controller and `ferry diff
//! --environment`; [`decide`] holds its decisions, pure (unchanged? new attempt? drift? the health clock);
//! [`failure`] is how a step's error becomes a condition reason.
//!
//! The steady-state side: what each Environment last applied ([`applied`]) and the watches on the applied
//! objects ([`watches`]; one set per target cluster in [`remote`]). Together they let a sync of an unchanged
//! revision, whose objects nobody touched, finish without asking the API server anything, and let a hand edit
//! wake its Environment at once. Anything else (a new revision or spec, an edited or deleted object, a kind
//! that cannot be watched, the periodic full check) goes through the dry-run path in [`crate::apply`], exactly
//! as before.

pub mod applied;
pub mod capabilities;
pub mod decide;
pub mod failure;
pub(crate) mod history;
pub mod images;
pub mod plan;
pub mod remote;
pub mod watches;

pub use applied::{AppliedRecord, AppliedRecords, MustSync, fingerprint, must_sync};
pub use capabilities::CapabilityCache;
pub use failure::Failure;
pub use images::Pinned;
pub use plan::{Copies, Pipeline, Prepared, apply_options};
pub use remote::{RemoteWatches, WatchSetInfo};
pub use watches::OwnedObjectWatches;
