//! Write transactions, with group commit on SQLite.
//!
//! SQLite has one writer, and every commit appends each page it touched to
//! the WAL. Under concurrent writes Atlas therefore commits them in groups:
//! the first writer opens a transaction, each later writer that arrives
//! while the group is open runs inside it under its own savepoint, and the
//! group commits once when no writer is waiting (or it is full). A writer's
//! `commit()` returns only after the group's `COMMIT`, with its result, so a
//! caller never reports success for data that is not durable. A writer that
//! fails or is dropped rolls back to its savepoint; the others are unaffected.
//!
//! Every change of the group's state (begin, release, commit) runs in a task
//! of its own, so a caller cancelled halfway (a client that hung up) cannot
//! leave the shared transaction half-changed.
//!
//! Besides sqlx's connection, a second connection to the same file serves
//! batches of statements ([`Database::write_batch`](crate::Database::write_batch)).
//! It belongs to a write thread of its own: callers queue their batches and
//! await the outcome, and the thread takes whatever is queued, runs each
//! batch under its own savepoint in one transaction, and commits once. So
//! the write lock is never held while a task waits for a runtime thread,
//! and a group holds every batch that arrived while the previous one
//! committed. A group holds one of the two connections' transactions,
//! never both: the thread takes the same lock as sqlx's writers and commits
//! an open sqlx group first. It also holds sqlx's writer connection during
//! its group, so whatever writes through [`Database::writer`](crate::Database::writer)
//! waits in the pool, instead of in SQLite's busy handler.
//!
//! Once the write thread has been idle for [`TRIM_AFTER_IDLE`] after a
//! group, it gives the C heap's free memory back to the OS (see
//! [`trim_c_heap`]).
//!
//! On PostgreSQL a [`WriteTx`] is a plain transaction.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use crate::batch::Statement;
use crate::checkpoint::FinishRequest;
use crate::DbError;

/// Writers in one group at most.
const MAX_GROUP: usize = 64;
/// How long a writer that left its group open waits before committing it
/// itself (if the writer expected next never came).
const GROUP_WATCHDOG: Duration = Duration::from_millis(5);

/// How long the write thread waits after its last group before it trims
/// the C heap: long enough that a steady load never waits for a trim, short
/// enough that the memory is back before the next load starts.
const TRIM_AFTER_IDLE: Duration = Duration::from_secs(1);

type GroupResult = Result<(), Arc<DbError>>;

/// Shared state of the SQLite write path.
pub(crate) struct GroupCommit {
    pool: AnyPool,
    state: Arc<Mutex<GroupState>>,
    /// Writers waiting for the lock (they will join the open group).
    waiting: Arc<AtomicUsize>,
    /// Where to open the direct connection; `None` for `:memory:`.
    direct_path: Option<(PathBuf, Duration)>,
    /// The write thread's queue (started on first use, again if it died).
    batches: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    /// Raised by the checkpoint task when the write thread should finish a
    /// checkpoint between two groups (see `checkpoint.rs`).
    finish_checkpoint: FinishRequest,
}

/// A batch queued for the write thread.
struct Job {
    statements: Vec<Statement>,
    done: oneshot::Sender<Result<(), DbError>>,
}

#[derive(Default)]
struct GroupState {
    conn: Option<PoolConnection<Any>>,
    /// sqlx's connection holds a transaction (`BEGIN` issued, no `COMMIT`
    /// yet). The write thread's groups begin and end under the lock.
    open: bool,
    /// Counts groups, so a watchdog only commits the group it belongs to.
    generation: u64,
    /// Writers of the open group whose savepoints were released.
    members: Vec<oneshot::Sender<GroupResult>>,
    /// A writer was dropped mid-transaction: undo it before anything else.
    pending_undo: Option<Undo>,
}

#[derive(Clone, Copy)]
enum Undo {
    /// Roll back to and release the writer's savepoint.
    Savepoint,
    /// The writer opened the group alone: roll the whole transaction back.
    Transaction,
}

impl GroupCommit {
    /// The write path over `pool` (one connection), and over a direct
    /// connection to `direct_path` when given.
    pub(crate) fn new(pool: AnyPool, direct_path: Option<(PathBuf, Duration)>) -> Arc<Self> {
        Arc::new(GroupCommit {
            pool,
            state: Arc::new(Mutex::new(GroupState::default())),
            waiting: Arc::new(AtomicUsize::new(0)),
            direct_path,
            batches: std::sync::Mutex::new(None),
            finish_checkpoint: FinishRequest::default(),
        })
    }

    /// What the checkpoint task raises to ask the write thread for a checkpoint.
    pub(crate) fn finish_checkpoint(&self) -> FinishRequest {
        self.finish_checkpoint.clone()
    }

    pub(crate) fn has_direct(&self) -> bool {
        self.direct_path.is_some()
    }

    /// Start a write. If the caller is cancelled meanwhile, the task still
    /// finishes and the unclaimed `WriteTx` undoes itself when dropped.
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<WriteTx, sqlx::Error> {
        let group = self.clone();
        uncancellable(async move { group.begin_in_task().await }).await?
    }

    /// Wait for the write path, counted among the writers waiting for it.
    async fn lock(&self) -> OwnedMutexGuard<GroupState> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.state.clone().lock_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    async fn begin_in_task(self: Arc<Self>) -> Result<WriteTx, sqlx::Error> {
        let mut guard = self.lock().await;
        undo_pending(&mut guard).await?;
        if guard.conn.is_none() {
            guard.conn = Some(self.pool.acquire().await?);
        }
        let savepoint = if guard.open {
            conn(&mut guard).execute("SAVEPOINT atlas_writer").await?;
            true
        } else {
            // IMMEDIATE takes the write lock now, waiting up to the busy
            // timeout for another process's writer (a CLI command next to a
            // running server); a deferred BEGIN would fail with "database
            // is locked" at its first write instead, without waiting.
            conn(&mut guard).execute("BEGIN IMMEDIATE").await?;
            guard.open = true;
            guard.generation += 1;
            false
        };
        Ok(WriteTx {
            inner: Inner::Group {
                group: self,
                guard: Some(guard),
                savepoint,
            },
        })
    }

    /// Commit the open group (if it is still `generation`) and tell its members.
    async fn flush(guard: &mut GroupState, generation: Option<u64>) {
        if !guard.open || generation.is_some_and(|g| g != guard.generation) {
            return;
        }
        let result: Result<(), sqlx::Error> = match undo_pending(guard).await {
            Ok(()) if guard.open => conn(guard).execute("COMMIT").await.map(|_| ()),
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        };
        let result: GroupResult = result.map_err(|e| {
            // The group is lost; make sure nothing of it lingers.
            Arc::new(DbError::from(e))
        });
        if result.is_err() {
            let _ = conn(guard).execute("ROLLBACK").await;
        }
        guard.open = false;
        guard.conn = None; // back to the pool, so other users of the writer pool get a turn
        for member in guard.members.drain(..) {
            let _ = member.send(result.clone());
        }
    }

    /// Run `statements` as one member of a group of the write thread (see
    /// the module's text). If the caller is cancelled meanwhile, the batch
    /// still runs.
    pub(crate) async fn write_direct(self: &Arc<Self>, statements: Vec<Statement>) -> Result<(), DbError> {
        let (done, outcome) = oneshot::channel();
        self.queue(Job { statements, done })?;
        outcome
            .await
            .map_err(|_| DbError::Write("the write thread stopped before the batch ran".into()))?
    }

    /// Hand `job` to the write thread, starting it if need be.
    fn queue(&self, job: Job) -> Result<(), DbError> {
        let mut sender = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let job = match sender.as_ref() {
            Some(queue) => match queue.send(job) {
                Ok(()) => return Ok(()),
                // The thread is gone (it panicked): start another one.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let started = self.start_thread()?;
        started
            .send(job)
            .map_err(|_| DbError::Write("the write thread stopped at once".into()))?;
        *sender = Some(started);
        Ok(())
    }

    fn start_thread(&self) -> Result<mpsc::Sender<Job>, DbError> {
        let Some((path, busy_timeout)) = self.direct_path.clone() else {
            return Err(DbError::InvalidUrl(
                "an in-memory SQLite database has no direct writes".into(),
            ));
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| DbError::Write(format!("batches need the Tokio runtime: {e}")))?;
        let (sender, queue) = mpsc::channel();
        let thread = WriteThread {
            pool: self.pool.clone(),
            state: self.state.clone(),
            waiting: self.waiting.clone(),
            path,
            busy_timeout,
            runtime,
            conn: None,
            finish_checkpoint: self.finish_checkpoint.clone(),
        };
        std::thread::Builder::new()
            .name("atlas-sqlite-writer".into())
            .spawn(move || thread.run(queue))
            .map_err(|e| DbError::Write(format!("cannot start the write thread: {e}")))?;
        Ok(sender)
    }

    /// Undo a dropped writer now rather than at the next write, so a lone
    /// failed writer does not keep SQLite's write lock; commit the group if
    /// its members would otherwise wait for a writer that is not coming.
    fn clean_up_later(self: &Arc<Self>) {
        let group = self.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut guard = group.state.clone().lock_owned().await;
                if undo_pending(&mut guard).await.is_err() {
                    let _ = conn(&mut guard).execute("ROLLBACK").await;
                    guard.open = false;
                    guard.conn = None;
                }
                if guard.open && !guard.members.is_empty() && group.waiting.load(Ordering::SeqCst) == 0 {
                    GroupCommit::flush(&mut guard, None).await;
                }
            });
        }
    }
}

fn conn(guard: &mut GroupState) -> &mut AnyConnection {
    // `begin` puts a connection in before any statement runs.
    guard
        .conn
        .as_deref_mut()
        .unwrap_or_else(|| unreachable!("write connection is present while a writer runs"))
}

async fn undo_pending(guard: &mut GroupState) -> Result<(), sqlx::Error> {
    match guard.pending_undo.take() {
        None => Ok(()),
        Some(Undo::Savepoint) => {
            conn(guard).execute("ROLLBACK TO SAVEPOINT atlas_writer").await?;
            conn(guard).execute("RELEASE SAVEPOINT atlas_writer").await?;
            Ok(())
        }
        Some(Undo::Transaction) => {
            conn(guard).execute("ROLLBACK").await?;
            guard.open = false;
            guard.conn = None;
            Ok(())
        }
    }
}

/// The write thread: owns the direct connection and runs the queued
/// batches in groups (see the module's text).
struct WriteThread {
    pool: AnyPool,
    state: Arc<Mutex<GroupState>>,
    waiting: Arc<AtomicUsize>,
    path: PathBuf,
    busy_timeout: Duration,
    /// For sqlx's side of the lock: committing an open sqlx group, undoing
    /// a dropped writer, holding the writer pool's connection.
    runtime: tokio::runtime::Handle,
    /// Opened by the first group (a group that could not open it fails,
    /// and the next one tries again).
    conn: Option<rusqlite::Connection>,
    finish_checkpoint: FinishRequest,
}

impl WriteThread {
    /// Run groups until every sender is gone (the database was dropped).
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        // sqlx returns a pool connection to its pool from a task.
        let runtime = self.runtime.clone();
        let _context = runtime.enter();
        // Whether a group ran since the C heap was last trimmed.
        let mut wrote = false;
        loop {
            let first = if wrote {
                match queue.recv_timeout(TRIM_AFTER_IDLE) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        trim_c_heap();
                        wrote = false;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match queue.recv() {
                    Ok(job) => job,
                    Err(mpsc::RecvError) => return,
                }
            };
            let mut jobs = vec![first];
            jobs.extend(queue.try_iter().take(MAX_GROUP - 1));
            self.group(jobs, &queue);
            wrote = true;
        }
    }

    /// Take the write lock, run `jobs` (and whatever arrives meanwhile, up
    /// to [`MAX_GROUP`]) in one transaction, commit and tell each job.
    fn group(&mut self, jobs: Vec<Job>, queue: &mpsc::Receiver<Job>) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.state.clone().blocking_lock_owned();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let pool = self.pool.clone();
        let ready = self.runtime.block_on(async {
            // An sqlx group left open for us to join: commit it first.
            GroupCommit::flush(&mut guard, None).await;
            undo_pending(&mut guard).await?;
            if guard.conn.is_none() {
                guard.conn = Some(pool.acquire().await?);
            }
            Ok::<(), sqlx::Error>(())
        });
        let finish = self.finish_checkpoint.clone();
        let conn = ready.map_err(DbError::from).and_then(|()| self.connection());
        match conn {
            Ok(conn) => {
                // Under the write lock and before the group begins: no frame
                // is added while it runs.
                crate::checkpoint::finish_if_asked(conn, &finish);
                run_group(conn, jobs, queue)
            }
            Err(e) => fail_all(jobs, &e.to_string()),
        }
        guard.conn = None;
    }

    fn connection(&mut self) -> Result<&rusqlite::Connection, DbError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let conn = crate::direct::open_connection(&self.path, self.busy_timeout)?;
                // The same settings as the writer pool's connection (per
                // connection in SQLite).
                conn.execute_batch(&format!(
                    "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; {}",
                    crate::checkpoint::writer_pragmas()
                ))?;
                conn.set_prepared_statement_cache_capacity(64);
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }
}

/// Give the free memory of the C heap back to the OS.
///
/// SQLite allocates its page caches, statements and row buffers with
/// glibc's malloc, which on its own returns memory only from the top of a
/// heap: after a burst of writes, the pages freed below stay resident
/// (about 2.5 MiB after seeding 10,000 items, bench/RESULTS.md).
/// `malloc_trim` releases every free page of every arena; on a heap of this
/// size it takes well under a millisecond.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_c_heap() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim takes a plain integer, locks each arena itself
    // and only releases pages that hold no allocation.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released == 1,
        micros = started.elapsed().as_micros() as u64,
        "sqlite: trimmed the C heap after the last write group"
    );
}

/// Other C libraries have no `malloc_trim`; their allocators decide alone.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_c_heap() {}

/// One group on `conn`: each job under its own savepoint, one `COMMIT`.
/// A job whose statements fail is rolled back to its savepoint and told so
/// at once; the others are told the outcome of the commit.
fn run_group(conn: &rusqlite::Connection, jobs: Vec<Job>, queue: &mpsc::Receiver<Job>) {
    let mut pending: std::collections::VecDeque<Job> = jobs.into();
    let mut members: Vec<oneshot::Sender<Result<(), DbError>>> = Vec::new();
    let mut open = false;
    let mut taken = pending.len();
    loop {
        let Some(job) = pending.pop_front() else {
            // Batches that arrived while this group ran join it.
            pending.extend(queue.try_iter().take(MAX_GROUP.saturating_sub(taken)));
            taken += pending.len();
            if pending.is_empty() {
                break;
            }
            continue;
        };
        if !open {
            // IMMEDIATE takes the write lock now, waiting up to the busy
            // timeout for another process's writer (a CLI command next to
            // a running server).
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                let _ = job.done.send(Err(e.into()));
                continue;
            }
            open = true;
        }
        match run_job(conn, &job.statements) {
            Ok(()) => members.push(job.done),
            Err(e) => {
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (say, on a
                    // full disk): the members so far are lost with it.
                    let lost = format!("the group's transaction was rolled back: {e}");
                    for member in members.drain(..) {
                        let _ = member.send(Err(DbError::Write(lost.clone())));
                    }
                    open = false;
                }
                let _ = job.done.send(Err(e.into()));
            }
        }
    }
    if !open {
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for member in members {
                let _ = member.send(Ok(()));
            }
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            let lost = format!("group commit failed: {e}");
            for member in members {
                let _ = member.send(Err(DbError::Write(lost.clone())));
            }
        }
    }
}

/// A job's statements under a savepoint of their own: all or none.
fn run_job(conn: &rusqlite::Connection, statements: &[Statement]) -> Result<(), rusqlite::Error> {
    conn.execute_batch("SAVEPOINT atlas_writer")?;
    let ran = statements.iter().try_for_each(|s| s.execute_direct(conn));
    let undo = match &ran {
        Ok(()) => Ok(()),
        Err(_) => conn.execute_batch("ROLLBACK TO SAVEPOINT atlas_writer"),
    };
    undo.and_then(|()| conn.execute_batch("RELEASE SAVEPOINT atlas_writer"))
        .and(ran)
}

fn fail_all(jobs: Vec<Job>, why: &str) {
    for job in jobs {
        let _ = job.done.send(Err(DbError::Write(why.to_string())));
    }
}

/// Run `f` to completion even if the caller stops waiting for it.
pub(crate) async fn uncancellable<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, sqlx::Error> {
    tokio::spawn(f)
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("write task ended: {e}")))
}

/// A write transaction. Use it as a connection (`&mut *tx`); finish with
/// [`commit`](WriteTx::commit). Dropping it rolls its changes back.
pub struct WriteTx {
    inner: Inner,
}

enum Inner {
    /// `None` once committed.
    Plain(Option<sqlx::Transaction<'static, Any>>),
    Group {
        group: Arc<GroupCommit>,
        guard: Option<OwnedMutexGuard<GroupState>>,
        savepoint: bool,
    },
}

impl WriteTx {
    pub(crate) fn plain(tx: sqlx::Transaction<'static, Any>) -> Self {
        WriteTx {
            inner: Inner::Plain(Some(tx)),
        }
    }

    /// Commit; on SQLite, returns once the group holding this write committed.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match &mut self.inner {
            Inner::Plain(tx) => match tx.take() {
                // Likewise COMMIT: once sent, its outcome is awaited to the
                // end so the connection's state stays known.
                Some(tx) => uncancellable(tx.commit()).await?,
                None => Ok(()),
            },
            Inner::Group {
                group,
                guard,
                savepoint,
            } => {
                let (group, savepoint) = (group.clone(), *savepoint);
                let Some(guard) = guard.take() else { return Ok(()) };
                uncancellable(commit_member(group, guard, savepoint)).await?
            }
        }
    }
}

/// Release the writer's savepoint, join the group's commit (committing it
/// when nobody else is waiting) and wait for the group's result.
async fn commit_member(
    group: Arc<GroupCommit>,
    mut guard: OwnedMutexGuard<GroupState>,
    savepoint: bool,
) -> Result<(), sqlx::Error> {
    if savepoint {
        if let Err(e) = conn(&mut guard).execute("RELEASE SAVEPOINT atlas_writer").await {
            guard.pending_undo = Some(Undo::Savepoint);
            drop(guard);
            group.clean_up_later();
            return Err(e);
        }
    }
    join_group(&group, guard).await
}

/// Join the open group as a member whose work is done, commit it when no
/// writer is waiting to join (or it is full), and wait for its result.
async fn join_group(group: &Arc<GroupCommit>, mut guard: OwnedMutexGuard<GroupState>) -> Result<(), sqlx::Error> {
    let (tx, rx) = oneshot::channel();
    guard.members.push(tx);
    let generation = guard.generation;
    if group.waiting.load(Ordering::SeqCst) == 0 || guard.members.len() >= MAX_GROUP {
        GroupCommit::flush(&mut guard, None).await;
    }
    drop(guard);
    wait_for_group(group, rx, generation).await
}

async fn wait_for_group(
    group: &Arc<GroupCommit>,
    mut rx: oneshot::Receiver<GroupResult>,
    generation: u64,
) -> Result<(), sqlx::Error> {
    loop {
        match tokio::time::timeout(GROUP_WATCHDOG, &mut rx).await {
            Ok(Ok(result)) => return result.map_err(|e| sqlx::Error::Protocol(format!("group commit failed: {e}"))),
            Ok(Err(_)) => return Err(sqlx::Error::Protocol("group commit was abandoned".into())),
            Err(_) => {
                // Nobody committed our group yet: do it ourselves.
                let mut guard = group.state.clone().lock_owned().await;
                GroupCommit::flush(&mut guard, Some(generation)).await;
            }
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Inner::Group {
            group,
            guard,
            savepoint,
        } = &mut self.inner
        else {
            return;
        };
        let Some(mut guard) = guard.take() else { return };
        guard.pending_undo = Some(if *savepoint { Undo::Savepoint } else { Undo::Transaction });
        drop(guard);
        group.clean_up_later();
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.inner {
            Inner::Plain(tx) => tx
                .as_deref()
                .unwrap_or_else(|| unreachable!("a live WriteTx holds its transaction")),
            Inner::Group { guard, .. } => guard
                .as_ref()
                .and_then(|g| g.conn.as_deref())
                .unwrap_or_else(|| unreachable!("a live WriteTx holds the connection")),
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.inner {
            Inner::Plain(tx) => tx
                .as_deref_mut()
                .unwrap_or_else(|| unreachable!("a live WriteTx holds its transaction")),
            Inner::Group { guard, .. } => guard
                .as_mut()
                .and_then(|g| g.conn.as_deref_mut())
                .unwrap_or_else(|| unreachable!("a live WriteTx holds the connection")),
        }
    }
}
