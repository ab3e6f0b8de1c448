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

    fn consumers(&self, ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        vec![Arc::new(RecordingConsumer { db: ctx.db().clone() })]
    }
}

atlas_kernel::register_module!(CrashRecorder);

struct RecordingConsumer {
    db: Database,
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
        let event_id = envelope["event_id"].as_str().ok_or("envelope without event_id")?;
        sqlx::query(
            "INSERT INTO recorded_events (event_id, deliveries, handled_at) VALUES ($1, 1, $2)
             ON CONFLICT (event_id) DO UPDATE SET deliveries = recorded_events.deliveries + 1",
        )
        .bind(event_id)
        .bind(atlas_db::now())
        .execute(self.db.writer())
        .await?;
        Ok(())
    }
}
