//! Links the business modules selected by cargo features into the binary.
//! Each module registers itself with the kernel through `inventory`; naming
//! the crate here is what makes the linker keep that registration.

#[cfg(feature = "audit")]
use atlas_audit as _;
#[cfg(feature = "collections")]
use atlas_collections as _;
use atlas_events as _;
#[cfg(feature = "identity")]
use atlas_identity as _;
#[cfg(feature = "items")]
use atlas_items as _;
#[cfg(feature = "jobs")]
use atlas_jobs as _;
#[cfg(feature = "realtime")]
use atlas_realtime as _;
#[cfg(feature = "rules")]
use atlas_rules as _;
#[cfg(feature = "search")]
use atlas_search as _;
#[cfg(feature = "ui")]
use atlas_ui as _;
