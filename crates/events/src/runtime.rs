//! The consumer runtime of the embedded event log.
//!
//! The outbox is the log: its `sequence` orders events (on PostgreSQL,
//! [`append`](crate::append) serializes outbox writers so sequences become
//! visible in order). Each consumer is a task that reads up to
//! `events.max_ack_pending` events after its committed offset, hands them to
//! its handler one by one, and commits the new offset together with a
//! "processed" record per event. A failing handler is retried with
//! exponential backoff and jitter; after `events.max_deliver` attempts the
//! event goes to `dead_letters` with the last error and the consumer moves
//! on. Delivery is at least once (a crash between a handler's effect and the
//! offset commit redelivers that event); the processed records make a
//! redelivery of an already-handled event a no-op.
//!
//! The consumers of a process share the events one of them read last
//! ([`RecentEvents`]): each envelope is decoded once, and every handler
//! gets that same JSON.
//!
//! A step that read a full batch is followed at once by the next; a step
//! that caught up waits `events.poll_interval_ms` first. Under load a step
//! thus handles what arrived during one interval, and an event waits at
//! most about one interval before its consumers see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atlas_db::sqlx;
use atlas_db::{Database, DbError, Param, Statement};
use atlas_http::WriteGate;
use atlas_kernel::settings::EventsSettings;
use atlas_kernel::Consumer;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::recent::RecentEvents;
use crate::Delivered;

/// Runs every consumer until shutdown.
pub struct ConsumerRuntime {
    db: Database,
    settings: EventsSettings,
    consumers: Vec<Arc<dyn Consumer>>,
    gate: Arc<WriteGate>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("consumer runtime: {0}")]
    Database(#[from] sqlx::Error),
    #[error("consumer runtime: {0}")]
    Db(#[from] DbError),
    #[error("consumer runtime: stored envelope is not valid: {0}")]
    Envelope(#[from] serde_json::Error),
}

impl ConsumerRuntime {
    /// Consumers report their backlog to `gate` (the process's admission
    /// control for writes; [`WriteGate::open`] when nothing should wait).
    pub fn new(
        db: Database,
        settings: EventsSettings,
        consumers: Vec<Arc<dyn Consumer>>,
        gate: Arc<WriteGate>,
    ) -> Self {
        ConsumerRuntime {
            db,
            settings,
            consumers,
            gate,
        }
    }

    /// One task per consumer, plus one that prunes old processed records.
    pub fn spawn(self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        // Room for the batches of two steps: consumers a step or so apart
        // share their decoded events.
        let recent = Arc::new(RecentEvents::new(
            2 * self.settings.max_ack_pending as usize,
            self.consumers.len(),
        ));
        for (index, consumer) in self.consumers.into_iter().enumerate() {
            let worker = ConsumerTask {
                index,
                db: self.db.clone(),
                settings: self.settings.clone(),
                handling: Handling::new(self.db.clone(), consumer, self.gate.clone()),
                recent: recent.clone(),
            };
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move { worker.run(shutdown).await }));
        }
        tasks.push(spawn_pruning(
            self.db.clone(),
            self.settings.processed_retention_hours,
            shutdown,
        ));
        tasks
    }
}

struct ConsumerTask {
    /// This task's number among the runtime's tasks.
    index: usize,
    db: Database,
    settings: EventsSettings,
    handling: Handling,
    recent: Arc<RecentEvents>,
}

impl ConsumerTask {
    async fn run(self, shutdown: CancellationToken) {
        let name = self.handling.name().to_string();
        tracing::info!(consumer = %name, "consumer started");
        let idle = Duration::from_millis(self.settings.poll_interval_ms);
        let full = self.settings.max_ack_pending as usize;
        loop {
            let outcome = self.step(&shutdown).await;
            let wait = match outcome {
                // A full batch: more events are likely waiting.
                Ok(n) if n >= full => Duration::ZERO,
                // Caught up (nothing new, or less than a batch): the next
                // step waits a poll interval, so that under load a step
                // takes the events of a whole interval at once instead of
                // paying its reads and its commit for every few events.
                Ok(_) => idle,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "consumer step failed; retrying");
                    idle.max(Duration::from_millis(500))
                }
            };
            if shutdown.is_cancelled() {
                break;
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        self.handling.withdraw_lag();
        tracing::info!(consumer = %name, "consumer stopped");
    }

    /// Replays requested dead letters, then handles one batch. Returns how
    /// many events it looked at.
    async fn step(&self, shutdown: &CancellationToken) -> Result<usize, RuntimeError> {
        let name = self.handling.name();
        self.replay_dead_letters(shutdown).await?;
        // The reads of a step are short ones (by key, or a bounded range of
        // the outbox), run on this thread on SQLite.
        let offset = self
            .db
            .read_row(
                "SELECT last_sequence FROM consumer_offsets WHERE consumer = $1",
                &[Param::Text(name)],
                |row| row.int(0),
            )
            .await?
            .unwrap_or(0);
        let envelopes = self.read_after(offset).await?;
        self.handling
            .report_lag((outbox_head(&self.db).await? - offset).max(0) as u64);
        let seen = envelopes.len();
        let batch_size = self.handling.batch_size();
        if batch_size > 1 {
            self.step_in_batches(&envelopes, batch_size, shutdown).await?;
            return Ok(seen);
        }
        for envelope in &envelopes {
            if shutdown.is_cancelled() {
                break;
            }
            if !self.deliver_one(envelope, shutdown).await? {
                break;
            }
        }
        Ok(seen)
    }

    /// Up to `events.max_ack_pending` events after `offset`: first those
    /// another consumer's step just read, then the rest from the outbox.
    async fn read_after(&self, offset: i64) -> Result<Vec<Arc<Delivered>>, DbError> {
        let limit = self.settings.max_ack_pending as usize;
        self.recent.passed(self.index, offset);
        let mut envelopes = self.recent.after(offset, limit);
        if envelopes.len() < limit {
            let from = envelopes.last().map_or(offset, |e| e.sequence());
            let read = self
                .db
                .read_rows(
                    crate::OUTBOX_AFTER,
                    &[Param::Int(from), Param::Int((limit - envelopes.len()) as i64)],
                    |row| {
                        Delivered::decode(row.text(1)?.as_bytes(), Some(row.int(0)?))
                            .map(Arc::new)
                            .map_err(|e| DbError::Decode(format!("outbox envelope: {e}")))
                    },
                )
                .await?;
            self.recent.extend(from, &read);
            envelopes.extend(read);
        }
        Ok(envelopes)
    }

    /// Deliver one event (if wanted) and commit the offset past it. Returns
    /// false when shutdown interrupted it.
    async fn deliver_one(&self, envelope: &Delivered, shutdown: &CancellationToken) -> Result<bool, RuntimeError> {
        let handled = if self.handling.wants(envelope.event_type()) {
            match self.deliver(envelope, shutdown).await? {
                Delivery::Handled => true,
                Delivery::DeadLettered => false,
                Delivery::Interrupted => return Ok(false),
            }
        } else {
            false
        };
        let ids: &[&str] = if handled { &[envelope.event_id()] } else { &[] };
        self.commit(envelope.sequence(), ids).await?;
        Ok(true)
    }

    /// Hand runs of up to `batch_size` wanted, unprocessed events to the
    /// consumer's `handle_batch`, committing the offset and processed
    /// records per run; a failing run is delivered again one by one.
    async fn step_in_batches(
        &self,
        envelopes: &[Arc<Delivered>],
        batch_size: usize,
        shutdown: &CancellationToken,
    ) -> Result<(), RuntimeError> {
        let candidates: Vec<&str> = envelopes
            .iter()
            .filter(|e| self.handling.wants(e.event_type()))
            .map(|e| e.event_id())
            .collect();
        let processed = self.handling.processed_among(&candidates).await?;
        let mut start = 0;
        while start < envelopes.len() {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let mut end = start;
            let mut batch = Vec::new();
            while end < envelopes.len() && batch.len() < batch_size {
                let e = &envelopes[end];
                if self.handling.wants(e.event_type()) && !processed.contains(e.event_id()) {
                    batch.push(e.as_ref());
                }
                end += 1;
            }
            let last = envelopes[end - 1].sequence();
            if batch.is_empty() {
                self.commit(last, &[]).await?;
            } else {
                match self.handling.attempt_batch(&batch).await {
                    Ok(()) => {
                        let ids: Vec<&str> = batch.iter().map(|e| e.event_id()).collect();
                        self.commit(last, &ids).await?;
                    }
                    Err(error) => {
                        tracing::warn!(consumer = %self.handling.name(), %error, events = batch.len(), "batch failed; delivering its events one by one");
                        for envelope in &envelopes[start..end] {
                            if shutdown.is_cancelled() || !self.deliver_one(envelope, shutdown).await? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Hand one event to the handler, retrying; dead-letter it after the
    /// last attempt.
    async fn deliver(&self, envelope: &Delivered, shutdown: &CancellationToken) -> Result<Delivery, RuntimeError> {
        let handling = &self.handling;
        if handling.already_processed(envelope.event_id()).await? {
            return Ok(Delivery::Handled);
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let delivery = crate::DeliveryAttempt {
                number: attempt,
                last: attempt >= self.settings.max_deliver,
            };
            match handling.attempt(envelope, delivery).await {
                Ok(()) => return Ok(Delivery::Handled),
                Err(error) if attempt >= self.settings.max_deliver => {
                    handling.gave_up(envelope, attempt, &error);
                    self.dead_letter(envelope, attempt, &error.to_string()).await?;
                    return Ok(Delivery::DeadLettered);
                }
                Err(error) => {
                    let delay = backoff(&self.settings, attempt);
                    handling.will_retry(envelope, attempt, &error, delay);
                    // A backlog behind a failing event is not load: writes
                    // are not held for it (it ends in the dead letters).
                    handling.withdraw_lag();
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(Delivery::Interrupted),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Advance the offset past `sequence`, recording `event_ids` as processed,
    /// in one transaction.
    async fn commit(&self, sequence: i64, event_ids: &[&str]) -> Result<(), DbError> {
        let now = atlas_db::now();
        let mut statements = processed_statements(self.handling.name(), self.handling.to_record(event_ids), &now);
        statements.push(
            Statement::new(
                "INSERT INTO consumer_offsets (consumer, last_sequence, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (consumer) DO UPDATE SET last_sequence = excluded.last_sequence, updated_at = excluded.updated_at",
            )
            .bind(self.handling.name())
            .bind(sequence)
            .bind(&now),
        );
        self.db.write_batch(statements).await?;
        // Writes go on while a step runs: the lag is measured against the
        // newest event now, not the one the step started with.
        self.handling
            .report_lag((outbox_head(&self.db).await? - sequence).max(0) as u64);
        Ok(())
    }

    async fn dead_letter(&self, envelope: &Delivered, attempts: u32, error: &str) -> Result<(), RuntimeError> {
        sqlx::query(
            "INSERT INTO dead_letters (id, consumer, event_id, event_type, sequence, envelope, attempts, last_error, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(self.handling.name())
        .bind(envelope.event_id())
        .bind(envelope.event_type())
        .bind(envelope.sequence())
        .bind(serde_json::to_string(envelope.json())?)
        .bind(i64::from(attempts))
        .bind(error)
        .bind(atlas_db::now())
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    /// Dead letters whose replay was requested (`atlas dlq replay`) are
    /// delivered once more; a failure dead-letters them again.
    async fn replay_dead_letters(&self, shutdown: &CancellationToken) -> Result<(), RuntimeError> {
        let rows = self
            .db
            .read_rows(
                "SELECT id, envelope FROM dead_letters WHERE consumer = $1 AND replay_requested_at IS NOT NULL AND replayed_at IS NULL ORDER BY id",
                &[Param::Text(self.handling.name())],
                |row| Ok((row.text(0)?, row.text(1)?)),
            )
            .await?;
        for (id, envelope) in rows {
            let envelope = Delivered::decode(envelope.as_bytes(), None)?;
            let handled = match self.deliver(&envelope, shutdown).await? {
                Delivery::Interrupted => return Ok(()),
                Delivery::Handled => true,
                // Failed again: `deliver` wrote a new dead letter.
                Delivery::DeadLettered => false,
            };
            let mut tx = self.db.begin().await?;
            sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
                .bind(atlas_db::now())
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            if handled && self.handling.keeps_records {
                sqlx::query(
                    "INSERT INTO consumer_processed (consumer, event_id, processed_at) VALUES ($1, $2, $3)
                     ON CONFLICT (consumer, event_id) DO NOTHING",
                )
                .bind(self.handling.name())
                .bind(envelope.event_id())
                .bind(atlas_db::now())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// What both brokers do around one handler call: the idempotency check, the
/// span carrying the event's trace, metrics, and the processed record.
pub(crate) struct Handling {
    db: Database,
    consumer: Arc<dyn Consumer>,
    name: String,
    gate: Arc<WriteGate>,
    /// False for consumers that are idempotent on their own
    /// ([`Consumer::idempotent`]): no processed records are read or written.
    keeps_records: bool,
}

impl Handling {
    pub(crate) fn new(db: Database, consumer: Arc<dyn Consumer>, gate: Arc<WriteGate>) -> Self {
        let name = consumer.name().to_string();
        let keeps_records = !consumer.idempotent();
        // Known to the gate from the start: a write admitted before the
        // consumer's first report then counts against it, where a gate that
        // knew no consumer yet would admit any number of writes.
        gate.report(&name, 0);
        Handling {
            db,
            consumer,
            name,
            gate,
            keeps_records,
        }
    }

    /// How many events this consumer has yet to handle: the lag gauge, and
    /// the backlog the write gate holds writes for.
    pub(crate) fn report_lag(&self, events: u64) {
        metrics::gauge!("atlas_events_consumer_lag_events", "consumer" => self.name.clone()).set(events as f64);
        self.gate.report(&self.name, events);
    }

    /// Stop holding writes for this consumer's backlog (it is retrying a
    /// failing event, or stopping).
    pub(crate) fn withdraw_lag(&self) {
        self.gate.withdraw(&self.name);
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the consumer wants events of this type.
    pub(crate) fn wants(&self, event_type: &str) -> bool {
        let wanted = self.consumer.event_types();
        wanted.is_empty() || wanted.contains(&event_type)
    }

    /// Whether this consumer already handled `event_id` (a redelivery).
    pub(crate) async fn already_processed(&self, event_id: &str) -> Result<bool, DbError> {
        if !self.keeps_records {
            return Ok(false);
        }
        let seen = self
            .db
            .read_row(
                "SELECT 1 FROM consumer_processed WHERE consumer = $1 AND event_id = $2",
                &[Param::Text(&self.name), Param::Text(event_id)],
                |_| Ok(()),
            )
            .await?
            .is_some();
        if seen {
            metrics::counter!("atlas_events_consumer_duplicates_total", "consumer" => self.name.clone()).increment(1);
        }
        Ok(seen)
    }

    /// Record that this consumer handled `event_ids`.
    pub(crate) async fn mark_processed(&self, event_ids: &[&str]) -> Result<(), DbError> {
        let event_ids = self.to_record(event_ids);
        if event_ids.is_empty() {
            return Ok(());
        }
        self.db
            .write_batch(processed_statements(&self.name, event_ids, &atlas_db::now()))
            .await
    }

    /// Which of `event_ids` this consumer already handled.
    pub(crate) async fn processed_among(
        &self,
        event_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, DbError> {
        let mut seen = std::collections::HashSet::new();
        for chunk in self.to_record(event_ids).chunks(500) {
            let sql = format!(
                "SELECT event_id FROM consumer_processed WHERE consumer = $1 AND event_id IN ({})",
                atlas_db::param_list(2, chunk.len())
            );
            let mut params = Vec::with_capacity(chunk.len() + 1);
            params.push(Param::Text(&self.name));
            params.extend(chunk.iter().map(|id| Param::Text(id)));
            seen.extend(self.db.read_rows(&sql, &params, |row| row.text(0)).await?);
        }
        if !seen.is_empty() {
            metrics::counter!("atlas_events_consumer_duplicates_total", "consumer" => self.name.clone())
                .increment(seen.len() as u64);
        }
        Ok(seen)
    }

    /// The ids whose processed records this consumer keeps: all of them, or
    /// none for a consumer that is idempotent on its own.
    pub(crate) fn to_record<'a>(&self, event_ids: &'a [&'a str]) -> &'a [&'a str] {
        if self.keeps_records {
            event_ids
        } else {
            &[]
        }
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.consumer.batch_size().max(1)
    }

    /// Call the batch handler once for `envelopes`, recording metrics.
    pub(crate) async fn attempt_batch(&self, envelopes: &[&Delivered]) -> Result<(), atlas_kernel::ModuleError> {
        let json: Vec<&serde_json::Value> = envelopes.iter().map(|e| e.json()).collect();
        let span = tracing::info_span!("event.consume_batch", consumer = %self.name, events = envelopes.len());
        // Each event also gets its own span in its own trace, open while the
        // batch is handled, so every event's trace shows this consumer.
        let per_event: Vec<tracing::Span> = if self.consumer.spans_each_event() {
            Vec::new()
        } else {
            envelopes.iter().map(|e| e.span(&self.name)).collect()
        };
        let started = Instant::now();
        let result = tracing::Instrument::instrument(self.consumer.handle_batch(&json), span).await;
        drop(per_event);
        metrics::histogram!("atlas_events_consumer_handler_duration_seconds", "consumer" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            metrics::counter!("atlas_events_consumer_processed_total", "consumer" => self.name.clone())
                .increment(envelopes.len() as u64);
            if let Some(last) = envelopes.last() {
                metrics::gauge!("atlas_events_consumer_lag_seconds", "consumer" => self.name.clone())
                    .set(seconds_since(last.occurred_at()));
            }
        }
        result
    }

    /// Call the handler once, as `delivery`, inside the event's span,
    /// recording metrics.
    pub(crate) async fn attempt(
        &self,
        envelope: &Delivered,
        delivery: crate::DeliveryAttempt,
    ) -> Result<(), atlas_kernel::ModuleError> {
        let started = Instant::now();
        let handler = tracing::Instrument::instrument(self.consumer.handle(envelope.json()), envelope.span(&self.name));
        let result = crate::as_delivery(delivery, handler).await;
        metrics::histogram!("atlas_events_consumer_handler_duration_seconds", "consumer" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            metrics::counter!("atlas_events_consumer_processed_total", "consumer" => self.name.clone()).increment(1);
            metrics::gauge!("atlas_events_consumer_lag_seconds", "consumer" => self.name.clone())
                .set(seconds_since(envelope.occurred_at()));
        }
        result
    }

    pub(crate) fn will_retry(
        &self,
        envelope: &Delivered,
        attempt: u32,
        error: &atlas_kernel::ModuleError,
        delay: Duration,
    ) {
        envelope.span(&self.name).in_scope(
            || tracing::warn!(attempt, %error, retry_in_ms = delay.as_millis() as u64, "handler failed; will retry"),
        );
        metrics::counter!("atlas_events_consumer_retried_total", "consumer" => self.name.clone()).increment(1);
    }

    pub(crate) fn gave_up(&self, envelope: &Delivered, attempts: u32, error: &atlas_kernel::ModuleError) {
        envelope
            .span(&self.name)
            .in_scope(|| tracing::error!(attempts, %error, "handler failed; event dead-lettered"));
        metrics::counter!("atlas_events_consumer_dead_lettered_total", "consumer" => self.name.clone()).increment(1);
    }
}

/// Insert processed records (one statement per 300 ids).
/// The statements recording that `consumer` handled `event_ids`.
fn processed_statements(consumer: &str, event_ids: &[&str], now: &str) -> Vec<Statement> {
    event_ids
        .chunks(300)
        .map(|chunk| {
            let sql = format!(
                "INSERT INTO consumer_processed (consumer, event_id, processed_at) VALUES {}
                 ON CONFLICT (consumer, event_id) DO NOTHING",
                atlas_db::value_rows(1, chunk.len(), 3)
            );
            chunk.iter().fold(Statement::new(sql), |statement, id| {
                statement.bind(consumer).bind(*id).bind(now)
            })
        })
        .collect()
}

/// The newest outbox sequence (0 when empty). A short read: on SQLite on
/// the calling thread.
pub async fn outbox_head(db: &Database) -> Result<i64, DbError> {
    let head = db
        .read_row("SELECT MAX(sequence) FROM outbox", &[], |row| row.opt_int(0))
        .await?;
    Ok(head.flatten().unwrap_or(0))
}

/// Seconds from an RFC 3339 time to now (0 when unparseable or future).
pub(crate) fn seconds_since(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .num_milliseconds()
                .max(0) as f64
                / 1e3
        })
        .unwrap_or(0.0)
}

enum Delivery {
    Handled,
    DeadLettered,
    Interrupted,
}

/// `initial × 2^(attempt-1)`, capped, with ±25 % jitter.
pub fn backoff(settings: &EventsSettings, attempt: u32) -> Duration {
    let base = settings
        .backoff_initial_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let capped = base.min(settings.backoff_max_ms) as f64;
    let jitter = rand::thread_rng().gen_range(0.75..=1.25);
    Duration::from_millis((capped * jitter) as u64)
}

/// The task that deletes processed records older than the retention.
pub fn spawn_pruning(db: Database, retention_hours: u64, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move { prune_processed(db, retention_hours, shutdown).await })
}

async fn prune_processed(db: Database, retention_hours: u64, shutdown: CancellationToken) {
    loop {
        let cutoff = atlas_db::format_timestamp(chrono::Utc::now() - chrono::Duration::hours(retention_hours as i64));
        if let Err(e) = sqlx::query("DELETE FROM consumer_processed WHERE processed_at < $1")
            .bind(cutoff)
            .execute(db.writer())
            .await
        {
            tracing::warn!(error = %e, "pruning processed-event records failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = EventsSettings {
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..Default::default()
        };
        let ms = |a| backoff(&s, a).as_millis();
        assert!((75..=125).contains(&ms(1)));
        assert!((150..=250).contains(&ms(2)));
        assert!((750..=1250).contains(&ms(10)));
        assert!((750..=1250).contains(&ms(60)));
    }
}
