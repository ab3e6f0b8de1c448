//! The outbox relay: publishes unpublished outbox rows to JetStream.
//!
//! One relay publishes at a time per database: it holds a lease row
//! (`relay_lease`) that it renews while it works and another process takes
//! over when it expires. Each round reads up to `relay_batch` unpublished
//! rows in sequence order, publishes them asynchronously (at most
//! `relay_max_inflight` awaiting the broker's ack), and marks as published
//! only the rows the broker acked. A crash between the publish and the mark
//! republishes those rows on the next round; the broker drops them as
//! duplicates because `Nats-Msg-Id` is the event id (within
//! `duplicate_window_secs`), and consumers' idempotency covers the rest.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{NatsError, NatsLog};
use crate::Envelope;

/// The single lease row's name.
const LEASE: &str = "outbox-relay";

/// The relay's name at the write gate.
const GATE_SOURCE: &str = "outbox-relay";

pub struct Relay {
    db: Database,
    log: NatsLog,
    holder: String,
    idle: Duration,
    lease_until: Option<Instant>,
    /// No unpublished row has a smaller sequence. Outbox sequences commit
    /// in order, so the relay never needs to look below it again; starting
    /// the index scan here skips the dead index entries of rows published
    /// long ago (PostgreSQL keeps them until vacuum).
    floor: std::sync::atomic::AtomicI64,
    backlog_reported: std::sync::Mutex<Option<Instant>>,
    gate: Option<std::sync::Arc<atlas_http::WriteGate>>,
}

impl Relay {
    pub fn new(db: Database, log: NatsLog, poll_interval_ms: u64) -> Relay {
        Relay {
            db,
            log,
            holder: uuid::Uuid::now_v7().to_string(),
            idle: Duration::from_millis(poll_interval_ms),
            lease_until: None,
            floor: std::sync::atomic::AtomicI64::new(0),
            backlog_reported: std::sync::Mutex::new(None),
            gate: None,
        }
    }

    /// Report the unpublished backlog to `gate` (writes wait while it is
    /// too large).
    pub fn with_gate(mut self, gate: std::sync::Arc<atlas_http::WriteGate>) -> Relay {
        self.gate = Some(gate);
        self
    }

    fn withdraw_backlog(&self) {
        if let Some(gate) = &self.gate {
            gate.withdraw(GATE_SOURCE);
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(holder = %self.holder, "outbox relay started");
        let lease = Duration::from_secs(self.log.settings().relay_lease_secs);
        loop {
            let wait = match self.ensure_lease(lease).await {
                Ok(false) => {
                    self.withdraw_backlog();
                    lease / 3
                }
                Ok(true) => match self.round().await {
                    Ok(n) if n >= self.log.settings().relay_batch as usize => Duration::ZERO,
                    Ok(_) => self.idle,
                    Err(e) => {
                        // The outbox keeps what the broker cannot take yet;
                        // an outage is not load, so writes are not held.
                        self.withdraw_backlog();
                        tracing::warn!(error = %e, "outbox relay round failed; retrying");
                        self.idle.max(Duration::from_millis(500))
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay lease check failed");
                    self.idle.max(Duration::from_millis(500))
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
        self.withdraw_backlog();
        if self.lease_until.is_some() {
            let released = sqlx::query("DELETE FROM relay_lease WHERE name = $1 AND holder = $2")
                .bind(LEASE)
                .bind(&self.holder)
                .execute(self.db.writer())
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "releasing the relay lease failed; it expires on its own");
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Take or renew the lease when a third of it is used up. Returns
    /// whether this relay holds it.
    async fn ensure_lease(&mut self, lease: Duration) -> Result<bool, sqlx::Error> {
        if let Some(until) = self.lease_until {
            if until.saturating_duration_since(Instant::now()) > lease * 2 / 3 {
                return Ok(true);
            }
        }
        let now = chrono::Utc::now();
        let expires = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10));
        let taken = sqlx::query(
            "INSERT INTO relay_lease (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE relay_lease.holder = excluded.holder OR relay_lease.expires_at < $4",
        )
        .bind(LEASE)
        .bind(&self.holder)
        .bind(atlas_db::format_timestamp(expires))
        .bind(atlas_db::format_timestamp(now))
        .execute(self.db.writer())
        .await?
        .rows_affected()
            == 1;
        let had = self.lease_until.is_some();
        self.lease_until = taken.then(|| Instant::now() + lease);
        if taken != had {
            if taken {
                tracing::info!(holder = %self.holder, "outbox relay holds the lease");
            } else {
                tracing::warn!(holder = %self.holder, "outbox relay lost its lease to another process");
            }
        }
        Ok(taken)
    }

    /// Publish one batch; returns how many rows it read.
    ///
    /// Only the lease holder publishes, so only its process holds writes for
    /// the unpublished backlog.
    async fn round(&self) -> Result<usize, NatsError> {
        let settings = self.log.settings();
        let floor = self.floor.load(std::sync::atomic::Ordering::Relaxed);
        let rows = sqlx::query(
            "SELECT sequence, envelope FROM outbox WHERE sequence >= $1 AND published_at IS NULL ORDER BY sequence LIMIT $2",
        )
        .bind(floor)
        .bind(i64::from(settings.relay_batch))
        .fetch_all(self.db.reader())
        .await?;
        if rows.is_empty() {
            metrics::gauge!("atlas_events_outbox_backlog").set(0.0);
            if let Some(gate) = &self.gate {
                gate.report(GATE_SOURCE, 0);
            }
            return Ok(0);
        }
        // Acks are awaited together, not one after another: each one's
        // timeout starts when it is first polled, so after a broker restart
        // lost acks would otherwise cost a timeout each, in a row. At most
        // `relay_max_inflight` are awaited at once (the client's ack permits
        // are released only when an ack future completes).
        let max_inflight = (settings.relay_max_inflight as usize).max(1);
        let mut inflight = FuturesUnordered::new();
        let mut acked = Vec::with_capacity(rows.len());
        let mut failure = None;
        let mut settle = |(sequence, started, result): (i64, Instant, Result<_, _>)| match result {
            Ok(_) => {
                metrics::histogram!("atlas_events_relay_publish_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                acked.push(sequence);
            }
            Err(e) => failure = Some(format!("{e}")),
        };
        for row in &rows {
            let sequence: i64 = row.try_get(0)?;
            let text: String = row.try_get(1)?;
            let mut envelope: Envelope = serde_json::from_str(&text)?;
            envelope.sequence = Some(sequence);
            // The publish is a span in the event's trace, under the span that
            // wrote it; consumers become its children.
            let subject = self.log.event_subject(&envelope.event_type);
            let span = tracing::info_span!(
                "event.publish",
                messaging.system = "nats",
                messaging.operation.type = "publish",
                messaging.destination.name = %subject,
                messaging.message.id = %envelope.event_id,
                otel.name = %format!("publish {subject}"),
                otel.kind = "producer",
            );
            atlas_telemetry::trace::continue_trace(&span, &envelope.trace_id, envelope.span_id.as_deref());
            if let Some(id) = atlas_telemetry::trace::span_id(&span) {
                envelope.span_id = Some(id);
            }
            let payload = serde_json::to_vec(&envelope)?;
            let publish = PublishMessage::build()
                .payload(payload.into())
                .headers(headers(&envelope))
                .message_id(&envelope.event_id);
            while inflight.len() >= max_inflight {
                if let Some(done) = inflight.next().await {
                    settle(done);
                }
            }
            let started = Instant::now();
            match self.log.jetstream().send_publish(subject, publish).await {
                Ok(ack) => inflight.push(async move { (sequence, started, ack.await) }),
                Err(e) => {
                    // Later rows wait for the next round, keeping the stream
                    // in outbox order as far as the broker allows.
                    tracing::warn!(sequence, error = %e, "publishing an outbox row failed");
                    break;
                }
            }
        }
        while let Some(done) = inflight.next().await {
            settle(done);
        }
        self.mark_published(&acked).await?;
        // The new floor: the first row of this round not acked, or past the
        // last one.
        let mut next_floor = floor;
        for row in &rows {
            let sequence: i64 = row.try_get(0)?;
            if !acked.contains(&sequence) {
                next_floor = sequence;
                break;
            }
            next_floor = sequence + 1;
        }
        self.floor.store(next_floor, std::sync::atomic::Ordering::Relaxed);
        if let Some(gate) = &self.gate {
            // Rows from the floor to the newest: an upper bound of what is
            // unpublished (sequence gaps count too), read off the index.
            let newest: Option<i64> = sqlx::query("SELECT MAX(sequence) FROM outbox")
                .fetch_one(self.db.reader())
                .await?
                .try_get(0)?;
            gate.report(GATE_SOURCE, (newest.unwrap_or(0) - next_floor + 1).max(0) as u64);
        }
        metrics::counter!("atlas_events_relay_published_total").increment(acked.len() as u64);
        self.report_backlog().await?;
        match failure {
            Some(message) => Err(NatsError::Publish(message)),
            None => Ok(rows.len()),
        }
    }

    async fn mark_published(&self, sequences: &[i64]) -> Result<(), sqlx::Error> {
        let now = atlas_db::now();
        for chunk in sequences.chunks(200) {
            let sql = format!(
                "UPDATE outbox SET published_at = $1 WHERE sequence IN ({})",
                atlas_db::param_list(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(&now);
            for sequence in chunk {
                query = query.bind(*sequence);
            }
            query.execute(self.db.writer()).await?;
        }
        Ok(())
    }

    /// The unpublished-row gauge, at most every 5 s (counting is not free
    /// when the backlog is large).
    async fn report_backlog(&self) -> Result<(), sqlx::Error> {
        {
            let mut last = self.backlog_reported.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let backlog: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(self.db.reader())
            .await?
            .try_get(0)?;
        metrics::gauge!("atlas_events_outbox_backlog").set(backlog as f64);
        Ok(())
    }
}

/// CloudEvents binary-mode headers plus the W3C trace context.
pub fn headers(envelope: &Envelope) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("ce-specversion", "1.0");
    h.insert("ce-id", envelope.event_id.as_str());
    h.insert("ce-type", envelope.event_type.as_str());
    h.insert("ce-source", "/atlas");
    h.insert("ce-time", envelope.occurred_at.as_str());
    h.insert("content-type", "application/json");
    if let Some(traceparent) = traceparent(&envelope.trace_id, envelope.span_id.as_deref()) {
        h.insert("traceparent", traceparent.as_str());
    }
    h
}

/// `00-<trace id>-<span id>-01` for a valid 32-hex-digit trace id: the span
/// that wrote the event, or a new id when it is not known.
pub fn traceparent(trace_id: &str, span_id: Option<&str>) -> Option<String> {
    let valid =
        trace_id.len() == 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit()) && trace_id.chars().any(|c| c != '0');
    valid.then(|| {
        let span = span_id
            .filter(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| format!("{:016x}", rand::thread_rng().gen_range(1..=u64::MAX)));
        format!("00-{}-{span}-01", trace_id.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_carries_the_trace_id() {
        let tp = traceparent("4bf92f3577b34da6a3ce929d0e0e4736", None).expect("valid");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        assert_eq!(traceparent("not-a-trace", None), None);
        assert_eq!(traceparent(&"0".repeat(32), None), None);
        assert_eq!(
            traceparent("4bf92f3577b34da6a3ce929d0e0e4736", Some("00f067aa0ba902b7")).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }
}
