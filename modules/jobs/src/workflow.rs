//! Workflows: an ordered list of steps, each run as a job.
//!
//! The engine keeps no state in memory. Starting a workflow inserts its row
//! and its first step's job in one transaction; when a step's job finishes,
//! the same transaction that records the job's end records the step's
//! status, attempts, output and error on the workflow row and enqueues the
//! next step's job (or finishes the workflow with `WorkflowCompleted` /
//! `WorkflowFailed`). A crash therefore loses nothing and repeats nothing
//! that committed: a process killed after step 1 finished finds step 2's job
//! queued (or leased to the dead process, and taken back when the lease
//! expires); step 1 is never run again. Each step's job has the job
//! queue's retries, backoff and timeout.

use std::collections::HashMap;

use atlas_db::sqlx::{self, AnyConnection};
use atlas_events::EntityRef;
use serde_json::Value;

use crate::handler::JobScope;
use crate::model::{Job, JobStatus, Step, StepStatus, Workflow, WorkflowStatus, WORKFLOW_COLUMNS};
use crate::queue::{insert_job, job_events, load as load_job, JobQueue, NewJob, QueueError};

/// One step of a workflow type: a name and the job type that runs it. The
/// step's job gets the workflow's input as its payload.
#[derive(Debug, Clone)]
pub struct StepDefinition {
    pub name: &'static str,
    pub job_type: &'static str,
}

/// A workflow type.
#[derive(Debug, Clone)]
pub struct WorkflowDefinition {
    pub name: &'static str,
    /// Who may start it: `Item` (editors and owners of `input.item_id`'s
    /// collection) or `Admin`.
    pub scope: JobScope,
    pub steps: Vec<StepDefinition>,
}

/// The workflow types this build knows.
#[derive(Debug, Default)]
pub struct WorkflowTypes {
    types: HashMap<&'static str, WorkflowDefinition>,
}

impl WorkflowTypes {
    /// `ITEM_INTAKE {item_id}`: enrich → derive tags → reindex;
    /// `HEALTH_CHECK {}`: probe.
    pub fn builtin() -> Self {
        let mut types = WorkflowTypes::default();
        types.add(WorkflowDefinition {
            name: "ITEM_INTAKE",
            scope: JobScope::Item,
            steps: vec![
                StepDefinition {
                    name: "enrich",
                    job_type: "ENRICH_URL",
                },
                StepDefinition {
                    name: "derive_tags",
                    job_type: "APPLY_DERIVED_TAGS",
                },
                StepDefinition {
                    name: "reindex",
                    job_type: "REINDEX_ITEM",
                },
            ],
        });
        types.add(WorkflowDefinition {
            name: "HEALTH_CHECK",
            scope: JobScope::Admin,
            steps: vec![StepDefinition {
                name: "probe",
                job_type: "HEALTH_PROBE",
            }],
        });
        types
    }

    pub fn add(&mut self, definition: WorkflowDefinition) {
        self.types.insert(definition.name, definition);
    }

    pub fn get(&self, name: &str) -> Option<&WorkflowDefinition> {
        self.types.get(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.types.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

/// Who starts a workflow and on what.
#[derive(Debug, Clone, Default)]
pub struct WorkflowStart {
    pub created_by: Option<String>,
    pub collection_id: Option<String>,
    pub request_id: String,
    pub trace_id: String,
    /// The event that caused it (a rule's action), if any; its step jobs
    /// carry it.
    pub causation_id: Option<String>,
    /// The span that started it, when traces are exported: every step's run
    /// is its child.
    pub span_id: Option<String>,
}

/// Start a workflow: its row and its first step's job, in one transaction.
pub async fn start(
    queue: &JobQueue,
    definition: &WorkflowDefinition,
    input: Value,
    who: WorkflowStart,
) -> Result<Workflow, QueueError> {
    let id = uuid::Uuid::now_v7().to_string();
    let t = atlas_db::now();
    let mut steps: Vec<Step> = definition
        .steps
        .iter()
        .map(|s| Step {
            name: s.name.to_string(),
            status: StepStatus::Pending,
            attempts: 0,
            output: None,
            error: None,
            job_id: None,
        })
        .collect();
    let mut tx = queue.db().begin().await?;
    let (first, _) = insert_job(&mut tx, queue.settings(), &step_job(definition, 0, &id, &input, &who)).await?;
    if let Some(s) = steps.first_mut() {
        s.job_id = Some(first.id);
    }
    let row = sqlx::query(&format!(
        "INSERT INTO workflows (id, type, status, input, steps, collection_id, created_by, request_id, trace_id, created_at, updated_at) \
         VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {WORKFLOW_COLUMNS}"
    ))
    .bind(&id)
    .bind(definition.name)
    .bind(input.to_string())
    .bind(steps_json(&steps))
    .bind(&who.collection_id)
    .bind(&who.created_by)
    .bind(&who.request_id)
    .bind(&who.trace_id)
    .bind(&t)
    .fetch_one(&mut *tx)
    .await?;
    let workflow = Workflow::from_row(&row)?;
    tx.commit().await?;
    queue.wake();
    Ok(workflow)
}

/// A workflow with its running step's live attempts and error (from its job).
pub async fn get(queue: &JobQueue, id: &str) -> Result<Option<Workflow>, QueueError> {
    let mut conn = queue.db().reader().acquire().await?;
    let Some(mut workflow) = load(&mut conn, id).await? else {
        return Ok(None);
    };
    for step in workflow.steps.iter_mut() {
        if matches!(step.status, StepStatus::Pending | StepStatus::Running) {
            if let Some(job_id) = &step.job_id {
                if let Some(job) = load_job(&mut conn, job_id).await? {
                    step.attempts = job.attempts;
                    step.error = job.last_error.clone();
                    step.status = if job.attempts == 0 && job.status == JobStatus::Queued {
                        StepStatus::Pending
                    } else {
                        StepStatus::Running
                    };
                }
            }
        }
    }
    Ok(Some(workflow))
}

async fn load(conn: &mut AnyConnection, id: &str) -> Result<Option<Workflow>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(Workflow::from_row).transpose()
}

fn steps_json(steps: &[Step]) -> String {
    serde_json::to_string(steps).unwrap_or_else(|_| "[]".into())
}

fn step_job(definition: &WorkflowDefinition, index: usize, id: &str, input: &Value, who: &WorkflowStart) -> NewJob {
    let mut job = NewJob::new(definition.steps[index].job_type, input.clone());
    job.created_by = who.created_by.clone();
    job.collection_id = who.collection_id.clone();
    job.workflow = Some((id.to_string(), index as i64));
    job.request_id = who.request_id.clone();
    job.trace_id = who.trace_id.clone();
    job.causation_id = who.causation_id.clone();
    job.span_id = who.span_id.clone();
    job
}

/// The reason a job skipped its work (`{"skipped": reason}`), if it did.
fn skipped(result: &Option<Value>) -> Option<String> {
    let obj = result.as_ref()?.as_object()?;
    (obj.len() == 1)
        .then(|| obj.get("skipped")?.as_str().map(str::to_string))
        .flatten()
}

/// Record a step's job's new state on its workflow, inside the transaction
/// that changed the job; enqueue the next step or finish the workflow.
pub(crate) async fn on_job_finished(conn: &mut AnyConnection, queue: &JobQueue, job: &Job) -> Result<(), QueueError> {
    let (Some(workflow_id), Some(index)) = (&job.workflow_id, job.workflow_step) else {
        return Ok(());
    };
    let Some(mut workflow) = load(conn, workflow_id).await? else {
        return Ok(());
    };
    let index = index as usize;
    let current = workflow.steps.get(index).and_then(|s| s.job_id.as_deref());
    if workflow.status != WorkflowStatus::Running || current != Some(job.id.as_str()) {
        return Ok(()); // finished or cancelled meanwhile, or a stale job
    }
    let Some(definition) = queue.workflows().get(&workflow.workflow_type).cloned() else {
        return Ok(());
    };
    let who = WorkflowStart {
        created_by: workflow.created_by.clone(),
        collection_id: workflow.collection_id.clone(),
        request_id: workflow.request_id.clone(),
        trace_id: workflow.trace_id.clone(),
        causation_id: job.causation_id.clone(),
        span_id: job.span_id.clone(),
    };
    let t = atlas_db::now();
    let mut event = None;
    {
        let step = &mut workflow.steps[index];
        step.attempts = job.attempts;
        match job.status {
            JobStatus::Succeeded => {
                match skipped(&job.result) {
                    Some(reason) => {
                        step.status = StepStatus::Skipped;
                        step.output = Some(serde_json::json!({ "reason": reason }));
                    }
                    None => {
                        step.status = StepStatus::Succeeded;
                        step.output = job.result.clone();
                    }
                }
                step.error = None;
            }
            JobStatus::Dead | JobStatus::Cancelled => {
                step.status = StepStatus::Failed;
                step.error = job.last_error.clone();
            }
            _ => {
                step.status = StepStatus::Running;
                step.error = job.last_error.clone();
            }
        }
    }
    match job.status {
        JobStatus::Succeeded if index + 1 < workflow.steps.len() => {
            let input = workflow.input.clone();
            let (next, _) = insert_job(
                conn,
                queue.settings(),
                &step_job(&definition, index + 1, &workflow.id, &input, &who),
            )
            .await?;
            let step = &mut workflow.steps[index + 1];
            step.job_id = Some(next.id);
            step.status = StepStatus::Pending;
        }
        JobStatus::Succeeded => {
            workflow.status = WorkflowStatus::Succeeded;
            workflow.output = merged_output(&workflow.steps);
            workflow.finished_at = Some(t.clone());
            event = Some("WorkflowCompleted");
        }
        JobStatus::Dead => {
            workflow.status = WorkflowStatus::Failed;
            workflow.finished_at = Some(t.clone());
            event = Some("WorkflowFailed");
        }
        JobStatus::Cancelled => {
            workflow.status = WorkflowStatus::Cancelled;
            workflow.finished_at = Some(t.clone());
            event = Some("WorkflowFailed");
        }
        _ => {}
    }
    sqlx::query(
        "UPDATE workflows SET status = $1, output = $2, steps = $3, updated_at = $4, finished_at = $5 WHERE id = $6",
    )
    .bind(workflow.status.as_str())
    .bind(workflow.output.as_ref().map(Value::to_string))
    .bind(steps_json(&workflow.steps))
    .bind(&t)
    .bind(&workflow.finished_at)
    .bind(&workflow.id)
    .execute(&mut *conn)
    .await?;
    if let Some(event_type) = event {
        let entity = EntityRef {
            entity_type: "workflow".into(),
            id: workflow.id.clone(),
            collection_id: workflow.collection_id.clone(),
        };
        let envelope = job_events(job).envelope(event_type, entity, workflow.event_data());
        atlas_events::append(conn, &envelope).await?;
    }
    Ok(())
}

/// A failed workflow whose dead step job is retried runs again from that step.
pub(crate) async fn on_job_retried(conn: &mut AnyConnection, job: &Job) -> Result<(), QueueError> {
    let (Some(workflow_id), Some(index)) = (&job.workflow_id, job.workflow_step) else {
        return Ok(());
    };
    let Some(mut workflow) = load(conn, workflow_id).await? else {
        return Ok(());
    };
    let index = index as usize;
    if workflow.status != WorkflowStatus::Failed
        || workflow.steps.get(index).and_then(|s| s.job_id.as_deref()) != Some(job.id.as_str())
    {
        return Ok(());
    }
    workflow.steps[index].status = StepStatus::Pending;
    workflow.steps[index].error = None;
    workflow.steps[index].attempts = 0;
    sqlx::query(
        "UPDATE workflows SET status = 'running', steps = $1, updated_at = $2, finished_at = NULL WHERE id = $3",
    )
    .bind(steps_json(&workflow.steps))
    .bind(atlas_db::now())
    .bind(&workflow.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A succeeded workflow's output: the outputs of its succeeded steps, in
/// order, merged into one object (a later step's key wins); a step whose
/// output is not an object contributes nothing, unless it is the only one.
fn merged_output(steps: &[Step]) -> Option<Value> {
    let outputs: Vec<&Value> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.output.as_ref())
        .collect();
    if let [only] = outputs.as_slice() {
        return Some((*only).clone());
    }
    let mut merged = serde_json::Map::new();
    for output in outputs {
        if let Value::Object(fields) = output {
            merged.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    (!merged.is_empty()).then_some(Value::Object(merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skip_results_are_recognized() {
        assert_eq!(skipped(&Some(json!({"skipped": "no url"}))).as_deref(), Some("no url"));
        assert_eq!(skipped(&Some(json!({"skipped": "x", "other": 1}))), None);
        assert_eq!(skipped(&Some(json!(null))), None);
        assert_eq!(skipped(&None), None);
    }

    fn step(status: StepStatus, output: Option<Value>) -> Step {
        Step {
            name: "s".into(),
            status,
            attempts: 1,
            output,
            error: None,
            job_id: None,
        }
    }

    #[test]
    fn the_output_merges_the_succeeded_steps() {
        let steps = [
            step(StepStatus::Succeeded, Some(json!({"title": "t", "version": 1}))),
            step(StepStatus::Skipped, Some(json!({"reason": "no enrichment"}))),
            step(StepStatus::Succeeded, Some(json!({"version": 3}))),
        ];
        assert_eq!(merged_output(&steps), Some(json!({"title": "t", "version": 3})));
        let report = [step(StepStatus::Succeeded, Some(json!(["a report"])))];
        assert_eq!(merged_output(&report), Some(json!(["a report"])));
        assert_eq!(merged_output(&[step(StepStatus::Skipped, None)]), None);
    }

    #[test]
    fn builtin_types() {
        let t = WorkflowTypes::builtin();
        assert_eq!(t.names(), ["HEALTH_CHECK", "ITEM_INTAKE"]);
        let steps: Vec<_> = t.get("ITEM_INTAKE").unwrap().steps.iter().map(|s| s.name).collect();
        assert_eq!(steps, ["enrich", "derive_tags", "reindex"]);
    }
}
