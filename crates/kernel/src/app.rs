//! Building, starting, serving and stopping an Atlas application.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atlas_db::{Database, Migration, Migrator};
use atlas_http::AppRouterBuilder;
use axum::Router;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::context::{AppContext, ReadinessCheck};
use crate::registry::ModuleRegistry;
use crate::settings::{JwtAlgorithm, Profile, Secret, Settings};
use crate::{ops, KernelError};

/// An initialized application: database connected and migrated, modules
/// initialized. Call [`Atlas::run`] to start modules and serve HTTP.
pub struct Atlas {
    ctx: AppContext,
    registry: ModuleRegistry,
    migrations: Arc<Vec<Migration>>,
}

impl Atlas {
    /// Connect, migrate (unless `database.auto_migrate` is off) and `init`
    /// every module in order.
    pub async fn build(mut settings: Settings, registry: ModuleRegistry) -> Result<Atlas, KernelError> {
        // Install the metrics recorder before anything records, so no early
        // sample is lost to the no-op default recorder.
        if atlas_telemetry::prometheus().is_none() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        let server_secret = resolve_secrets(&mut settings)?;
        let db = Database::connect(&settings.database()).await?;
        let migrations = Arc::new(registry.migrations()?);
        if settings.database.auto_migrate {
            Migrator::new(&db).up(&migrations).await?;
        } else {
            // Modules would fail on missing tables or columns in ways that
            // do not say why; an unmigrated database is refused up front.
            let pending = Migrator::new(&db).plan(&migrations).await?;
            if let Some(first) = pending.first() {
                return Err(KernelError::NotMigrated {
                    pending: pending.len(),
                    first: format!("{} {} {}", first.module, first.version, first.name),
                });
            }
        }
        let ctx = AppContext::new(settings, db.clone(), server_secret);
        ctx.provide(Arc::new(crate::context::ModuleNames(registry.names())));
        ctx.add_readiness_check(Arc::new(DatabaseCheck(db.clone())));
        ctx.add_readiness_check(Arc::new(MigrationsCheck {
            db,
            migrations: migrations.clone(),
        }));
        for module in registry.modules() {
            tracing::debug!(module = module.name(), "init");
            module.init(&ctx).await.map_err(|source| KernelError::Lifecycle {
                module: module.name().to_string(),
                phase: "init",
                source,
            })?;
        }
        let consumers: Vec<Arc<dyn crate::Consumer>> =
            registry.modules().iter().flat_map(|m| m.consumers(&ctx)).collect();
        ctx.provide::<ConsumerSet>(Arc::new(ConsumerSet(consumers)));
        Ok(Atlas {
            ctx,
            registry,
            migrations,
        })
    }

    pub fn context(&self) -> &AppContext {
        &self.ctx
    }

    pub fn registry(&self) -> &ModuleRegistry {
        &self.registry
    }

    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The HTTP application and its OpenAPI document. Module routes (and a
    /// module's fallback, the web UI) are only mounted when the role serves
    /// the API; operations endpoints always are.
    pub fn router(&self) -> (Router, utoipa::openapi::OpenApi) {
        let settings = self.ctx.settings();
        let mut builder = AppRouterBuilder::new("Atlas", env!("CARGO_PKG_VERSION"))
            .root(ops::router(&self.ctx))
            .write_gate(self.ctx.write_gate().clone());
        for module in self.registry.modules() {
            if let Some(extra) = module.openapi() {
                builder = builder.openapi(extra);
            }
            if settings.server.role.serves_api() {
                if let Some(routes) = module.routes(&self.ctx) {
                    builder = builder.api(routes);
                }
                if let Some(pages) = module.fallback(&self.ctx) {
                    builder = builder.fallback(pages);
                }
            }
        }
        builder.build(&settings.http())
    }

    /// Every consumer the modules contribute.
    pub fn consumers(&self) -> Vec<Arc<dyn crate::Consumer>> {
        self.ctx
            .get::<ConsumerSet>()
            .map(|set| set.0.clone())
            .unwrap_or_default()
    }

    /// `start` every module in order; on failure, stop those already started.
    pub async fn start(&self) -> Result<(), KernelError> {
        for (i, module) in self.registry.modules().iter().enumerate() {
            tracing::debug!(module = module.name(), "start");
            if let Err(source) = module.start(&self.ctx).await {
                for started in self.registry.modules()[..i].iter().rev() {
                    if let Err(e) = started.stop(&self.ctx).await {
                        tracing::warn!(module = started.name(), error = %e, "stop failed");
                    }
                }
                return Err(KernelError::Lifecycle {
                    module: module.name().to_string(),
                    phase: "start",
                    source,
                });
            }
        }
        Ok(())
    }

    /// `stop` every module in reverse order; failures are logged, not fatal.
    pub async fn stop(&self) {
        self.ctx.shutdown_token().cancel();
        for module in self.registry.modules().iter().rev() {
            tracing::debug!(module = module.name(), "stop");
            if let Err(e) = module.stop(&self.ctx).await {
                tracing::warn!(module = module.name(), error = %e, "stop failed");
            }
        }
    }

    /// Start modules, serve until `shutdown` resolves, drain in-flight
    /// requests (up to `server.shutdown_grace_secs`), stop modules in reverse
    /// order and close the database.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), KernelError> {
        self.start().await?;
        let (router, _) = self.router();
        let grace = Duration::from_secs(self.ctx.settings().server.shutdown_grace_secs);
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        tracing::info!(
            %addr,
            role = self.ctx.settings().server.role.as_str(),
            modules = %self.registry.names().join(","),
            "atlas is serving"
        );
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let token = self.ctx.shutdown_token();
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections, draining in-flight requests");
                // Ends long-lived responses (event streams) and background
                // loops, so draining waits only for ordinary requests.
                token.cancel();
                let _ = signalled_tx.send(());
            });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result.map_err(KernelError::Serve)?,
            _ = async {
                let _ = signalled_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; closing them");
            }
        }
        self.stop().await;
        self.ctx.db().close().await;
        tracing::info!("atlas stopped");
        Ok(())
    }
}

/// The consumers every module contributed, collected after `init`; the
/// event runtime takes them from the context.
pub struct ConsumerSet(pub Vec<Arc<dyn crate::Consumer>>);

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Fill in the JWT secret outside production (generated once and kept in the
/// data directory) and return the server secret used for cursor MACs.
fn resolve_secrets(settings: &mut Settings) -> Result<Vec<u8>, KernelError> {
    let needs_generated = settings.auth.jwt_secret.is_none();
    if !needs_generated {
        return Ok(settings
            .auth
            .jwt_secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_default());
    }
    if settings.profile == Profile::Production && settings.auth.jwt_algorithm == JwtAlgorithm::HS256 {
        // `Settings::validate` refuses this; kept as a second line of defence.
        return Err(KernelError::Config(crate::ConfigError::Invalid {
            key: "auth.jwt_secret".into(),
            message: "required in production".into(),
        }));
    }
    let path = settings.data_dir.join("server.secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => s.trim().to_string(),
        _ => {
            std::fs::create_dir_all(&settings.data_dir)
                .map_err(|e| KernelError::DataDir(path.display().to_string(), e))?;
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let s = hex::encode(bytes);
            write_private_file(&path, &s).map_err(|e| KernelError::DataDir(path.display().to_string(), e))?;
            tracing::warn!(path = %path.display(), "no auth.jwt_secret configured: generated one for this data directory (set auth.jwt_secret in production)");
            s
        }
    };
    if settings.auth.jwt_algorithm == JwtAlgorithm::HS256 {
        settings.auth.jwt_secret = Some(Secret::new(secret.clone()));
    }
    Ok(secret.into_bytes())
}

fn write_private_file(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(content.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, content)
    }
}

struct DatabaseCheck(Database);

#[async_trait]
impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &str {
        "database"
    }
    async fn check(&self) -> Result<serde_json::Value, String> {
        self.0
            .ping()
            .await
            .map(|_| serde_json::json!({"backend": self.0.backend().name()}))
            .map_err(|e| e.to_string())
    }
}

struct MigrationsCheck {
    db: Database,
    migrations: Arc<Vec<Migration>>,
}

#[async_trait]
impl ReadinessCheck for MigrationsCheck {
    fn name(&self) -> &str {
        "migrations"
    }
    async fn check(&self) -> Result<serde_json::Value, String> {
        let pending = Migrator::new(&self.db)
            .plan(&self.migrations)
            .await
            .map_err(|e| e.to_string())?;
        if pending.is_empty() {
            Ok(serde_json::json!({"pending": 0, "known": self.migrations.len()}))
        } else {
            Err(format!(
                "{} pending migration(s); run `atlas migrate up`",
                pending.len()
            ))
        }
    }
}
