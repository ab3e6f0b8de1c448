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
//! - on SQLite, optimistically: Atlas is the database's one writer process,
//!   so an append, holding an in-process lock that other appends of the
//!   process wait for ([`Database::local_lock`]), reads the head on a read
//!   connection, computes the rows and their hashes, and hands only the
//!   inserts to the writer as one batch. The rare append that lost a race
//!   with another process writing the chain (a checkpoint signed by
//!   `atlas audit export`) fails on a unique key and is planned again on
//!   the new head. This process's periodic checkpoint takes the same lock.
//!   The write lock is thus held for the inserts alone, not for the reads
//!   and the hashing, and item writes do not queue behind them.
//!
//! Either way, the schema makes a fork impossible to commit: `sequence` is
//! the primary key and each row's predecessor is the row one below it, so a
//! second row for the same place fails with a unique violation (and is
//! planned again, or the consumer retries it on top of the new head).
//! `prev_hash` is not indexed: a unique index on it repeated that guard for
//! one random-key index entry per row (`20261125000000_audit_chain_keys`).
//!
//! Why one chain and a lock rather than chains partitioned per collection:
//! the spec's verify, export and `sequence` speak of *the* chain; one chain
//! gives one checkpoint per head instead of one per collection, and it also
//! covers the events that belong to no collection (users). The lock is held
//! for a head read and two inserts, well under a millisecond on a local
//! PostgreSQL, and the outbox already serializes its writers the same way,
//! so the audit chain is not the narrower bottleneck.

use std::collections::HashSet;

use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_db::{Backend, Database, DbError, DbRow, Param, Statement};
use serde_json::Value;

use crate::chain::{AuditEntity, AuditRecord, GENESIS_HASH};
use crate::signing::{Checkpoint, NodeKey};
use crate::AuditError;

/// Arbitrary constant naming the audit chain's advisory lock on PostgreSQL.
const AUDIT_CHAIN_LOCK: i64 = 0x4154_4C41_535F_4155;

/// The in-process lock that serializes this process's appends on SQLite.
const AUDIT_CHAIN_LOCAL_LOCK: &str = "audit-chain";

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

    /// Append several records, in order, as one write: one existence check,
    /// one head read and multi-row inserts. Records whose event is already
    /// in the chain (or earlier in `news`) come back as
    /// [`Appended::Duplicate`]. Checkpoints are signed in the same write
    /// wherever `checkpoint_every_rows` (0: never) rows follow the previous
    /// one.
    pub async fn append_many(
        &self,
        news: Vec<NewRecord>,
        key: &NodeKey,
        checkpoint_every_rows: u64,
    ) -> Result<Vec<Appended>, AuditError> {
        if self.db.sqlite_reads().is_some() {
            return self.append_optimistically(&news, key, checkpoint_every_rows).await;
        }
        let mut tx = self.db.begin().await?;
        self.lock_chain(&mut tx).await?;
        let ids: Vec<&str> = news.iter().map(|n| n.event_id.as_str()).collect();
        let present = existing_event_ids(&self.db, Some(&mut tx), &ids).await?;
        let head = head(&self.db, Some(&mut tx)).await?;
        let last_checkpoint = last_checkpoint_sequence(&self.db, Some(&mut tx)).await?;
        let plan = Plan::new(&news, present, head, last_checkpoint, key, checkpoint_every_rows);
        for statement in plan.statements() {
            statement.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(plan.appended())
    }

    /// [`append_many`](Self::append_many) without a lock, where the
    /// database has one writer process (SQLite): the existence check, the
    /// head and the last checkpoint are read first, the hashes computed,
    /// and only the inserts go to the writer, as one batch. A writer that
    /// appended in between (a CLI checkpoint) makes the batch
    /// fail on a unique key (`sequence`, `event_id`, the checkpoint's
    /// `sequence`), and it is planned again on the new head.
    /// So the write lock is held for the inserts only, not for the reads
    /// and the hashing.
    async fn append_optimistically(
        &self,
        news: &[NewRecord],
        key: &NodeKey,
        checkpoint_every_rows: u64,
    ) -> Result<Vec<Appended>, AuditError> {
        let ids: Vec<&str> = news.iter().map(|n| n.event_id.as_str()).collect();
        // Appends of this process take turns, as they do on PostgreSQL under
        // the advisory lock: racing each other, each would have to win an
        // optimistic round, and a busy sink could lose every one of them.
        // Only another process (the CLI) can still move the head.
        let chain = self.db.local_lock(AUDIT_CHAIN_LOCAL_LOCK);
        let _turn = chain.lock().await;
        let mut attempt = 1;
        loop {
            let present = existing_event_ids(&self.db, None, &ids).await?;
            let head = head(&self.db, None).await?;
            let last_checkpoint = last_checkpoint_sequence(&self.db, None).await?;
            let plan = Plan::new(news, present, head, last_checkpoint, key, checkpoint_every_rows);
            match self.db.write_batch(plan.statements()).await {
                Ok(()) => return Ok(plan.appended()),
                Err(e) if e.is_unique_violation() && attempt < OPTIMISTIC_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "audit: the head moved during an append; planning again");
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sign a checkpoint of the head if rows were appended since the last
    /// one. Returns it, or `None` when there was nothing new.
    pub async fn checkpoint_now(&self, key: &NodeKey) -> Result<Option<Checkpoint>, AuditError> {
        // On SQLite, not between an append's read of the head and its write.
        let chain = self.db.local_lock(AUDIT_CHAIN_LOCAL_LOCK);
        let _turn = match self.db.backend() {
            Backend::Sqlite => Some(chain.lock().await),
            Backend::Postgres => None,
        };
        let mut tx = self.db.begin().await?;
        self.lock_chain(&mut tx).await?;
        let Some((sequence, hash, _)) = head(&self.db, Some(&mut tx)).await? else {
            return Ok(None);
        };
        if last_checkpoint_sequence(&self.db, Some(&mut tx)).await? >= sequence {
            return Ok(None);
        }
        let checkpoint = key.sign_checkpoint(sequence, &hash, &atlas_db::now());
        insert_checkpoint(&checkpoint).execute(&mut tx).await?;
        tx.commit().await?;
        metrics::counter!("atlas_audit_checkpoints_total").increment(1);
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

/// How often an optimistic append is planned again before its conflict is
/// returned (the consumer then retries the batch later).
const OPTIMISTIC_ATTEMPTS: u32 = 8;

/// A read of the append: inside `tx` when given (the locked path), else a
/// short read through [`Database::read_rows`].
async fn read_rows<T>(
    db: &Database,
    tx: Option<&mut AnyConnection>,
    sql: &str,
    params: &[Param<'_>],
    decode: impl FnMut(&dyn DbRow) -> Result<T, DbError>,
) -> Result<Vec<T>, AuditError> {
    Ok(match tx {
        Some(conn) => atlas_db::read_rows_in(conn, sql, params, decode).await?,
        None => db.read_rows(sql, params, decode).await?,
    })
}

/// The head of the chain: its sequence, hash and `recorded_at`.
async fn head(db: &Database, tx: Option<&mut AnyConnection>) -> Result<Option<(i64, String, String)>, AuditError> {
    let mut rows = read_rows(
        db,
        tx,
        "SELECT sequence, hash, recorded_at FROM audit_events ORDER BY sequence DESC LIMIT 1",
        &[],
        |r| Ok((r.int(0)?, r.text(1)?, r.text(2)?)),
    )
    .await?;
    Ok(rows.pop())
}

async fn last_checkpoint_sequence(db: &Database, tx: Option<&mut AnyConnection>) -> Result<i64, AuditError> {
    let rows = read_rows(db, tx, "SELECT MAX(sequence) FROM audit_checkpoints", &[], |r| {
        r.opt_int(0)
    })
    .await?;
    Ok(rows.into_iter().next().flatten().unwrap_or(0))
}

/// Which of `event_ids` already have a row.
async fn existing_event_ids(
    db: &Database,
    mut tx: Option<&mut AnyConnection>,
    event_ids: &[&str],
) -> Result<HashSet<String>, AuditError> {
    let mut found = HashSet::new();
    // Every chunk is padded to the same length (with its first id again), so
    // one statement serves: each distinct text would be prepared and cached
    // on its own by every connection that runs it.
    let sql = format!(
        "SELECT event_id FROM audit_events WHERE event_id IN ({})",
        atlas_db::param_list(1, EXISTS_CHUNK)
    );
    for chunk in event_ids.chunks(EXISTS_CHUNK) {
        let params: Vec<Param<'_>> = (0..EXISTS_CHUNK)
            .map(|i| Param::Text(chunk.get(i).unwrap_or(&chunk[0])))
            .collect();
        found.extend(read_rows(db, tx.as_deref_mut(), &sql, &params, |r| r.text(0)).await?);
    }
    Ok(found)
}

/// What an append writes: the new rows, chained on the head, and the
/// checkpoints signed with them.
struct Plan {
    records: Vec<AuditRecord>,
    checkpoints: Vec<Option<Checkpoint>>,
    /// Per record asked for: its index in `records`, or `None` (duplicate).
    outcome: Vec<Option<usize>>,
}

impl Plan {
    fn new(
        news: &[NewRecord],
        mut present: HashSet<String>,
        mut head: Option<(i64, String, String)>,
        mut last_checkpoint: i64,
        key: &NodeKey,
        checkpoint_every_rows: u64,
    ) -> Plan {
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
                event_id: new.event_id.clone(),
                event_type: new.event_type.clone(),
                occurred_at: normalize_timestamp(&new.occurred_at),
                recorded_at,
                actor_user_id: new.actor_user_id.clone(),
                entity: new.entity.clone(),
                data: new.data.clone(),
                trace_id: new.trace_id.clone(),
                request_id: new.request_id.clone(),
                prev_hash,
                hash: String::new(),
            };
            record.hash = record.compute_hash();
            head = Some((record.sequence, record.hash.clone(), record.recorded_at.clone()));
            outcome.push(Some(records.len()));
            records.push(record);
        }
        // A checkpoint at every row that is `checkpoint_every_rows` past the
        // previous one, as if the rows had come one by one.
        let checkpoints = records
            .iter()
            .map(|record| {
                let due =
                    checkpoint_every_rows > 0 && record.sequence - last_checkpoint >= checkpoint_every_rows as i64;
                due.then(|| {
                    last_checkpoint = record.sequence;
                    key.sign_checkpoint(record.sequence, &record.hash, &atlas_db::now())
                })
            })
            .collect();
        Plan {
            records,
            checkpoints,
            outcome,
        }
    }

    /// The inserts, in chain order.
    fn statements(&self) -> Vec<Statement> {
        // Full chunks share one statement, and the rest go one row at a
        // time through another: two texts to prepare and cache, not one
        // per length.
        let rows = self.records.chunks(INSERT_ROWS).flat_map(|chunk| {
            if chunk.len() == INSERT_ROWS {
                vec![insert_rows(chunk)]
            } else {
                chunk.chunks(1).map(insert_rows).collect()
            }
        });
        let checkpoints = self.checkpoints.iter().flatten().map(insert_checkpoint);
        rows.chain(checkpoints).collect()
    }

    /// The outcome per record asked for, once the inserts are committed.
    fn appended(self) -> Vec<Appended> {
        let signed = self.checkpoints.iter().flatten().count();
        metrics::counter!("atlas_audit_checkpoints_total").increment(signed as u64);
        let mut rows: Vec<Option<(AuditRecord, Option<Checkpoint>)>> =
            self.records.into_iter().zip(self.checkpoints).map(Some).collect();
        self.outcome
            .into_iter()
            .map(|slot| match slot.and_then(|i| rows[i].take()) {
                Some((record, checkpoint)) => Appended::Row(Box::new(record), checkpoint),
                None => Appended::Duplicate,
            })
            .collect()
    }
}

/// Rows per multi-row INSERT. Small on purpose: SQLite looks `$n`
/// parameters up by a linear scan, both when it parses a statement and when
/// sqlx binds one, so a statement's cost grows with the square of its
/// parameters (14 per row). Full chunks also reuse one prepared statement.
const INSERT_ROWS: usize = 16;

/// Event ids per existence check (see [`existing_event_ids`]).
const EXISTS_CHUNK: usize = 32;

/// One multi-row INSERT of `records`.
fn insert_rows(records: &[AuditRecord]) -> Statement {
    let sql = format!(
        "INSERT INTO audit_events ({RECORD_COLUMNS}) VALUES {}",
        atlas_db::value_rows(1, records.len(), 14)
    );
    records.iter().fold(Statement::new(sql), |statement, record| {
        statement
            .bind(record.sequence)
            .bind(&record.event_id)
            .bind(&record.event_type)
            .bind(&record.occurred_at)
            .bind(&record.recorded_at)
            .bind(record.actor_user_id.as_deref())
            .bind(&record.entity.entity_type)
            .bind(&record.entity.id)
            .bind(record.entity.collection_id.as_deref())
            .bind(crate::canonical::to_canonical_string(&record.data))
            .bind(&record.trace_id)
            .bind(&record.request_id)
            .bind(&record.prev_hash)
            .bind(&record.hash)
    })
}

fn insert_checkpoint(checkpoint: &Checkpoint) -> Statement {
    Statement::new(
        "INSERT INTO audit_checkpoints (sequence, hash, signature, key_id, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(checkpoint.sequence)
    .bind(&checkpoint.hash)
    .bind(&checkpoint.signature)
    .bind(&checkpoint.key_id)
    .bind(&checkpoint.created_at)
}

/// RFC 3339 in the stored fixed-width form (so text order is time order);
/// anything unparseable is kept as it came.
pub(crate) fn normalize_timestamp(text: &str) -> String {
    atlas_db::parse_timestamp(text)
        .map(atlas_db::format_timestamp)
        .unwrap_or_else(|| text.to_string())
}
