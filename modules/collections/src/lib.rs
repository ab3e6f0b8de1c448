//! Collections and their members (`/api/v1/collections/*`).
//!
//! Provides to other modules: the [`CollectionGuard`](atlas_auth::CollectionGuard)
//! (roles come from this module's `memberships` table) and
//! [`CollectionHooks`], through which a module removes its own rows, with
//! their events, inside the transaction that deletes a collection.

mod routes;
mod store;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_db::sqlx::AnyConnection;
use atlas_events::EventContext;
use atlas_http::ApiError;
use atlas_kernel::{AppContext, Module, ModuleError};
use include_dir::{include_dir, Dir};

pub use routes::Collection;

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

#[derive(Default)]
pub struct CollectionsModule;

atlas_kernel::register_module!(CollectionsModule);

/// Called inside the transaction that deletes a collection.
#[async_trait]
pub trait CollectionDeletionHook: Send + Sync + 'static {
    /// Delete what belongs to `collection_id` and append its delete events.
    async fn on_collection_deleted(
        &self,
        conn: &mut AnyConnection,
        collection_id: &str,
        ev: &EventContext,
    ) -> Result<(), ApiError>;
}

/// Hooks other modules register during `init`.
#[derive(Default)]
pub struct CollectionHooks {
    deletion: RwLock<Vec<Arc<dyn CollectionDeletionHook>>>,
}

impl CollectionHooks {
    pub fn on_delete(&self, hook: Arc<dyn CollectionDeletionHook>) {
        self.deletion.write().unwrap_or_else(|e| e.into_inner()).push(hook);
    }

    pub(crate) fn deletion_hooks(&self) -> Vec<Arc<dyn CollectionDeletionHook>> {
        self.deletion.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Module for CollectionsModule {
    fn name(&self) -> &'static str {
        "collections"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["events", "identity"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let policy = Arc::new(atlas_auth::policy_from_settings(&ctx.settings().auth).await?);
        let guard = Arc::new(CollectionGuard::new(
            policy,
            Arc::new(store::DbRoles::new(ctx.db().clone())),
        ));
        let hooks = Arc::new(CollectionHooks::default());
        ctx.provide::<CollectionGuard>(guard.clone());
        ctx.provide::<CollectionHooks>(hooks.clone());
        let state = routes::CollectionsState {
            db: ctx.db().clone(),
            auth: ctx.require::<Authenticator>()?,
            guard,
            hooks,
            users: ctx.require::<dyn atlas_identity::UserDirectory>()?,
            cursors: atlas_http::CursorCodec::new(ctx.server_secret()),
        };
        ctx.provide::<routes::CollectionsState>(Arc::new(state));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let state = ctx.get::<routes::CollectionsState>()?;
        Some(routes::router((*state).clone()))
    }
}
