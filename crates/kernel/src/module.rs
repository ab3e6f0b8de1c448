//! The `Module` trait and its registration.

use std::sync::Arc;

use async_trait::async_trait;
use atlas_db::Migration;
use atlas_http::ModuleRouter;

use crate::context::AppContext;

/// Errors a module returns from its lifecycle hooks.
pub type ModuleError = Box<dyn std::error::Error + Send + Sync>;

/// A unit of functionality: its tables, routes, consumers and lifecycle.
///
/// Modules never call each other's internals; they share small service
/// traits through [`AppContext::provide`] and talk through events.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// Unique, lowercase name; also the migration ledger's module key.
    fn name(&self) -> &'static str;

    /// Modules that must be initialized and started before this one.
    fn depends_on(&self) -> &'static [&'static str] {
        &[]
    }

    /// This module's migrations, in both SQL dialects.
    fn migrations(&self) -> Result<Vec<Migration>, atlas_db::MigrationError> {
        Ok(Vec::new())
    }

    /// Routes mounted under `/api/v1`, with their OpenAPI paths. Called after
    /// every module's `init`.
    fn routes(&self, _ctx: &AppContext) -> Option<ModuleRouter> {
        None
    }

    /// Serves requests outside `/api/v1` that no other route matches: a web
    /// UI's files, and its page for client-side routes. Called after every
    /// module's `init`. At most one module should provide it; when several
    /// do, the last in module order wins.
    fn fallback(&self, _ctx: &AppContext) -> Option<axum::Router> {
        None
    }

    /// Extra OpenAPI content (schemas, tags) beyond what `routes` documents.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// Event consumers this module contributes.
    fn consumers(&self, _ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        Vec::new()
    }

    /// Prepare state and provide services to other modules.
    async fn init(&self, _ctx: &AppContext) -> Result<(), ModuleError> {
        Ok(())
    }

    /// Begin background work. Runs in dependency order.
    async fn start(&self, _ctx: &AppContext) -> Result<(), ModuleError> {
        Ok(())
    }

    /// Finish background work. Runs in reverse dependency order.
    async fn stop(&self, _ctx: &AppContext) -> Result<(), ModuleError> {
        Ok(())
    }
}

/// A durable event consumer: a name, the event types it wants, a handler.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Durable name (its offset and dead letters are kept under it).
    fn name(&self) -> &str;
    /// Event types it handles; empty means all.
    fn event_types(&self) -> &[&'static str];
    /// Handle one event envelope (JSON). An error means "retry later".
    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError>;

    /// Most events the runtime hands to [`handle_batch`](Consumer::handle_batch)
    /// at once; 1 (the default) means one at a time through `handle`.
    fn batch_size(&self) -> usize {
        1
    }

    /// Whether the handler itself makes a second delivery of the same
    /// `event_id` a no-op (say, a unique key on it in the rows it writes).
    /// The runtime then keeps no processed records for this consumer and
    /// leaves duplicates to the handler, saving a lookup and an insert per
    /// event. The default, `false`, lets the runtime skip redeliveries.
    fn idempotent(&self) -> bool {
        false
    }

    /// Whether [`handle_batch`](Consumer::handle_batch) opens each event's
    /// own span itself (handling events one by one inside a batch). When
    /// not, the runtime gives every event of a batch a span of its own that
    /// lasts as long as the batch.
    fn spans_each_event(&self) -> bool {
        false
    }

    /// Handle several events, in log order, as one unit: all take effect or
    /// none. An error makes the runtime hand the same events to `handle`
    /// one at a time (with retries and dead letters as usual). The default
    /// calls `handle` for each.
    async fn handle_batch(&self, envelopes: &[&serde_json::Value]) -> Result<(), ModuleError> {
        for envelope in envelopes {
            self.handle(envelope).await?;
        }
        Ok(())
    }
}

/// A compiled-in module, collected with `inventory`.
pub struct ModuleRegistration {
    pub factory: fn() -> Arc<dyn Module>,
}

inventory::collect!(ModuleRegistration);

/// Register a module type (which must implement `Default`) with the kernel.
#[macro_export]
macro_rules! register_module {
    ($ty:ty) => {
        $crate::inventory::submit! {
            $crate::ModuleRegistration {
                factory: || ::std::sync::Arc::new(<$ty as ::std::default::Default>::default()),
            }
        }
    };
}

/// Background tasks a module started and waits for when it stops.
#[derive(Default)]
pub struct ModuleTasks(std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>);

impl ModuleTasks {
    pub fn push(&self, handle: tokio::task::JoinHandle<()>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
    }

    pub fn extend(&self, handles: impl IntoIterator<Item = tokio::task::JoinHandle<()>>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(handles);
    }

    /// Wait for every task (they watch the shutdown token), each at most
    /// `limit`; one that overruns is logged as `what` and left behind.
    pub async fn join(&self, limit: std::time::Duration, what: &str) {
        let handles: Vec<_> = self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for handle in handles {
            if tokio::time::timeout(limit, handle).await.is_err() {
                tracing::warn!("{what} did not stop within {} s", limit.as_secs());
            }
        }
    }
}
