//! Module-scoped migrations.
//!
//! Each module ships `migrations/sqlite/<version>_<name>.sql` and
//! `migrations/postgres/<version>_<name>.sql` (the same set in both).
//! Versions are UTC timestamps (`YYYYMMDDHHMMSS`), so two developers adding
//! migrations at once never collide. The ledger `_migrations` records
//! `(module, version, name, checksum, applied_at)`; each migration runs in its
//! own transaction, and a changed file whose version is already applied is
//! refused (checksum mismatch).

use sha2::{Digest, Sha256};
use sqlx::{Acquire, Row};

use crate::pool::{Backend, Database};

/// One migration of one module, in both dialects.
#[derive(Debug, Clone)]
pub struct Migration {
    pub module: String,
    pub version: i64,
    pub name: String,
    pub sqlite: String,
    pub postgres: String,
}

impl Migration {
    pub fn sql(&self, backend: Backend) -> &str {
        match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        }
    }

    pub fn checksum(&self, backend: Backend) -> String {
        hex::encode(Sha256::digest(self.sql(backend).as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("module `{module}`: migration file `{file}` has no counterpart for {missing}")]
    MissingDialect {
        module: String,
        file: String,
        missing: &'static str,
    },
    #[error("module `{module}`: migration file `{file}` is not named <version>_<name>.sql")]
    BadFileName { module: String, file: String },
    #[error("module `{module}`: migration {version}_{name} was changed after it was applied (checksum mismatch)")]
    ChecksumMismatch { module: String, version: i64, name: String },
    #[error("module `{module}`: migration {version}_{name} failed: {source}")]
    Failed {
        module: String,
        version: i64,
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration ledger: {0}")]
    Ledger(#[from] sqlx::Error),
}

/// Read a module's embedded `migrations/` directory.
pub fn migrations_from_dir(module: &str, dir: &include_dir::Dir<'_>) -> Result<Vec<Migration>, MigrationError> {
    let files = |dialect: &str| -> Vec<(String, String)> {
        dir.get_dir(dir.path().join(dialect))
            .map(|d| {
                d.files()
                    .filter(|f| f.path().extension().is_some_and(|e| e == "sql"))
                    .filter_map(|f| {
                        let name = f.path().file_name()?.to_str()?.to_string();
                        Some((name, f.contents_utf8().unwrap_or_default().to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let sqlite = files("sqlite");
    let postgres = files("postgres");
    let mut out = Vec::new();
    for (file, sql) in &sqlite {
        let Some((_, pg_sql)) = postgres.iter().find(|(f, _)| f == file) else {
            return Err(MigrationError::MissingDialect {
                module: module.into(),
                file: file.clone(),
                missing: "postgres",
            });
        };
        let stem = file.trim_end_matches(".sql");
        let (version, name) = stem
            .split_once('_')
            .and_then(|(v, n)| Some((v.parse::<i64>().ok()?, n)))
            .ok_or_else(|| MigrationError::BadFileName {
                module: module.into(),
                file: file.clone(),
            })?;
        out.push(Migration {
            module: module.into(),
            version,
            name: name.into(),
            sqlite: sql.clone(),
            postgres: pg_sql.clone(),
        });
    }
    if let Some((file, _)) = postgres.iter().find(|(f, _)| !sqlite.iter().any(|(s, _)| s == f)) {
        return Err(MigrationError::MissingDialect {
            module: module.into(),
            file: file.clone(),
            missing: "sqlite",
        });
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}

/// The state of one known migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub module: String,
    pub version: i64,
    pub name: String,
    pub applied: bool,
}

/// Applies migrations to a database.
pub struct Migrator<'a> {
    db: &'a Database,
}

/// Arbitrary constant identifying Atlas's migration advisory lock on Postgres.
const PG_MIGRATION_LOCK: i64 = 0x4154_4C41_535F_4D47;

impl<'a> Migrator<'a> {
    pub fn new(db: &'a Database) -> Self {
        Migrator { db }
    }

    async fn ensure_ledger(&self, conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
        // Looked up first: PostgreSQL answers `CREATE TABLE IF NOT EXISTS`
        // on an existing table with a notice, logged by every process start.
        let lookup = match self.db.backend() {
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_migrations'"
            }
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_migrations'",
        };
        let found: i64 = sqlx::query_scalar(lookup).fetch_one(&mut *conn).await?;
        if found > 0 {
            return Ok(());
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS _migrations (
                module TEXT NOT NULL,
                version BIGINT NOT NULL,
                name TEXT NOT NULL,
                checksum TEXT NOT NULL,
                applied_at TEXT NOT NULL,
                PRIMARY KEY (module, version))",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn applied(&self, conn: &mut sqlx::AnyConnection) -> Result<Vec<(String, i64, String, String)>, sqlx::Error> {
        let rows = sqlx::query("SELECT module, version, name, checksum FROM _migrations")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }

    /// Every known migration with whether it is applied; a checksum mismatch
    /// on an applied one is an error.
    pub async fn status(&self, all: &[Migration]) -> Result<Vec<MigrationStatus>, MigrationError> {
        let mut conn = self.db.writer().acquire().await?;
        self.ensure_ledger(&mut conn).await?;
        let applied = self.applied(&mut conn).await?;
        self.compare(all, &applied)
    }

    fn compare(
        &self,
        all: &[Migration],
        applied: &[(String, i64, String, String)],
    ) -> Result<Vec<MigrationStatus>, MigrationError> {
        let backend = self.db.backend();
        all.iter()
            .map(|m| {
                let found = applied
                    .iter()
                    .find(|(module, version, _, _)| *module == m.module && *version == m.version);
                if let Some((_, _, _, checksum)) = found {
                    if *checksum != m.checksum(backend) {
                        return Err(MigrationError::ChecksumMismatch {
                            module: m.module.clone(),
                            version: m.version,
                            name: m.name.clone(),
                        });
                    }
                }
                Ok(MigrationStatus {
                    module: m.module.clone(),
                    version: m.version,
                    name: m.name.clone(),
                    applied: found.is_some(),
                })
            })
            .collect()
    }

    /// Pending migrations, in the order `up` would apply them.
    pub async fn plan(&self, all: &[Migration]) -> Result<Vec<MigrationStatus>, MigrationError> {
        Ok(self.status(all).await?.into_iter().filter(|s| !s.applied).collect())
    }

    /// Apply every pending migration, each in its own transaction. Returns
    /// what was applied (empty when up to date). On PostgreSQL an advisory
    /// lock keeps concurrent `up`s from racing.
    pub async fn up(&self, all: &[Migration]) -> Result<Vec<MigrationStatus>, MigrationError> {
        let backend = self.db.backend();
        let mut conn = self.db.writer().acquire().await?;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = self.up_locked(&mut conn, all).await;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    async fn up_locked(
        &self,
        conn: &mut sqlx::AnyConnection,
        all: &[Migration],
    ) -> Result<Vec<MigrationStatus>, MigrationError> {
        let backend = self.db.backend();
        self.ensure_ledger(conn).await?;
        let applied = self.applied(conn).await?;
        let pending: Vec<_> = self
            .compare(all, &applied)?
            .into_iter()
            .filter(|s| !s.applied)
            .collect();
        let mut done = Vec::new();
        for status in pending {
            let Some(m) = all
                .iter()
                .find(|m| m.module == status.module && m.version == status.version)
            else {
                continue;
            };
            let failed = |source| MigrationError::Failed {
                module: m.module.clone(),
                version: m.version,
                name: m.name.clone(),
                source,
            };
            let mut tx = conn.begin().await?;
            sqlx::raw_sql(m.sql(backend)).execute(&mut *tx).await.map_err(failed)?;
            sqlx::query(
                "INSERT INTO _migrations (module, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&m.module)
            .bind(m.version)
            .bind(&m.name)
            .bind(m.checksum(backend))
            .bind(crate::now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(module = %m.module, version = m.version, name = %m.name, "migration applied");
            done.push(MigrationStatus {
                applied: true,
                ..status
            });
        }
        Ok(done)
    }
}
