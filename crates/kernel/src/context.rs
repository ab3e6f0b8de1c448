//! The application context handed to every module.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use atlas_db::Database;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// A readiness probe contributed to `GET /ready`.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// `Ok(details)` when ready, `Err(reason)` otherwise.
    async fn check(&self) -> Result<serde_json::Value, String>;
}

/// Shared, cheap-to-clone state of one running application.
#[derive(Clone)]
pub struct AppContext {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    db: Database,
    server_secret: Vec<u8>,
    services: RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    checks: RwLock<Vec<Arc<dyn ReadinessCheck>>>,
    shutdown: CancellationToken,
    write_gate: Arc<atlas_http::WriteGate>,
}

impl AppContext {
    pub fn new(settings: Settings, db: Database, server_secret: Vec<u8>) -> Self {
        let write_gate = Arc::new(atlas_http::WriteGate::new(
            settings.events.max_backlog,
            std::time::Duration::from_millis(settings.events.write_wait_ms),
        ));
        AppContext {
            inner: Arc::new(Inner {
                settings,
                db,
                server_secret,
                services: RwLock::new(HashMap::new()),
                checks: RwLock::new(Vec::new()),
                shutdown: CancellationToken::new(),
                write_gate,
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// A server-side secret for MACs (cursors); the HS256 JWT secret when
    /// one is configured, else a key generated into the data directory.
    pub fn server_secret(&self) -> &[u8] {
        &self.inner.server_secret
    }

    /// Admission control for API writes: background work reports its
    /// backlog here, and writes wait while it is too large.
    pub fn write_gate(&self) -> &Arc<atlas_http::WriteGate> {
        &self.inner.write_gate
    }

    /// Cancelled when the application begins shutting down; background work
    /// selects on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Offer a service (often `dyn Trait`) to other modules.
    pub fn provide<T: ?Sized + Send + Sync + 'static>(&self, service: Arc<T>) {
        let mut services = self.inner.services.write().unwrap_or_else(|e| e.into_inner());
        services.insert(TypeId::of::<T>(), Box::new(service));
    }

    /// A service another module provided, if any.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let services = self.inner.services.read().unwrap_or_else(|e| e.into_inner());
        services
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<Arc<T>>())
            .cloned()
    }

    /// Like [`get`](Self::get), with an error naming the missing service.
    pub fn require<T: ?Sized + Send + Sync + 'static>(&self) -> Result<Arc<T>, crate::ModuleError> {
        self.get::<T>().ok_or_else(|| {
            format!(
                "service `{}` was not provided by any module",
                std::any::type_name::<T>()
            )
            .into()
        })
    }

    pub fn add_readiness_check(&self, check: Arc<dyn ReadinessCheck>) {
        self.inner.checks.write().unwrap_or_else(|e| e.into_inner()).push(check);
    }

    pub fn readiness_checks(&self) -> Vec<Arc<dyn ReadinessCheck>> {
        self.inner.checks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this application runs the module `name`, in any role (a
    /// module may depend on what another does without depending on its crate).
    pub fn has_module(&self, name: &str) -> bool {
        self.get::<ModuleNames>().is_some_and(|m| m.0.contains(&name))
    }
}

/// The modules of an application, provided before any module's `init`.
pub struct ModuleNames(pub Vec<&'static str>);
