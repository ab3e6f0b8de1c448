//! Full-text search over items (`GET /api/v1/search/items`).
//!
//! Each process that serves the API owns a Tantivy index on local disk, a
//! projection of the event log kept by its [`indexer`]; the index holds
//! only what queries need and results are loaded from the database.
//!
//! - [`schema`]: fields and text analysis (stemming language from
//!   `search.language`);
//! - [`index`]: generations on disk, the live one, documents and commits;
//! - [`indexer`]: follows the log (outbox or this node's JetStream
//!   consumer), rebuilds when there is no usable index, and [`rebuild`]
//!   for `atlas search reindex`;
//! - [`query`]: the query language; [`engine`]: sorting, paging, typo
//!   fallback and highlights;
//! - routes: the HTTP endpoint, whose permission filter is built in one
//!   place from the caller's memberships and whose results are re-checked
//!   against them.
//!
//! It reads items through the `ItemService`, feeds their `index_status`
//! through the `IndexStatus` the items module provides, and knows nothing
//! of how memberships are stored (the `CollectionGuard` answers).

pub mod engine;
pub mod index;
pub mod indexer;
pub mod query;
mod routes;
pub mod schema;
pub mod stem;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_db::Database;
use atlas_events::nats::NatsLog;
use atlas_items::{IndexStatus, ItemService};
use atlas_kernel::settings::{Broker, Settings};
use atlas_kernel::{AppContext, Module, ModuleError, ReadinessCheck};

pub use index::{IndexDir, LiveIndex};
pub use indexer::{rebuild, EventSource, Indexer, IndexerState, RebuildReport};

/// Errors of the search module.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(tantivy::TantivyError),
    #[error(
        "search index: another process is writing this index (two Atlas processes on one data directory? \
         each api process needs a data_dir of its own)"
    )]
    Locked,
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error("search: {0}")]
    Json(#[from] serde_json::Error),
    #[error("search: database: {0}")]
    Database(#[from] atlas_db::sqlx::Error),
    #[error("search: reading items: {0}")]
    Load(String),
    #[error("search: event log: {0}")]
    Log(String),
    #[error("search index: {0}")]
    Schema(String),
    #[error("{0}")]
    Config(String),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        match e {
            tantivy::TantivyError::LockFailure(..) => SearchError::Locked,
            other => SearchError::Index(other),
        }
    }
}

/// The search module.
#[derive(Default)]
pub struct SearchModule {
    tasks: atlas_kernel::ModuleTasks,
}

atlas_kernel::register_module!(SearchModule);

/// What `init` sets up in a process that serves the API.
struct SearchRuntime {
    live: LiveIndex,
    state: Arc<IndexerState>,
    dir: IndexDir,
    routes: routes::SearchState,
}

/// The index directory of these settings.
pub fn index_dir(settings: &Settings) -> Result<IndexDir, SearchError> {
    let language = schema::language(&settings.search.language)?;
    Ok(IndexDir::new(settings.search.dir_in(&settings.data_dir), language).with_query_threads(query_threads(settings)))
}

/// `search.query_threads`, where 0 means one per CPU core, at most 8.
fn query_threads(settings: &Settings) -> usize {
    match settings.search.query_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n as usize,
    }
}

/// Where this node's indexer reads events: the outbox, or its own durable
/// JetStream consumer `search-<node>`.
pub fn event_source(settings: &Settings, nats: Option<NatsLog>, dir: &IndexDir) -> Result<EventSource, SearchError> {
    match (settings.events.broker, nats) {
        (Broker::Embedded, _) => Ok(EventSource::Outbox),
        (Broker::Nats, Some(log)) => {
            let node = match &settings.search.node_name {
                Some(n) => n.clone(),
                None => node_name(dir.root())?,
            };
            Ok(EventSource::Nats {
                log: Box::new(log),
                durable: format!("search-{node}"),
            })
        }
        (Broker::Nats, None) => Err(SearchError::Config(
            "search: events.broker is nats but no NATS connection".into(),
        )),
    }
}

/// A node name generated once into the index directory.
fn node_name(root: &Path) -> Result<String, SearchError> {
    std::fs::create_dir_all(root)?;
    let path = root.join("node-name");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let name = uuid::Uuid::now_v7().simple().to_string();
            std::fs::write(&path, &name)?;
            Ok(name)
        }
    }
}

#[async_trait]
impl Module for SearchModule {
    fn name(&self) -> &'static str {
        "search"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["collections", "events", "identity", "items"]
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let settings = ctx.settings();
        let dir = index_dir(settings)?;
        if !settings.server.role.serves_api() {
            // Worker processes neither serve searches nor keep an index.
            return Ok(());
        }
        std::fs::create_dir_all(dir.root())?;
        let live = LiveIndex::default();
        ctx.require::<IndexStatus>()?.set_source(Arc::new(live.clone()));
        let state = Arc::new(IndexerState::default());
        ctx.add_readiness_check(Arc::new(SearchReadiness {
            live: live.clone(),
            state: state.clone(),
        }));
        let routes = routes::SearchState {
            live: live.clone(),
            items: ctx.require::<ItemService>()?,
            auth: ctx.require::<Authenticator>()?,
            guard: ctx.require::<CollectionGuard>()?,
            status: ctx.require::<IndexStatus>()?,
            cursors: atlas_http::CursorCodec::new(ctx.server_secret()),
            fuzzy_below: settings.search.fuzzy_below as usize,
        };
        ctx.provide::<SearchRuntime>(Arc::new(SearchRuntime {
            live,
            state,
            dir,
            routes,
        }));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let runtime = ctx.get::<SearchRuntime>()?;
        Some(routes::router(runtime.routes.clone()))
    }

    /// Processes that serve the API run their indexer.
    async fn start(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let Some(runtime) = ctx.get::<SearchRuntime>() else {
            return Ok(());
        };
        let settings = ctx.settings();
        let source = event_source(settings, ctx.get::<NatsLog>().map(|l| (*l).clone()), &runtime.dir)?;
        let indexer = Indexer {
            dir: runtime.dir.clone(),
            live: runtime.live.clone(),
            items: (*ctx.require::<ItemService>()?).clone(),
            db: ctx.db().clone(),
            source,
            settings: settings.search.clone(),
            poll_interval: Duration::from_millis(settings.events.poll_interval_ms.max(10)),
            state: runtime.state.clone(),
        };
        let shutdown = ctx.shutdown_token().child_token();
        let handle = tokio::spawn(indexer.run(shutdown));
        self.tasks.push(handle);
        Ok(())
    }

    async fn stop(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        ctx.shutdown_token().cancel();
        self.tasks.join(Duration::from_secs(10), "search: the indexer").await;
        Ok(())
    }
}

/// `/ready`: the index is open and its indexer follows the log.
struct SearchReadiness {
    live: LiveIndex,
    state: Arc<IndexerState>,
}

#[async_trait]
impl ReadinessCheck for SearchReadiness {
    fn name(&self) -> &str {
        "search"
    }

    async fn check(&self) -> Result<serde_json::Value, String> {
        let error = self.state.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.live.get() {
            Some(generation) if self.state.ready.load(Ordering::Relaxed) => Ok(serde_json::json!({
                "documents": generation.num_docs(),
                "generation": generation.name,
                "position": self.state.position.load(Ordering::Relaxed),
                "lag": self.state.lag.load(Ordering::Relaxed),
                "last_error": error,
            })),
            _ => Err(error.unwrap_or_else(|| "the search index is being built".into())),
        }
    }
}

/// Open a database and rebuild the index for `atlas search reindex`.
pub async fn reindex_all(settings: &Settings, db: &Database) -> Result<RebuildReport, SearchError> {
    let dir = index_dir(settings)?;
    std::fs::create_dir_all(dir.root())?;
    let nats = match settings.events.broker {
        Broker::Nats => Some(
            NatsLog::connect(&settings.events.nats)
                .await
                .map_err(|e| SearchError::Log(e.to_string()))?,
        ),
        Broker::Embedded => None,
    };
    let source = event_source(settings, nats, &dir)?;
    let items = ItemService::new(db.clone());
    let report = rebuild(&dir, &items, db, &source, &settings.search).await?;
    dir.remove_stale(&report.generation);
    Ok(report)
}

/// What `atlas search reindex --collection` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionReindex {
    /// Done in this process: this many documents.
    Done(u64),
    /// A running server holds the index: it was asked to do it.
    Requested,
}

/// Re-index one collection in place (one commit, so searches see the old
/// documents until the new ones), or ask the server holding the index.
pub async fn reindex_collection(
    settings: &Settings,
    db: &Database,
    collection_id: &str,
) -> Result<CollectionReindex, SearchError> {
    let dir = index_dir(settings)?;
    let Some(name) = dir.current_name()? else {
        return Err(SearchError::Config(
            "there is no search index yet; run `atlas search reindex` without --collection".into(),
        ));
    };
    let generation = dir.open(&name)?;
    match generation
        .index
        .writer::<tantivy::TantivyDocument>(settings.search.writer_memory_mb as usize * 1024 * 1024)
    {
        Ok(mut writer) => {
            let items = ItemService::new(db.clone());
            let n = indexer::reindex_collection(&generation, &writer, &items, collection_id).await?;
            let payload = generation.payload()?.ok_or_else(|| {
                SearchError::Schema("the index has no recorded log position; run `atlas search reindex`".into())
            })?;
            index::commit(&generation, &mut writer, &payload)?;
            Ok(CollectionReindex::Done(n))
        }
        Err(tantivy::TantivyError::LockFailure(..)) => {
            let requests = indexer::requests_dir(&dir);
            std::fs::create_dir_all(&requests)?;
            let safe: String = collection_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            std::fs::write(requests.join(safe), "")?;
            Ok(CollectionReindex::Requested)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_on_one_index_is_told_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (schema, _) = schema::Fields::schema();
        let index = tantivy::Index::create_in_dir(dir.path(), schema).unwrap();
        let _first = index.writer::<tantivy::TantivyDocument>(15_000_000).unwrap();
        let second: SearchError = index
            .writer::<tantivy::TantivyDocument>(15_000_000)
            .map(|_| ())
            .unwrap_err()
            .into();
        assert!(matches!(second, SearchError::Locked));
        assert!(second.to_string().contains("data_dir of its own"), "{second}");
    }
}
