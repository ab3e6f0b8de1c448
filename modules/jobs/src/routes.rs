//! `/jobs` and `/workflows`.
//!
//! Permissions follow the item a job or workflow is about: creating one
//! needs `jobs:create` in the item's collection (editor, owner; a viewer
//! gets 403, a non-member 404); reading one is for its creator and the
//! members of that collection (workflows: also administrators).
//! Operations types (`NOOP`, `HEALTH_CHECK`) are for administrators.

use std::sync::Arc;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_http::{page_limit, ApiError, ApiResult, CursorCodec, ErrorBody, Json, Path, Query, RequestContext};
use atlas_items::ItemService;
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::builtin::NO_SEARCH;
use crate::handler::{JobHandlers, JobScope};
use crate::model::{Job, JobStatus, Workflow};
use crate::queue::{JobFilter, JobQueue, NewJob};
use crate::workflow::{self, WorkflowStart};

#[derive(Clone)]
pub(crate) struct JobsState {
    pub queue: JobQueue,
    pub handlers: Arc<JobHandlers>,
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub items: Arc<ItemService>,
    pub cursors: CursorCodec,
    pub has_search: bool,
}

impl FromRef<JobsState> for Arc<Authenticator> {
    fn from_ref(s: &JobsState) -> Self {
        s.auth.clone()
    }
}

pub(crate) fn router(state: JobsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(start_workflow))
        .routes(routes!(get_workflow))
        .with_state(state)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// `ENRICH_URL`, `REINDEX_ITEM` (payload `{item_id}`) or `NOOP` (administrators).
    #[serde(rename = "type")]
    #[schema(example = "ENRICH_URL")]
    job_type: String,
    /// A JSON object; item jobs need `item_id`.
    #[schema(value_type = Object, example = json!({"item_id": "0192f0c4-6a4e-7c1d-9d6e-6d7f7f1a2b3c"}))]
    payload: Value,
    /// Same key and payload again → the existing job (200); another payload → 409.
    idempotency_key: Option<String>,
    /// 1–100; default `jobs.default_max_attempts`.
    max_attempts: Option<i64>,
    /// Not run before this time (RFC 3339).
    run_at: Option<String>,
    /// Higher runs first; default 0.
    priority: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// queued, running, succeeded, failed, dead or cancelled.
    status: Option<String>,
    /// A job type, e.g. ENRICH_URL.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    job_type: Option<String>,
    /// 1–200, default 50.
    limit: Option<i64>,
    /// Opaque cursor from a previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    items: Vec<Job>,
    next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct JobCursor {
    id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflow {
    /// `ITEM_INTAKE` (input `{item_id}`) or `HEALTH_CHECK` (input `{}`, administrators).
    #[serde(rename = "type")]
    #[schema(example = "ITEM_INTAKE")]
    workflow_type: String,
    #[schema(value_type = Object)]
    #[serde(default)]
    input: Option<Value>,
}

fn located(status: StatusCode, path: String, body: impl Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&path) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The collection of the item named by `payload.item_id`, if the caller may
/// create jobs there.
async fn authorize_item(s: &JobsState, principal: &Principal, payload: &Value, field: &str) -> ApiResult<String> {
    let item_id = payload
        .get("item_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::validation(field, format!("{field} must be a string naming an item")))?;
    let item = s.items.get(item_id).await?.ok_or_else(|| ApiError::not_found("item"))?;
    match s
        .guard
        .authorize(principal, &item.collection_id, "jobs", "create")
        .await
    {
        Err(ApiError::NotFound(_)) => Err(ApiError::not_found("item")),
        Err(e) => Err(e),
        Ok(_) => Ok(item.collection_id),
    }
}

fn require_admin(principal: &Principal, what: &str) -> ApiResult<()> {
    if principal.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{what} is for administrators")))
    }
}

/// Whether the caller may see a job: its creator or a member of its collection.
async fn may_read(
    s: &JobsState,
    principal: &Principal,
    created_by: &Option<String>,
    collection: &Option<String>,
) -> ApiResult<bool> {
    if created_by.as_deref() == Some(principal.user_id.as_str()) {
        return Ok(true);
    }
    match collection {
        Some(c) => match s.guard.membership(principal, c).await {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        },
        None => Ok(false),
    }
}

async fn readable_job(s: &JobsState, principal: &Principal, id: &str) -> ApiResult<Job> {
    let job = s.queue.get(id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    if may_read(s, principal, &job.created_by, &job.collection_id).await? {
        Ok(job)
    } else {
        Err(ApiError::not_found("job"))
    }
}

/// Cancel and retry: the creator, or an editor/owner of the job's collection.
async fn manageable_job(s: &JobsState, principal: &Principal, id: &str) -> ApiResult<Job> {
    let job = readable_job(s, principal, id).await?;
    if job.created_by.as_deref() == Some(principal.user_id.as_str()) {
        return Ok(job);
    }
    match &job.collection_id {
        Some(c) => {
            s.guard.authorize(principal, c, "jobs", "create").await?;
            Ok(job)
        }
        None => Err(ApiError::not_found("job")),
    }
}

/// Enqueue a job.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = CreateJob, security(("bearer" = [])),
    responses(
        (status = 202, description = "enqueued; `Location` names the job", body = Job),
        (status = 200, description = "an existing job: the same idempotency key and payload were sent before", body = Job),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a viewer of the item's collection, or an administrators' job type", body = ErrorBody),
        (status = 404, description = "no such item, or the caller is not a member of its collection", body = ErrorBody),
        (status = 409, description = "the idempotency key was used with another payload", body = ErrorBody),
        (status = 422, description = "unknown type, invalid payload, max_attempts or run_at; `details.field` names it", body = ErrorBody),
    ))]
async fn create_job(
    State(s): State<JobsState>,
    principal: Principal,
    req: RequestContext,
    Json(body): Json<CreateJob>,
) -> ApiResult<Response> {
    let handler = s
        .handlers
        .get(&body.job_type)
        .ok_or_else(|| ApiError::validation("type", format!("unknown job type `{}`", body.job_type)))?;
    if !body.payload.is_object() {
        return Err(ApiError::validation("payload", "payload must be a JSON object"));
    }
    let collection_id = match handler.scope() {
        JobScope::Internal => {
            return Err(ApiError::validation(
                "type",
                format!("`{}` runs only as a workflow step", body.job_type),
            ))
        }
        JobScope::Admin => {
            require_admin(&principal, &format!("the job type `{}`", body.job_type))?;
            None
        }
        JobScope::Item => Some(authorize_item(&s, &principal, &body.payload, "payload.item_id").await?),
    };
    if body.job_type == "REINDEX_ITEM" && !s.has_search {
        return Err(ApiError::validation("type", NO_SEARCH));
    }
    if let Some(k) = &body.idempotency_key {
        if k.is_empty() || k.len() > 255 {
            return Err(ApiError::validation(
                "idempotency_key",
                "idempotency_key must be 1–255 bytes",
            ));
        }
    }
    let run_at = body
        .run_at
        .as_deref()
        .map(|t| {
            atlas_db::parse_timestamp(t)
                .ok_or_else(|| ApiError::validation("run_at", "run_at must be an RFC 3339 time"))
        })
        .transpose()?;
    let mut job = NewJob::new(body.job_type, body.payload);
    job.max_attempts = body.max_attempts;
    job.run_at = run_at;
    job.priority = body.priority.unwrap_or(0);
    job.idempotency_key = body.idempotency_key;
    job.created_by = Some(principal.user_id.clone());
    job.collection_id = collection_id;
    job.request_id = req.request_id.clone();
    job.trace_id = req.trace_id.clone();
    job.span_id = atlas_telemetry::trace::span_id(&tracing::Span::current());
    let (job, created) = s.queue.enqueue(job).await?;
    let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok(located(status, format!("/api/v1/jobs/{}", job.id), job))
}

/// Jobs the caller created or that belong to their collections, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListJobsQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of jobs", body = JobPage),
        (status = 400, description = "invalid cursor", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 422, description = "unknown status or limit out of range", body = ErrorBody),
    ))]
async fn list_jobs(
    State(s): State<JobsState>,
    principal: Principal,
    Query(q): Query<ListJobsQuery>,
) -> ApiResult<Json<JobPage>> {
    let limit = page_limit(q.limit)?;
    let status = q
        .status
        .as_deref()
        .map(|st| {
            JobStatus::parse(st).ok_or_else(|| {
                ApiError::validation(
                    "status",
                    "status must be queued, running, succeeded, failed, dead or cancelled",
                )
            })
        })
        .transpose()?;
    let before_id = q
        .cursor
        .as_deref()
        .map(|c| s.cursors.decode::<JobCursor>(c).map(|c| c.id))
        .transpose()?;
    let collections = s.guard.visible_collections(&principal).await?;
    let filter = JobFilter {
        status,
        job_type: q.job_type,
        visible_to: Some((principal.user_id.clone(), collections)),
        before_id,
        limit: limit + 1,
    };
    let mut items = s.queue.list(&filter).await?;
    let next_cursor = s
        .cursors
        .next_page(&mut items, limit, |j| JobCursor { id: j.id.clone() });
    Ok(Json(JobPage { items, next_cursor }))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the job", body = Job),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such job, or not visible to the caller", body = ErrorBody),
    ))]
async fn get_job(State(s): State<JobsState>, principal: Principal, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(readable_job(&s, &principal, &id).await?))
}

/// Cancel a job: a queued one at once; a running one at its worker's next
/// heartbeat (`cancel_requested` is set meanwhile).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the job, cancelled or with `cancel_requested`", body = Job),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a viewer of the job's collection", body = ErrorBody),
        (status = 404, description = "no such job, or not visible to the caller", body = ErrorBody),
        (status = 409, description = "the job already finished", body = ErrorBody),
    ))]
async fn cancel_job(State(s): State<JobsState>, principal: Principal, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    manageable_job(&s, &principal, &id).await?;
    Ok(Json(s.queue.cancel(&id).await?))
}

/// Run a dead job again (its attempts start over).
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the job, queued again", body = Job),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a viewer of the job's collection", body = ErrorBody),
        (status = 404, description = "no such job, or not visible to the caller", body = ErrorBody),
        (status = 409, description = "the job is not dead", body = ErrorBody),
    ))]
async fn retry_job(State(s): State<JobsState>, principal: Principal, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    manageable_job(&s, &principal, &id).await?;
    Ok(Json(s.queue.retry(&id).await?))
}

/// Start a workflow.
#[utoipa::path(post, path = "/workflows", tag = "jobs", request_body = StartWorkflow, security(("bearer" = [])),
    responses(
        (status = 202, description = "started; `Location` names the workflow", body = Workflow),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a viewer of the item's collection, or HEALTH_CHECK by a non-administrator", body = ErrorBody),
        (status = 404, description = "no such item, or the caller is not a member of its collection", body = ErrorBody),
        (status = 422, description = "unknown type or invalid input", body = ErrorBody),
    ))]
async fn start_workflow(
    State(s): State<JobsState>,
    principal: Principal,
    req: RequestContext,
    Json(body): Json<StartWorkflow>,
) -> ApiResult<Response> {
    let definition = s
        .queue
        .workflows()
        .get(&body.workflow_type)
        .cloned()
        .ok_or_else(|| ApiError::validation("type", format!("unknown workflow type `{}`", body.workflow_type)))?;
    let input = body.input.unwrap_or_else(|| Value::Object(Default::default()));
    if !input.is_object() {
        return Err(ApiError::validation("input", "input must be a JSON object"));
    }
    let collection_id = match definition.scope {
        JobScope::Item => Some(authorize_item(&s, &principal, &input, "input.item_id").await?),
        _ => {
            require_admin(&principal, &format!("the workflow `{}`", definition.name))?;
            None
        }
    };
    let who = WorkflowStart {
        created_by: Some(principal.user_id.clone()),
        collection_id,
        request_id: req.request_id.clone(),
        trace_id: req.trace_id.clone(),
        causation_id: None,
        span_id: atlas_telemetry::trace::span_id(&tracing::Span::current()),
    };
    let workflow = workflow::start(&s.queue, &definition, input, who).await?;
    Ok(located(
        StatusCode::ACCEPTED,
        format!("/api/v1/workflows/{}", workflow.id),
        workflow,
    ))
}

/// One workflow with each step's status, attempts, output and error.
#[utoipa::path(get, path = "/workflows/{id}", tag = "jobs", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the workflow", body = Workflow),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such workflow, or not visible to the caller", body = ErrorBody),
    ))]
async fn get_workflow(
    State(s): State<JobsState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    let workflow = workflow::get(&s.queue, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    if principal.is_admin || may_read(&s, &principal, &workflow.created_by, &workflow.collection_id).await? {
        Ok(Json(workflow))
    } else {
        Err(ApiError::not_found("workflow"))
    }
}
