//! Items and tags (`/api/v1/collections/{id}/items`, `/api/v1/items/{id}`,
//! `/api/v1/collections/{id}/tags`).
//!
//! Every write checks the caller's role through the `CollectionGuard`, runs
//! in one transaction with its `Item*` event in the outbox, and bumps the
//! item's `version` (optimistic concurrency through `If-Match`).
//!
//! Other modules read and change items through the [`ItemService`] it
//! provides, which takes the same write path. An item's `index_status` comes
//! from the [`IndexStatus`] it provides, which search (when built in) feeds.

mod index_status;
mod model;
mod routes;
mod service;

use std::sync::Arc;

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_collections::{CollectionDeletionHook, CollectionHooks};
use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_events::EventContext;
use atlas_http::ApiError;
use atlas_kernel::{AppContext, Module, ModuleError};
use include_dir::{include_dir, Dir};

pub use index_status::{IndexStatus, IndexedVersions};
pub use model::Item;
pub use service::{ItemChange, ItemService};

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

#[derive(Default)]
pub struct ItemsModule;

atlas_kernel::register_module!(ItemsModule);

#[async_trait]
impl Module for ItemsModule {
    fn name(&self) -> &'static str {
        "items"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["collections", "events", "identity"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        ctx.require::<CollectionHooks>()?
            .on_delete(Arc::new(DeleteItemsWithCollection));
        let index_status = Arc::new(IndexStatus::default());
        ctx.provide::<IndexStatus>(index_status.clone());
        let state = routes::ItemsState {
            index_status,
            db: ctx.db().clone(),
            auth: ctx.require::<Authenticator>()?,
            guard: ctx.require::<CollectionGuard>()?,
            cursors: atlas_http::CursorCodec::new(ctx.server_secret()),
        };
        ctx.provide::<routes::ItemsState>(Arc::new(state));
        ctx.provide::<ItemService>(Arc::new(ItemService::new(ctx.db().clone())));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let state = ctx.get::<routes::ItemsState>()?;
        Some(routes::router((*state).clone()))
    }
}

/// Deletes a collection's items, one `ItemDeleted` event each.
struct DeleteItemsWithCollection;

#[async_trait]
impl CollectionDeletionHook for DeleteItemsWithCollection {
    async fn on_collection_deleted(
        &self,
        conn: &mut AnyConnection,
        collection_id: &str,
        ev: &EventContext,
    ) -> Result<(), ApiError> {
        let ids: Vec<String> = sqlx::query("SELECT id FROM items WHERE collection_id = $1 ORDER BY id")
            .bind(collection_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(ApiError::internal)?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)?;
        for id in &ids {
            let envelope = ev.envelope(
                "ItemDeleted",
                model::item_entity(id, collection_id),
                model::deleted_data(id, collection_id),
            );
            atlas_events::append(conn, &envelope)
                .await
                .map_err(ApiError::internal)?;
        }
        sqlx::query("DELETE FROM items WHERE collection_id = $1")
            .bind(collection_id)
            .execute(&mut *conn)
            .await
            .map_err(ApiError::internal)?;
        sqlx::query("DELETE FROM tags WHERE collection_id = $1")
            .bind(collection_id)
            .execute(&mut *conn)
            .await
            .map_err(ApiError::internal)?;
        Ok(())
    }
}
