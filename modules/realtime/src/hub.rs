//! One outbox tailer per process, fanned out to subscribers.

use std::sync::Arc;
use std::time::Duration;

use atlas_db::{Database, DbError};
use atlas_events::runtime::outbox_head;
use atlas_events::Envelope;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Events the tailer reads from the outbox at once.
const TAIL_BATCH: i64 = 1000;

/// Events buffered per subscriber before it counts as too slow.
pub const SUBSCRIBER_BUFFER: usize = 1024;

/// Publishes every committed envelope to the process's subscribers.
pub struct Hub {
    db: Database,
    poll: Duration,
    sender: broadcast::Sender<Arc<Envelope>>,
}

impl Hub {
    pub fn new(db: Database, poll_interval_ms: u64) -> Self {
        let (sender, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Hub {
            db,
            poll: Duration::from_millis(poll_interval_ms.max(1)),
            sender,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.sender.subscribe()
    }

    /// Start tailing the outbox from its current head.
    pub async fn start(self: &Arc<Self>, shutdown: CancellationToken) -> Result<tokio::task::JoinHandle<()>, DbError> {
        let head = outbox_head(&self.db).await?;
        let hub = self.clone();
        Ok(tokio::spawn(async move { hub.tail(head, shutdown).await }))
    }

    /// The outbox head while nobody is subscribed, so that the tailer moves
    /// there instead of reading and decoding events no one would receive;
    /// `None` when someone is.
    ///
    /// The head is read before the subscribers are counted. A subscriber
    /// that the count misses subscribed after the read, so every event up
    /// to the head was committed before it subscribed: none of them is owed
    /// to it live (a resuming stream reads those through [`Hub::since`]).
    async fn head_if_unwatched(&self) -> Result<Option<i64>, DbError> {
        if self.sender.receiver_count() > 0 {
            return Ok(None);
        }
        let head = outbox_head(&self.db).await?;
        Ok((self.sender.receiver_count() == 0).then_some(head))
    }

    async fn tail(&self, mut after: i64, shutdown: CancellationToken) {
        loop {
            let idle = match self.head_if_unwatched().await {
                Ok(None) => self.fan_out(&mut after).await,
                Ok(Some(head)) => {
                    after = after.max(head);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime: reading the outbox head failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.poll) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Publish the events after `after` (moved past them) to the
    /// subscribers; true when caught up with the outbox.
    async fn fan_out(&self, after: &mut i64) -> bool {
        let batch = atlas_events::read_envelopes_after(&self.db, *after, TAIL_BATCH).await;
        match batch {
            Ok(batch) => {
                // Less than a full batch means caught up: wait a poll
                // interval, so that under load a read takes a whole
                // interval's events instead of one or two.
                let caught_up = batch.len() < TAIL_BATCH as usize;
                for envelope in batch {
                    *after = envelope.sequence.unwrap_or(*after);
                    // The fan-out is a span in the event's trace, as the
                    // consumers' handling is (the hub reads the outbox
                    // itself, whichever the broker).
                    let span = atlas_events::consume_span("realtime", &envelope).entered();
                    // The last subscriber may have left since the count.
                    let _ = self.sender.send(Arc::new(envelope));
                    drop(span);
                }
                caught_up
            }
            Err(e) => {
                tracing::warn!(error = %e, "realtime: reading the outbox failed");
                true
            }
        }
    }

    /// Envelopes after `sequence` already in the outbox (for resuming).
    pub async fn since(&self, sequence: i64, limit: i64) -> Result<Vec<Envelope>, atlas_events::OutboxError> {
        let mut conn = self.db.reader().acquire().await?;
        atlas_events::read_after(&mut conn, sequence, limit).await
    }
}
