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
//! Besides sqlx's connection, the group may run on a second connection to
//! the same file, driven from the calling thread: a batch of statements
//! ([`Database::write_batch`](crate::Database::write_batch)) runs there as
//! one member, with no round trip per statement. A group holds one of the
//! two connections' transactions, never both: a writer of the other kind
//! commits the open group first. A direct group also holds sqlx's writer
//! connection, so whatever writes through [`Database::writer`](crate::Database::writer)
//! waits in the pool for the group as it does for an sqlx group, instead of
//! in SQLite's busy handler.
//!
//! On PostgreSQL a [`WriteTx`] is a plain transaction.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use crate::batch::Statement;
use crate::DbError;

/// Writers in one group at most.
const MAX_GROUP: usize = 64;
/// How long a writer that left its group open waits before committing it
/// itself (if the writer expected next never came).
const GROUP_WATCHDOG: Duration = Duration::from_millis(5);

type GroupResult = Result<(), Arc<DbError>>;

/// Shared state of the SQLite write path.
pub(crate) struct GroupCommit {
    pool: AnyPool,
    state: Arc<Mutex<GroupState>>,
    /// Writers waiting for the lock (they will join the open group).
    waiting: AtomicUsize,
    /// Where to (re)open the direct connection; `None` for `:memory:`.
    direct_path: Option<(PathBuf, Duration)>,
}

/// Which connection holds the open group's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Sqlx,
    Direct,
}

#[derive(Default)]
struct GroupState {
    conn: Option<PoolConnection<Any>>,
    /// The direct connection (opened on first use, reopened after a loss).
    direct: Option<rusqlite::Connection>,
    /// `BEGIN` was issued and not yet committed, on this connection.
    open: Option<Open>,
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
            waiting: AtomicUsize::new(0),
            direct_path,
        })
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
        if guard.open == Some(Open::Direct) {
            GroupCommit::flush(&mut guard, None).await;
        }
        undo_pending(&mut guard).await?;
        if guard.conn.is_none() {
            guard.conn = Some(self.pool.acquire().await?);
        }
        let savepoint = if guard.open.is_some() {
            conn(&mut guard).execute("SAVEPOINT atlas_writer").await?;
            true
        } else {
            // IMMEDIATE takes the write lock now, waiting up to the busy
            // timeout for another process's writer (a CLI command next to a
            // running server); a deferred BEGIN would fail with "database
            // is locked" at its first write instead, without waiting.
            conn(&mut guard).execute("BEGIN IMMEDIATE").await?;
            guard.open = Some(Open::Sqlx);
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
        let Some(open) = guard.open else { return };
        if generation.is_some_and(|g| g != guard.generation) {
            return;
        }
        let result: Result<(), DbError> = match open {
            Open::Sqlx => match undo_pending(guard).await {
                Ok(()) if guard.open.is_some() => conn(guard).execute("COMMIT").await.map(|_| ()).map_err(Into::into),
                Ok(()) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Open::Direct => on_direct(guard, "COMMIT").await,
        };
        let result: GroupResult = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                // The group is lost; make sure nothing of it lingers.
                match open {
                    Open::Sqlx => {
                        let _ = conn(guard).execute("ROLLBACK").await;
                    }
                    Open::Direct => {
                        let _ = on_direct(guard, "ROLLBACK").await;
                    }
                }
                Err(Arc::new(e))
            }
        };
        guard.open = None;
        guard.conn = None; // back to the pool, so other users of the writer pool get a turn
        for member in guard.members.drain(..) {
            let _ = member.send(result.clone());
        }
    }

    /// Run `statements` as one member of a direct group (see the module's
    /// text). If the caller is cancelled meanwhile, the task still finishes.
    pub(crate) async fn write_direct(self: &Arc<Self>, statements: Vec<Statement>) -> Result<(), DbError> {
        let group = self.clone();
        uncancellable(async move { group.write_direct_in_task(statements).await })
            .await
            .map_err(DbError::from)?
    }

    async fn write_direct_in_task(self: Arc<Self>, statements: Vec<Statement>) -> Result<(), DbError> {
        let mut guard = self.lock().await;
        if guard.open == Some(Open::Sqlx) {
            GroupCommit::flush(&mut guard, None).await;
        }
        // An sqlx writer dropped after its group was committed leaves
        // nothing to undo; one dropped in an open group was undone by the
        // flush above.
        undo_pending(&mut guard).await?;
        if guard.open.is_none() {
            if guard.conn.is_none() {
                guard.conn = Some(self.pool.acquire().await?);
            }
            if guard.direct.is_none() {
                guard.direct = Some(self.open_direct()?);
            }
            if let Err(e) = on_direct(&mut guard, "BEGIN IMMEDIATE").await {
                guard.conn = None;
                return Err(e);
            }
            guard.open = Some(Open::Direct);
            guard.generation += 1;
        }
        let ran = {
            let direct = direct(&mut guard);
            direct.execute_batch("SAVEPOINT atlas_writer").and_then(|()| {
                let ran = statements.iter().try_for_each(|s| s.execute_direct(direct));
                let undo = match &ran {
                    Ok(()) => Ok(()),
                    Err(_) => direct.execute_batch("ROLLBACK TO SAVEPOINT atlas_writer"),
                };
                undo.and_then(|()| direct.execute_batch("RELEASE SAVEPOINT atlas_writer"))
                    .and(ran)
            })
        };
        if let Err(e) = ran {
            if direct(&mut guard).is_autocommit() {
                // SQLite rolled the whole transaction back (say, on a full
                // disk): the group's other members are lost with it.
                guard.open = None;
                guard.conn = None;
                let lost: GroupResult = Err(Arc::new(DbError::Write(format!(
                    "the group's transaction was rolled back: {e}"
                ))));
                for member in guard.members.drain(..) {
                    let _ = member.send(lost.clone());
                }
            } else if guard.members.is_empty() && self.waiting.load(Ordering::SeqCst) == 0 {
                // Nobody else is in or coming to this group: end it now so
                // that it does not keep SQLite's write lock.
                GroupCommit::flush(&mut guard, None).await;
            }
            return Err(e.into());
        }
        join_group(&self, guard).await.map_err(DbError::from)
    }

    fn open_direct(&self) -> Result<rusqlite::Connection, DbError> {
        let Some((path, busy_timeout)) = &self.direct_path else {
            return Err(DbError::InvalidUrl(
                "an in-memory SQLite database has no direct writes".into(),
            ));
        };
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(*busy_timeout)?;
        // The same settings as the writer pool's connection (per connection
        // in SQLite).
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; {}",
            crate::checkpoint::writer_pragmas()
        ))?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
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
                    guard.open = None;
                    guard.conn = None;
                }
                if guard.open.is_some() && !guard.members.is_empty() && group.waiting.load(Ordering::SeqCst) == 0 {
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
            guard.open = None;
            guard.conn = None;
            Ok(())
        }
    }
}

fn direct(guard: &mut GroupState) -> &rusqlite::Connection {
    // `write_direct_in_task` opens it before a direct group begins.
    guard
        .direct
        .as_ref()
        .unwrap_or_else(|| unreachable!("the direct connection is open while its group is"))
}

/// Run `sql` (BEGIN, COMMIT or ROLLBACK) on the direct connection on a
/// blocking thread: it may wait in SQLite's busy handler for another
/// process, or checkpoint the WAL, which are no work for a runtime thread.
/// A connection lost with a panicking thread is reopened by the next group.
async fn on_direct(guard: &mut GroupState, sql: &'static str) -> Result<(), DbError> {
    let Some(conn) = guard.direct.take() else {
        return Err(DbError::Write("the direct write connection is not open".into()));
    };
    let (conn, result) = tokio::task::spawn_blocking(move || {
        let result = conn.execute_batch(sql);
        (conn, result)
    })
    .await
    .map_err(|e| DbError::Write(format!("{sql} on the write connection failed: {e}")))?;
    guard.direct = Some(conn);
    Ok(result?)
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
