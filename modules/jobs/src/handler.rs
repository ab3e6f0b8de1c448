//! What a job type is: a [`JobHandler`] registered under its type name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use atlas_events::EventContext;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Who may enqueue a job type through `POST /jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobScope {
    /// About one item (`payload.item_id`): editors and owners of its collection.
    Item,
    /// Operations work: administrators only.
    Admin,
    /// Only workflows enqueue it.
    Internal,
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A transient failure: the job runs again after its backoff, until its
    /// attempts are exhausted.
    #[error("{0}")]
    Retry(String),
    /// Retrying cannot help (an SSRF refusal, an item without `source_url`):
    /// the job is `dead` at once.
    #[error("{0}")]
    Fatal(String),
    /// There is nothing to do; inside a workflow the step shows `skipped`.
    /// The job itself succeeds with `{"skipped": reason}`.
    #[error("skipped: {0}")]
    Skip(String),
}

/// One attempt of a job, as its handler sees it.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub id: String,
    pub job_type: String,
    pub payload: Value,
    /// 1 on the first attempt.
    pub attempt: i64,
    pub created_by: Option<String>,
    pub workflow_id: Option<String>,
    /// For the events the handler's writes emit: the job's creator as actor,
    /// the request that enqueued it as request and trace.
    pub events: EventContext,
    /// Cancelled when someone cancels the job; the worker also stops the
    /// handler then, so checking it is only needed to stop cleanly.
    pub cancel: CancellationToken,
}

/// Runs the jobs of one type. Handlers must be idempotent: a worker that
/// dies mid-job loses its lease and the job runs again elsewhere.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The type name, e.g. `ENRICH_URL`.
    fn job_type(&self) -> &'static str;

    /// Who may enqueue it through the API.
    fn scope(&self) -> JobScope {
        JobScope::Internal
    }

    /// Time limit of one attempt; `None` takes `jobs.timeout_secs`. When it
    /// passes the handler's future is dropped and the attempt fails.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Do the work; the value becomes the job's `result`.
    async fn run(&self, job: &JobRun) -> Result<Value, JobError>;
}

/// The job types this process knows. Modules add theirs during `init`.
#[derive(Default)]
pub struct JobHandlers {
    handlers: RwLock<HashMap<&'static str, Arc<dyn JobHandler>>>,
}

impl JobHandlers {
    pub fn register(&self, handler: Arc<dyn JobHandler>) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handler.job_type(), handler);
    }

    pub fn get(&self, job_type: &str) -> Option<Arc<dyn JobHandler>> {
        self.handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_type)
            .cloned()
    }

    /// Registered type names, sorted.
    pub fn types(&self) -> Vec<&'static str> {
        let mut types: Vec<_> = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        types.sort_unstable();
        types
    }
}

/// A job that does nothing: for benchmarks and for checking that workers run.
pub struct NoopHandler;

#[async_trait]
impl JobHandler for NoopHandler {
    fn job_type(&self) -> &'static str {
        "NOOP"
    }
    fn scope(&self) -> JobScope {
        JobScope::Admin
    }
    async fn run(&self, _job: &JobRun) -> Result<Value, JobError> {
        Ok(Value::Null)
    }
}
