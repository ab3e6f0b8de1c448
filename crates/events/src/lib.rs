//! Domain events for Atlas: the [`Envelope`] every event travels in and the
//! transactional [`outbox`](append): a write inserts its envelope in the same
//! transaction as the change, so an event exists exactly when its change does.
//!
//! This crate owns the `outbox` table (as the `events` module) and runs the
//! consumers modules contribute (see [`runtime`]). It knows the envelope's
//! shape, not what any event means.

pub mod dlq;
pub mod nats;
mod recent;
pub mod runtime;

use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_db::{Backend, Database, DbError, Param, Statement};
use atlas_kernel::settings::Broker;
use atlas_kernel::{AppContext, ConsumerSet, Module, ModuleError};
use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};
use serde_json::Value;

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// Owns the outbox, offsets and dead-letter tables, and runs the consumer
/// runtime in processes whose role runs background work.
#[derive(Default)]
pub struct EventsModule {
    tasks: atlas_kernel::ModuleTasks,
}

#[async_trait::async_trait]
impl Module for EventsModule {
    fn name(&self) -> &'static str {
        "events"
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let settings = &ctx.settings().events;
        if settings.broker == Broker::Nats {
            let log = nats::NatsLog::connect(&settings.nats).await?;
            ctx.add_readiness_check(std::sync::Arc::new(nats::NatsReadiness(log.clone())));
            ctx.provide(std::sync::Arc::new(log));
        }
        Ok(())
    }

    async fn start(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        if !ctx.settings().server.role.runs_workers() {
            return Ok(());
        }
        let consumers = ctx.get::<ConsumerSet>().map(|set| set.0.clone()).unwrap_or_default();
        // The relay and the consumers' bookkeeping use the background pool:
        // under a write overload, requests queued on the outbox lock hold
        // every connection of the main pool.
        let db = ctx.db().background();
        let settings = ctx.settings().events.clone();
        let shutdown = ctx.shutdown_token().child_token();
        let handles = match settings.broker {
            Broker::Embedded => {
                runtime::ConsumerRuntime::new(db, settings, consumers, ctx.write_gate().clone()).spawn(shutdown)
            }
            Broker::Nats => {
                let log = ctx.require::<nats::NatsLog>()?;
                let gate = ctx.write_gate().clone();
                let mut handles = log.spawn(db.clone(), settings.clone(), consumers, gate, shutdown.clone());
                handles.push(runtime::spawn_pruning(db, settings.processed_retention_hours, shutdown));
                handles
            }
        };
        self.tasks.extend(handles);
        Ok(())
    }

    async fn stop(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        // The kernel cancels the shutdown token before stopping modules; the
        // consumers finish the event in hand and exit.
        ctx.shutdown_token().cancel();
        self.tasks.join(std::time::Duration::from_secs(10), "a consumer").await;
        Ok(())
    }
}

atlas_kernel::register_module!(EventsModule);

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
    pub collection_id: Option<String>,
}

/// The envelope of every domain event (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub occurred_at: String,
    pub actor_user_id: Option<String>,
    pub entity: EntityRef,
    /// State after the change; ids only for deletes.
    #[schema(value_type = Object)]
    pub data: Value,
    pub trace_id: String,
    pub request_id: String,
    pub causation_id: Option<String>,
    /// Position in the log; assigned by the outbox on insert.
    pub sequence: Option<i64>,
    /// The span that wrote the event, when traces are exported: consumers'
    /// spans become its children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// Which delivery of an event a consumer's `handle` is running, when the
/// runtime hands it the event alone (not inside a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// 1 for the first delivery of the event alone.
    pub number: u32,
    /// Whether a failure now dead-letters the event (`events.max_deliver`).
    pub last: bool,
}

tokio::task_local! {
    static DELIVERY: DeliveryAttempt;
}

/// The delivery the running handler is part of: `None` inside a batch, or
/// outside the event runtime. A handler with side effects of its own to
/// account for (the webhooks consumer's delivery log) reads it to know when
/// its failure is final.
pub fn current_delivery() -> Option<DeliveryAttempt> {
    DELIVERY.try_with(|d| *d).ok()
}

/// Run `handler` as delivery `attempt` of an event.
pub(crate) async fn as_delivery<T>(attempt: DeliveryAttempt, handler: impl std::future::Future<Output = T>) -> T {
    DELIVERY.scope(attempt, handler).await
}

/// The span of `consumer` handling `envelope`: a child of the span that
/// wrote the event, in the event's trace.
pub fn consume_span(consumer: &str, envelope: &Envelope) -> tracing::Span {
    head_span(
        consumer,
        &Head {
            event_id: &envelope.event_id,
            event_type: &envelope.event_type,
            trace_id: &envelope.trace_id,
            request_id: &envelope.request_id,
            span_id: envelope.span_id.as_deref(),
        },
    )
}

/// [`consume_span`] for an envelope a consumer holds as JSON (what
/// [`Consumer::handle_batch`](atlas_kernel::Consumer::handle_batch) gets):
/// no copy of the event is made. `None` when `envelope` is not one.
pub fn consume_span_json(consumer: &str, envelope: &Value) -> Option<tracing::Span> {
    Head::deserialize(envelope).ok().map(|head| head_span(consumer, &head))
}

fn head_span(consumer: &str, head: &Head<'_>) -> tracing::Span {
    // Besides Atlas's own fields, the attributes of OpenTelemetry's
    // messaging conventions for processing a message.
    let span = tracing::info_span!(
        "event.consume",
        consumer = %consumer,
        event_id = %head.event_id,
        event_type = %head.event_type,
        trace_id = %head.trace_id,
        request_id = %head.request_id,
        messaging.operation.type = "process",
        messaging.consumer.group.name = %consumer,
        messaging.message.id = %head.event_id,
        messaging.destination.name = %head.event_type,
        otel.name = %format!("process {}", head.event_type),
        otel.kind = "consumer",
    );
    atlas_telemetry::trace::continue_trace(&span, head.trace_id, head.span_id);
    span
}

/// The envelope fields the consumer runtime itself reads, borrowed from
/// the envelope's JSON.
#[derive(Deserialize)]
struct Head<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    trace_id: &'a str,
    request_id: &'a str,
    #[serde(default)]
    span_id: Option<&'a str>,
}

/// An event on its way to consumers: the envelope's JSON, decoded once and
/// handed to every handler call as it is (no typed copy in between).
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    json: Value,
}

impl Delivered {
    /// Decode an envelope from its stored JSON. `sequence`, when given (the
    /// outbox row's), is set in it as the envelope's own. Fails on JSON that
    /// is not an envelope (the fields the runtime reads are missing).
    pub(crate) fn decode(text: &[u8], sequence: Option<i64>) -> Result<Self, serde_json::Error> {
        let mut json: Value = serde_json::from_slice(text)?;
        Head::deserialize(&json)?;
        if let (Some(sequence), Some(fields)) = (sequence, json.as_object_mut()) {
            fields.insert("sequence".into(), sequence.into());
        }
        Ok(Delivered { json })
    }

    fn text(&self, field: &str) -> &str {
        // Present: `decode` checked every field `Head` names.
        self.json.get(field).and_then(Value::as_str).unwrap_or_default()
    }

    pub(crate) fn event_id(&self) -> &str {
        self.text("event_id")
    }

    pub(crate) fn event_type(&self) -> &str {
        self.text("type")
    }

    pub(crate) fn occurred_at(&self) -> &str {
        self.text("occurred_at")
    }

    /// The outbox sequence (0 when the envelope carries none).
    pub(crate) fn sequence(&self) -> i64 {
        self.json.get("sequence").and_then(Value::as_i64).unwrap_or(0)
    }

    pub(crate) fn json(&self) -> &Value {
        &self.json
    }

    /// The span of `consumer` handling this event.
    pub(crate) fn span(&self, consumer: &str) -> tracing::Span {
        consume_span_json(consumer, &self.json).unwrap_or_else(tracing::Span::none)
    }
}

/// Who and what caused an event: taken from the request (or job) at hand.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub actor_user_id: Option<String>,
    pub request_id: String,
    pub trace_id: String,
    pub causation_id: Option<String>,
    /// The span doing the work, when traces are exported.
    pub span_id: Option<String>,
}

impl EventContext {
    pub fn from_request(actor_user_id: Option<String>, req: &atlas_http::RequestContext) -> Self {
        EventContext {
            actor_user_id,
            request_id: req.request_id.clone(),
            trace_id: req.trace_id.clone(),
            causation_id: None,
            span_id: atlas_telemetry::trace::span_id(&tracing::Span::current()),
        }
    }

    /// Build an envelope for `event_type` about `entity`.
    pub fn envelope(&self, event_type: &str, entity: EntityRef, data: Value) -> Envelope {
        Envelope {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.to_string(),
            version: 1,
            occurred_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actor_user_id: self.actor_user_id.clone(),
            entity,
            data,
            trace_id: self.trace_id.clone(),
            request_id: self.request_id.clone(),
            causation_id: self.causation_id.clone(),
            sequence: None,
            span_id: self.span_id.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A programming error: an event's data names a secret field.
    #[error("event {event_type} carries a secret-looking field `{field}`; refusing to write it")]
    SecretInEvent { event_type: String, field: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Field names that must never appear in an event.
pub const SECRET_FIELDS: &[&str] = &[
    "password",
    "password_hash",
    "token",
    "token_hash",
    "access_token",
    "refresh_token",
    "secret",
];

/// The first secret-looking key anywhere in `value`.
pub fn find_secret_field(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()) {
                Some(k.clone())
            } else {
                find_secret_field(v)
            }
        }),
        Value::Array(items) => items.iter().find_map(find_secret_field),
        _ => None,
    }
}

/// The entity and action an event type names: `ItemCreated` → (`item`,
/// `created`), `MembershipRoleChanged` → (`membership`, `role_changed`). The
/// first CamelCase word is the entity; the rest, in snake case, the action.
pub fn entity_and_action(event_type: &str) -> (String, String) {
    let mut words: Vec<String> = Vec::new();
    for c in event_type.chars() {
        if c.is_ascii_uppercase() || words.is_empty() {
            words.push(String::new());
        }
        if let Some(last) = words.last_mut() {
            last.push(c.to_ascii_lowercase());
        }
    }
    let mut words = words
        .into_iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric()));
    let entity = words.next().unwrap_or_else(|| "event".into());
    let action: Vec<String> = words.collect();
    let action = if action.is_empty() {
        "event".to_string()
    } else {
        action.join("_")
    };
    (entity, action)
}

/// Arbitrary constant naming the outbox writers' advisory lock on PostgreSQL.
const OUTBOX_LOCK: i64 = 0x4154_4C41_535F_4F42;

/// Insert `envelope` into the outbox on `conn` (which should be inside the
/// transaction that made the change). Returns the assigned sequence.
pub async fn append(conn: &mut AnyConnection, envelope: &Envelope) -> Result<i64, OutboxError> {
    let sequences = append_many(conn, std::slice::from_ref(envelope)).await?;
    sequences
        .first()
        .copied()
        .ok_or_else(|| OutboxError::Database(sqlx::Error::RowNotFound))
}

/// Insert several envelopes into the outbox on `conn`, in order, with one
/// statement per chunk and (on PostgreSQL) the writers' lock taken once;
/// [`append`] is its one-envelope case. Returns
/// the assigned sequences, one per envelope in the same order. Nothing is
/// written if any envelope carries a secret-looking field.
pub async fn append_many(conn: &mut AnyConnection, envelopes: &[Envelope]) -> Result<Vec<i64>, OutboxError> {
    if envelopes.is_empty() {
        return Ok(Vec::new());
    }
    let postgres = conn.backend_name().eq_ignore_ascii_case("postgresql");
    let (span, jsons) = outbox_rows(envelopes, postgres)?;
    tracing::Instrument::instrument(insert_outbox(conn, envelopes, &jsons, postgres), span).await
}

/// The statements that append `envelope` to the outbox, for a write given
/// as a batch ([`Database::write_batch`](atlas_db::Database::write_batch)):
/// the same rows, lock and span as [`append`], whose sequence it does not
/// return.
pub fn append_statements(backend: Backend, envelope: &Envelope) -> Result<Vec<Statement>, OutboxError> {
    let postgres = backend == Backend::Postgres;
    let (span, jsons) = outbox_rows(std::slice::from_ref(envelope), postgres)?;
    let mut statements = Vec::with_capacity(2);
    if postgres {
        statements.push(Statement::new(OUTBOX_LOCK_SQL).bind(OUTBOX_LOCK));
    }
    let [json] = <[String; 1]>::try_from(jsons).map_err(|_| sqlx::Error::RowNotFound)?;
    statements.push(
        Statement::new(format!(
            "INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&envelope.event_id)
        .bind(&envelope.event_type)
        .bind(&envelope.entity.entity_type)
        .bind(&envelope.entity.id)
        .bind(envelope.entity.collection_id.as_ref())
        .bind(envelope.actor_user_id.as_ref())
        .bind(json)
        .bind(&envelope.occurred_at)
        .in_span(span),
    );
    Ok(statements)
}

/// The outbox columns an append writes, in bind order.
const OUTBOX_COLUMNS: &str =
    "event_id, event_type, entity_type, entity_id, collection_id, actor_user_id, envelope, occurred_at";
/// Serializes outbox writers on PostgreSQL until commit (see `insert_outbox`).
const OUTBOX_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

/// Check `envelopes` for secrets, open the span of their write and
/// serialize them, naming that span in those of its trace.
fn outbox_rows(envelopes: &[Envelope], postgres: bool) -> Result<(tracing::Span, Vec<String>), OutboxError> {
    for envelope in envelopes {
        if let Some(field) = find_secret_field(&envelope.data) {
            return Err(OutboxError::SecretInEvent {
                event_type: envelope.event_type.clone(),
                field,
            });
        }
    }
    // The write of the outbox rows is a span of its own (the database
    // conventions' attributes); the events name it as the span that wrote
    // them when it is in their trace, so their consumers are its children.
    let span = tracing::info_span!(
        "outbox.append",
        db.system.name = if postgres { "postgresql" } else { "sqlite" },
        db.operation.name = "INSERT",
        db.collection.name = "outbox",
        events = envelopes.len(),
        otel.name = "INSERT outbox",
        otel.kind = "client",
    );
    let own = atlas_telemetry::trace::trace_id(&span).zip(atlas_telemetry::trace::span_id(&span));
    let jsons = envelopes
        .iter()
        .map(|e| match &own {
            Some((trace, span_id)) if *trace == e.trace_id => {
                let mut e = e.clone();
                e.span_id = Some(span_id.clone());
                serde_json::to_string(&e)
            }
            _ => serde_json::to_string(e),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok((span, jsons))
}

async fn insert_outbox(
    conn: &mut AnyConnection,
    envelopes: &[Envelope],
    jsons: &[String],
    postgres: bool,
) -> Result<Vec<i64>, OutboxError> {
    if postgres {
        // Serialize outbox writers until commit, so that sequences become
        // visible in increasing order and a reader of "after sequence N"
        // (a consumer, the relay's floor) never skips a row that commits
        // late with a smaller sequence.
        sqlx::query(OUTBOX_LOCK_SQL)
            .bind(OUTBOX_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let mut sequences = Vec::with_capacity(envelopes.len());
    for (chunk, jsons) in envelopes.chunks(APPEND_CHUNK).zip(jsons.chunks(APPEND_CHUNK)) {
        let sql = format!(
            "INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES {} RETURNING event_id, sequence",
            atlas_db::value_rows(1, chunk.len(), 8)
        );
        let mut query = sqlx::query(&sql);
        for (envelope, json) in chunk.iter().zip(jsons) {
            query = query
                .bind(&envelope.event_id)
                .bind(&envelope.event_type)
                .bind(&envelope.entity.entity_type)
                .bind(&envelope.entity.id)
                .bind(&envelope.entity.collection_id)
                .bind(&envelope.actor_user_id)
                .bind(json)
                .bind(&envelope.occurred_at);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        // RETURNING's row order is not promised: match rows by event id.
        let mut by_id = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            by_id.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
        for envelope in chunk {
            let seq = by_id.get(&envelope.event_id).copied().ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "outbox insert returned no sequence for event {}",
                    envelope.event_id
                ))
            })?;
            sequences.push(seq);
        }
    }
    Ok(sequences)
}

/// Envelopes per `INSERT` in [`append_many`]: 8 parameters each stays far
/// below both backends' limit on bound parameters.
const APPEND_CHUNK: usize = 500;

/// The outbox's events after `$1`, in order, at most `$2`.
pub(crate) const OUTBOX_AFTER: &str =
    "SELECT sequence, envelope FROM outbox WHERE sequence > $1 ORDER BY sequence LIMIT $2";

/// Read envelopes from the outbox after `after_sequence`, in order, with
/// their sequence filled in.
pub async fn read_after(
    conn: &mut AnyConnection,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<Envelope>, OutboxError> {
    let rows = sqlx::query(OUTBOX_AFTER)
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0)?;
            let text: String = r.try_get(1)?;
            Ok(stored_envelope(&text, seq).map_err(|e| sqlx::Error::Decode(Box::new(e)))?)
        })
        .collect()
}

/// An envelope as the outbox stores it, with the row's `sequence`.
fn stored_envelope(text: &str, sequence: i64) -> Result<Envelope, serde_json::Error> {
    let mut envelope: Envelope = serde_json::from_str(text)?;
    envelope.sequence = Some(sequence);
    Ok(envelope)
}

/// [`read_after`] outside any transaction, through [`Database::read_rows`]:
/// on SQLite on the calling thread (a bounded range of the outbox's key),
/// with no pool connection to wait for.
pub async fn read_envelopes_after(db: &Database, after_sequence: i64, limit: i64) -> Result<Vec<Envelope>, DbError> {
    db.read_rows(OUTBOX_AFTER, &[Param::Int(after_sequence), Param::Int(limit)], |row| {
        stored_envelope(&row.text(1)?, row.int(0)?).map_err(|e| DbError::Decode(format!("outbox envelope: {e}")))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_name_entity_and_action() {
        let pair = |t| entity_and_action(t);
        assert_eq!(pair("ItemCreated"), ("item".into(), "created".into()));
        assert_eq!(
            pair("MembershipRoleChanged"),
            ("membership".into(), "role_changed".into())
        );
        assert_eq!(pair("JobDead"), ("job".into(), "dead".into()));
        assert_eq!(pair("Weird"), ("weird".into(), "event".into()));
        assert_eq!(pair("a.b*"), ("event".into(), "event".into()));
    }

    #[test]
    fn secrets_are_found_at_any_depth() {
        assert_eq!(
            find_secret_field(&serde_json::json!({"a": {"password_hash": "x"}})).as_deref(),
            Some("password_hash")
        );
        assert_eq!(
            find_secret_field(&serde_json::json!([{"Token": 1}])).as_deref(),
            Some("Token")
        );
        assert_eq!(find_secret_field(&serde_json::json!({"title": "password tips"})), None);
    }
}
