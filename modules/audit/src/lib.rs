//! The audit trail: one immutable, hash-chained row per domain event,
//! signed checkpoints, a query API and verification online and offline.
//!
//! - [`sink`]: the consumer that appends a row per event (redacting any
//!   secret-looking field, idempotent by `event_id`);
//! - [`chain`]: the row, and how its hash is computed (the exact canonical
//!   form another program needs to recompute it), over [`canonical`] JSON;
//! - [`store`]: the single chain and why it cannot fork under concurrent
//!   writers;
//! - [`signing`]: the node's Ed25519 key and checkpoints;
//! - [`verify`]: walking a chain and naming its first bad row;
//! - [`bundle`]: NDJSON exports and their offline check;
//! - routes: `GET /api/v1/audit`, `/audit/verify`, `/audit/public-key`.
//!
//! The database refuses UPDATE and DELETE on both audit tables (triggers in
//! the migrations). This module reads only its own tables; who may see
//! which collection comes from the `CollectionGuard`.

pub mod bundle;
pub mod canonical;
pub mod chain;
mod routes;
pub mod signing;
pub mod sink;
pub mod store;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_kernel::{AppContext, Consumer, Module, ModuleError};
use include_dir::{include_dir, Dir};

pub use bundle::{export, verify_bundle, BundleReport, ExportFilter, ExportSummary};
pub use chain::{AuditEntity, AuditRecord, GENESIS_HASH};
pub use signing::{Checkpoint, KeySource, NodeKey, PublicKey, TrustedKeys};
pub use sink::AuditSink;
pub use store::{Appended, AuditStore};
pub use verify::{verify_database, Problem, VerifyReport};

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// Errors of the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit: database: {0}")]
    Database(#[from] atlas_db::sqlx::Error),
    #[error("audit: {0}")]
    Db(#[from] atlas_db::DbError),
    #[error("audit: invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("audit: {0}")]
    Key(#[from] signing::KeyError),
    #[error("audit export: {0}")]
    Export(String),
    #[error("audit export: {0}")]
    Io(#[from] std::io::Error),
}

/// The audit module.
#[derive(Default)]
pub struct AuditModule {
    tasks: atlas_kernel::ModuleTasks,
}

atlas_kernel::register_module!(AuditModule);

/// What `init` sets up, shared with `consumers`, `routes` and `start`.
struct AuditRuntime {
    store: AuditStore,
    key: Arc<NodeKey>,
    sink: Arc<AuditSink>,
    state: routes::AuditState,
}

#[async_trait]
impl Module for AuditModule {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["collections", "events", "identity"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let settings = ctx.settings();
        let (key, source) = NodeKey::load(&settings.audit, &settings.data_dir, true)?.ok_or_else(|| {
            // `load` with `generate = true` always yields a key or an error.
            ModuleError::from("audit: no signing key could be loaded or generated")
        })?;
        match &source {
            KeySource::Generated(path) => {
                tracing::warn!(path = %path.display(), key_id = key.key_id(),
                    "no audit.signing_key configured: generated an audit signing key for this data directory \
                     (configure one, shared by every worker, when running on PostgreSQL)");
            }
            KeySource::DataDir(path) if ctx.db().backend() == atlas_db::Backend::Postgres => {
                tracing::warn!(path = %path.display(), key_id = key.key_id(),
                    "audit checkpoints are signed with a key from this process's data directory; \
                     several workers need one shared audit.signing_key");
            }
            _ => {}
        }
        let key = Arc::new(key);
        let trusted = TrustedKeys::from_settings(&settings.audit, Some(key.public()))?;
        let store = AuditStore::new(ctx.db().clone());
        // The sink is background work: the background pool on PostgreSQL,
        // so request load cannot starve it.
        let sink = Arc::new(AuditSink::new(
            AuditStore::new(ctx.db().background()),
            key.clone(),
            settings.audit.checkpoint_every_rows,
        ));
        let state = routes::AuditState {
            store: store.clone(),
            auth: ctx.require::<Authenticator>()?,
            guard: ctx.require::<CollectionGuard>()?,
            cursors: atlas_http::CursorCodec::new(ctx.server_secret()),
            public_key: key.public().clone(),
            trusted,
        };
        ctx.provide::<AuditRuntime>(Arc::new(AuditRuntime {
            store,
            key,
            sink,
            state,
        }));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let runtime = ctx.get::<AuditRuntime>()?;
        Some(routes::router(runtime.state.clone()))
    }

    fn consumers(&self, ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        ctx.get::<AuditRuntime>()
            .map(|r| vec![r.sink.clone() as Arc<dyn Consumer>])
            .unwrap_or_default()
    }

    /// Processes that run background work also sign a checkpoint of new
    /// rows every `audit.checkpoint_interval_secs`.
    async fn start(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let interval = ctx.settings().audit.checkpoint_interval_secs;
        if !ctx.settings().server.role.runs_workers() || interval == 0 {
            return Ok(());
        }
        let runtime = ctx.require::<AuditRuntime>()?;
        let shutdown = ctx.shutdown_token().child_token();
        let handle = tokio::spawn(async move {
            let period = Duration::from_secs(interval);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                match runtime.store.checkpoint_now(&runtime.key).await {
                    Ok(Some(cp)) => tracing::debug!(sequence = cp.sequence, "audit: periodic checkpoint signed"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "audit: signing a checkpoint failed; will retry"),
                }
            }
        });
        self.tasks.push(handle);
        Ok(())
    }

    async fn stop(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        ctx.shutdown_token().cancel();
        self.tasks
            .join(Duration::from_secs(5), "audit: the checkpoint task")
            .await;
        Ok(())
    }
}
