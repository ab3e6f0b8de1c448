//! A module whose consumer records every event it handles in
//! `recorded_events`, counting handler runs per event id and keeping the
//! time of the first. Linked into the `atlas-crash-fixture` binary so a test
//! can `kill -9` a real server and check afterwards that every committed
//! event reached the consumer, and so `bench/lag` can measure the time from
//! commit to handler.

use std::sync::Arc;

use async_trait::async_trait;
use atlas_db::sqlx;
use atlas_db::Database;
use atlas_kernel::{AppContext, Consumer, Module, ModuleError};
use include_dir::{include_dir, Dir};

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

#[derive(Default)]
pub struct CrashRecorder;

#[async_trait]
impl Module for CrashRecorder {
    fn name(&self) -> &'static str {
        "crash_recorder"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["events"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    /// `RECORDER_BATCH_SIZE` (default 1) sets how many events the consumer
    /// takes at once.
    fn consumers(&self, ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        let batch_size = std::env::var("RECORDER_BATCH_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        vec![Arc::new(RecordingConsumer {
            db: ctx.db().clone(),
            batch_size,
        })]
    }
}

atlas_kernel::register_module!(CrashRecorder);

struct RecordingConsumer {
    db: Database,
    batch_size: usize,
}

#[async_trait]
impl Consumer for RecordingConsumer {
    fn name(&self) -> &str {
        "crash-recorder"
    }

    fn event_types(&self) -> &[&'static str] {
        &[]
    }

    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError> {
        self.handle_batch(&[envelope]).await
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    async fn handle_batch(&self, envelopes: &[&serde_json::Value]) -> Result<(), ModuleError> {
        let now = atlas_db::now();
        let sql = format!(
            "INSERT INTO recorded_events (event_id, deliveries, handled_at) VALUES {}
             ON CONFLICT (event_id) DO UPDATE SET deliveries = recorded_events.deliveries + 1",
            atlas_db::value_rows(1, envelopes.len(), 3)
        );
        let mut query = sqlx::query(&sql);
        for envelope in envelopes {
            let event_id = envelope["event_id"].as_str().ok_or("envelope without event_id")?;
            query = query.bind(event_id.to_string()).bind(1i64).bind(now.clone());
        }
        query.execute(self.db.writer()).await?;
        Ok(())
    }
}
