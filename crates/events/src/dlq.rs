//! Inspecting and replaying dead letters (`atlas dlq …`), in the
//! `dead_letters` table (embedded broker) or the dead-letter stream (nats).

use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use serde::Serialize;

/// An event a consumer gave up on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub consumer: String,
    pub event_id: String,
    pub event_type: String,
    pub sequence: i64,
    pub attempts: i64,
    pub last_error: String,
    pub created_at: String,
    pub replay_requested_at: Option<String>,
    pub replayed_at: Option<String>,
}

/// Dead letters, oldest first, optionally of one consumer.
pub async fn list(db: &Database, consumer: Option<&str>) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, consumer, event_id, event_type, sequence, attempts, last_error, created_at, replay_requested_at, replayed_at
         FROM dead_letters WHERE ($1 = '' OR consumer = $1) ORDER BY id",
    )
    .bind(consumer.unwrap_or_default())
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetter {
                id: r.try_get("id")?,
                consumer: r.try_get("consumer")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                sequence: r.try_get("sequence")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                created_at: r.try_get("created_at")?,
                replay_requested_at: r.try_get("replay_requested_at")?,
                replayed_at: r.try_get("replayed_at")?,
            })
        })
        .collect()
}

/// Ask the running consumers to deliver dead letters again: one by id, or
/// (`None`) every one not yet replayed. Returns how many were marked.
pub async fn request_replay(db: &Database, id: Option<&str>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE dead_letters SET replay_requested_at = $1
         WHERE replayed_at IS NULL AND replay_requested_at IS NULL AND ($2 = '' OR id = $2)",
    )
    .bind(atlas_db::now())
    .bind(id.unwrap_or_default())
    .execute(db.writer())
    .await?;
    Ok(done.rows_affected())
}

/// Delete dead letters (of one consumer, or all). Returns how many.
pub async fn purge(db: &Database, consumer: Option<&str>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM dead_letters WHERE ($1 = '' OR consumer = $1)")
        .bind(consumer.unwrap_or_default())
        .execute(db.writer())
        .await?;
    Ok(done.rows_affected())
}

/// Where dead letters live for the configured broker.
pub enum DeadLetterStore {
    Table(Database),
    Stream(Box<crate::nats::NatsLog>),
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
}

impl DeadLetterStore {
    /// The store `settings.broker` uses (connecting to NATS for `nats`).
    pub async fn open(
        db: &Database,
        settings: &atlas_kernel::settings::EventsSettings,
    ) -> Result<DeadLetterStore, DeadLetterError> {
        Ok(match settings.broker {
            atlas_kernel::settings::Broker::Embedded => DeadLetterStore::Table(db.clone()),
            atlas_kernel::settings::Broker::Nats => {
                DeadLetterStore::Stream(Box::new(crate::nats::NatsLog::connect(&settings.nats).await?))
            }
        })
    }

    pub async fn list(&self, consumer: Option<&str>) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Ok(match self {
            DeadLetterStore::Table(db) => list(db, consumer).await?,
            DeadLetterStore::Stream(log) => log
                .dead_letters(consumer)
                .await?
                .into_iter()
                .map(|(letter, _)| letter)
                .collect(),
        })
    }

    /// Embedded: marks dead letters for the running consumers to deliver
    /// again. Nats: sends them back to their consumer right away.
    pub async fn replay(&self, id: Option<&str>) -> Result<u64, DeadLetterError> {
        Ok(match self {
            DeadLetterStore::Table(db) => request_replay(db, id).await?,
            DeadLetterStore::Stream(log) => log.replay_dead_letters(id).await?,
        })
    }

    pub async fn purge(&self, consumer: Option<&str>) -> Result<u64, DeadLetterError> {
        Ok(match self {
            DeadLetterStore::Table(db) => purge(db, consumer).await?,
            DeadLetterStore::Stream(log) => log.purge_dead_letters(consumer).await?,
        })
    }
}
