//! Jobs and workflows as stored and as the API shows them.

use atlas_db::sqlx::{self, any::AnyRow, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker (`run_at` may lie in the future).
    Queued,
    /// Leased by a worker.
    Running,
    Succeeded,
    /// The last attempt failed; it runs again after its backoff (`run_at`).
    Failed,
    /// Attempts exhausted or a non-retryable error; `retry` revives it.
    Dead,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "dead" => JobStatus::Dead,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// No worker will touch the job again (unless a dead job is retried).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled)
    }
}

/// A job (SPEC §2 "Jobs and workflows").
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "ENRICH_URL")]
    pub job_type: String,
    pub status: JobStatus,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// What the handler returned, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Attempts started so far.
    pub attempts: i64,
    pub max_attempts: i64,
    /// Higher runs first.
    pub priority: i64,
    pub last_error: Option<String>,
    /// Not claimed before this time; for a failed job, when it is retried.
    pub run_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub idempotency_key: Option<String>,
    /// A running job whose cancellation was asked for; its worker stops it.
    pub cancel_requested: bool,
    pub workflow_id: Option<String>,
    #[serde(skip)]
    pub collection_id: Option<String>,
    #[serde(skip)]
    pub workflow_step: Option<i64>,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub request_id: String,
    #[serde(skip)]
    pub trace_id: String,
    /// The event that caused it (a rule's action), if any.
    #[serde(skip)]
    pub causation_id: Option<String>,
    /// The span that enqueued it, when traces are exported.
    #[serde(skip)]
    pub span_id: Option<String>,
}

pub(crate) const JOB_COLUMNS: &str =
    "id, type, status, payload, result, attempts, max_attempts, priority, last_error, run_at, \
     started_at, finished_at, created_by, created_at, updated_at, idempotency_key, cancel_requested, workflow_id, \
     collection_id, workflow_step, lease_owner, request_id, trace_id, causation_id, span_id";

fn json_column(row: &AnyRow, name: &str) -> Result<Option<Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(name)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

impl Job {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Job, sqlx::Error> {
        let status: String = row.try_get("status")?;
        Ok(Job {
            id: row.try_get("id")?,
            job_type: row.try_get("type")?,
            status: JobStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown job status `{status}`").into()))?,
            payload: json_column(row, "payload")?.unwrap_or(Value::Null),
            result: json_column(row, "result")?,
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            priority: row.try_get("priority")?,
            last_error: row.try_get("last_error")?,
            run_at: row.try_get("run_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            idempotency_key: row.try_get("idempotency_key")?,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            workflow_id: row.try_get("workflow_id")?,
            collection_id: row.try_get("collection_id")?,
            workflow_step: row.try_get("workflow_step")?,
            lease_owner: row.try_get("lease_owner")?,
            request_id: row.try_get("request_id")?,
            trace_id: row.try_get("trace_id")?,
            causation_id: row.try_get("causation_id")?,
            span_id: row.try_get("span_id")?,
        })
    }

    /// Event data of `JobSucceeded` / `JobDead`: what happened, not the
    /// payload or result (which may be large, and are one read away), but
    /// the item of a job about one (`item_id`, else null): search indexes
    /// follow `REINDEX_ITEM` by it.
    pub(crate) fn event_data(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": self.job_type,
            "item_id": self.payload.get("item_id").and_then(Value::as_str),
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "last_error": self.last_error,
            "workflow_id": self.workflow_id,
            "created_by": self.created_by,
        })
    }
}

/// Where a workflow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<WorkflowStatus> {
        Some(match s {
            "running" => WorkflowStatus::Running,
            "succeeded" => WorkflowStatus::Succeeded,
            "failed" => WorkflowStatus::Failed,
            "cancelled" => WorkflowStatus::Cancelled,
            _ => return None,
        })
    }
}

/// Where one step of a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    #[schema(example = "enrich")]
    pub name: String,
    pub status: StepStatus,
    pub attempts: i64,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// The job running this step (absent until the step starts, or when skipped).
    pub job_id: Option<String>,
}

/// A workflow (SPEC §2): its steps in order, each with its state.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Workflow {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "ITEM_INTAKE")]
    pub workflow_type: String,
    pub status: WorkflowStatus,
    #[schema(value_type = Object)]
    pub input: Value,
    /// Once succeeded, the outputs of its succeeded steps merged into one
    /// object (`ITEM_INTAKE`: the enrichment, `added_tags`, the reindexed
    /// `version`; `HEALTH_CHECK`: the report).
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub steps: Vec<Step>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    #[serde(skip)]
    pub collection_id: Option<String>,
    #[serde(skip)]
    pub request_id: String,
    #[serde(skip)]
    pub trace_id: String,
}

pub(crate) const WORKFLOW_COLUMNS: &str = "id, type, status, input, output, steps, collection_id, created_by, \
     request_id, trace_id, created_at, updated_at, finished_at";

impl Workflow {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Workflow, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let steps: String = row.try_get("steps")?;
        Ok(Workflow {
            id: row.try_get("id")?,
            workflow_type: row.try_get("type")?,
            status: WorkflowStatus::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown workflow status `{status}`").into()))?,
            input: json_column(row, "input")?.unwrap_or(Value::Null),
            output: json_column(row, "output")?,
            steps: serde_json::from_str(&steps).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            collection_id: row.try_get("collection_id")?,
            created_by: row.try_get("created_by")?,
            request_id: row.try_get("request_id")?,
            trace_id: row.try_get("trace_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }

    pub(crate) fn event_data(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "type": self.workflow_type,
            "status": self.status,
            "steps": self.steps.iter().map(|s| serde_json::json!({"name": s.name, "status": s.status, "attempts": s.attempts, "error": s.error})).collect::<Vec<_>>(),
            "created_by": self.created_by,
        })
    }
}
