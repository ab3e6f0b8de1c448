//! The Atlas kernel: the [`Module`] trait and its registry, the application
//! lifecycle, layered [`Settings`] and the shared [`AppContext`].
//!
//! The kernel composes the framework crates (`atlas-db`, `atlas-http`,
//! `atlas-telemetry`); it knows nothing about users, collections or items.

mod app;
mod context;
mod module;
mod ops;
mod registry;
pub mod settings;

pub use app::{shutdown_signal, Atlas, ConsumerSet};
pub use context::{AppContext, ModuleNames, ReadinessCheck};
pub use module::{Consumer, Module, ModuleError, ModuleRegistration, ModuleTasks};
pub use registry::ModuleRegistry;
pub use settings::{ConfigError, Profile, Role, Secret, Settings, SettingsSource};

#[doc(hidden)]
pub use inventory;

/// Startup and lifecycle errors; each names the module or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("module `{0}` is registered twice")]
    DuplicateModule(String),
    #[error("module `{module}` depends on `{dependency}`, which is not compiled in (is its cargo feature off?)")]
    MissingDependency { module: String, dependency: String },
    #[error("modules {0:?} depend on each other in a cycle")]
    DependencyCycle(Vec<String>),
    #[error("module `{module}` failed to {phase}: {source}")]
    Lifecycle {
        module: String,
        phase: &'static str,
        #[source]
        source: ModuleError,
    },
    #[error("module `{module}`: {source}")]
    Migrations {
        module: String,
        #[source]
        source: atlas_db::MigrationError,
    },
    #[error(
        "{pending} database migration(s) pending (the first: {first}) and database.auto_migrate is off: \
         run `atlas migrate up` with this version, then start again"
    )]
    NotMigrated { pending: usize, first: String },
    #[error(transparent)]
    Migration(#[from] atlas_db::MigrationError),
    #[error(transparent)]
    Database(#[from] atlas_db::DbError),
    #[error("data directory {0}: {1}")]
    DataDir(String, #[source] std::io::Error),
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
}
