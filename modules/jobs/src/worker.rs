//! The worker: claims due jobs with a lease, runs each under its type's
//! time limit while heartbeating, and records how each attempt ended.
//!
//! One [`Worker`] per process runs up to `jobs.concurrency` jobs at once.
//! It sleeps until woken — by an enqueue in this process, by PostgreSQL
//! `NOTIFY` from any process, or by the `jobs.poll_interval_ms` fallback
//! (also what notices a `run_at` coming due) — and claims as many jobs as it
//! has free slots in one statement. Completions are batched: one task
//! commits every attempt that ended meanwhile in a single transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atlas_db::Backend;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::{JobError, JobHandlers, JobRun};
use crate::model::Job;
use crate::queue::{job_events, Heartbeat, JobQueue, Outcome, NOTIFY_CHANNEL};

/// Completions committed together at most.
const MAX_BATCH: usize = 512;

/// Runs jobs of the types in its [`JobHandlers`] until shutdown.
pub struct Worker {
    queue: JobQueue,
    handlers: Arc<JobHandlers>,
    /// This process's lease owner id.
    owner: String,
    /// How long running jobs may finish once shutdown begins; after that
    /// they are stopped and their leases released.
    grace: Duration,
    /// PostgreSQL: where to `LISTEN` for wake-ups.
    listen_url: Option<String>,
}

struct Completion {
    job: Job,
    outcome: Outcome,
}

impl Worker {
    pub fn new(queue: JobQueue, handlers: Arc<JobHandlers>, grace: Duration) -> Self {
        let owner = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        Worker {
            queue,
            handlers,
            owner,
            grace,
            listen_url: None,
        }
    }

    /// On PostgreSQL, also wake up on `NOTIFY` from other processes,
    /// listening on a connection of its own to `database_url`.
    pub fn listen_on(mut self, database_url: impl Into<String>) -> Self {
        self.listen_url = Some(database_url.into());
        self
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Start the claim loop, the completion committer and (on PostgreSQL)
    /// the `LISTEN` task. They end after `shutdown` and the grace period.
    pub fn spawn(self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let (Backend::Postgres, Some(url)) = (self.queue.db().backend(), self.listen_url.clone()) {
            let wake = self.queue.wake_handle();
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move { listen(url, wake, stop).await }));
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let committer = {
            let queue = self.queue.clone();
            let owner = self.owner.clone();
            tokio::spawn(async move { commit_completions(queue, owner, done_rx).await })
        };
        let this = Arc::new(self);
        tasks.push(tokio::spawn(async move {
            this.claim_loop(shutdown, done_tx).await;
            // `done_tx` clones held by running jobs drop as they end; the
            // committer then drains and stops.
            let _ = committer.await;
        }));
        tasks
    }

    async fn claim_loop(self: Arc<Self>, shutdown: CancellationToken, done: mpsc::UnboundedSender<Completion>) {
        let settings = self.queue.settings().clone();
        let slots = Arc::new(Semaphore::new(settings.concurrency as usize));
        let poll = Duration::from_millis(settings.poll_interval_ms);
        let reclaim_every = Duration::from_secs((settings.lease_secs / 2).max(1));
        let mut last_reclaim = Instant::now() - reclaim_every;
        let wake = self.queue.wake_handle();
        let stopping = CancellationToken::new();
        {
            // Running jobs get `grace` to finish after shutdown begins.
            let (shutdown, stopping, grace) = (shutdown.clone(), stopping.clone(), self.grace);
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                stopping.cancel();
            });
        }
        tracing::info!(owner = %self.owner, concurrency = settings.concurrency, "job worker started");
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Wait for a free slot, then claim as many jobs as slots are free.
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            };
            if last_reclaim.elapsed() >= reclaim_every {
                last_reclaim = Instant::now();
                if let Err(e) = self.queue.reclaim_expired().await {
                    tracing::warn!(error = %e, "taking back expired leases failed");
                }
            }
            let free = slots.available_permits() + 1;
            let claimed = match self.queue.claim(&self.owner, free as i64).await {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "claiming jobs failed; retrying");
                    drop(first);
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {},
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(first);
                let wait = match self.queue.next_due().await {
                    Ok(Some(due)) => (due - chrono::Utc::now()).to_std().unwrap_or_default().min(poll),
                    _ => poll,
                };
                if wait.is_zero() {
                    // Due now but nothing claimable (all taken by other
                    // workers a moment ago): do not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {},
                    _ = tokio::time::sleep(wait) => {},
                }
                continue;
            }
            let mut first = Some(first);
            for job in claimed {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        // Cannot happen: we claimed at most the free slots.
                        Err(_) => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    },
                };
                let (this, done, stopping) = (self.clone(), done.clone(), stopping.clone());
                tokio::spawn(async move {
                    let job_id = job.id.clone();
                    let outcome = this.run(&job, stopping).await;
                    if let Some(outcome) = outcome {
                        if done.send(Completion { job, outcome }).is_err() {
                            tracing::warn!(%job_id, "completion dropped: the worker is gone");
                        }
                    }
                    drop(permit);
                });
            }
        }
        // Let running jobs finish (or be released after the grace period).
        let _ = slots.acquire_many(settings.concurrency).await;
        tracing::info!(owner = %self.owner, "job worker stopped");
    }

    /// One attempt. `None`: the lease was lost, so the attempt's end is not
    /// this worker's to record.
    async fn run(&self, job: &Job, stopping: CancellationToken) -> Option<Outcome> {
        let started = Instant::now();
        let Some(handler) = self.handlers.get(&job.job_type) else {
            return Some(Outcome::Failed {
                error: format!("no handler for job type `{}` in this build", job.job_type),
                retryable: false,
            });
        };
        let limit = handler
            .timeout()
            .unwrap_or(Duration::from_secs(self.queue.settings().timeout_secs));
        let cancel = CancellationToken::new();
        let mut attempt = JobRun {
            id: job.id.clone(),
            job_type: job.job_type.clone(),
            payload: job.payload.clone(),
            attempt: job.attempts,
            created_by: job.created_by.clone(),
            workflow_id: job.workflow_id.clone(),
            events: job_events(job),
            cancel: cancel.clone(),
        };
        let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, attempt = job.attempts, trace_id = %job.trace_id);
        // The run is a child of the span that enqueued the job, and the
        // handler's writes are children of the run.
        atlas_telemetry::trace::continue_trace(&span, &job.trace_id, job.span_id.as_deref());
        if let Some(id) = atlas_telemetry::trace::span_id(&span) {
            attempt.events.span_id = Some(id);
        }
        let work = tokio::time::timeout(
            limit,
            tracing::Instrument::instrument(handler.run(&attempt), span.clone()),
        );
        tokio::pin!(work);
        let beat = Duration::from_secs(self.queue.settings().heartbeat_secs);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        let outcome = loop {
            tokio::select! {
                result = &mut work => break Some(match result {
                    Ok(Ok(value)) => Outcome::Succeeded(value),
                    Ok(Err(JobError::Skip(reason))) => Outcome::Succeeded(json!({ "skipped": reason })),
                    Ok(Err(JobError::Retry(error))) => Outcome::Failed { error, retryable: true },
                    Ok(Err(JobError::Fatal(error))) => Outcome::Failed { error, retryable: false },
                    Err(_) => Outcome::Failed {
                        error: format!("timed out after {} s", limit.as_secs_f64()),
                        retryable: true,
                    },
                }),
                _ = heartbeat.tick() => match self.queue.heartbeat(&job.id, &self.owner).await {
                    Ok(Heartbeat::Extended) => {}
                    Ok(Heartbeat::CancelRequested) => {
                        cancel.cancel();
                        break Some(Outcome::Cancelled);
                    }
                    Ok(Heartbeat::Lost) => {
                        tracing::warn!(parent: &span, "lease lost; stopping the attempt");
                        break None;
                    }
                    Err(e) => tracing::warn!(parent: &span, error = %e, "heartbeat failed"),
                },
                _ = stopping.cancelled() => break Some(Outcome::Released),
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        let label = match &outcome {
            Some(Outcome::Succeeded(_)) => "succeeded",
            Some(Outcome::Failed { .. }) => "failed",
            Some(Outcome::Cancelled) => "cancelled",
            Some(Outcome::Released) => "released",
            None => "lost",
        };
        if let Some(Outcome::Failed { error, .. }) = &outcome {
            tracing::warn!(parent: &span, %error, "job attempt failed");
        }
        metrics::histogram!("atlas_jobs_run_duration_seconds", "type" => job.job_type.clone(), "outcome" => label)
            .record(elapsed);
        outcome
    }
}

/// Commit completions in batches: everything that ended while the previous
/// batch committed goes into the next transaction.
async fn commit_completions(queue: JobQueue, owner: String, mut rx: mpsc::UnboundedReceiver<Completion>) {
    let mut batch: Vec<(Job, Outcome)> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push((first.job, first.outcome));
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push((c.job, c.outcome)),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        loop {
            match queue.finish(&owner, &batch).await {
                Ok(finished) => {
                    if finished.iter().any(|j| j.workflow_id.is_some()) {
                        crate::failpoint("workflow.step_committed");
                    }
                    break;
                }
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(error = %e, jobs = batch.len(), "recording finished jobs failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => {
                    // Their leases expire and they run again elsewhere.
                    tracing::error!(error = %e, jobs = batch.len(), "could not record finished jobs; their leases will expire");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Turn PostgreSQL notifications into wake-ups of this process's worker.
/// If the connection drops, it reconnects; meanwhile polling covers.
async fn listen(url: String, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    use atlas_db::sqlx::postgres::PgListener;
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "job wake-ups: cannot connect to LISTEN; polling meanwhile");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "job wake-ups: LISTEN failed; polling meanwhile");
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "job wake-ups: LISTEN connection lost; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}
