//! The job queue and its worker on SQLite and PostgreSQL: lifecycle,
//! retries with backoff, dead jobs, timeouts, cancellation, retry,
//! idempotency, `run_at`, priorities, lease expiry — and, with real worker
//! processes, a worker killed with SIGKILL mid-job and two workers sharing
//! 1,000 jobs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_db::sqlx::{self, Row};
use atlas_db::{Database, Migrator};
use atlas_jobs::{
    JobError, JobHandler, JobHandlers, JobQueue, JobRun, JobStatus, NewJob, QueueError, Worker, WorkflowTypes,
};
use atlas_kernel::settings::JobsSettings;
use atlas_kernel::Module;
use atlas_testkit::{both_backends, TestBackend, TestDatabase};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Set in a child process started by a test: the database URL to work on.
const CHILD_DB: &str = "ATLAS_JOBS_TEST_CHILD_DB";
/// What the child's `RECORD` handler does first: `hang` or `work`.
const CHILD_MODE: &str = "ATLAS_JOBS_TEST_CHILD_MODE";

fn settings() -> JobsSettings {
    JobsSettings {
        concurrency: 8,
        poll_interval_ms: 100,
        lease_secs: 2,
        heartbeat_secs: 1,
        backoff_initial_ms: 200,
        backoff_max_ms: 2000,
        ..JobsSettings::default()
    }
}

async fn migrate(db: &Database) {
    let mut migrations = atlas_events::EventsModule::default().migrations().unwrap();
    migrations.extend(atlas_jobs::JobsModule::default().migrations().unwrap());
    Migrator::new(db).up(&migrations).await.unwrap();
    sqlx::query("CREATE TABLE effects (job_id TEXT NOT NULL, runner TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL)")
        .execute(db.writer())
        .await
        .unwrap();
}

struct Env {
    _database: TestDatabase,
    db: Database,
    queue: JobQueue,
    url: String,
    backend: TestBackend,
}

async fn env(backend: TestBackend) -> Option<Env> {
    let database = TestDatabase::new(backend).await?;
    let db = database.connect().await;
    migrate(&db).await;
    let queue = JobQueue::new(db.clone(), settings(), Arc::new(WorkflowTypes::default()));
    Some(Env {
        url: database.url.clone(),
        _database: database,
        db,
        queue,
        backend,
    })
}

/// Records that it ran, once per successful attempt, in `effects`.
struct Record {
    db: Database,
    runner: String,
    /// Sleep this long before recording (the first attempt only, when `hang_first`).
    work: Duration,
    hang_first: bool,
}

#[async_trait]
impl JobHandler for Record {
    fn job_type(&self) -> &'static str {
        "RECORD"
    }
    async fn run(&self, job: &JobRun) -> Result<Value, JobError> {
        let started = atlas_db::now();
        if self.hang_first && job.attempt == 1 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        tokio::time::sleep(self.work).await;
        let mut tx = self.db.begin().await.map_err(|e| JobError::Retry(e.to_string()))?;
        sqlx::query("INSERT INTO effects (job_id, runner, started_at, finished_at) VALUES ($1, $2, $3, $4)")
            .bind(&job.id)
            .bind(&self.runner)
            .bind(&started)
            .bind(atlas_db::now())
            .execute(&mut *tx)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        tx.commit().await.map_err(|e| JobError::Retry(e.to_string()))?;
        Ok(json!({"runner": self.runner}))
    }
}

/// Always fails (retryably), noting when each attempt started.
#[derive(Default)]
struct Flaky {
    starts: Mutex<Vec<Instant>>,
}

#[async_trait]
impl JobHandler for Flaky {
    fn job_type(&self) -> &'static str {
        "FLAKY"
    }
    async fn run(&self, _job: &JobRun) -> Result<Value, JobError> {
        self.starts.lock().unwrap().push(Instant::now());
        Err(JobError::Retry("boom".into()))
    }
}

/// Sleeps `payload.ms`; notes when it was dropped unfinished.
#[derive(Default)]
struct Slow {
    dropped: Arc<AtomicBool>,
    started: AtomicUsize,
}

struct DropFlag(Arc<AtomicBool>, bool);
impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl JobHandler for Slow {
    fn job_type(&self) -> &'static str {
        "SLOW"
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_millis(500))
    }
    async fn run(&self, job: &JobRun) -> Result<Value, JobError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut flag = DropFlag(self.dropped.clone(), false);
        let ms = job.payload["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        flag.1 = true;
        Ok(json!({"slept_ms": ms}))
    }
}

fn start_worker(e: &Env, handlers: Vec<Arc<dyn JobHandler>>) -> CancellationToken {
    let registry = JobHandlers::default();
    for h in handlers {
        registry.register(h);
    }
    let stop = CancellationToken::new();
    Worker::new(e.queue.clone(), Arc::new(registry), Duration::from_millis(200))
        .listen_on(e.url.clone())
        .spawn(stop.clone());
    stop
}

fn record(e: &Env) -> Arc<Record> {
    Arc::new(Record {
        db: e.db.clone(),
        runner: "test".into(),
        work: Duration::ZERO,
        hang_first: false,
    })
}

async fn wait_for(queue: &JobQueue, id: &str, status: JobStatus, within: Duration) -> atlas_jobs::Job {
    let deadline = Instant::now() + within;
    loop {
        let job = queue.get(id).await.unwrap().unwrap();
        if job.status == status {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job never became {status:?}; it is {:?} ({:?})",
            job.status,
            job.last_error
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events(db: &Database, event_type: &str, job_id: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM outbox WHERE event_type = $1 AND entity_id = $2")
        .bind(event_type)
        .bind(job_id)
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0)
}

async fn effects(db: &Database, job_id: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM effects WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0)
}

async fn lifecycle(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let (job, created) = e.queue.enqueue(NewJob::new("SLOW", json!({"ms": 300}))).await.unwrap();
    assert!(created);
    assert_eq!((job.status, job.attempts), (JobStatus::Queued, 0));
    let slow = Arc::new(Slow::default());
    let stop = start_worker(&e, vec![slow.clone()]);
    let running = wait_for(&e.queue, &job.id, JobStatus::Running, Duration::from_secs(5)).await;
    assert_eq!(running.attempts, 1);
    assert!(running.started_at.is_some());
    let done = wait_for(&e.queue, &job.id, JobStatus::Succeeded, Duration::from_secs(5)).await;
    assert_eq!(done.result, Some(json!({"slept_ms": 300})));
    assert_eq!(done.attempts, 1);
    assert!(done.finished_at.is_some());
    assert_eq!(events(&e.db, "JobSucceeded", &job.id).await, 1);
    stop.cancel();
}
both_backends!(queued_running_succeeded, lifecycle);

async fn retries_then_dead(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let mut new = NewJob::new("FLAKY", json!({}));
    new.max_attempts = Some(3);
    let (job, _) = e.queue.enqueue(new).await.unwrap();
    let flaky = Arc::new(Flaky::default());
    let stop = start_worker(&e, vec![flaky.clone()]);
    let failed = wait_for(&e.queue, &job.id, JobStatus::Failed, Duration::from_secs(5)).await;
    assert_eq!(failed.last_error.as_deref(), Some("boom"));
    assert!(
        failed.run_at > failed.updated_at.clone().replace('Z', ""),
        "retried later, not now"
    );
    let dead = wait_for(&e.queue, &job.id, JobStatus::Dead, Duration::from_secs(10)).await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(events(&e.db, "JobDead", &job.id).await, 1);
    let starts = flaky.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 3);
    let (gap1, gap2) = (starts[1] - starts[0], starts[2] - starts[1]);
    // Backoff 200 ms then 400 ms, each with up to half taken off by jitter.
    assert!(gap1 >= Duration::from_millis(100), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(200), "{gap2:?}");
    // A dead job is retried from its first attempt.
    let again = e.queue.retry(&job.id).await.unwrap();
    assert_eq!((again.status, again.attempts), (JobStatus::Queued, 0));
    wait_for(&e.queue, &job.id, JobStatus::Dead, Duration::from_secs(10)).await;
    assert_eq!(flaky.starts.lock().unwrap().len(), 6);
    stop.cancel();
}
both_backends!(failing_jobs_retry_with_growing_delays_then_die, retries_then_dead);

async fn timeout(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let mut new = NewJob::new("SLOW", json!({"ms": 10_000}));
    new.max_attempts = Some(1);
    let (job, _) = e.queue.enqueue(new).await.unwrap();
    let slow = Arc::new(Slow::default());
    let stop = start_worker(&e, vec![slow.clone()]);
    let dead = wait_for(&e.queue, &job.id, JobStatus::Dead, Duration::from_secs(5)).await;
    assert!(dead.last_error.as_deref().unwrap().contains("timed out"), "{dead:?}");
    assert!(slow.dropped.load(Ordering::SeqCst), "the handler was cancelled");
    stop.cancel();
}
both_backends!(a_handler_over_its_time_limit_is_cancelled, timeout);

async fn cancel(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    // Queued: cancelled at once.
    let mut later = NewJob::new("RECORD", json!({}));
    later.run_at = Some(chrono::Utc::now() + chrono::Duration::seconds(60));
    let (queued, _) = e.queue.enqueue(later).await.unwrap();
    let cancelled = e.queue.cancel(&queued.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(matches!(e.queue.cancel(&queued.id).await, Err(QueueError::Conflict(_))));
    assert!(matches!(e.queue.retry(&queued.id).await, Err(QueueError::Conflict(_))));

    // Running: the worker stops the handler at its next heartbeat.
    let slow = Arc::new(Slow::default());
    let handler = Arc::new(LongSlow(slow.clone()));
    let (running, _) = e
        .queue
        .enqueue(NewJob::new("LONG", json!({"ms": 20_000})))
        .await
        .unwrap();
    let stop = start_worker(&e, vec![handler, record(&e)]);
    wait_for(&e.queue, &running.id, JobStatus::Running, Duration::from_secs(5)).await;
    let asked = e.queue.cancel(&running.id).await.unwrap();
    assert_eq!(asked.status, JobStatus::Running);
    assert!(asked.cancel_requested);
    let t = Instant::now();
    wait_for(&e.queue, &running.id, JobStatus::Cancelled, Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(slow.dropped.load(Ordering::SeqCst));
    assert_eq!(effects(&e.db, &queued.id).await, 0);
    stop.cancel();
}
both_backends!(queued_and_running_jobs_can_be_cancelled, cancel);

/// `Slow` without a short time limit.
struct LongSlow(Arc<Slow>);

#[async_trait]
impl JobHandler for LongSlow {
    fn job_type(&self) -> &'static str {
        "LONG"
    }
    async fn run(&self, job: &JobRun) -> Result<Value, JobError> {
        self.0.run(job).await
    }
}

async fn idempotency(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let job = |payload: Value, user: &str| {
        let mut j = NewJob::new("RECORD", payload);
        j.idempotency_key = Some("key-1".into());
        j.created_by = Some(user.into());
        j
    };
    let (first, created) = e.queue.enqueue(job(json!({"a": 1, "b": [1, 2]}), "u1")).await.unwrap();
    assert!(created);
    let (again, created) = e.queue.enqueue(job(json!({"b": [1, 2], "a": 1}), "u1")).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    match e.queue.enqueue(job(json!({"a": 2}), "u1")).await {
        Err(QueueError::Conflict(m)) => assert!(m.contains("idempotency key"), "{m}"),
        other => panic!("{other:?}"),
    }
    let (other_user, created) = e.queue.enqueue(job(json!({"a": 2}), "u2")).await.unwrap();
    assert!(created, "keys are scoped to their user");
    assert_ne!(other_user.id, first.id);
}
both_backends!(idempotency_keys, idempotency);

async fn scheduling_and_priority(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let mut later = NewJob::new("RECORD", json!({}));
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    later.run_at = Some(due);
    let (later, _) = e.queue.enqueue(later).await.unwrap();
    let (low, _) = e
        .queue
        .enqueue(NewJob::new("RECORD", json!({"p": "low"})))
        .await
        .unwrap();
    let mut high = NewJob::new("RECORD", json!({"p": "high"}));
    high.priority = 10;
    let (high, _) = e.queue.enqueue(high).await.unwrap();
    let first = e.queue.claim("me", 1).await.unwrap();
    assert_eq!(first.iter().map(|j| &j.id).collect::<Vec<_>>(), [&high.id]);
    let second = e.queue.claim("me", 10).await.unwrap();
    assert_eq!(
        second.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&low.id],
        "not the future job"
    );
    let stop = start_worker(&e, vec![record(&e)]);
    let done = wait_for(&e.queue, &later.id, JobStatus::Succeeded, Duration::from_secs(5)).await;
    let started = atlas_db::parse_timestamp(done.started_at.as_deref().unwrap()).unwrap();
    assert!(started >= due, "started {started} before run_at {due}");
    stop.cancel();
}
both_backends!(run_at_and_priorities, scheduling_and_priority);

async fn lease_expiry(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let (job, _) = e.queue.enqueue(NewJob::new("RECORD", json!({}))).await.unwrap();
    // A worker claims it and dies without a word.
    let claimed = e.queue.claim("gone-worker", 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let stop = start_worker(&e, vec![record(&e)]);
    let done = wait_for(&e.queue, &job.id, JobStatus::Succeeded, Duration::from_secs(8)).await;
    assert_eq!(done.attempts, 2);
    assert_eq!(effects(&e.db, &job.id).await, 1);
    // The lost worker's late report is ignored: it no longer holds the lease.
    let late = e
        .queue
        .finish(
            "gone-worker",
            &[(claimed[0].clone(), atlas_jobs::Outcome::Succeeded(json!("late")))],
        )
        .await
        .unwrap();
    assert!(late.is_empty());
    stop.cancel();
}
both_backends!(an_expired_lease_is_taken_back, lease_expiry);

async fn mixed_batch(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    use atlas_jobs::Outcome;
    for n in 0..5 {
        let mut job = NewJob::new("RECORD", json!({ "n": n }));
        job.max_attempts = Some(if n == 2 { 1 } else { 3 });
        e.queue.enqueue(job).await.unwrap();
    }
    let mine = e.queue.claim("me", 4).await.unwrap();
    let theirs = e.queue.claim("other", 1).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (4, 1));
    let n = |j: &atlas_jobs::Job| j.payload["n"].as_i64().unwrap();
    let mut batch: Vec<(atlas_jobs::Job, Outcome)> = mine
        .iter()
        .map(|j| {
            let outcome = match n(j) {
                0 => Outcome::Succeeded(json!({ "ok": 0 })),
                1 => Outcome::Failed {
                    error: "try again".into(),
                    retryable: true,
                },
                2 => Outcome::Failed {
                    error: "no attempts left".into(),
                    retryable: true,
                },
                _ => Outcome::Cancelled,
            };
            (j.clone(), outcome)
        })
        .collect();
    // Not this worker's lease: left alone.
    batch.push((theirs[0].clone(), Outcome::Succeeded(json!("not mine"))));
    let finished = e.queue.finish("me", &batch).await.unwrap();
    let order: Vec<&str> = finished.iter().map(|j| j.id.as_str()).collect();
    let expected: Vec<&str> = mine.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(order, expected, "the stored jobs come back in the batch's order");
    for job in &finished {
        let stored = e.queue.get(&job.id).await.unwrap().unwrap();
        assert_eq!(&stored, job);
        assert_eq!(stored.lease_owner, None);
        match n(job) {
            0 => {
                assert_eq!(stored.status, JobStatus::Succeeded);
                assert_eq!(stored.result, Some(json!({ "ok": 0 })));
                assert!(stored.finished_at.is_some());
            }
            1 => {
                assert_eq!(stored.status, JobStatus::Failed);
                assert_eq!(stored.last_error.as_deref(), Some("try again"));
                assert!(stored.finished_at.is_none());
                assert!(
                    stored.run_at > mine.iter().find(|j| n(j) == 1).unwrap().run_at,
                    "retry later"
                );
            }
            2 => {
                assert_eq!(stored.status, JobStatus::Dead);
                assert_eq!(stored.last_error.as_deref(), Some("no attempts left"));
                assert!(stored.finished_at.is_some());
            }
            _ => {
                assert_eq!(stored.status, JobStatus::Cancelled);
                assert!(stored.finished_at.is_some());
            }
        }
    }
    let other = e.queue.get(&theirs[0].id).await.unwrap().unwrap();
    assert_eq!(other.status, JobStatus::Running);
    assert_eq!(other.lease_owner.as_deref(), Some("other"));
    // One event per job that succeeded or died, committed with it.
    let rows = sqlx::query("SELECT event_type, entity_id FROM outbox ORDER BY sequence")
        .fetch_all(e.db.reader())
        .await
        .unwrap();
    let events: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let id_of = |k: i64| mine.iter().find(|j| n(j) == k).unwrap().id.clone();
    let mut want = vec![
        ("JobSucceeded".to_string(), id_of(0)),
        ("JobDead".to_string(), id_of(2)),
    ];
    want.sort_by_key(|(_, id)| order.iter().position(|o| o == id));
    assert_eq!(events, want);
}
both_backends!(a_batch_of_mixed_outcomes_finishes_together, mixed_batch);

// --- worker processes ---------------------------------------------------

/// Not a test of its own: the body of a worker process the tests below
/// start (this test binary run again with `CHILD_DB` set).
#[test]
fn child_worker() {
    let Ok(url) = std::env::var(CHILD_DB) else { return };
    let hang = std::env::var(CHILD_MODE).is_ok_and(|m| m == "hang");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = Database::connect(&atlas_db::DatabaseSettings {
            url: url.clone(),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            background_connections: 0,
        })
        .await
        .unwrap();
        let queue = JobQueue::new(db.clone(), settings(), Arc::new(WorkflowTypes::default()));
        let handlers = JobHandlers::default();
        handlers.register(Arc::new(Record {
            db,
            runner: format!("pid-{}", std::process::id()),
            work: Duration::from_millis(2),
            hang_first: hang,
        }));
        let worker = Worker::new(queue, Arc::new(handlers), Duration::from_secs(1)).listen_on(url);
        worker.spawn(CancellationToken::new());
        println!("child worker ready");
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}

fn spawn_child(url: &str, mode: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_worker", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, url)
        .env(CHILD_MODE, mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("child worker ready") => break,
            Some(_) => continue,
            None => panic!("the child worker exited before it was ready"),
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

async fn killed_worker(backend: TestBackend) {
    let Some(e) = env(backend).await else { return };
    let (job, _) = e.queue.enqueue(NewJob::new("RECORD", json!({}))).await.unwrap();
    let mut child = spawn_child(&e.url, "hang");
    let running = wait_for(&e.queue, &job.id, JobStatus::Running, Duration::from_secs(10)).await;
    assert!(running
        .lease_owner
        .as_deref()
        .unwrap()
        .contains(&format!(":{}:", child.id())));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Another worker takes the job once the dead one's lease expires.
    let stop = start_worker(&e, vec![record(&e)]);
    let done = wait_for(&e.queue, &job.id, JobStatus::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result, Some(json!({"runner": "test"})));
    assert_eq!(effects(&e.db, &job.id).await, 1, "its effect happened exactly once");
    assert_eq!(events(&e.db, "JobSucceeded", &job.id).await, 1);
    stop.cancel();
}
both_backends!(a_worker_killed_mid_job_loses_its_lease, killed_worker);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_a_thousand_jobs_on_postgres() {
    let Some(e) = env(TestBackend::Postgres).await else {
        return;
    };
    assert_eq!(e.backend, TestBackend::Postgres);
    let mut children = vec![spawn_child(&e.url, "work"), spawn_child(&e.url, "work")];
    for n in 0..1000 {
        let mut job = NewJob::new("RECORD", json!({ "n": n }));
        job.max_attempts = Some(1);
        e.queue.enqueue(job).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = sqlx::query("SELECT COUNT(*) FROM jobs WHERE status IN ('succeeded', 'dead')")
            .fetch_one(e.db.reader())
            .await
            .unwrap()
            .get(0);
        if done == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of 1000 jobs finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let row = sqlx::query("SELECT COUNT(*), MIN(attempts), MAX(attempts) FROM jobs WHERE status = 'succeeded'")
        .fetch_one(e.db.reader())
        .await
        .unwrap();
    assert_eq!(
        (row.get::<i64, _>(0), row.get::<i64, _>(1), row.get::<i64, _>(2)),
        (1000, 1, 1),
        "every job succeeded on its first and only attempt"
    );
    let runs = sqlx::query("SELECT job_id, COUNT(*) FROM effects GROUP BY job_id HAVING COUNT(*) > 1")
        .fetch_all(e.db.reader())
        .await
        .unwrap();
    assert!(runs.is_empty(), "{} jobs ran more than once", runs.len());
    let total: i64 = sqlx::query("SELECT COUNT(*) FROM effects")
        .fetch_one(e.db.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 1000);
    let runners: Vec<(String, i64)> =
        sqlx::query("SELECT runner, COUNT(*) FROM effects GROUP BY runner ORDER BY runner")
            .fetch_all(e.db.reader())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(runners.len(), 2, "both processes worked: {runners:?}");
    assert_eq!(events_of_type(&e.db, "JobSucceeded").await, 1000);
}

async fn events_of_type(db: &Database, event_type: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM outbox WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0)
}
