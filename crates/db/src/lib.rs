//! Database access for Atlas: one `Database` handle over SQLite (WAL) or
//! PostgreSQL, chosen by URL, and module-scoped migrations with a ledger.
//!
//! Both backends are reached through sqlx's `Any` driver so that a module
//! writes its queries once. Modules therefore stick to the SQL both dialects
//! share (`$n` parameters, `ON CONFLICT`, `RETURNING`), store ids and
//! timestamps as text, flags as 0/1 `BIGINT`s (the `Any` driver decodes
//! neither SQLite booleans nor 32-bit Postgres integers), and keep
//! dialect-specific DDL in per-dialect files.
//! This crate knows nothing about modules beyond their names.

mod batch;
mod checkpoint;
mod direct;
mod migrate;
mod pool;
mod write;

pub use batch::{SqlValue, Statement};
pub use direct::{read_rows_in, DbRow, Param, SqliteReads};
pub use migrate::{migrations_from_dir, Migration, MigrationError, MigrationStatus, Migrator};
pub use pool::{redact_url, Backend, Database, DatabaseSettings};
pub use write::WriteTx;

/// rusqlite re-exported for [`SqliteReads`].
pub use rusqlite;
/// sqlx re-exported so modules use the same version.
pub use sqlx;

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url: {0}")]
    InvalidUrl(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot decode a stored value: {0}")]
    Decode(String),
    #[error("write failed: {0}")]
    Write(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `count` numbered bind parameters from `$first` on, comma-separated, for
/// an `IN (…)` list: `param_list(2, 3)` is `$2, $3, $4`.
pub fn param_list(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `rows` tuples of `columns` numbered bind parameters each, from `$first`
/// on, row by row, for a multi-row `VALUES`: `value_rows(1, 2, 2)` is
/// `($1, $2), ($3, $4)`. Bind the values in the same order.
pub fn value_rows(first: usize, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", param_list(first + r * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Timestamps are stored as RFC 3339 UTC text with microseconds and a fixed
/// width, so text order is time order on both backends.
pub fn format_timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The current time in the stored format.
pub fn now() -> String {
    format_timestamp(chrono::Utc::now())
}

/// Parse a stored timestamp.
pub fn parse_timestamp(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The name of the constraint a unique violation hit, if `err` is one.
pub fn unique_violation(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => Some(
            db.constraint()
                .map(str::to_string)
                .unwrap_or_else(|| db.message().to_string()),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_parameter_lists_are_numbered_in_order() {
        assert_eq!(param_list(2, 3), "$2, $3, $4");
        assert_eq!(param_list(1, 0), "");
        assert_eq!(value_rows(1, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(value_rows(3, 2, 5), "($3, $4, $5, $6, $7), ($8, $9, $10, $11, $12)");
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.1Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let b = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.25Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let (fa, fb) = (format_timestamp(a), format_timestamp(b));
        assert_eq!(fa, "2026-01-02T03:04:05.100000Z");
        assert!(fa < fb);
        assert_eq!(parse_timestamp(&fa), Some(a));
    }
}
