//! WAL checkpoints off the write path (SQLite).
//!
//! By default SQLite checkpoints from inside the `COMMIT` that takes the WAL
//! past 1,000 pages: that commit then copies the pages back into the
//! database file and syncs it, while every other writer waits for the write
//! lock. Under sustained writes that is every few group commits. Atlas's
//! writer connections instead only checkpoint as a backstop, at
//! [`BACKSTOP_PAGES`], and a task runs a `PASSIVE` checkpoint every
//! [`INTERVAL`] on a connection of its own, on a blocking thread. A passive
//! checkpoint takes no lock that a writer or reader needs, so the writes go
//! on while it runs; once it has copied everything, the next writer starts
//! the WAL from its beginning again, which keeps the file small.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use crate::DbError;

/// How often the checkpoint task runs.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` of the writer connections: reached only if the task
/// falls far behind (or is not running, as in a short CLI command, where
/// such a WAL is never written).
pub(crate) const BACKSTOP_PAGES: u32 = 10_000;

/// Checkpoint the WAL of `path` every [`INTERVAL`] while `alive` can be
/// upgraded (the database handle it belongs to exists).
pub(crate) fn spawn<T: Send + Sync + 'static>(path: PathBuf, busy_timeout: Duration, alive: Weak<T>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut conn: Option<rusqlite::Connection> = None;
        loop {
            tokio::time::sleep(INTERVAL).await;
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
                Ok((kept, Ok(_))) => conn = kept,
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

/// One passive checkpoint; returns (frames in the WAL, frames copied back).
pub(crate) fn passive(conn: &rusqlite::Connection) -> Result<(i64, i64), DbError> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_checkpoint_copies_the_wal_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.sqlite");
        let writer = rusqlite::Connection::open(&path).expect("open");
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};
                 CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT);"
            ))
            .expect("schema");
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
}
