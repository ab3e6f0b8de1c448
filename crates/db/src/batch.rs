//! Writes given as a list of statements, run as one transaction.
//!
//! A write that needs no answer from the database between its statements
//! (insert this row, these tags, this outbox event) can hand them over all
//! at once with [`Database::write_batch`]. On PostgreSQL they run in a
//! transaction of their own. On SQLite they go to the write thread, which
//! runs them in a group commit on a connection of its own (see
//! `write.rs`), instead of one round trip to sqlx's connection thread per
//! statement.

use std::borrow::Cow;

use sqlx::AnyConnection;
use tracing::Instrument;

use crate::{Database, DbError};

/// A bound value of a [`Statement`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for SqlValue {
    fn from(n: i64) -> Self {
        SqlValue::Int(n)
    }
}

impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_string())
    }
}

impl From<&String> for SqlValue {
    fn from(s: &String) -> Self {
        SqlValue::Text(s.clone())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            SqlValue::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// One statement of a batch: SQL with `$n` parameters (numbered in order of
/// first appearance, as SQLite numbers them) and their values. It returns
/// no rows that anybody reads.
#[derive(Debug)]
pub struct Statement {
    pub(crate) sql: Cow<'static, str>,
    pub(crate) params: Vec<SqlValue>,
    /// A span to run the statement in (say, the outbox write's).
    pub(crate) span: Option<tracing::Span>,
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Statement {
            sql: sql.into(),
            params: Vec::new(),
            span: None,
        }
    }

    /// Bind the next parameter.
    pub fn bind(mut self, value: impl Into<SqlValue>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Run the statement inside `span`.
    pub fn in_span(mut self, span: tracing::Span) -> Self {
        self.span = Some(span);
        self
    }

    /// Run it on an sqlx connection (PostgreSQL, or a transaction that is
    /// already open).
    pub async fn execute(&self, conn: &mut AnyConnection) -> Result<(), DbError> {
        let mut query = sqlx::query(&self.sql);
        for value in &self.params {
            query = match value {
                SqlValue::Null => query.bind(None::<String>),
                SqlValue::Int(n) => query.bind(*n),
                SqlValue::Text(s) => query.bind(s.as_str()),
            };
        }
        let run = query.execute(conn);
        match &self.span {
            Some(span) => run.instrument(span.clone()).await?,
            None => run.await?,
        };
        Ok(())
    }

    /// Run it on a rusqlite connection, on this thread.
    pub(crate) fn execute_direct(&self, conn: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
        let _entered = self.span.as_ref().map(tracing::Span::enter);
        conn.prepare_cached(&self.sql)?
            .execute(rusqlite::params_from_iter(&self.params))
            .map(|_| ())
    }
}

impl DbError {
    /// A foreign key constraint refused the write (on either backend).
    pub fn is_foreign_key_violation(&self) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Database(d)) => d.is_foreign_key_violation(),
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
            }
            _ => false,
        }
    }

    /// A unique or primary key constraint refused the write (on either
    /// backend): a row with the same key is already there.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlx(sqlx::Error::Database(d)) => d.is_unique_violation(),
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

impl Database {
    /// Run `statements` in order as one write: all of them or (on an
    /// error, returned as is) none. Returns once the write is durable, like
    /// [`WriteTx::commit`](crate::WriteTx::commit).
    pub async fn write_batch(&self, statements: Vec<Statement>) -> Result<(), DbError> {
        if let Some(group) = self.group().filter(|g| g.has_direct()) {
            return group.write_direct(statements).await;
        }
        let mut tx = self.begin().await?;
        for statement in &statements {
            statement.execute(&mut tx).await?;
        }
        Ok(tx.commit().await?)
    }
}
