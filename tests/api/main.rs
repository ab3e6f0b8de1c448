//! HTTP tests of the whole application (identity, collections, items and
//! the outbox), each run against SQLite and PostgreSQL.

// Link the modules so their registrations are present in this binary.
use atlas_audit as _;
use atlas_collections as _;
use atlas_events as _;
use atlas_identity as _;
use atlas_items as _;
use atlas_jobs as _;
use atlas_realtime as _;
use atlas_rules as _;
use atlas_search as _;

mod audit;
mod auth;
mod collections;
mod helpers;
mod items;
mod jobs;
mod outbox;
mod rbac;
mod realtime;
mod rules;
mod search;
