//! A module's consumer as a durable JetStream pull consumer.
//!
//! The durable is named after the consumer and filters the events stream to
//! the narrowest subject covering the consumer's event types. The server
//! bounds what is in flight (`max_ack_pending`); the task handles messages
//! one at a time, in stream order, and acks each explicitly. A failed
//! attempt is nak'ed with an exponential, jittered delay; the attempt that
//! reaches `max_deliver` moves the message to the dead-letter stream and
//! terminates it. A message whose event this consumer already processed is
//! acked without calling the handler.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, message::PublishMessage};
use atlas_db::Database;
use atlas_kernel::settings::EventsSettings;
use atlas_kernel::Consumer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{token, NatsError, NatsLog, REPLAY_FOR_HEADER};
use crate::runtime::{backoff, Handling};
use crate::Delivered;

/// How long a batching consumer waits for more messages after the first.
const BATCH_WAIT: Duration = Duration::from_millis(5);

pub struct NatsConsumer {
    log: NatsLog,
    settings: EventsSettings,
    handling: Handling,
    event_types: Vec<&'static str>,
}

impl NatsConsumer {
    pub fn new(
        db: Database,
        log: NatsLog,
        settings: EventsSettings,
        consumer: Arc<dyn Consumer>,
        gate: Arc<atlas_http::WriteGate>,
    ) -> Self {
        let event_types = consumer.event_types().to_vec();
        NatsConsumer {
            log,
            settings,
            handling: Handling::new(db, consumer, gate),
            event_types,
        }
    }

    /// The durable's configuration.
    pub fn config(&self) -> pull::Config {
        let nats = self.log.settings();
        pull::Config {
            durable_name: Some(token(self.handling.name())),
            description: Some(format!("Atlas consumer {}", self.handling.name())),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(nats.ack_wait_secs),
            // One more than Atlas's own limit: the last attempt dead-letters
            // the message itself, so the server must still deliver it.
            max_deliver: i64::from(self.settings.max_deliver) + 1,
            filter_subject: self.log.filter_for(&self.event_types),
            max_ack_pending: i64::from(self.settings.max_ack_pending),
            num_replicas: nats.replicas,
            ..Default::default()
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.handling.name().to_string();
        tracing::info!(consumer = %name, "JetStream consumer started");
        while !shutdown.is_cancelled() {
            if let Err(e) = self.consume(&shutdown).await {
                tracing::warn!(consumer = %name, error = %e, "JetStream consumer failed; restarting");
                // Unreachable NATS is not load: writes are not held for
                // this consumer until it reports again (the outbox keeps
                // the events meanwhile).
                self.handling.withdraw_lag();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        self.handling.withdraw_lag();
        tracing::info!(consumer = %name, "JetStream consumer stopped");
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), NatsError> {
        let name = self.handling.name();
        let consumer_err = |e: &dyn std::fmt::Display| NatsError::Consumer {
            consumer: name.to_string(),
            message: e.to_string(),
        };
        let stream = self
            .log
            .jetstream()
            .get_stream(&self.log.settings().stream)
            .await
            .map_err(|e| consumer_err(&e))?;
        let config = self.config();
        let durable = config.durable_name.clone().unwrap_or_default();
        let consumer = match stream.get_consumer::<pull::Config>(&durable).await {
            Ok(mut existing) if existing.cached_info().config.filter_subject == config.filter_subject => {
                // Creating an existing durable updates its limits where the
                // server allows; otherwise the old limits stay.
                if let Err(e) = stream.create_consumer(config).await {
                    tracing::warn!(consumer = %name, error = %e, "could not update the durable consumer's settings");
                }
                let _ = existing.info().await;
                existing
            }
            Ok(existing) => {
                // The event types changed: recreate the durable with the new
                // filter, continuing after the last message the old one saw.
                let next = existing.cached_info().delivered.stream_sequence + 1;
                tracing::warn!(consumer = %name, from_sequence = next, "event types changed; recreating the durable consumer");
                stream.delete_consumer(&durable).await.map_err(|e| consumer_err(&e))?;
                let config = pull::Config {
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: next },
                    ..config
                };
                stream.create_consumer(config).await.map_err(|e| consumer_err(&e))?
            }
            Err(_) => stream.create_consumer(config).await.map_err(|e| consumer_err(&e))?,
        };
        let batch = (self.settings.max_ack_pending as usize).clamp(1, 256);
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| consumer_err(&e))?;
        let mut lag_report = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lag_report.tick() => {
                    if let Ok(info) = consumer.get_info().await {
                        self.handling.report_lag(info.num_pending + info.num_ack_pending as u64);
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        // Events behind this one: what the broker still
                        // holds for this consumer, as of this delivery.
                        if let Ok(info) = message.info() {
                            self.handling.report_lag(info.pending + 1);
                        }
                        let size = self.handling.batch_size();
                        if size == 1 {
                            self.handle(message, shutdown).await?;
                        } else {
                            // Gather what arrives within a few milliseconds, up
                            // to the batch size: under load batches fill up and
                            // the per-batch costs are shared; when idle, an
                            // event waits at most BATCH_WAIT.
                            let mut batch = vec![message];
                            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
                            while batch.len() < size {
                                match tokio::time::timeout_at(deadline, messages.next()).await {
                                    Ok(Some(Ok(more))) => batch.push(more),
                                    _ => break,
                                }
                            }
                            self.handle_many(batch, shutdown).await?;
                        }
                    }
                    Some(Err(e)) => {
                        // Missed heartbeats (the broker is gone) or a pull
                        // request that failed: no report until messages
                        // flow again, as above.
                        tracing::debug!(consumer = %name, error = %e, "pull consumer hiccup");
                        self.handling.withdraw_lag();
                    }
                    None => return Err(consumer_err(&"message stream ended")),
                },
            }
        }
    }

    async fn handle(&self, message: jetstream::Message, shutdown: &CancellationToken) -> Result<(), NatsError> {
        let name = self.handling.name();
        let ack = |kind: AckKind| acknowledge(&message, kind, name);
        let (delivered, stream_sequence) = message
            .info()
            .map(|i| (i.delivered.max(1), i.stream_sequence))
            .unwrap_or((1, 0));
        let envelope = match Delivered::decode(&message.payload, None) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::error!(consumer = %name, error = %e, subject = %message.subject, "message is not an event envelope; terminating it");
                ack(AckKind::Term).await;
                return Ok(());
            }
        };
        let replay_for = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLAY_FOR_HEADER))
            .map(|v| v.as_str().to_string());
        let for_someone_else = replay_for.is_some_and(|target| target != token(name));
        if for_someone_else || !self.handling.wants(envelope.event_type()) {
            ack(AckKind::Ack).await;
            return Ok(());
        }
        if self.handling.already_processed(envelope.event_id()).await? {
            ack(AckKind::Ack).await;
            return Ok(());
        }
        let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
        let delivery = crate::DeliveryAttempt {
            number: attempt,
            last: attempt >= self.settings.max_deliver,
        };
        match self.handling.attempt(&envelope, delivery).await {
            Ok(()) => {
                self.handling.mark_processed(&[envelope.event_id()]).await?;
                ack(AckKind::Ack).await;
            }
            Err(error) if attempt >= self.settings.max_deliver => {
                self.handling.gave_up(&envelope, attempt, &error);
                self.dead_letter(&envelope, stream_sequence, attempt, &error.to_string())
                    .await?;
                ack(AckKind::Term).await;
            }
            Err(error) => {
                let delay = backoff(&self.settings, attempt);
                self.handling.will_retry(&envelope, attempt, &error, delay);
                let delay = if shutdown.is_cancelled() { Duration::ZERO } else { delay };
                ack(AckKind::Nak(Some(delay))).await;
            }
        }
        Ok(())
    }

    /// Several messages at once: those this consumer wants and has not
    /// handled go to its batch handler together; if that fails, each goes
    /// through [`handle`](Self::handle) with the usual retries.
    async fn handle_many(
        &self,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) -> Result<(), NatsError> {
        let name = self.handling.name();
        let mut candidates = Vec::with_capacity(messages.len());
        for message in messages {
            let envelope = Delivered::decode(&message.payload, None).ok();
            let replay_for = message
                .headers
                .as_ref()
                .and_then(|h| h.get(REPLAY_FOR_HEADER))
                .map(|v| v.as_str().to_string());
            // A redelivered message failed before (in a batch or alone): it
            // is handled alone from now on, so each delivery is one attempt
            // and a failing event does not hold back a batch again.
            let redelivered = message.info().is_ok_and(|i| i.delivered > 1);
            match envelope {
                Some(envelope)
                    if !redelivered
                        && self.handling.wants(envelope.event_type())
                        && replay_for.is_none_or(|target| target == token(name)) =>
                {
                    candidates.push((message, envelope))
                }
                Some(_) if redelivered => self.handle(message, shutdown).await?,
                // Not an envelope: `handle` terminates it with a log line.
                None => self.handle(message, shutdown).await?,
                Some(_) => acknowledge(&message, AckKind::Ack, name).await,
            }
        }
        let ids: Vec<&str> = candidates.iter().map(|(_, e)| e.event_id()).collect();
        let processed = self.handling.processed_among(&ids).await?;
        let (done, fresh): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|(_, e)| processed.contains(e.event_id()));
        for (message, _) in &done {
            acknowledge(message, AckKind::Ack, name).await;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let envelopes: Vec<&Delivered> = fresh.iter().map(|(_, e)| e).collect();
        match self.handling.attempt_batch(&envelopes).await {
            Ok(()) => {
                let ids: Vec<&str> = envelopes.iter().map(|e| e.event_id()).collect();
                self.handling.mark_processed(&ids).await?;
                for (message, _) in &fresh {
                    acknowledge(message, AckKind::Ack, name).await;
                }
            }
            Err(error) => {
                tracing::warn!(consumer = %name, %error, events = fresh.len(), "batch failed; handling its events one by one");
                for (message, _) in fresh {
                    self.handle(message, shutdown).await?;
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        envelope: &Delivered,
        stream_sequence: u64,
        attempts: u32,
        error: &str,
    ) -> Result<(), NatsError> {
        let name = self.handling.name();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(super::dlq::CONSUMER_HEADER, token(name).as_str());
        headers.insert(super::dlq::ATTEMPTS_HEADER, attempts.to_string().as_str());
        headers.insert(super::dlq::ERROR_HEADER, super::dlq::header_safe(error).as_str());
        headers.insert(super::dlq::FAILED_AT_HEADER, atlas_db::now().as_str());
        let publish = PublishMessage::build()
            .payload(serde_json::to_vec(envelope.json())?.into())
            .headers(headers)
            // Unique per delivered message, so a redelivery after a crash
            // right here is dropped but a replayed event can die again.
            .message_id(format!("dlq:{}:{}:{stream_sequence}", token(name), envelope.event_id()));
        let ack = self
            .log
            .jetstream()
            .send_publish(self.log.dlq_subject(name), publish)
            .await
            .map_err(|e| NatsError::Publish(e.to_string()))?;
        ack.await.map_err(|e| NatsError::Publish(e.to_string()))?;
        Ok(())
    }
}

async fn acknowledge(message: &jetstream::Message, kind: AckKind, consumer: &str) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(consumer, error = %e, "acknowledging a message failed");
    }
}
