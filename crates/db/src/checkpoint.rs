//! WAL checkpoints off the write path (SQLite).
//!
//! By default SQLite checkpoints from inside the `COMMIT` that takes the WAL
//! past 1,000 pages: that commit then copies the pages back into the
//! database file and syncs it, while every other writer waits for the write
//! lock. Under sustained writes that is every few group commits. Atlas's
//! writer connections instead only checkpoint as a backstop, at
//! [`BACKSTOP_PAGES`], and a task runs `PASSIVE` checkpoints on a connection
//! of its own, on a blocking thread: every [`BUSY_INTERVAL`] while frames
//! are being added, every [`IDLE_INTERVAL`] otherwise. A passive checkpoint
//! takes no lock that a writer or reader needs, so the writes go on while
//! it runs.
//!
//! The interval is short because each checkpoint ends with a sync of the
//! database file, and while the file system flushes, the writer's own
//! appends to the WAL can stall. Many small syncs stall it for less than a
//! few large ones: measured at 10,000 item creates a second, a 100 ms
//! interval left COMMITs of 5–25 ms a few times a second, 25 ms rarely one
//! above 5 ms.
//!
//! Under sustained writes a passive checkpoint never copies everything,
//! though: by the time it has synced the database, the writer has appended
//! new frames, so the WAL is never found fully copied when a write begins
//! and never starts again from its beginning. It would grow to the backstop,
//! and the writer's own checkpoint there would copy and sync all that the
//! task had not, in the middle of the write path. So once the WAL holds
//! [`FINISH_FRAMES`], the task asks the write thread to finish the job:
//! between two groups, where no frame can be added meanwhile, it copies the
//! few frames the task's last run had not (both syncs have little left to
//! flush), and the next group starts the WAL again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::DbError;

/// How soon the checkpoint task runs again after a run that found new frames…
pub(crate) const BUSY_INTERVAL: Duration = Duration::from_millis(25);
/// …and after one that found none.
pub(crate) const IDLE_INTERVAL: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` of the writer connections: reached only if the task
/// falls far behind (or is not running, as in a short CLI command, where
/// such a WAL is never written).
pub(crate) const BACKSTOP_PAGES: u32 = 10_000;

/// Frames in the WAL from which the write thread is asked to finish a
/// checkpoint (about 8 MiB of WAL with 4 KiB pages).
pub(crate) const FINISH_FRAMES: i64 = 2_000;

/// A request from the checkpoint task to the write thread (see the module's text).
pub(crate) type FinishRequest = Arc<AtomicBool>;

/// Checkpoint the WAL of `path` (see the module's text) while `alive` can
/// be upgraded (the database handle it belongs to exists); raise `finish`
/// when the WAL holds [`FINISH_FRAMES`] or more.
pub(crate) fn spawn<T: Send + Sync + 'static>(
    path: PathBuf,
    busy_timeout: Duration,
    alive: Weak<T>,
    finish: FinishRequest,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut conn: Option<rusqlite::Connection> = None;
        // A new database is usually about to be written (migrations, a load).
        let mut interval = BUSY_INTERVAL;
        // The WAL's frames at the last run: the same count again means
        // nothing was written since (a restarted WAL that grew back to
        // exactly the same size only delays the next run).
        let mut last_frames = 0;
        loop {
            tokio::time::sleep(interval).await;
            if alive.strong_count() == 0 {
                return;
            }
            let path = path.clone();
            let current = conn.take();
            let ran = tokio::task::spawn_blocking(move || {
                let conn = match current.map_or_else(|| crate::direct::open_connection(&path, busy_timeout), Ok) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                };
                let result = passive(&conn);
                (result.is_ok().then_some(conn), result)
            })
            .await;
            match ran {
                Ok((kept, Ok((frames, copied)))) => {
                    conn = kept;
                    let idle = frames == last_frames && copied == frames;
                    interval = if idle { IDLE_INTERVAL } else { BUSY_INTERVAL };
                    last_frames = frames;
                    if frames >= FINISH_FRAMES {
                        finish.store(true, Ordering::Relaxed);
                    }
                }
                Ok((_, Err(e))) => tracing::warn!(error = %e, "WAL checkpoint failed; will retry"),
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint task failed; will retry"),
            }
        }
    });
}

/// The settings every write connection adds to the pool's (per connection
/// in SQLite): its savepoints' sub-journal in memory (on disk it costs a
/// write(2) per page a group member touches), and checkpoints left to the
/// task above but for the backstop.
pub(crate) fn writer_pragmas() -> String {
    format!("PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};")
}

/// The write thread's side of [`FINISH_FRAMES`]: a passive checkpoint on
/// its own connection, outside any transaction, if the task asked for one.
pub(crate) fn finish_if_asked(conn: &rusqlite::Connection, finish: &FinishRequest) {
    if !finish.swap(false, Ordering::Relaxed) {
        return;
    }
    match passive(conn) {
        Ok((frames, copied)) => tracing::trace!(frames, copied, "write thread finished a WAL checkpoint"),
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint on the write thread failed"),
    }
}

/// One passive checkpoint; returns (frames in the WAL, frames copied back).
pub(crate) fn passive(conn: &rusqlite::Connection) -> Result<(i64, i64), DbError> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database at `path` in WAL mode, with a table `t`, set up as the
    /// write connections are; returns its connection.
    fn wal_database(path: &std::path::Path) -> rusqlite::Connection {
        let writer = rusqlite::Connection::open(path).expect("open");
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};
                 CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT);"
            ))
            .expect("schema");
        writer
    }

    #[test]
    fn passive_checkpoint_copies_the_wal_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite");
        let writer = wal_database(&path);
        for i in 0..200 {
            writer
                .execute("INSERT INTO t (id, note) VALUES (?1, ?2)", (i, "x".repeat(500)))
                .expect("insert");
        }
        let checkpointer = crate::direct::open_connection(&path, Duration::from_secs(1)).expect("open checkpointer");
        let (frames, copied) = passive(&checkpointer).expect("checkpoint");
        assert!(frames > 0, "the writer left frames in the WAL");
        assert_eq!(frames, copied, "a passive checkpoint with no reader copies every frame");
        // The next write starts the WAL again from its first frame.
        writer
            .execute("INSERT INTO t (id, note) VALUES (1000, 'y')", [])
            .expect("insert");
        let (frames, _) = passive(&checkpointer).expect("checkpoint");
        assert!(frames < 5, "the WAL restarted, it holds {frames} frames");
    }

    /// A WAL the task could copy only in part, as under load, where writes
    /// go on while it runs (here a reader's snapshot holds it back). Returns
    /// the writer, the task's connection and the WAL's frames.
    fn partly_copied_wal(dir: &std::path::Path) -> (rusqlite::Connection, rusqlite::Connection, i64) {
        let path = dir.join("db.sqlite");
        let writer = wal_database(&path);
        let reader = crate::direct::open_connection(&path, Duration::from_secs(1)).expect("open reader");
        for i in 0..100 {
            if i == 50 {
                reader.execute_batch("BEGIN").expect("begin");
                let _: i64 = reader
                    .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
                    .expect("read");
            }
            writer
                .execute("INSERT INTO t (id, note) VALUES (?1, ?2)", (i, "x".repeat(500)))
                .expect("insert");
        }
        let task = crate::direct::open_connection(&path, Duration::from_secs(1)).expect("open task");
        let (frames, copied) = passive(&task).expect("checkpoint");
        assert!(copied < frames, "the reader held back {} frames", frames - copied);
        reader.execute_batch("COMMIT").expect("end of the read");
        (writer, task, frames)
    }

    #[test]
    fn asked_the_write_thread_checkpoints_and_the_wal_starts_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, task, _) = partly_copied_wal(dir.path());
        let finish = FinishRequest::default();
        finish.store(true, Ordering::Relaxed);
        finish_if_asked(&writer, &finish);
        assert!(!finish.load(Ordering::Relaxed), "the request was taken");
        writer
            .execute("INSERT INTO t (id, note) VALUES (1000, 'y')", [])
            .expect("insert");
        let (frames, _) = passive(&task).expect("checkpoint");
        assert!(frames < 5, "the next write started the WAL again: {frames} frames");
    }

    #[test]
    fn not_asked_the_write_thread_leaves_the_wal_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, task, before) = partly_copied_wal(dir.path());
        finish_if_asked(&writer, &FinishRequest::default());
        writer
            .execute("INSERT INTO t (id, note) VALUES (1000, 'y')", [])
            .expect("insert");
        let (after, _) = passive(&task).expect("checkpoint");
        assert!(after > before, "the write was appended: {before} → {after} frames");
    }
}
