use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;

use std::collections::HashMap;
use std::sync::Arc;

use crate::direct::SqliteReads;
use crate::write::{GroupCommit, WriteTx};
use crate::DbError;

/// Which database a `Database` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The `database` section of the configuration.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host:port/db`.
    pub url: String,
    /// Connections in the (read) pool.
    pub max_connections: u32,
    /// How long SQLite waits on a locked database before failing.
    pub busy_timeout: Duration,
    /// PostgreSQL: connections of a second pool kept for background work
    /// (see [`Database::background`]); 0 shares the main pool.
    pub background_connections: u32,
}

/// A handle to the database. Cheap to clone.
///
/// On SQLite, writes go through a pool of exactly one connection: SQLite has
/// one writer at a time anyway, and serializing in-process avoids
/// `SQLITE_BUSY` from deferred transactions racing to upgrade their locks.
/// Reads use a separate pool (WAL lets them run beside the writer).
/// On PostgreSQL both are the same pool, and a second, smaller pool serves
/// background work ([`Database::background`]).
#[derive(Clone)]
pub struct Database {
    reader: AnyPool,
    writer: AnyPool,
    backend: Backend,
    /// SQLite only: the group-commit write path.
    group: Option<Arc<GroupCommit>>,
    /// PostgreSQL only: the background pool, when configured.
    background: Option<AnyPool>,
    /// SQLite with a file only: reads on the calling thread.
    reads: Option<Arc<SqliteReads>>,
    /// Named in-process locks, shared by every clone (see [`Database::local_lock`]).
    local_locks: LocalLocks,
}

type LocalLocks = Arc<std::sync::Mutex<HashMap<&'static str, Arc<tokio::sync::Mutex<()>>>>>;

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Database {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = settings.url.trim();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or_default();
            if file.is_empty() {
                return Err(DbError::InvalidUrl(
                    "a sqlite URL needs a file path, e.g. sqlite://atlas-data/atlas.db".into(),
                ));
            }
            if file != ":memory:" {
                if let Some(parent) = Path::new(file).parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| DbError::DataDir {
                        path: parent.display().to_string(),
                        source,
                    })?;
                }
            }
            let url = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            let options = AnyConnectOptions::from_str(&url).map_err(|e| DbError::InvalidUrl(e.to_string()))?;
            let busy_ms = settings.busy_timeout.as_millis();
            let pragmas = format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};"
            );
            let pool = |max: u32, pragmas: String| {
                AnyPoolOptions::new()
                    .max_connections(max)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    // A connection to a local file does not go stale while
                    // idle, and sqlx already pings each one as it comes back
                    // to the pool. A ping on the way out too is a round trip
                    // to the connection's thread at every acquire: on the
                    // write thread, once per group commit.
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        let pragmas = pragmas.clone();
                        Box::pin(async move {
                            conn.execute(sqlx::raw_sql(&pragmas)).await?;
                            Ok(())
                        })
                    })
            };
            let writer = pool(1, format!("{pragmas} {}", crate::checkpoint::writer_pragmas()))
                .connect_with(options.clone())
                .await?;
            let reader = pool(sqlite_readers(settings.max_connections), pragmas)
                .connect_with(options)
                .await?;
            // The writer created the file and switched it to WAL above. An
            // in-memory database exists once per connection: no direct access.
            let direct = (file != ":memory:").then(|| (std::path::PathBuf::from(file), settings.busy_timeout));
            let reads = match &direct {
                Some((path, busy)) => Some(Arc::new(SqliteReads::open(path.clone(), *busy)?)),
                None => None,
            };
            let group = GroupCommit::new(writer.clone(), direct.clone());
            if let Some((path, busy)) = direct {
                crate::checkpoint::spawn(path, busy, Arc::downgrade(&group), group.finish_checkpoint());
            }
            Ok(Database {
                reader,
                group: Some(group),
                writer,
                backend: Backend::Sqlite,
                background: None,
                reads,
                local_locks: LocalLocks::default(),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = AnyConnectOptions::from_str(url).map_err(|e| DbError::InvalidUrl(e.to_string()))?;
            let pool = |max: u32| {
                AnyPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(Duration::from_secs(30))
            };
            let main = pool(settings.max_connections.max(2))
                .connect_with(options.clone())
                .await?;
            let background = match settings.background_connections {
                0 => None,
                n => Some(pool(n).connect_lazy_with(options)),
            };
            Ok(Database {
                reader: main.clone(),
                writer: main,
                backend: Backend::Postgres,
                group: None,
                background,
                reads: None,
                local_locks: LocalLocks::default(),
            })
        } else {
            Err(DbError::InvalidUrl(format!(
                "unsupported scheme in `{}`; use sqlite:// or postgres://",
                redact_url(url)
            )))
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// SQLite (with a file): short reads on the calling thread, see
    /// [`SqliteReads`]. `None` on PostgreSQL, where reads use [`reader`](Self::reader).
    pub fn sqlite_reads(&self) -> Option<&SqliteReads> {
        self.reads.as_deref()
    }

    /// SQLite: the group-commit write path.
    pub(crate) fn group(&self) -> Option<&Arc<GroupCommit>> {
        self.group.as_ref()
    }

    /// The pool for writes and transactions.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The same database for background work (event relay, consumers): on
    /// PostgreSQL, through its own pool, so that requests holding every
    /// connection of the main pool (say, queued on the outbox lock under a
    /// write overload) cannot starve the work that drains what they wrote.
    /// On SQLite, or with no background pool configured, `self`.
    pub fn background(&self) -> Database {
        match &self.background {
            Some(pool) => Database {
                reader: pool.clone(),
                writer: pool.clone(),
                backend: self.backend,
                group: None,
                background: None,
                reads: None,
                local_locks: self.local_locks.clone(),
            },
            None => self.clone(),
        }
    }

    /// The lock called `name` of this process, shared by every clone of
    /// this handle (and by its [`background`](Self::background) handle).
    ///
    /// It serializes work that reads, computes and then writes, within this
    /// process only: what PostgreSQL's advisory locks do across processes.
    /// On SQLite, where Atlas is the database's one writer process, that is
    /// every writer but an occasional CLI command. Unlike a transaction, it
    /// keeps the write path free while the holder reads and computes.
    pub fn local_lock(&self, name: &'static str) -> Arc<tokio::sync::Mutex<()>> {
        // A panic while this map was locked left it whole (one insert at
        // most), so a poisoned lock is used as it is.
        let mut locks = self.local_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(name).or_default().clone()
    }

    /// Begin a write transaction (on SQLite, a member of a group commit;
    /// see [`WriteTx`]).
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        match &self.group {
            Some(group) => group.begin().await,
            None => {
                // BEGIN runs to completion even if the caller is dropped
                // mid-way (a client that went away): cancelled between
                // sending BEGIN and reading its answer, sqlx would not know
                // the connection is in a transaction and would hand it back
                // to the pool that way. Completed, the transaction is
                // tracked and rolled back when dropped.
                let pool = self.writer.clone();
                let tx = crate::write::uncancellable(async move { pool.begin().await }).await??;
                Ok(WriteTx::plain(tx))
            }
        }
    }

    /// A trivial round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map(|_| ())
    }

    /// Publish pool gauges (`atlas_db_pool_connections{pool,state}`).
    pub fn record_pool_metrics(&self) {
        let mut pools: Vec<(&'static str, &AnyPool)> = match self.backend {
            Backend::Sqlite => vec![("reader", &self.reader), ("writer", &self.writer)],
            Backend::Postgres => vec![("main", &self.reader)],
        };
        if let Some(background) = &self.background {
            pools.push(("background", background));
        }
        for (name, pool) in pools {
            let size = pool.size() as f64;
            let idle = pool.num_idle() as f64;
            metrics::gauge!("atlas_db_pool_connections", "pool" => name, "state" => "idle").set(idle);
            metrics::gauge!("atlas_db_pool_connections", "pool" => name, "state" => "active").set(size - idle);
            metrics::gauge!("atlas_db_pool_max_connections", "pool" => name)
                .set(pool.options().get_max_connections() as f64);
        }
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
        if let Some(background) = &self.background {
            background.close().await;
        }
    }
}

/// A URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connections of the SQLite read pool: `max_connections`, at most one per
/// CPU core (and at least two may be asked for). SQLite reads use the CPU,
/// not the network, and each connection runs on a thread of its own, with a
/// page cache of its own and allocations the allocators keep apart: more
/// readers add memory, not throughput (50 MB under 64 concurrent GETs with
/// 16 readers on 2 cores; 3 MiB with 4 readers instead of 2, bench/RESULTS.md).
/// The hottest reads do not use this pool at all (`direct.rs`).
fn sqlite_readers(max_connections: u32) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    max_connections.clamp(1, cores.max(2))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
