//! Kernel and HTTP-surface tests over real servers (SQLite and PostgreSQL).

// Link the fixture modules so their `inventory` registrations are present.
use atlas_dummy_modules as _;

mod contract;
mod features;
mod lifecycle;
mod shutdown;
