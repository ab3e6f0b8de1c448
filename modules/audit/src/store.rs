//! The `audit_events` and `audit_checkpoints` tables: appending to the one
//! chain, signing checkpoints, reading rows back.
//!
//! # One chain, one writer at a time
//!
//! Every append reads the head of the chain and inserts the row after it in
//! one transaction. Two appends interleaving would both read the same head
//! and fork the chain, so appends are serialized:
//!
//! - on PostgreSQL, by a transaction-level advisory lock
//!   (`pg_advisory_xact_lock`) taken before the head is read and released by
//!   the commit, across every process that shares the database (several
//!   workers, NATS consumers or not). Under `READ COMMITTED` each statement
//!   after the lock sees the previous holder's committed row;
//! - on SQLite, by the database itself: Atlas writes through one connection
//!   and SQLite has one writer.
//!
//! Behind the lock, the schema makes a fork impossible to commit anyway:
//! `sequence` is the primary key and `prev_hash` is unique, so a second row
//! claiming the same predecessor fails with a unique violation (and the
//! consumer retries it on top of the new head).
//!
//! Why one chain and a lock rather than chains partitioned per collection:
//! the spec's verify, export and `sequence` speak of *the* chain; one chain
//! gives one checkpoint per head instead of one per collection, and it also
//! covers the events that belong to no collection (users). The lock is held
//! for a head read and two inserts, well under a millisecond on a local
//! PostgreSQL, and the outbox already serializes its writers the same way,
//! so the audit chain is not the narrower bottleneck.

use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_db::{Backend, Database};
use serde_json::Value;

use crate::chain::{AuditEntity, AuditRecord, GENESIS_HASH};
use crate::signing::{Checkpoint, NodeKey};
use crate::AuditError;

/// Arbitrary constant naming the audit chain's advisory lock on PostgreSQL.
const AUDIT_CHAIN_LOCK: i64 = 0x4154_4C41_535F_4155;

pub(crate) const RECORD_COLUMNS: &str = "sequence, event_id, type, occurred_at, recorded_at, actor_user_id, entity_type, entity_id, collection_id, data, trace_id, request_id, prev_hash, hash";

/// A row to append: everything but its place in the chain.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: String,
    pub actor_user_id: Option<String>,
    pub entity: AuditEntity,
    pub data: Value,
    pub trace_id: String,
    pub request_id: String,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// The row, now in the chain (and the checkpoint signed with it, if any).
    Row(Box<AuditRecord>, Option<Checkpoint>),
    /// A row for this event already exists; nothing changed.
    Duplicate,
}

/// The audit tables of one database.
#[derive(Debug, Clone)]
pub struct AuditStore {
    db: Database,
}

impl AuditStore {
    pub fn new(db: Database) -> Self {
        AuditStore { db }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Append `new` at the head of the chain, unless its event is already
    /// there. Signs a checkpoint in the same transaction when
    /// `checkpoint_every_rows` rows (0: never) follow the last one.
    pub async fn append(
        &self,
        new: NewRecord,
        key: &NodeKey,
        checkpoint_every_rows: u64,
    ) -> Result<Appended, AuditError> {
        let mut appended = self.append_many(vec![new], key, checkpoint_every_rows).await?;
        Ok(appended.pop().unwrap_or(Appended::Duplicate))
    }

    /// Append several records, in order, in one transaction holding the
    /// chain's lock: one existence check, one head read and multi-row
    /// inserts. Records whose event is already in the chain (or earlier in
    /// `news`) come back as [`Appended::Duplicate`]. Checkpoints are signed
    /// in the same transaction wherever `checkpoint_every_rows` (0: never)
    /// rows follow the previous one.
    pub async fn append_many(
        &self,
        news: Vec<NewRecord>,
        key: &NodeKey,
        checkpoint_every_rows: u64,
    ) -> Result<Vec<Appended>, AuditError> {
        let mut tx = self.db.begin().await?;
        self.lock_chain(&mut tx).await?;
        let ids: Vec<&str> = news.iter().map(|n| n.event_id.as_str()).collect();
        let mut present = existing_event_ids(&mut tx, &ids).await?;
        let mut head = head(&mut tx).await?;
        let now = atlas_db::now();
        let mut records = Vec::with_capacity(news.len());
        let mut outcome = Vec::with_capacity(news.len());
        for new in news {
            if !present.insert(new.event_id.clone()) {
                outcome.push(None);
                continue;
            }
            let (sequence, prev_hash, recorded_at) = match head.take() {
                // `recorded_at` never decreases along the chain, even when
                // the clocks of two workers disagree.
                Some((seq, hash, last)) => (seq + 1, hash, if last > now { last } else { now.clone() }),
                None => (1, GENESIS_HASH.to_string(), now.clone()),
            };
            let mut record = AuditRecord {
                sequence,
                event_id: new.event_id,
                event_type: new.event_type,
                occurred_at: normalize_timestamp(&new.occurred_at),
                recorded_at,
                actor_user_id: new.actor_user_id,
                entity: new.entity,
                data: new.data,
                trace_id: new.trace_id,
                request_id: new.request_id,
                prev_hash,
                hash: String::new(),
            };
            record.hash = record.compute_hash();
            head = Some((record.sequence, record.hash.clone(), record.recorded_at.clone()));
            outcome.push(Some(records.len()));
            records.push(record);
        }
        for chunk in records.chunks(INSERT_ROWS) {
            insert_rows(&mut tx, chunk).await?;
        }
        // A checkpoint at every row that is `checkpoint_every_rows` past the
        // previous one, as if the rows had come one by one.
        let mut checkpoints: Vec<Option<Checkpoint>> = (0..records.len()).map(|_| None).collect();
        if checkpoint_every_rows > 0 && !records.is_empty() {
            let mut last = last_checkpoint_sequence(&mut tx).await?;
            for (i, record) in records.iter().enumerate() {
                if record.sequence - last >= checkpoint_every_rows as i64 {
                    checkpoints[i] = Some(insert_checkpoint(&mut tx, key, record.sequence, &record.hash).await?);
                    last = record.sequence;
                }
            }
        }
        tx.commit().await?;
        let mut rows: Vec<Option<(AuditRecord, Option<Checkpoint>)>> =
            records.into_iter().zip(checkpoints).map(Some).collect();
        Ok(outcome
            .into_iter()
            .map(|slot| match slot.and_then(|i| rows[i].take()) {
                Some((record, checkpoint)) => Appended::Row(Box::new(record), checkpoint),
                None => Appended::Duplicate,
            })
            .collect())
    }

    /// Sign a checkpoint of the head if rows were appended since the last
    /// one. Returns it, or `None` when there was nothing new.
    pub async fn checkpoint_now(&self, key: &NodeKey) -> Result<Option<Checkpoint>, AuditError> {
        let mut tx = self.db.begin().await?;
        self.lock_chain(&mut tx).await?;
        let Some((sequence, hash, _)) = head(&mut tx).await? else {
            return Ok(None);
        };
        if last_checkpoint_sequence(&mut tx).await? >= sequence {
            return Ok(None);
        }
        let checkpoint = insert_checkpoint(&mut tx, key, sequence, &hash).await?;
        tx.commit().await?;
        Ok(Some(checkpoint))
    }

    async fn lock_chain(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_CHAIN_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Up to `limit` rows after `after_sequence`, in chain order, as stored.
    pub async fn rows_after(&self, after_sequence: i64, limit: i64) -> Result<Vec<StoredRow>, AuditError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        ))
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(StoredRow::from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Every checkpoint, in sequence order.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.checkpoints_between(i64::MIN, i64::MAX).await
    }

    /// Checkpoints with `from <= sequence <= to`, in sequence order.
    pub async fn checkpoints_between(&self, from: i64, to: i64) -> Result<Vec<Checkpoint>, AuditError> {
        let rows = sqlx::query(
            "SELECT sequence, hash, signature, key_id, created_at FROM audit_checkpoints
             WHERE sequence >= $1 AND sequence <= $2 ORDER BY sequence",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    sequence: r.try_get(0)?,
                    hash: r.try_get(1)?,
                    signature: r.try_get(2)?,
                    key_id: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }
}

/// A row as stored: `data` still text, so a row whose data was mangled
/// outside Atlas can be reported rather than fail the read.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub record: AuditRecord,
    /// `Some(text)` when the stored data is not valid JSON.
    pub unreadable_data: Option<String>,
}

impl StoredRow {
    pub(crate) fn from_row(r: &atlas_db::sqlx::any::AnyRow) -> Result<StoredRow, sqlx::Error> {
        let data_text: String = r.try_get(9)?;
        let (data, unreadable_data) = match serde_json::from_str::<Value>(&data_text) {
            Ok(v) => (v, None),
            Err(_) => (Value::Null, Some(data_text)),
        };
        Ok(StoredRow {
            record: AuditRecord {
                sequence: r.try_get(0)?,
                event_id: r.try_get(1)?,
                event_type: r.try_get(2)?,
                occurred_at: r.try_get(3)?,
                recorded_at: r.try_get(4)?,
                actor_user_id: r.try_get(5)?,
                entity: AuditEntity {
                    entity_type: r.try_get(6)?,
                    id: r.try_get(7)?,
                    collection_id: r.try_get(8)?,
                },
                data,
                trace_id: r.try_get(10)?,
                request_id: r.try_get(11)?,
                prev_hash: r.try_get(12)?,
                hash: r.try_get(13)?,
            },
            unreadable_data,
        })
    }
}

/// The head of the chain: its sequence, hash and `recorded_at`.
async fn head(conn: &mut AnyConnection) -> Result<Option<(i64, String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT sequence, hash, recorded_at FROM audit_events ORDER BY sequence DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
}

async fn last_checkpoint_sequence(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let last: Option<i64> = sqlx::query("SELECT MAX(sequence) FROM audit_checkpoints")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok(last.unwrap_or(0))
}

/// Which of `event_ids` already have a row.
async fn existing_event_ids(
    conn: &mut AnyConnection,
    event_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for chunk in event_ids.chunks(500) {
        let sql = format!(
            "SELECT event_id FROM audit_events WHERE event_id IN ({})",
            atlas_db::param_list(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(found)
}

/// Rows per multi-row INSERT. Small on purpose: SQLite looks `$n`
/// parameters up by a linear scan, both when it parses a statement and when
/// sqlx binds one, so a statement's cost grows with the square of its
/// parameters (14 per row). Full chunks also reuse one prepared statement.
const INSERT_ROWS: usize = 16;

/// One multi-row INSERT of `records`.
async fn insert_rows(conn: &mut AnyConnection, records: &[AuditRecord]) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO audit_events ({RECORD_COLUMNS}) VALUES {}",
        atlas_db::value_rows(1, records.len(), 14)
    );
    let mut query = sqlx::query(&sql);
    for record in records {
        query = query
            .bind(record.sequence)
            .bind(&record.event_id)
            .bind(&record.event_type)
            .bind(&record.occurred_at)
            .bind(&record.recorded_at)
            .bind(&record.actor_user_id)
            .bind(&record.entity.entity_type)
            .bind(&record.entity.id)
            .bind(&record.entity.collection_id)
            .bind(crate::canonical::to_canonical_string(&record.data))
            .bind(&record.trace_id)
            .bind(&record.request_id)
            .bind(&record.prev_hash)
            .bind(&record.hash);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

async fn insert_checkpoint(
    conn: &mut AnyConnection,
    key: &NodeKey,
    sequence: i64,
    hash: &str,
) -> Result<Checkpoint, sqlx::Error> {
    let checkpoint = key.sign_checkpoint(sequence, hash, &atlas_db::now());
    sqlx::query(
        "INSERT INTO audit_checkpoints (sequence, hash, signature, key_id, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(checkpoint.sequence)
    .bind(&checkpoint.hash)
    .bind(&checkpoint.signature)
    .bind(&checkpoint.key_id)
    .bind(&checkpoint.created_at)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("atlas_audit_checkpoints_total").increment(1);
    Ok(checkpoint)
}

/// RFC 3339 in the stored fixed-width form (so text order is time order);
/// anything unparseable is kept as it came.
pub(crate) fn normalize_timestamp(text: &str) -> String {
    atlas_db::parse_timestamp(text)
        .map(atlas_db::format_timestamp)
        .unwrap_or_else(|| text.to_string())
}
