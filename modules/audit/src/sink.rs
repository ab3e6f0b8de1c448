//! The audit sink: the consumer that turns every event into an audit row.

use std::sync::Arc;

use async_trait::async_trait;
use atlas_events::Envelope;
use atlas_kernel::{Consumer, ModuleError};
use serde::Deserialize as _;

use crate::chain::{redact, AuditEntity};
use crate::signing::NodeKey;
use crate::store::{Appended, AuditStore, NewRecord};
use crate::AuditError;

/// Consumes every event type and appends one row per event to the chain.
///
/// Idempotent on its own, whatever the runtime does: a redelivered event
/// (same `event_id`) is found in `audit_events` and changes nothing, so
/// several workers may consume the same stream at once.
pub struct AuditSink {
    store: AuditStore,
    key: Arc<NodeKey>,
    checkpoint_every_rows: u64,
}

impl AuditSink {
    pub const NAME: &'static str = "audit";

    pub fn new(store: AuditStore, key: Arc<NodeKey>, checkpoint_every_rows: u64) -> Self {
        AuditSink {
            store,
            key,
            checkpoint_every_rows,
        }
    }

    /// Append the row for `envelope` (secrets redacted), or nothing if it is
    /// already there.
    pub async fn record(&self, envelope: &Envelope) -> Result<Appended, AuditError> {
        let mut appended = self.record_many(std::slice::from_ref(envelope)).await?;
        Ok(appended.pop().unwrap_or(Appended::Duplicate))
    }

    /// Append the rows for `envelopes`, in order, in one transaction.
    pub async fn record_many(&self, envelopes: &[Envelope]) -> Result<Vec<Appended>, AuditError> {
        let news = envelopes.iter().map(new_record).collect();
        let appended = self
            .store
            .append_many(news, &self.key, self.checkpoint_every_rows)
            .await?;
        for outcome in &appended {
            match outcome {
                Appended::Row(record, checkpoint) => {
                    metrics::counter!("atlas_audit_rows_appended_total").increment(1);
                    if let Some(cp) = checkpoint {
                        tracing::debug!(sequence = cp.sequence, "audit: checkpoint signed");
                    }
                    tracing::trace!(sequence = record.sequence, "audit: row appended");
                }
                Appended::Duplicate => {
                    metrics::counter!("atlas_audit_duplicates_total").increment(1);
                }
            }
        }
        Ok(appended)
    }
}

/// The row content for one event, secrets redacted.
fn new_record(envelope: &Envelope) -> NewRecord {
    {
        let mut data = envelope.data.clone();
        let redacted = redact(&mut data);
        if !redacted.is_empty() {
            // The outbox refuses known secret names, so this is a bug in
            // whoever built the event; the row keeps no secret either way.
            tracing::error!(event_id = %envelope.event_id, event_type = %envelope.event_type,
                fields = ?redacted, "audit: secret-looking fields in an event were redacted");
            metrics::counter!("atlas_audit_redacted_fields_total").increment(redacted.len() as u64);
        }
        NewRecord {
            event_id: envelope.event_id.clone(),
            event_type: envelope.event_type.clone(),
            occurred_at: envelope.occurred_at.clone(),
            actor_user_id: envelope.actor_user_id.clone(),
            entity: AuditEntity {
                entity_type: envelope.entity.entity_type.clone(),
                id: envelope.entity.id.clone(),
                collection_id: envelope.entity.collection_id.clone(),
            },
            data,
            trace_id: envelope.trace_id.clone(),
            request_id: envelope.request_id.clone(),
        }
    }
}

#[async_trait]
impl Consumer for AuditSink {
    fn name(&self) -> &str {
        Self::NAME
    }

    /// Every event is audited.
    fn event_types(&self) -> &[&'static str] {
        &[]
    }

    /// `audit_events.event_id` is unique and every append checks it first.
    fn idempotent(&self) -> bool {
        true
    }

    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError> {
        let envelope: Envelope = serde_json::from_value(envelope.clone()).map_err(AuditError::from)?;
        self.record(&envelope).await?;
        Ok(())
    }

    /// Up to 256 events per transaction: one lock, one head read and
    /// multi-row inserts instead of one transaction per event.
    fn batch_size(&self) -> usize {
        256
    }

    async fn handle_batch(&self, envelopes: &[&serde_json::Value]) -> Result<(), ModuleError> {
        let envelopes = envelopes
            .iter()
            .map(|e| Envelope::deserialize(*e))
            .collect::<Result<Vec<Envelope>, _>>()
            .map_err(AuditError::from)?;
        self.record_many(&envelopes).await?;
        Ok(())
    }
}
