//! Test support: every test gets its own database.
//!
//! PostgreSQL tests run whenever `ATLAS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) is reachable; each test
//! creates a database named `atlas_test_<uuid>` and drops it afterwards. With
//! `ATLAS_REQUIRE_SERVICES=1` an unreachable server fails the test instead of
//! skipping it, so CI cannot pass by silently skipping.

mod nats;

pub use nats::{nats_url, PrivateNats, TestNats};

use sqlx::{Connection, Executor};

/// A database backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database that is removed on drop.
pub struct TestDatabase {
    pub url: String,
    pub backend: TestBackend,
    /// Keeps the SQLite directory alive.
    pub dir: tempfile::TempDir,
    pg_admin: Option<(String, String)>,
}

fn admin_url() -> String {
    std::env::var("ATLAS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether unreachable services must fail tests.
pub fn services_required() -> bool {
    std::env::var("ATLAS_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

impl TestDatabase {
    /// A SQLite database file in a new temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("atlas.db").display());
        TestDatabase {
            url,
            backend: TestBackend::Sqlite,
            dir,
            pg_admin: None,
        }
    }

    /// A new PostgreSQL database, or `None` when the server is unreachable
    /// and services are not required (the test is then skipped, loudly).
    pub async fn postgres() -> Option<TestDatabase> {
        let admin = admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => {
                if services_required() {
                    panic!("ATLAS_REQUIRE_SERVICES=1 but PostgreSQL at {admin} is unreachable: {e}");
                }
                eprintln!("SKIPPED: PostgreSQL at {admin} is unreachable ({e})");
                return None;
            }
        };
        let name = format!("atlas_test_{}", uuid::Uuid::now_v7().simple());
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin.clone());
        Some(TestDatabase {
            url: format!("{base}/{name}"),
            backend: TestBackend::Postgres,
            dir: tempfile::tempdir().expect("temp dir"),
            pg_admin: Some((admin, name)),
        })
    }

    /// A connection pool to this database, as a test reads and writes it
    /// beside the application.
    pub async fn connect(&self) -> atlas_db::Database {
        atlas_db::Database::connect(&atlas_db::DatabaseSettings {
            url: self.url.clone(),
            max_connections: 4,
            busy_timeout: std::time::Duration::from_secs(5),
            background_connections: 0,
        })
        .await
        .expect("connect to the test database")
    }

    /// The database for `backend` (`None`: skipped Postgres).
    pub async fn new(backend: TestBackend) -> Option<TestDatabase> {
        match backend {
            TestBackend::Sqlite => Some(TestDatabase::sqlite()),
            TestBackend::Postgres => TestDatabase::postgres().await,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg_admin.take() else {
            return;
        };
        // Drop from a separate thread with its own runtime: Drop may run
        // inside (or outside) an async context.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// Run the same async test body against both backends.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, $body:path) => {
        mod $name {
            use super::*;
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body($crate::TestBackend::Sqlite).await
            }
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body($crate::TestBackend::Postgres).await
            }
        }
    };
}

/// A running Atlas on 127.0.0.1:0 with its own database and data directory.
pub struct TestServer {
    pub base_url: String,
    pub client: reqwest::Client,
    pub database: TestDatabase,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), atlas_kernel::KernelError>>>,
}

/// Settings for tests: fresh data dir and database, cheap password hashing,
/// no global rate limit.
pub fn test_settings(database: &TestDatabase, data_dir: &std::path::Path) -> atlas_kernel::Settings {
    let mut s = atlas_kernel::Settings {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    s.database.url = Some(atlas_kernel::Secret::new(database.url.clone()));
    s.database.max_connections = 8;
    s.database.background_connections = 2;
    s.server.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    s.server.rate_limit_per_second = 0;
    s.auth.argon2_memory_kib = 256;
    s.auth.argon2_iterations = 1;
    s.auth.login_per_ip_per_minute = 10_000;
    s.auth.login_per_account_per_minute = 10_000;
    s
}

impl TestServer {
    /// Start the modules of `registry` on `backend` (`None`: Postgres skipped).
    /// `configure` may adjust the settings before start.
    pub async fn start(
        backend: TestBackend,
        registry: atlas_kernel::ModuleRegistry,
        configure: impl FnOnce(&mut atlas_kernel::Settings),
    ) -> Option<TestServer> {
        let database = TestDatabase::new(backend).await?;
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(&database, data_dir.path());
        configure(&mut settings);
        let atlas = atlas_kernel::Atlas::build(settings, registry)
            .await
            .expect("atlas builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(atlas.run(listener, async move {
            let _ = rx.await;
        }));
        Some(TestServer {
            base_url,
            client: reqwest::Client::new(),
            database,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Trigger graceful shutdown; returns once the server has stopped.
    pub async fn stop(mut self) -> Result<(), atlas_kernel::KernelError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// Begin shutdown without waiting (for in-flight request tests).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Wait for a shutdown started by [`begin_shutdown`](Self::begin_shutdown).
    pub async fn wait(mut self) -> Result<(), atlas_kernel::KernelError> {
        match self.handle.take() {
            Some(h) => h.await.expect("server task"),
            None => Ok(()),
        }
    }
}
