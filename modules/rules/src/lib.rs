//! Rules: YAML automations with CEL conditions that react to events, and
//! signed webhooks.
//!
//! - [`yaml`]: rule text (YAML or JSON) with the position of every node;
//!   [`rule`]: the rule language and its load-time checks; [`template`]:
//!   `${event.…}` in action arguments; [`eval`]: which rules an event
//!   triggers.
//! - [`book`]: the rules in force — global rules from `rules.dir` (hot
//!   reloaded) and each collection's rules from [`store`] (versioned).
//! - [`engine`]: the `rules` consumer carrying out actions, with the chain
//!   depth limit and the self-trigger guard; [`webhook`]: the `webhooks`
//!   consumer delivering signed requests and logging each attempt.
//! - `routes`: `/collections/{id}/rules`, `/rules/validate`, `/rules/test`,
//!   `/webhooks/deliveries`.

pub mod book;
pub mod engine;
pub mod eval;
mod routes;
pub mod rule;
pub mod store;
pub mod template;
pub mod webhook;
pub mod yaml;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_collections::{CollectionDeletionHook, CollectionHooks};
use atlas_db::sqlx::AnyConnection;
use atlas_events::EventContext;
use atlas_http::ApiError;
use atlas_items::ItemService;
use atlas_jobs::{JobHandlers, JobQueue, JobScope};
use atlas_kernel::{AppContext, Consumer, Module, ModuleError};
use include_dir::{include_dir, Dir};

use crate::book::RuleBook;
use crate::engine::{Firings, RuleConsumer, RulesEngine};
use crate::rule::{Catalog, LoadOptions, TypeScope};
use crate::store::RuleStore;
use crate::webhook::WebhookDispatcher;

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// How often old `rule_firings` rows are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct RulesModule {
    tasks: atlas_kernel::ModuleTasks,
}

atlas_kernel::register_module!(RulesModule);

/// What the module built in `init`.
struct RulesRuntime {
    book: Arc<RuleBook>,
    engine: Arc<RuleConsumer<RulesEngine>>,
    dispatcher: Arc<RuleConsumer<WebhookDispatcher>>,
    state: routes::RulesState,
}

fn scope_of(scope: JobScope) -> TypeScope {
    match scope {
        JobScope::Item => TypeScope::Item,
        JobScope::Admin => TypeScope::Admin,
        JobScope::Internal => TypeScope::Internal,
    }
}

/// The job and workflow types rules may start in this process.
fn catalog(handlers: &JobHandlers, queue: &JobQueue) -> Catalog {
    let jobs = handlers
        .types()
        .into_iter()
        .filter_map(|t| handlers.get(t).map(|h| (t.to_string(), scope_of(h.scope()))))
        .collect();
    let workflows = queue
        .workflows()
        .names()
        .into_iter()
        .filter_map(|n| queue.workflows().get(n).map(|d| (n.to_string(), scope_of(d.scope))))
        .collect();
    Catalog { jobs, workflows }
}

/// The job and workflow types of this build, known without a running
/// server (for `atlas rules check`).
pub fn builtin_catalog() -> Catalog {
    let workflows = atlas_jobs::WorkflowTypes::builtin();
    Catalog {
        jobs: atlas_jobs::BUILTIN_JOB_TYPES
            .iter()
            .map(|(t, s)| (t.to_string(), scope_of(*s)))
            .collect(),
        workflows: workflows
            .names()
            .into_iter()
            .filter_map(|n| workflows.get(n).map(|d| (n.to_string(), scope_of(d.scope))))
            .collect(),
    }
}

/// Check rule files as the server would load them: `(file, problems)` for
/// each file with problems.
pub fn check_files(
    files: &[std::path::PathBuf],
    collection: bool,
    secret_envs: &[String],
) -> Vec<(String, Vec<rule::RuleIssue>)> {
    let options = LoadOptions {
        catalog: Some(builtin_catalog()),
        collection,
        allowed_secret_envs: secret_envs.to_vec(),
    };
    files
        .iter()
        .filter_map(|f| {
            let name = f.display().to_string();
            let issues = match std::fs::read_to_string(f) {
                Ok(text) => rule::parse(&text, &options).err()?,
                Err(e) => vec![rule::RuleIssue {
                    line: 1,
                    column: 1,
                    message: format!("cannot read the file: {e}"),
                }],
            };
            Some((name, issues))
        })
        .collect()
}

#[async_trait]
impl Module for RulesModule {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["collections", "events", "identity", "items", "jobs"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let settings = ctx.settings().rules.clone();
        let queue = ctx.require::<JobQueue>()?;
        let catalog = catalog(&*ctx.require::<JobHandlers>()?, &queue);
        let global_options = LoadOptions {
            catalog: Some(catalog.clone()),
            collection: false,
            allowed_secret_envs: Vec::new(),
        };
        let collection_options = LoadOptions {
            catalog: Some(catalog),
            collection: true,
            allowed_secret_envs: settings.collection_secret_envs.clone(),
        };
        let background = ctx.db().background();
        let store = RuleStore::new(ctx.db().clone());
        let book = Arc::new(RuleBook::new(
            settings.dir.clone(),
            global_options,
            collection_options,
            RuleStore::new(background.clone()),
        ));
        book.reload_and_log();
        let firings = Firings::new(background.clone());
        let items = ctx.require::<ItemService>()?;
        let engine = Arc::new(RuleConsumer(RulesEngine {
            book: book.clone(),
            firings: firings.clone(),
            items,
            queue: Some(queue),
            max_depth: settings.max_chain_depth,
        }));
        let policy = atlas_jobs::ssrf::AddressPolicy::new(&settings.webhook_allow_networks)
            .map_err(|e| format!("rules.webhook_allow_networks: {e}"))?;
        let dispatcher = Arc::new(RuleConsumer(WebhookDispatcher {
            book: book.clone(),
            firings,
            db: background,
            policy,
            timeout: Duration::from_millis(settings.webhook_timeout_ms),
            max_depth: settings.max_chain_depth,
        }));
        let state = routes::RulesState {
            auth: ctx.require::<Authenticator>()?,
            guard: ctx.require::<CollectionGuard>()?,
            store,
            book: book.clone(),
            db: ctx.db().clone(),
            cursors: atlas_http::CursorCodec::new(ctx.server_secret()),
        };
        ctx.require::<CollectionHooks>()?
            .on_delete(Arc::new(DeleteRulesWithCollection));
        ctx.provide(Arc::new(RulesRuntime {
            book,
            engine,
            dispatcher,
            state,
        }));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let runtime = ctx.get::<RulesRuntime>()?;
        Some(routes::router(runtime.state.clone()))
    }

    fn consumers(&self, ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        ctx.get::<RulesRuntime>()
            .map(|r| vec![r.engine.clone() as Arc<dyn Consumer>, r.dispatcher.clone()])
            .unwrap_or_default()
    }

    /// Watch the rules directory, and (where background work runs) prune
    /// old firings.
    async fn start(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let runtime = ctx.require::<RulesRuntime>()?;
        let settings = &ctx.settings().rules;
        let interval = Duration::from_millis(settings.reload_interval_ms.max(100));
        self.tasks.push(tokio::spawn(book::watch(
            runtime.book.clone(),
            interval,
            ctx.shutdown_token().child_token(),
        )));
        if ctx.settings().server.role.runs_workers() {
            let firings = runtime.engine.0.firings.clone();
            let hours = ctx.settings().events.processed_retention_hours.max(1);
            let stop = ctx.shutdown_token().child_token();
            self.tasks.push(tokio::spawn(async move {
                loop {
                    match firings.prune(hours).await {
                        Ok(n) if n > 0 => tracing::debug!(pruned = n, "old rule firings pruned"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning rule firings failed"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
                    }
                }
            }));
        }
        Ok(())
    }

    async fn stop(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        ctx.shutdown_token().cancel();
        self.tasks.join(Duration::from_secs(5), "a rules task").await;
        Ok(())
    }
}

/// Removes a deleted collection's rules and their versions.
struct DeleteRulesWithCollection;

#[async_trait]
impl CollectionDeletionHook for DeleteRulesWithCollection {
    async fn on_collection_deleted(
        &self,
        conn: &mut AnyConnection,
        collection_id: &str,
        _ev: &EventContext,
    ) -> Result<(), ApiError> {
        store::delete_collection(conn, collection_id)
            .await
            .map_err(ApiError::internal)
    }
}
