//! Durable jobs and workflows (`/api/v1/jobs`, `/api/v1/workflows`).
//!
//! - [`queue`]: the `jobs` table as a queue — enqueue (idempotency keys,
//!   priorities, `run_at`), cancel, retry, and the workers' side: claim
//!   with a lease, heartbeat, finish, take back expired leases.
//! - [`worker`]: the per-process worker that runs jobs under their time
//!   limit, woken by enqueues, PostgreSQL `NOTIFY` or polling.
//! - [`handler`]: the [`JobHandler`] trait and the registry of job types.
//! - [`workflow`]: workflows whose steps are jobs, their state persisted in
//!   the transaction that finishes each step.
//! - [`enrich`] and [`ssrf`]: `ENRICH_URL` and its SSRF guard; [`builtin`]:
//!   the other job types.
//!
//! Jobs change items only through the items module's [`ItemService`], so
//! their changes carry `ItemUpdated` events like any other. A finished job
//! commits `JobSucceeded` or `JobDead` with its new state.

pub mod builtin;
pub mod enrich;
pub mod handler;
pub mod model;
pub mod queue;
mod routes;
pub mod ssrf;
pub mod worker;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_items::ItemService;
use atlas_kernel::{AppContext, Module, ModuleError};
use include_dir::{include_dir, Dir};

pub use handler::{JobError, JobHandler, JobHandlers, JobRun, JobScope};
pub use model::{Job, JobStatus, Step, StepStatus, Workflow, WorkflowStatus};
pub use queue::{JobFilter, JobQueue, NewJob, Outcome, QueueError};
pub use worker::Worker;
pub use workflow::{WorkflowDefinition, WorkflowTypes};

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// How often queue gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Default)]
pub struct JobsModule {
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

atlas_kernel::register_module!(JobsModule);

/// The job types [`builtin_handlers`] registers, with who may enqueue each:
/// what tools without a running server (`atlas rules check`) know of them.
pub const BUILTIN_JOB_TYPES: &[(&str, JobScope)] = &[
    ("APPLY_DERIVED_TAGS", JobScope::Item),
    ("ENRICH_URL", JobScope::Item),
    ("HEALTH_PROBE", JobScope::Admin),
    ("NOOP", JobScope::Admin),
    ("REINDEX_ITEM", JobScope::Item),
];

/// Every job type and handler this build ships, for `queue`.
pub fn builtin_handlers(ctx: &AppContext, queue: &JobQueue) -> Result<JobHandlers, ModuleError> {
    let items = ctx.require::<ItemService>()?;
    let settings = &ctx.settings().jobs;
    let has_search = ctx.has_module("search");
    let handlers = JobHandlers::default();
    handlers.register(Arc::new(handler::NoopHandler));
    handlers.register(Arc::new(enrich::EnrichUrl {
        items: items.clone(),
        fetcher: enrich::PageFetcher::from_settings(settings)?,
        timeout: Duration::from_secs(settings.enrich_timeout_secs),
    }));
    handlers.register(Arc::new(builtin::ApplyDerivedTags { items: items.clone() }));
    handlers.register(Arc::new(builtin::ReindexItem { items, has_search }));
    handlers.register(Arc::new(builtin::HealthProbe {
        ctx: ctx.clone(),
        queue: queue.clone(),
        has_search,
    }));
    // BUILTIN_JOB_TYPES must name exactly these handlers (checked in every
    // debug build that starts the module, which every API test does).
    debug_assert_eq!(
        handlers.types(),
        BUILTIN_JOB_TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>()
    );
    debug_assert!(BUILTIN_JOB_TYPES
        .iter()
        .all(|(t, s)| handlers.get(t).is_some_and(|h| h.scope() == *s)));
    Ok(handlers)
}

#[async_trait]
impl Module for JobsModule {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["collections", "events", "identity", "items"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let queue = JobQueue::new(
            ctx.db().clone(),
            ctx.settings().jobs.clone(),
            Arc::new(WorkflowTypes::builtin()),
        );
        let handlers = Arc::new(builtin_handlers(ctx, &queue)?);
        let state = routes::JobsState {
            queue: queue.clone(),
            handlers: handlers.clone(),
            auth: ctx.require::<Authenticator>()?,
            guard: ctx.require::<CollectionGuard>()?,
            items: ctx.require::<ItemService>()?,
            cursors: atlas_http::CursorCodec::new(ctx.server_secret()),
            has_search: ctx.has_module("search"),
        };
        ctx.provide::<JobQueue>(Arc::new(queue));
        ctx.provide::<JobHandlers>(handlers);
        ctx.provide::<routes::JobsState>(Arc::new(state));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let state = ctx.get::<routes::JobsState>()?;
        Some(routes::router((*state).clone()))
    }

    async fn start(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let queue = ctx.require::<JobQueue>()?;
        let mut tasks = Vec::new();
        if ctx.settings().server.role.runs_workers() {
            let grace = Duration::from_secs(ctx.settings().server.shutdown_grace_secs);
            let worker = Worker::new((*queue).clone(), ctx.require::<JobHandlers>()?, grace)
                .listen_on(ctx.settings().database_url());
            tasks.extend(worker.spawn(ctx.shutdown_token().child_token()));
        }
        let (q, stop) = ((*queue).clone(), ctx.shutdown_token());
        tasks.push(tokio::spawn(async move { publish_gauges(q, stop).await }));
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend(tasks);
        Ok(())
    }

    async fn stop(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        // Workers let running jobs finish for `server.shutdown_grace_secs`,
        // then release their leases; wait a little longer than that.
        ctx.shutdown_token().cancel();
        let wait = Duration::from_secs(ctx.settings().server.shutdown_grace_secs + 5);
        let handles: Vec<_> = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for handle in handles {
            if tokio::time::timeout(wait, handle).await.is_err() {
                tracing::warn!("a job worker task did not stop in time");
            }
        }
        Ok(())
    }
}

/// `atlas_jobs_stored{type,status}` and `atlas_jobs_queue_depth`.
async fn publish_gauges(queue: JobQueue, shutdown: tokio_util::sync::CancellationToken) {
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        match queue.stats().await {
            Ok(stats) => {
                for (ty, status) in &seen {
                    if !stats.by_type_and_status.iter().any(|(t, s, _)| t == ty && s == status) {
                        metrics::gauge!("atlas_jobs_stored", "type" => ty.clone(), "status" => status.clone()).set(0.0);
                    }
                }
                seen.clear();
                for (ty, status, n) in stats.by_type_and_status {
                    metrics::gauge!("atlas_jobs_stored", "type" => ty.clone(), "status" => status.clone())
                        .set(n as f64);
                    seen.push((ty, status));
                }
                metrics::gauge!("atlas_jobs_queue_depth").set(stats.depth as f64);
                metrics::gauge!("atlas_jobs_expired_leases").set(stats.expired_leases as f64);
            }
            Err(e) => tracing::debug!(error = %e, "job gauges not refreshed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
        }
    }
}

/// A failure-injection point for crash tests: when the environment variable
/// `ATLAS_FAILPOINTS` (a comma-separated list) names `name`, the process
/// aborts here as if killed. Points: `workflow.step_committed` (right after
/// a workflow step's completion committed).
pub(crate) fn failpoint(name: &str) {
    if std::env::var("ATLAS_FAILPOINTS").is_ok_and(|v| v.split(',').any(|p| p.trim() == name)) {
        tracing::error!(failpoint = name, "failure injection: aborting the process");
        std::process::abort();
    }
}
