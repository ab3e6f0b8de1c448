//! The job queue in the database: enqueue, read, cancel, retry, and what
//! workers do with it (claim with a lease, heartbeat, finish, reclaim
//! expired leases).
//!
//! Claiming is one statement: on PostgreSQL an `UPDATE … WHERE id IN
//! (SELECT … FOR UPDATE SKIP LOCKED)`, so any number of worker processes
//! claim disjoint jobs without waiting on each other; on SQLite the same
//! `UPDATE … RETURNING` without the locking clause, atomic because SQLite
//! has one writer. Every state change that finishes a job commits its event
//! (`JobSucceeded`, `JobDead`) and, for a workflow's job, the workflow's
//! next state in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_db::{Backend, Database};
use atlas_events::{EntityRef, EventContext};
use atlas_http::ApiError;
use atlas_kernel::settings::JobsSettings;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use tokio::sync::Notify;

use crate::model::{Job, JobStatus, JOB_COLUMNS};
use crate::workflow::{self, WorkflowTypes};

/// The channel workers `LISTEN` on (PostgreSQL).
pub const NOTIFY_CHANNEL: &str = "atlas_jobs";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error("job queue: {0}")]
    Database(#[from] sqlx::Error),
    #[error("job queue: {0}")]
    Outbox(#[from] atlas_events::OutboxError),
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NotFound(what) => ApiError::not_found(what),
            QueueError::Conflict(message) => ApiError::conflict(message),
            QueueError::Invalid { field, message } => ApiError::validation(field, message),
            other => ApiError::internal(other),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_type: String,
    pub payload: Value,
    /// `None`: `jobs.default_max_attempts`.
    pub max_attempts: Option<i64>,
    /// `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    pub priority: i64,
    /// With `created_by`, makes enqueueing idempotent.
    pub idempotency_key: Option<String>,
    pub created_by: Option<String>,
    pub collection_id: Option<String>,
    /// The workflow and step index this job runs.
    pub workflow: Option<(String, i64)>,
    pub request_id: String,
    pub trace_id: String,
    /// The event that caused it (a rule's action), if any.
    pub causation_id: Option<String>,
    /// The span that enqueued it, when traces are exported.
    pub span_id: Option<String>,
}

impl NewJob {
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        NewJob {
            job_type: job_type.into(),
            payload,
            max_attempts: None,
            run_at: None,
            priority: 0,
            idempotency_key: None,
            created_by: None,
            collection_id: None,
            workflow: None,
            request_id: String::new(),
            trace_id: String::new(),
            causation_id: None,
            span_id: None,
        }
    }
}

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
    /// Only jobs created by this user or belonging to these collections.
    pub visible_to: Option<(String, Vec<String>)>,
    /// Only jobs with an id below this one (newest first).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// How one attempt ended, as a worker reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(Value),
    /// `retryable`: `failed` with a backoff while attempts remain, else `dead`.
    Failed {
        error: String,
        retryable: bool,
    },
    /// Cancellation was requested while it ran.
    Cancelled,
    /// The process is shutting down: hand the job back without counting
    /// the attempt.
    Released,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Lease extended.
    Extended,
    /// Lease extended, and someone asked to cancel the job.
    CancelRequested,
    /// The lease is gone (it expired and another worker took the job).
    Lost,
}

/// Counts for metrics and the health report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    /// (type, status, count)
    pub by_type_and_status: Vec<(String, String, i64)>,
    /// Jobs due now and not running.
    pub depth: i64,
    /// Running jobs whose lease has expired (their worker is gone).
    pub expired_leases: i64,
}

/// The queue: a handle on the `jobs` table plus the in-process wake-up.
#[derive(Clone)]
pub struct JobQueue {
    db: Database,
    settings: Arc<JobsSettings>,
    wake: Arc<Notify>,
    workflows: Arc<WorkflowTypes>,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn ts(t: DateTime<Utc>) -> String {
    atlas_db::format_timestamp(t)
}

impl JobQueue {
    pub fn new(db: Database, settings: JobsSettings, workflows: Arc<WorkflowTypes>) -> Self {
        JobQueue {
            db,
            settings: Arc::new(settings),
            wake: Arc::new(Notify::new()),
            workflows,
        }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn settings(&self) -> &JobsSettings {
        &self.settings
    }

    /// The workflow types this queue runs.
    pub fn workflows(&self) -> &Arc<WorkflowTypes> {
        &self.workflows
    }

    /// Resolves when a job may have become due in this process (an enqueue,
    /// a retry) or a `NOTIFY` arrived.
    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Tell this process's workers there is work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Enqueue a job. Returns it and whether it was created (`false`: the
    /// same user's idempotency key named an existing job with the same type
    /// and payload). The same key with another payload is a conflict.
    pub async fn enqueue(&self, job: NewJob) -> Result<(Job, bool), QueueError> {
        let mut tx = self.db.begin().await?;
        let out = insert_job(&mut tx, &self.settings, &job).await?;
        tx.commit().await?;
        if out.1 {
            self.wake();
        }
        Ok(out)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        let mut conn = self.db.reader().acquire().await?;
        Ok(load(&mut conn, id).await?)
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, QueueError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let param = |binds: &mut Vec<String>, v: String| {
            binds.push(v);
            format!("${}", binds.len())
        };
        if let Some(s) = filter.status {
            let p = param(&mut binds, s.as_str().to_string());
            sql.push_str(&format!(" AND status = {p}"));
        }
        if let Some(t) = &filter.job_type {
            let p = param(&mut binds, t.clone());
            sql.push_str(&format!(" AND type = {p}"));
        }
        if let Some(b) = &filter.before_id {
            let p = param(&mut binds, b.clone());
            sql.push_str(&format!(" AND id < {p}"));
        }
        if let Some((user, collections)) = &filter.visible_to {
            let mut ors = vec![format!("created_by = {}", param(&mut binds, user.clone()))];
            if !collections.is_empty() {
                let ps: Vec<String> = collections.iter().map(|c| param(&mut binds, c.clone())).collect();
                ors.push(format!("collection_id IN ({})", ps.join(", ")));
            }
            sql.push_str(&format!(" AND ({})", ors.join(" OR ")));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(self.db.reader()).await?;
        Ok(rows.iter().map(Job::from_row).collect::<Result<_, _>>()?)
    }

    /// Cancel a job: a queued (or failed, waiting for its retry) job at
    /// once; a running one cooperatively (its worker notices at the next
    /// heartbeat and stops the handler). Finished jobs → conflict.
    pub async fn cancel(&self, id: &str) -> Result<Job, QueueError> {
        let mut tx = self.db.begin().await?;
        let job = load(&mut tx, id).await?.ok_or(QueueError::NotFound("job"))?;
        let t = ts(now());
        let job = match job.status {
            JobStatus::Queued | JobStatus::Failed => {
                let row = sqlx::query(&format!(
                    "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $1 \
                     WHERE id = $2 AND status IN ('queued', 'failed') RETURNING {JOB_COLUMNS}"
                ))
                .bind(&t)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Err(QueueError::Conflict("the job changed meanwhile; try again".into()));
                };
                let job = Job::from_row(&row)?;
                workflow::on_job_finished(&mut tx, self, &job).await?;
                job
            }
            JobStatus::Running => {
                let row = sqlx::query(&format!(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running' RETURNING {JOB_COLUMNS}"
                ))
                .bind(&t)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Err(QueueError::Conflict("the job changed meanwhile; try again".into()));
                };
                Job::from_row(&row)?
            }
            other => {
                return Err(QueueError::Conflict(format!(
                    "a {} job cannot be cancelled",
                    other.as_str()
                )))
            }
        };
        tx.commit().await?;
        Ok(job)
    }

    /// Run a dead job again from its first attempt. Other states → conflict.
    pub async fn retry(&self, id: &str) -> Result<Job, QueueError> {
        let mut tx = self.db.begin().await?;
        let t = ts(now());
        let row = sqlx::query(&format!(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $1, updated_at = $1, finished_at = NULL, \
             cancel_requested = 0, lease_owner = NULL, lease_until = NULL WHERE id = $2 AND status = 'dead' RETURNING {JOB_COLUMNS}"
        ))
        .bind(&t)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let job = load(&mut tx, id).await?.ok_or(QueueError::NotFound("job"))?;
            return Err(QueueError::Conflict(format!(
                "only dead jobs can be retried; this one is {}",
                job.status.as_str()
            )));
        };
        let job = Job::from_row(&row)?;
        workflow::on_job_retried(&mut tx, &job).await?;
        notify(&mut tx).await?;
        tx.commit().await?;
        self.wake();
        Ok(job)
    }

    /// Lease up to `limit` due jobs to `owner`, highest priority first.
    pub async fn claim(&self, owner: &str, limit: i64) -> Result<Vec<Job>, QueueError> {
        let t = now();
        let lease_until = ts(t + chrono::Duration::seconds(self.settings.lease_secs as i64));
        let locking = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1, lease_until = $2, \
             started_at = $3, updated_at = $3, cancel_requested = 0 \
             WHERE id IN (SELECT id FROM jobs WHERE status IN ('queued', 'failed') AND run_at <= $3 \
             ORDER BY priority DESC, run_at, id LIMIT $4{locking}) RETURNING {JOB_COLUMNS}"
        );
        let query = sqlx::query(&sql).bind(owner).bind(lease_until).bind(ts(t)).bind(limit);
        let rows = match self.db.backend() {
            // One statement commits by itself: no `BEGIN`/`COMMIT` round trips.
            Backend::Postgres => query.fetch_all(self.db.writer()).await?,
            // SQLite writes go through the group commit.
            Backend::Sqlite => {
                let mut tx = self.db.begin().await?;
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows
            }
        };
        let mut jobs: Vec<Job> = rows.iter().map(Job::from_row).collect::<Result<_, _>>()?;
        jobs.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.run_at.cmp(&b.run_at)));
        for job in &jobs {
            if let Some(due) = atlas_db::parse_timestamp(&job.run_at) {
                let waited = (t - due).to_std().unwrap_or_default();
                metrics::histogram!("atlas_jobs_claim_latency_seconds").record(waited.as_secs_f64());
            }
        }
        Ok(jobs)
    }

    /// Extend the lease of a running job; says whether it was cancelled or lost.
    pub async fn heartbeat(&self, id: &str, owner: &str) -> Result<Heartbeat, QueueError> {
        let lease_until = ts(now() + chrono::Duration::seconds(self.settings.lease_secs as i64));
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running' RETURNING cancel_requested",
        )
        .bind(&lease_until)
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            None => Heartbeat::Lost,
            Some(r) if r.try_get::<i64, _>(0)? != 0 => Heartbeat::CancelRequested,
            Some(_) => Heartbeat::Extended,
        })
    }

    /// Record how attempts ended, all in one transaction (workers batch
    /// their completions). A job whose lease `owner` no longer holds is left
    /// alone: another worker has it. Returns the jobs as stored afterwards.
    pub async fn finish(&self, owner: &str, done: &[(Job, Outcome)]) -> Result<Vec<Job>, QueueError> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin().await?;
        let finished = self.finish_many(&mut tx, done, Guard::Owner(owner)).await?;
        let woke = finished
            .iter()
            .any(|j| j.workflow_id.is_some() || j.status == JobStatus::Failed);
        if woke {
            notify(&mut tx).await?;
        }
        tx.commit().await?;
        if woke {
            self.wake();
        }
        Ok(finished)
    }

    /// The transitions of `done` on `conn`, in few statements whatever their
    /// number: one guarded `UPDATE … FROM (VALUES …)` per chunk of jobs, one
    /// outbox insert for all their events, then each workflow's next state.
    /// Returns the jobs the guard let through, as stored afterwards, in the
    /// order of `done`.
    async fn finish_many(
        &self,
        conn: &mut AnyConnection,
        done: &[(Job, Outcome)],
        guard: Guard<'_>,
    ) -> Result<Vec<Job>, QueueError> {
        let t = ts(now());
        let mut released = Vec::new();
        let mut changes = Vec::with_capacity(done.len());
        for (job, outcome) in done {
            match self.transition(job, outcome) {
                Some(change) => changes.push(change),
                None => released.push(job),
            }
        }
        let mut stored: std::collections::HashMap<String, Job> = std::collections::HashMap::with_capacity(done.len());
        for chunk in changes.chunks(FINISH_CHUNK) {
            for job in update_finished(conn, chunk, &guard, &t).await? {
                stored.insert(job.id.clone(), job);
            }
        }
        let mut handed_back = std::collections::HashSet::new();
        if let Guard::Owner(owner) = guard {
            for job in released {
                if let Some(j) = release(conn, job, owner, &t).await? {
                    handed_back.insert(j.id.clone());
                    stored.insert(j.id.clone(), j);
                }
            }
        }
        // In the order the attempts were reported.
        let finished: Vec<Job> = done.iter().filter_map(|(job, _)| stored.remove(&job.id)).collect();
        // A job handed back has not ended an attempt: no event, no workflow step.
        let ended = || finished.iter().filter(|j| !handed_back.contains(&j.id));
        let mut events = Vec::new();
        for job in ended() {
            let ty = job.job_type.clone();
            match job.status {
                JobStatus::Succeeded => events.push(job_envelope(job, "JobSucceeded")),
                JobStatus::Dead => {
                    events.push(job_envelope(job, "JobDead"));
                    metrics::counter!("atlas_jobs_dead_total", "type" => ty.clone()).increment(1);
                }
                JobStatus::Failed => {
                    metrics::counter!("atlas_jobs_retries_total", "type" => ty.clone()).increment(1);
                }
                _ => {}
            }
            metrics::counter!("atlas_jobs_finished_total", "type" => ty, "status" => job.status.as_str()).increment(1);
        }
        atlas_events::append_many(conn, &events).await?;
        for job in ended() {
            if job.workflow_id.is_some() {
                workflow::on_job_finished(conn, self, job).await?;
            }
        }
        Ok(finished)
    }

    /// Where an attempt's `outcome` takes `job`; `None` for a release,
    /// which is not a transition of its own (see [`release`]).
    fn transition(&self, job: &Job, outcome: &Outcome) -> Option<Transition> {
        let (status, result, error, run_at) = match outcome {
            Outcome::Succeeded(v) => (JobStatus::Succeeded, Some(v.to_string()), None, None),
            Outcome::Cancelled => (
                JobStatus::Cancelled,
                None,
                Some("cancelled while running".to_string()),
                None,
            ),
            Outcome::Failed { error, retryable } => {
                if *retryable && job.attempts < job.max_attempts {
                    let delay = self.backoff(job.attempts);
                    let at = now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    (JobStatus::Failed, None, Some(error.clone()), Some(ts(at)))
                } else {
                    (JobStatus::Dead, None, Some(error.clone()), None)
                }
            }
            Outcome::Released => return None,
        };
        Some(Transition {
            id: job.id.clone(),
            status,
            result,
            error,
            run_at,
        })
    }

    /// Take back jobs whose worker stopped heartbeating (crashed, killed,
    /// cut off): each counts as a failed attempt, so it runs again — after
    /// its backoff — or goes `dead` when its attempts are used up.
    pub async fn reclaim_expired(&self) -> Result<usize, QueueError> {
        let locking = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.db.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND lease_until < $1 ORDER BY lease_until LIMIT 100{locking}"
        ))
        .bind(ts(now()))
        .fetch_all(&mut *tx)
        .await?;
        let expired: Vec<(Job, Outcome)> = rows
            .iter()
            .map(|row| {
                let job = Job::from_row(row)?;
                let outcome = Outcome::Failed {
                    error: format!(
                        "the worker running attempt {} stopped renewing its lease (crashed or cut off)",
                        job.attempts
                    ),
                    retryable: true,
                };
                Ok((job, outcome))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let taken = self.finish_many(&mut tx, &expired, Guard::Expired).await?;
        for job in &taken {
            // `attempts` is unchanged by the transition: the attempt that expired.
            tracing::warn!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts, "lease expired; job taken back");
        }
        let n = taken.len();
        if n > 0 {
            notify(&mut tx).await?;
        }
        tx.commit().await?;
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    /// When the earliest queued or failed job becomes due, if any.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        let row = sqlx::query("SELECT MIN(run_at) FROM jobs WHERE status IN ('queued', 'failed')")
            .fetch_one(self.db.reader())
            .await?;
        let min: Option<String> = row.try_get(0)?;
        Ok(min.as_deref().and_then(atlas_db::parse_timestamp))
    }

    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let t = ts(now());
        let rows = sqlx::query("SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status ORDER BY type, status")
            .fetch_all(self.db.reader())
            .await?;
        let by_type_and_status = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<(String, String, i64)>, sqlx::Error>>()?;
        let depth: i64 = sqlx::query("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'failed') AND run_at <= $1")
            .bind(&t)
            .fetch_one(self.db.reader())
            .await?
            .try_get(0)?;
        let expired_leases: i64 =
            sqlx::query("SELECT COUNT(*) FROM jobs WHERE status = 'running' AND lease_until < $1")
                .bind(&t)
                .fetch_one(self.db.reader())
                .await?
                .try_get(0)?;
        Ok(QueueStats {
            by_type_and_status,
            depth,
            expired_leases,
        })
    }

    /// Delay before the retry following attempt `attempt` (1-based):
    /// `backoff_initial_ms · 2^(attempt-1)`, capped at `backoff_max_ms`,
    /// of which a random half is taken off so retries of many jobs that
    /// failed together spread out.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let exp = attempt.clamp(1, 32) as u32 - 1;
        let full = self
            .settings
            .backoff_initial_ms
            .saturating_mul(1u64 << exp.min(30))
            .min(self.settings.backoff_max_ms);
        let half = full / 2;
        Duration::from_millis(full - half + rand::thread_rng().gen_range(0..=half))
    }
}

/// Insert a job on `conn` (inside the caller's transaction). See
/// [`JobQueue::enqueue`].
pub(crate) async fn insert_job(
    conn: &mut AnyConnection,
    settings: &JobsSettings,
    job: &NewJob,
) -> Result<(Job, bool), QueueError> {
    let max_attempts = job.max_attempts.unwrap_or(i64::from(settings.default_max_attempts));
    if !(1..=100).contains(&max_attempts) {
        return Err(QueueError::Invalid {
            field: "max_attempts",
            message: "max_attempts must be between 1 and 100".into(),
        });
    }
    let created = now();
    let run_at = job.run_at.unwrap_or(created).max(created);
    let (t, run_at) = (ts(created), ts(run_at));
    let (workflow_id, step) = match &job.workflow {
        Some((w, s)) => (Some(w.clone()), Some(*s)),
        None => (None, None),
    };
    let sql = format!(
        "INSERT INTO jobs (id, type, status, payload, attempts, max_attempts, priority, run_at, idempotency_key, collection_id, \
         workflow_id, workflow_step, created_by, request_id, trace_id, created_at, updated_at, causation_id, span_id) \
         VALUES ($1, $2, 'queued', $3, 0, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16) \
         ON CONFLICT (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&job.job_type)
        .bind(job.payload.to_string())
        .bind(max_attempts)
        .bind(job.priority)
        .bind(&run_at)
        .bind(&job.idempotency_key)
        .bind(&job.collection_id)
        .bind(workflow_id)
        .bind(step)
        .bind(&job.created_by)
        .bind(&job.request_id)
        .bind(&job.trace_id)
        .bind(&t)
        .bind(&job.causation_id)
        .bind(&job.span_id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = row {
        notify(conn).await?;
        return Ok((Job::from_row(&row)?, true));
    }
    // The key is taken: the same request again, or a different one.
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE created_by = $1 AND idempotency_key = $2"
    ))
    .bind(&job.created_by)
    .bind(&job.idempotency_key)
    .fetch_one(&mut *conn)
    .await?;
    let existing = Job::from_row(&row)?;
    if existing.job_type == job.job_type && existing.payload == job.payload {
        Ok((existing, false))
    } else {
        Err(QueueError::Conflict(
            "this idempotency key was used for a job with another type or payload".into(),
        ))
    }
}

pub(crate) async fn load(conn: &mut AnyConnection, id: &str) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(Job::from_row).transpose()
}

/// On PostgreSQL, wake every listening worker when the transaction commits.
pub(crate) async fn notify(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    if conn.backend_name().eq_ignore_ascii_case("postgresql") {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The event context of work a job does: its creator is the actor and the
/// request that enqueued it lends its ids, so the trace continues.
pub(crate) fn job_events(job: &Job) -> EventContext {
    EventContext {
        actor_user_id: job.created_by.clone(),
        request_id: job.request_id.clone(),
        trace_id: job.trace_id.clone(),
        causation_id: job.causation_id.clone(),
        span_id: job.span_id.clone(),
    }
}

fn job_envelope(job: &Job, event_type: &str) -> atlas_events::Envelope {
    let entity = EntityRef {
        entity_type: "job".into(),
        id: job.id.clone(),
        collection_id: job.collection_id.clone(),
    };
    job_events(job).envelope(event_type, entity, job.event_data())
}

/// Jobs per `UPDATE` in [`JobQueue::finish_many`]: 5 parameters each stays
/// far below both backends' limit on bound parameters.
const FINISH_CHUNK: usize = 500;

/// Which running jobs a transition may change.
enum Guard<'a> {
    /// Those whose lease this worker still holds.
    Owner(&'a str),
    /// Those whose lease has expired (the worker is gone).
    Expired,
}

/// A running job's next state.
struct Transition {
    id: String,
    status: JobStatus,
    result: Option<String>,
    error: Option<String>,
    /// A failed job's retry time.
    run_at: Option<String>,
}

/// Apply `changes` in one statement, each only if its job is still running
/// and `guard` holds; returns the jobs changed, as stored afterwards (in no
/// particular order).
async fn update_finished(
    conn: &mut AnyConnection,
    changes: &[Transition],
    guard: &Guard<'_>,
    t: &str,
) -> Result<Vec<Job>, QueueError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    // The lease check: a worker only finishes what it still holds; lease
    // expiry only takes what is still expired. `$1` is now, `$2` the owner.
    let guard_sql = match guard {
        Guard::Owner(_) => "jobs.lease_owner = $2",
        Guard::Expired => "jobs.lease_until < $1",
    };
    let first = match guard {
        Guard::Owner(_) => 3,
        Guard::Expired => 2,
    };
    // `VALUES` columns are named column1… on both backends: id, status,
    // result, last_error, run_at. A terminal status also sets `finished_at`.
    let rows = atlas_db::value_rows(first, changes.len(), 5);
    let sql = format!(
        "UPDATE jobs SET status = v.column2, result = COALESCE(v.column3, result), \
         last_error = COALESCE(v.column4, last_error), run_at = COALESCE(v.column5, run_at), \
         finished_at = CASE WHEN v.column2 IN ('succeeded', 'dead', 'cancelled') THEN $1 ELSE NULL END, \
         updated_at = $1, lease_owner = NULL, lease_until = NULL \
         FROM (VALUES {}) AS v WHERE jobs.id = v.column1 AND {guard_sql} AND jobs.status = 'running' \
         RETURNING {JOB_COLUMNS}",
        rows
    );
    let mut query = sqlx::query(&sql).bind(t);
    if let Guard::Owner(owner) = guard {
        query = query.bind(*owner);
    }
    for c in changes {
        query = query
            .bind(&c.id)
            .bind(c.status.as_str())
            .bind(&c.result)
            .bind(&c.error)
            .bind(&c.run_at);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(Job::from_row).collect::<Result<_, _>>()?)
}

/// Hand a running job back without counting its attempt (shutdown).
async fn release(conn: &mut AnyConnection, job: &Job, owner: &str, t: &str) -> Result<Option<Job>, QueueError> {
    let sql = format!(
        "UPDATE jobs SET status = CASE WHEN attempts > 1 THEN 'failed' ELSE 'queued' END, attempts = attempts - 1, \
         lease_owner = NULL, lease_until = NULL, updated_at = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running' \
         RETURNING {JOB_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(t)
        .bind(&job.id)
        .bind(owner)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.as_ref().map(Job::from_row).transpose()?)
}
