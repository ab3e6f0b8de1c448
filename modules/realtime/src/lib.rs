//! Realtime: the envelopes of committed events in the caller's collections,
//! as they commit, over Server-Sent Events (`GET /api/v1/events/stream`) and
//! WebSocket (`GET /api/v1/events/ws`).
//!
//! Each API process tails the outbox itself (one task, from the head at
//! start) and fans events out through a bounded broadcast channel, so it
//! works the same with one process or many sharing a database. A client
//! resumes with `Last-Event-ID` (or `?since=`): the gap is read from the
//! outbox, then the live feed continues after it. Membership events about the
//! caller update what it may see at once. A client too slow to keep up with
//! the channel is disconnected (it can resume), so it never grows memory.

mod hub;
mod routes;

use std::sync::Arc;

use async_trait::async_trait;
use atlas_auth::{Authenticator, CollectionGuard};
use atlas_kernel::{AppContext, Module, ModuleError};

pub use hub::Hub;

#[derive(Default)]
pub struct RealtimeModule {
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

atlas_kernel::register_module!(RealtimeModule);

#[async_trait]
impl Module for RealtimeModule {
    fn name(&self) -> &'static str {
        "realtime"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["collections", "events", "identity"]
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let hub = Arc::new(Hub::new(ctx.db().clone(), ctx.settings().events.poll_interval_ms));
        ctx.provide::<Hub>(hub.clone());
        ctx.provide::<routes::RealtimeState>(Arc::new(routes::RealtimeState {
            hub,
            auth: ctx.require::<Authenticator>()?,
            guard: ctx.require::<CollectionGuard>()?,
            shutdown: ctx.shutdown_token(),
        }));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let state = ctx.get::<routes::RealtimeState>()?;
        Some(routes::router((*state).clone()))
    }

    async fn start(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        if !ctx.settings().server.role.serves_api() {
            return Ok(());
        }
        let hub = ctx.require::<Hub>()?;
        let handle = hub.start(ctx.shutdown_token().child_token()).await?;
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
        Ok(())
    }

    async fn stop(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        ctx.shutdown_token().cancel();
        let handles: Vec<_> = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for h in handles {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), h).await;
        }
        Ok(())
    }
}
