//! The steady-state side of the sync engine: what each Environment last applied ([`applied`]) and the watches
//! on the applied objects ([`watches`]; one set per target cluster in [`remote`]). Together they let a sync of an
//! unchanged revision, whose objects nobody touched, finish without asking the API server anything, and let a
//! hand edit wake its Environment at once. Anything else (a new revision or spec, an edited or deleted object, a
//! kind that cannot be watched, the periodic full check) goes through the dry-run path in [`crate::apply`],
//! exactly as before.

pub mod applied;
pub mod remote;
pub mod watches;

pub use applied::{AppliedRecord, AppliedRecords, MustSync, fingerprint, must_sync};
pub use remote::{ClusterIdentity, RemoteWatches, WatchSetInfo};
pub use watches::OwnedObjectWatches;
