//! Dead letters in nats mode: messages on `<prefix>.dlq.<consumer>` in the
//! dead-letter stream. Each carries the envelope as payload and the consumer,
//! attempts, last error and time in headers. A dead letter's id is its
//! sequence in that stream.
//!
//! Replaying republishes the envelope to the events stream with a fresh
//! message id and the [`REPLAY_FOR_HEADER`](super::REPLAY_FOR_HEADER) naming
//! its consumer (every other consumer acks it unread), then deletes the dead
//! letter. If the handler fails again, a new dead letter appears.

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;

use super::{NatsError, NatsLog, REPLAY_FOR_HEADER};
use crate::dlq::DeadLetter;
use crate::Envelope;

pub const CONSUMER_HEADER: &str = "Atlas-Consumer";
pub const ATTEMPTS_HEADER: &str = "Atlas-Attempts";
pub const ERROR_HEADER: &str = "Atlas-Last-Error";
pub const FAILED_AT_HEADER: &str = "Atlas-Failed-At";

/// Header values are one line of printable ASCII; keep errors readable.
pub fn header_safe(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' })
        .collect();
    out.truncate(1024);
    out
}

impl NatsLog {
    async fn dlq_stream(&self) -> Result<Stream, NatsError> {
        self.jetstream()
            .get_stream(&self.settings().dlq_stream)
            .await
            .map_err(|e| NatsError::Stream {
                stream: self.settings().dlq_stream.clone(),
                message: e.to_string(),
            })
    }

    /// Every dead letter (of one consumer), with its envelope, oldest first.
    pub async fn dead_letters(&self, consumer: Option<&str>) -> Result<Vec<(DeadLetter, Envelope)>, NatsError> {
        let stream = self.dlq_stream().await?;
        let info = stream.get_info().await.map_err(|e| NatsError::Stream {
            stream: self.settings().dlq_stream.clone(),
            message: e.to_string(),
        })?;
        let wanted = consumer.map(|c| self.dlq_subject(c));
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return Ok(out);
        }
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            // Deleted (replayed) sequences leave gaps.
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            if wanted.as_deref().is_some_and(|w| w != message.subject.as_str()) {
                continue;
            }
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default()
            };
            let envelope: Envelope = serde_json::from_slice(&message.payload)?;
            let letter = DeadLetter {
                id: sequence.to_string(),
                consumer: header(CONSUMER_HEADER),
                event_id: envelope.event_id.clone(),
                event_type: envelope.event_type.clone(),
                sequence: envelope.sequence.unwrap_or(0),
                attempts: header(ATTEMPTS_HEADER).parse().unwrap_or(0),
                last_error: header(ERROR_HEADER),
                created_at: header(FAILED_AT_HEADER),
                replay_requested_at: None,
                replayed_at: None,
            };
            out.push((letter, envelope));
        }
        Ok(out)
    }

    /// Send dead letters back to their consumer: one by id, or all.
    /// Returns how many were replayed.
    pub async fn replay_dead_letters(&self, id: Option<&str>) -> Result<u64, NatsError> {
        let stream = self.dlq_stream().await?;
        let mut replayed = 0;
        for (letter, envelope) in self.dead_letters(None).await? {
            if id.is_some_and(|id| id != letter.id) {
                continue;
            }
            let mut headers = super::relay::headers(&envelope);
            headers.insert(REPLAY_FOR_HEADER, letter.consumer.as_str());
            let publish = PublishMessage::build()
                .payload(serde_json::to_vec(&envelope)?.into())
                .headers(headers)
                .message_id(format!("replay:{}:{}", letter.id, envelope.event_id));
            let ack = self
                .jetstream()
                .send_publish(self.event_subject(&envelope.event_type), publish)
                .await
                .map_err(|e| NatsError::Publish(e.to_string()))?;
            ack.await.map_err(|e| NatsError::Publish(e.to_string()))?;
            let sequence: u64 = letter.id.parse().unwrap_or_default();
            stream.delete_message(sequence).await.map_err(|e| NatsError::Stream {
                stream: self.settings().dlq_stream.clone(),
                message: e.to_string(),
            })?;
            replayed += 1;
        }
        Ok(replayed)
    }

    /// Delete dead letters (of one consumer, or all). Returns how many.
    pub async fn purge_dead_letters(&self, consumer: Option<&str>) -> Result<u64, NatsError> {
        let stream = self.dlq_stream().await?;
        let purge = match consumer {
            Some(c) => stream.purge().filter(self.dlq_subject(c)).await,
            None => stream.purge().await,
        };
        purge.map(|r| r.purged).map_err(|e| NatsError::Stream {
            stream: self.settings().dlq_stream.clone(),
            message: e.to_string(),
        })
    }
}
