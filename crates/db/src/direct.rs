//! SQLite reads run on the calling thread.
//!
//! sqlx drives every SQLite connection from a worker thread of its own and
//! hands each statement to it over a channel: a read by primary key costs
//! two thread switches, more than the lookup itself. For the short reads on
//! the API's hottest paths (an item by id, a membership, a page of items)
//! [`SqliteReads`] keeps a stack of rusqlite connections to the same file
//! and runs the read on the thread that asks, with prepared statements
//! cached per connection.
//!
//! Only reads bounded by an index belong here: the caller's thread is a
//! runtime worker, which must not block for long. Everything else keeps
//! using [`Database::reader`](crate::Database::reader).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Database, DbError};

/// Read connections to one SQLite file, used on the calling thread.
pub struct SqliteReads {
    path: PathBuf,
    busy_timeout: Duration,
    /// Connections not in use. A read pops one (or opens one when none is
    /// left) and pushes it back, so there are as many as reads ever ran at
    /// once, at most one per thread calling in.
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReads")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A rusqlite connection to the existing database at `path`, read-write,
/// used by one thread at a time (no SQLite mutex), waiting up to
/// `busy_timeout` for a lock: the base of every connection Atlas opens
/// beside sqlx's (reads, the write thread, the checkpoint task).
pub(crate) fn open_connection(path: &std::path::Path, busy_timeout: Duration) -> Result<Connection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

impl SqliteReads {
    /// Reads of the database at `path`, which must exist. One connection is
    /// opened now so that a bad path fails at start, not at the first request.
    pub(crate) fn open(path: PathBuf, busy_timeout: Duration) -> Result<Self, DbError> {
        let reads = SqliteReads {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        };
        let first = reads.connect()?;
        reads.put_back(first);
        Ok(reads)
    }

    fn connect(&self) -> Result<Connection, DbError> {
        // Read-write, so that the connection can take part in WAL recovery
        // like any other; `query_only` makes any write through it fail.
        let conn = open_connection(&self.path, self.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
    }

    /// Run `f` on a read connection, on this thread. Each statement sees
    /// the database as of its start (WAL), like a read through the pool.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let popped = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match popped {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&conn);
        self.put_back(conn);
        result
    }

    /// Connections open (idle ones; the rest are in use).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A bind parameter of [`Database::read_rows`].
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(s) => s.to_sql(),
            Param::Int(n) => n.to_sql(),
        }
    }
}

impl Database {
    /// The rows of a short read (see the module's text for what belongs
    /// here), decoded by `decode`: on SQLite on the calling thread, on
    /// PostgreSQL (or SQLite in memory) through [`reader`](Database::reader).
    /// `$n` parameters must first appear in the order of their numbers,
    /// since SQLite numbers them by first appearance.
    pub async fn read_rows<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut decode: impl FnMut(&dyn DbRow) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        if let Some(reads) = self.sqlite_reads() {
            return reads.read(|conn| {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(decode(row)?);
                }
                Ok(out)
            });
        }
        let rows = bind_all(sqlx::query(sql), params).fetch_all(self.reader()).await?;
        rows.iter().map(|row| decode(row)).collect()
    }

    /// The first row of a short read, if any; see [`read_rows`](Database::read_rows).
    pub async fn read_row<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        decode: impl FnOnce(&dyn DbRow) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        if let Some(reads) = self.sqlite_reads() {
            return reads.read(|conn| {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                rows.next()?.map(|row| decode(row)).transpose()
            });
        }
        let row = bind_all(sqlx::query(sql), params).fetch_optional(self.reader()).await?;
        row.as_ref().map(|row| decode(row)).transpose()
    }
}

/// The rows of a read inside an open transaction on `conn` (sqlx), decoded
/// like [`Database::read_rows`]'s: for code that reads through either path.
pub async fn read_rows_in<T>(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    params: &[Param<'_>],
    mut decode: impl FnMut(&dyn DbRow) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    let rows = bind_all(sqlx::query(sql), params).fetch_all(conn).await?;
    rows.iter().map(|row| decode(row)).collect()
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match *param {
            Param::Text(s) => query.bind(s),
            Param::Int(n) => query.bind(n),
        };
    }
    query
}

/// A result row read by column index, from either access path, so that a
/// module decodes its rows once: sqlx's [`AnyRow`](sqlx::any::AnyRow) or a
/// [`rusqlite::Row`] of [`SqliteReads`].
pub trait DbRow {
    fn text(&self, column: usize) -> Result<String, DbError>;
    fn opt_text(&self, column: usize) -> Result<Option<String>, DbError>;
    fn int(&self, column: usize) -> Result<i64, DbError>;
    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError>;
}

impl DbRow for sqlx::any::AnyRow {
    fn text(&self, column: usize) -> Result<String, DbError> {
        Ok(sqlx::Row::try_get(self, column)?)
    }
    fn opt_text(&self, column: usize) -> Result<Option<String>, DbError> {
        Ok(sqlx::Row::try_get(self, column)?)
    }
    fn int(&self, column: usize) -> Result<i64, DbError> {
        Ok(sqlx::Row::try_get(self, column)?)
    }
    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError> {
        Ok(sqlx::Row::try_get(self, column)?)
    }
}

impl DbRow for rusqlite::Row<'_> {
    fn text(&self, column: usize) -> Result<String, DbError> {
        Ok(self.get(column)?)
    }
    fn opt_text(&self, column: usize) -> Result<Option<String>, DbError> {
        Ok(self.get(column)?)
    }
    fn int(&self, column: usize) -> Result<i64, DbError> {
        Ok(self.get(column)?)
    }
    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError> {
        Ok(self.get(column)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reads.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, note TEXT);
             INSERT INTO t VALUES ('a', 1, NULL), ('b', 2, 'two');",
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn reads_decode_rows_and_reuse_connections() {
        let (_dir, path) = database();
        let reads = SqliteReads::open(path, Duration::from_secs(1)).unwrap();
        for _ in 0..3 {
            let rows = reads
                .read(|c| {
                    let mut stmt = c.prepare_cached("SELECT id, n, note FROM t ORDER BY id")?;
                    let mut rows = stmt.query([])?;
                    let mut out = Vec::new();
                    while let Some(r) = rows.next()? {
                        out.push((r.text(0)?, r.int(1)?, r.opt_text(2)?));
                    }
                    Ok(out)
                })
                .unwrap();
            assert_eq!(
                rows,
                [
                    ("a".to_string(), 1, None),
                    ("b".to_string(), 2, Some("two".to_string()))
                ]
            );
        }
        assert_eq!(reads.idle_connections(), 1, "sequential reads share one connection");
    }

    #[test]
    fn a_read_connection_refuses_writes() {
        let (_dir, path) = database();
        let reads = SqliteReads::open(path, Duration::from_secs(1)).unwrap();
        let err = reads
            .read(|c| Ok(c.execute("DELETE FROM t", [])?))
            .expect_err("query_only connection wrote");
        assert!(
            err.to_string().contains("readonly") || err.to_string().contains("read-only"),
            "{err}"
        );
        let left: i64 = reads
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(left, 2);
    }

    #[test]
    fn a_missing_directory_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteReads::open(dir.path().join("no/such/dir/x.db"), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, DbError::Sqlite(_)), "{err:?}");
    }
}
