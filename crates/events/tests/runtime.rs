//! The consumer runtime against real databases and a real JetStream, in
//! every mode (embedded on SQLite and PostgreSQL, nats on PostgreSQL):
//! delivery in order, retries, dead letters and their replay, idempotent
//! redelivery, filters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::dlq::DeadLetterStore;
use atlas_events::{EntityRef, EventContext, EventsModule};
use atlas_kernel::settings::EventsSettings;
use atlas_kernel::{AppContext, Consumer, Module, ModuleError, ModuleRegistry};
use atlas_testkit::{TestBackend, TestNats, TestServer};

/// Where the events travel in a test.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    EmbeddedSqlite,
    EmbeddedPostgres,
    NatsPostgres,
}

/// Run the same async test body in every mode.
macro_rules! all_modes {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_sqlite() {
                $body(Mode::EmbeddedSqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_postgres() {
                $body(Mode::EmbeddedPostgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats_postgres() {
                $body(Mode::NatsPostgres).await
            }
        }
    };
}

/// Records the event ids it handled; fails while `failing` is set.
struct Recorder {
    name: &'static str,
    types: &'static [&'static str],
    seen: Mutex<Vec<String>>,
    calls: AtomicUsize,
    failing: AtomicBool,
    delay_ms: std::sync::atomic::AtomicU64,
    /// > 1: takes events in batches of up to this many.
    batch: usize,
    batches: Mutex<Vec<usize>>,
    fail_batches: AtomicBool,
    /// Claims to deduplicate redeliveries itself.
    idempotent: bool,
}

impl Recorder {
    fn new(name: &'static str, types: &'static [&'static str], failing: bool) -> Arc<Self> {
        Arc::new(Recorder {
            name,
            types,
            seen: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            failing: AtomicBool::new(failing),
            delay_ms: Default::default(),
            batch: 1,
            batches: Mutex::new(Vec::new()),
            fail_batches: AtomicBool::new(false),
            idempotent: false,
        })
    }
    fn batched(name: &'static str, size: usize, fail_batches: bool) -> Arc<Self> {
        let mut r = Arc::try_unwrap(Recorder::new(name, &[], false)).unwrap_or_else(|_| unreachable!());
        r.batch = size;
        r.fail_batches = AtomicBool::new(fail_batches);
        Arc::new(r)
    }
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Consumer for Recorder {
    fn name(&self) -> &str {
        self.name
    }
    fn event_types(&self) -> &[&'static str] {
        self.types
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    async fn handle_batch(&self, envelopes: &[&serde_json::Value]) -> Result<(), ModuleError> {
        if self.fail_batches.load(Ordering::SeqCst) {
            return Err("this batch cannot be taken".into());
        }
        self.batches.lock().unwrap().push(envelopes.len());
        let mut seen = self.seen.lock().unwrap();
        for e in envelopes {
            seen.push(e["event_id"].as_str().unwrap().to_string());
        }
        Ok(())
    }
    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(format!("cannot handle {}", envelope["type"].as_str().unwrap_or("?")).into());
        }
        self.seen
            .lock()
            .unwrap()
            .push(envelope["event_id"].as_str().unwrap().to_string());
        Ok(())
    }
}

struct Fixture(Vec<Arc<Recorder>>);

#[async_trait]
impl Module for Fixture {
    fn name(&self) -> &'static str {
        "fixture"
    }
    fn depends_on(&self) -> &'static [&'static str] {
        &["events"]
    }
    fn consumers(&self, _ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        self.0.iter().map(|r| r.clone() as Arc<dyn Consumer>).collect()
    }
    /// `POST /api/v1/fixture/events` commits one event, as an API write;
    /// `GET` is a read that does nothing.
    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let db = ctx.db().clone();
        let routes = axum::routing::post(move || async move {
            emit(&db, "ItemCreated", 1).await;
            axum::http::StatusCode::CREATED
        })
        .get(|| async { axum::http::StatusCode::OK });
        Some(atlas_http::ModuleRouter::new().route("/fixture/events", routes))
    }
}

/// A running server with its consumers, a connection to its database and,
/// in nats mode, its streams.
struct Harness {
    server: TestServer,
    db: Database,
    events: EventsSettings,
    nats: Option<TestNats>,
}

impl Harness {
    async fn dead_letters(&self) -> DeadLetterStore {
        DeadLetterStore::open(&self.db, &self.events).await.unwrap()
    }

    async fn stop(self) {
        self.db.close().await;
        self.server.stop().await.unwrap();
        drop(self.nats);
    }
}

async fn start(mode: Mode, recorders: Vec<Arc<Recorder>>) -> Option<Harness> {
    start_with(mode, recorders, |_| {}).await
}

async fn start_with(
    mode: Mode,
    recorders: Vec<Arc<Recorder>>,
    configure: impl FnOnce(&mut atlas_kernel::Settings),
) -> Option<Harness> {
    let nats = match mode {
        Mode::NatsPostgres => Some(TestNats::new().await?),
        _ => None,
    };
    let backend = match mode {
        Mode::EmbeddedSqlite => TestBackend::Sqlite,
        _ => TestBackend::Postgres,
    };
    let registry =
        ModuleRegistry::from_modules(vec![Arc::new(EventsModule::default()), Arc::new(Fixture(recorders))]).unwrap();
    let mut events = EventsSettings::default();
    let server = TestServer::start(backend, registry, |s| {
        s.events.poll_interval_ms = 10;
        s.events.max_deliver = 3;
        s.events.backoff_initial_ms = 10;
        s.events.backoff_max_ms = 50;
        if let Some(nats) = &nats {
            nats.apply(s);
        }
        configure(s);
        events = s.events.clone();
    })
    .await?;
    let db = server.database.connect().await;
    Some(Harness {
        server,
        db,
        events,
        nats,
    })
}

/// Commit `n` events of `event_type`, each in its own transaction.
async fn emit(db: &Database, event_type: &str, n: usize) -> Vec<String> {
    let ev = EventContext::from_request(None, &atlas_http::RequestContext::detached());
    let mut ids = Vec::new();
    for _ in 0..n {
        let envelope = ev.envelope(
            event_type,
            EntityRef {
                entity_type: "item".into(),
                id: uuid::Uuid::now_v7().to_string(),
                collection_id: None,
            },
            serde_json::json!({"n": ids.len()}),
        );
        let mut tx = db.begin().await.unwrap();
        atlas_events::append(&mut tx, &envelope).await.unwrap();
        tx.commit().await.unwrap();
        ids.push(envelope.event_id);
    }
    ids
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn delivery_in_order_with_filters(mode: Mode) {
    let all = Recorder::new("all", &[], false);
    let created = Recorder::new("created-only", &["ItemCreated"], false);
    let Some(h) = start(mode, vec![all.clone(), created.clone()]).await else {
        return;
    };
    let db = &h.db;
    let mut ids = emit(db, "ItemCreated", 30).await;
    let deleted = emit(db, "ItemDeleted", 5).await;
    ids.extend(deleted.iter().cloned());
    eventually("every event delivered", async || all.seen().len() == 35).await;
    assert_eq!(all.seen(), ids, "in commit order, once each");
    eventually("filtered consumer caught up", async || created.seen().len() == 30).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(created.seen(), ids[..30].to_vec(), "only the types it asked for");
    if mode == Mode::NatsPostgres {
        h.stop().await;
        return;
    }
    let offset: i64 = sqlx::query("SELECT last_sequence FROM consumer_offsets WHERE consumer = 'created-only'")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    let head: i64 = sqlx::query("SELECT MAX(sequence) FROM outbox")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(offset, head, "skipped events advance the offset too");
    h.stop().await;
}
all_modes!(events_reach_consumers_in_order, delivery_in_order_with_filters);

async fn poison_pill(mode: Mode) {
    let healthy = Recorder::new("healthy", &[], false);
    let poisoned = Recorder::new("poisoned", &[], true);
    let Some(h) = start(mode, vec![healthy.clone(), poisoned.clone()]).await else {
        return;
    };
    let store = h.dead_letters().await;
    let ids = emit(&h.db, "ItemCreated", 2).await;
    eventually("both events dead-lettered", async || {
        store.list(Some("poisoned")).await.unwrap().len() == 2
    })
    .await;
    let letters = store.list(Some("poisoned")).await.unwrap();
    // Embedded retries in place, so letters come in event order; nats
    // retries each event on its own schedule, so either may die first.
    let mut dead: Vec<String> = letters.iter().map(|d| d.event_id.clone()).collect();
    dead.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(dead, sorted_ids);
    assert!(
        letters
            .iter()
            .all(|d| d.attempts == 3 && d.last_error == "cannot handle ItemCreated" && d.consumer == "poisoned"),
        "{letters:?}"
    );
    assert_eq!(poisoned.calls.load(Ordering::SeqCst), 6, "max_deliver attempts each");
    assert!(store.list(Some("healthy")).await.unwrap().is_empty());
    eventually("the healthy consumer is unaffected", async || healthy.seen() == ids).await;

    // Fix the handler, replay one, then the rest: each is handled once.
    poisoned.failing.store(false, Ordering::SeqCst);
    assert_eq!(store.replay(Some(&letters[0].id)).await.unwrap(), 1);
    let first = letters[0].event_id.clone();
    eventually("first replayed", async || poisoned.seen() == [first.clone()]).await;
    assert_eq!(store.replay(None).await.unwrap(), 1);
    eventually("second replayed", async || poisoned.seen().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut replayed = poisoned.seen();
    replayed.sort();
    assert_eq!(replayed, sorted_ids, "replayed exactly once");
    assert_eq!(healthy.seen(), ids, "a replay reaches only its own consumer");
    assert_eq!(store.replay(None).await.unwrap(), 0, "nothing left to replay");
    let letters = store.list(Some("poisoned")).await.unwrap();
    match mode {
        // Embedded keeps replayed letters, marked, until purged.
        Mode::EmbeddedSqlite | Mode::EmbeddedPostgres => {
            assert!(letters.iter().all(|d| d.replayed_at.is_some()));
            assert_eq!(store.purge(Some("poisoned")).await.unwrap(), 2);
        }
        // The stream drops a letter once it is replayed.
        Mode::NatsPostgres => assert!(letters.is_empty(), "{letters:?}"),
    }
    assert!(store.list(None).await.unwrap().is_empty());
    h.stop().await;
}
all_modes!(a_poison_pill_is_dead_lettered_and_replayed_once, poison_pill);

/// Make the log hand every event to `consumer` again: rewind its offset
/// (embedded), or publish every event again under new message ids, past the
/// broker's dedup, as a relay that lost its marks would (nats).
async fn deliver_everything_again(h: &Harness, consumer: &str) {
    match &h.nats {
        // Rewind the offset, as a crash before the offset commit would.
        None => {
            sqlx::query("UPDATE consumer_offsets SET last_sequence = 0 WHERE consumer = $1")
                .bind(consumer)
                .execute(h.db.writer())
                .await
                .unwrap();
        }
        // Publish every event again under new message ids, past the
        // broker's dedup, as a relay that lost its marks would.
        Some(nats) => {
            let client = async_nats::connect(nats.url.as_str()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let rows = sqlx::query("SELECT envelope FROM outbox ORDER BY sequence")
                .fetch_all(h.db.reader())
                .await
                .unwrap();
            for row in rows {
                let envelope: String = row.get(0);
                let subject = format!("{}.events.item.updated", nats.subject_prefix);
                let publish = async_nats::jetstream::message::PublishMessage::build()
                    .payload(envelope.into_bytes().into())
                    .message_id(uuid::Uuid::now_v7().to_string());
                js.send_publish(subject, publish).await.unwrap().await.unwrap();
            }
        }
    }
}

async fn redelivery_is_a_no_op(mode: Mode) {
    let recorder = Recorder::new("once", &[], false);
    let Some(h) = start(mode, vec![recorder.clone()]).await else {
        return;
    };
    let ids = emit(&h.db, "ItemUpdated", 10).await;
    eventually("delivered", async || recorder.seen().len() == 10).await;
    deliver_everything_again(&h, "once").await;
    let more = emit(&h.db, "ItemUpdated", 1).await;
    eventually("the new event delivered", async || recorder.seen().len() == 11).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        recorder.calls.load(Ordering::SeqCst),
        11,
        "no handler call for a duplicate"
    );
    assert_eq!(recorder.seen(), [ids, more].concat());
    h.stop().await;
}
all_modes!(duplicate_delivery_is_a_no_op, redelivery_is_a_no_op);

/// A consumer that deduplicates by itself gets redeliveries handed to it
/// and costs the runtime no processed records; the others still do.
async fn self_deduplicating_consumers_keep_no_processed_records(mode: Mode) {
    let mut own = Arc::try_unwrap(Recorder::batched("own-dedup", 20, false)).unwrap_or_else(|_| unreachable!());
    own.idempotent = true;
    let own = Arc::new(own);
    let plain = Recorder::batched("plain", 20, false);
    let Some(h) = start(mode, vec![own.clone(), plain.clone()]).await else {
        return;
    };
    let ids = emit(&h.db, "ItemUpdated", 10).await;
    eventually("delivered", async || own.seen().len() == 10 && plain.seen().len() == 10).await;
    let records = async |consumer: &str| -> i64 {
        sqlx::query("SELECT COUNT(*) FROM consumer_processed WHERE consumer = $1")
            .bind(consumer)
            .fetch_one(h.db.reader())
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(records("own-dedup").await, 0);
    assert_eq!(records("plain").await, 10);
    deliver_everything_again(&h, "own-dedup").await;
    let more = emit(&h.db, "ItemUpdated", 1).await;
    eventually("the redeliveries reach the handler", async || own.seen().len() == 21).await;
    let mut seen = own.seen();
    seen.sort();
    seen.dedup();
    let mut expected = [ids, more].concat();
    expected.sort();
    assert_eq!(seen, expected, "the same events, twice");
    assert_eq!(records("own-dedup").await, 0);
    h.stop().await;
}
/// While a consumer falls behind, API writes wait for it: the number of
/// committed but unhandled events stays near `events.max_backlog` however
/// fast a client writes, and every write still succeeds.
async fn writes_wait_for_consumers_that_fall_behind(mode: Mode) {
    let slow = Recorder::new("slow", &[], false);
    slow.delay_ms.store(15, Ordering::SeqCst);
    let Some(h) = start_with(mode, vec![slow.clone()], |s| {
        s.events.max_backlog = 5;
        s.events.write_wait_ms = 30_000;
        s.events.max_ack_pending = 4;
    })
    .await
    else {
        return;
    };
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (h.server.client.clone(), h.server.url("/api/v1/fixture/events"));
            tokio::spawn(async move {
                for _ in 0..15 {
                    let status = client.post(&url).send().await.unwrap().status();
                    assert_eq!(status, 201);
                }
            })
        })
        .collect();
    let mut most_behind = 0i64;
    while !writers.iter().all(|w| w.is_finished()) {
        let committed: i64 = sqlx::query("SELECT COUNT(*) FROM outbox")
            .fetch_one(h.db.reader())
            .await
            .unwrap()
            .get(0);
        most_behind = most_behind.max(committed - slow.seen().len() as i64);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    eventually("all handled", async || slow.seen().len() == 60).await;
    // The limit, plus what one step of the consumer reads before it reports
    // again, plus the four writers admitted at once. In nats mode also the
    // messages the client already fetched (the broker no longer counts them
    // as pending) and those the relay published since the consumer's last
    // report; without the gate, 40 to 60 events wait here.
    let in_hand = if mode == Mode::NatsPostgres { 4 + 4 + 8 } else { 4 };
    let bound = 5 + in_hand + 4 + 1;
    assert!(
        most_behind <= bound,
        "{most_behind} events were waiting for the consumer (bound {bound})"
    );
    h.stop().await;
}
all_modes!(write_backpressure, writes_wait_for_consumers_that_fall_behind);

/// Writes admitted before a consumer's first report count against it: the
/// gate knows every consumer from the moment its task is spawned, so a
/// consumer slow to start (a busy machine) cannot let writes through
/// unbounded. A current-thread runtime keeps the spawned task from running
/// (and reporting) before the check; past the limit of 5, the next write
/// would wait.
#[tokio::test(flavor = "current_thread")]
async fn writes_before_a_consumer_s_first_report_count_against_it() {
    let database = atlas_testkit::TestDatabase::new(TestBackend::Sqlite).await.unwrap();
    let db = database.connect().await;
    let gate = Arc::new(atlas_http::WriteGate::new(5, Duration::from_secs(30)));
    let recorder: Arc<dyn Consumer> = Recorder::new("late", &[], false);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = atlas_events::runtime::ConsumerRuntime::new(
        db.clone(),
        EventsSettings::default(),
        vec![recorder],
        gate.clone(),
    )
    .spawn(shutdown.clone());
    for _ in 0..6 {
        gate.admit().await.unwrap();
    }
    assert_eq!(
        gate.backlog(),
        6,
        "each admitted write counts for the consumer not yet heard from"
    );
    shutdown.cancel();
    for task in tasks {
        task.abort();
    }
    db.close().await;
}

/// A write held longer than `events.write_wait_ms` is refused with 503 and
/// a `Retry-After`, in the error shape; reads are not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_too_long_is_refused_with_retry_after() {
    let slow = Recorder::new("very-slow", &[], false);
    slow.delay_ms.store(400, Ordering::SeqCst);
    let Some(h) = start_with(Mode::EmbeddedSqlite, vec![slow.clone()], |s| {
        s.events.max_backlog = 1;
        s.events.write_wait_ms = 100;
    })
    .await
    else {
        return;
    };
    emit(&h.db, "ItemCreated", 5).await;
    let url = h.server.url("/api/v1/fixture/events");
    let mut refused = None;
    for _ in 0..20 {
        let response = h.server.client.post(&url).send().await.unwrap();
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = refused.expect("a write was refused while the consumer was 4+ events behind");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unavailable");
    assert!(body["message"].as_str().unwrap().contains("behind"), "{body}");
    let read = h.server.client.get(&url).send().await.unwrap();
    assert_eq!(read.status(), 200, "reads are not held");
    eventually("the consumer caught up", async || slow.seen().len() >= 5).await;
    h.stop().await;
}

all_modes!(
    self_deduplicating_consumers,
    self_deduplicating_consumers_keep_no_processed_records
);

#[tokio::test]
async fn a_process_without_workers_runs_no_consumers() {
    let recorder = Recorder::new("api-only", &[], false);
    let registry = ModuleRegistry::from_modules(vec![
        Arc::new(EventsModule::default()),
        Arc::new(Fixture(vec![recorder.clone()])),
    ])
    .unwrap();
    let server = TestServer::start(TestBackend::Sqlite, registry, |s| {
        s.server.role = atlas_kernel::Role::Api;
        s.events.poll_interval_ms = 10;
    })
    .await
    .unwrap();
    let db = server.database.connect().await;
    emit(&db, "ItemCreated", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 0);
    db.close().await;
    server.stop().await.unwrap();
}

/// Commit `n` events in transactions of up to `per_tx` events each.
async fn emit_batched(db: &Database, n: usize, per_tx: usize) -> Vec<String> {
    let ev = EventContext::from_request(None, &atlas_http::RequestContext::detached());
    let mut ids = Vec::new();
    while ids.len() < n {
        let mut tx = db.begin().await.unwrap();
        for _ in 0..per_tx.min(n - ids.len()) {
            let envelope = ev.envelope(
                "ItemCreated",
                EntityRef {
                    entity_type: "item".into(),
                    id: uuid::Uuid::now_v7().to_string(),
                    collection_id: None,
                },
                serde_json::json!({}),
            );
            atlas_events::append(&mut tx, &envelope).await.unwrap();
            ids.push(envelope.event_id);
        }
        tx.commit().await.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_cloudevents_with_dedup_ids_and_trace_context() {
    let recorder = Recorder::new("headers", &[], false);
    let Some(h) = start(Mode::NatsPostgres, vec![recorder.clone()]).await else {
        return;
    };
    let nats = h.nats.as_ref().unwrap();
    let mut ev = EventContext::from_request(None, &atlas_http::RequestContext::detached());
    ev.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
    let envelope = ev.envelope(
        "MembershipRoleChanged",
        EntityRef {
            entity_type: "membership".into(),
            id: "m1".into(),
            collection_id: Some("c1".into()),
        },
        serde_json::json!({"role": "editor"}),
    );
    let mut tx = h.db.begin().await.unwrap();
    let sequence = atlas_events::append(&mut tx, &envelope).await.unwrap();
    tx.commit().await.unwrap();
    eventually("handled", async || recorder.seen().len() == 1).await;

    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let stream = js.get_stream(&nats.stream).await.unwrap();
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        message.subject.as_str(),
        format!("{}.events.membership.role_changed", nats.subject_prefix)
    );
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(header("Nats-Msg-Id").as_deref(), Some(envelope.event_id.as_str()));
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce-id").as_deref(), Some(envelope.event_id.as_str()));
    assert_eq!(header("ce-type").as_deref(), Some("MembershipRoleChanged"));
    assert_eq!(header("ce-source").as_deref(), Some("/atlas"));
    assert_eq!(header("ce-time").as_deref(), Some(envelope.occurred_at.as_str()));
    let traceparent = header("traceparent").unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && traceparent.ends_with("-01"),
        "{traceparent}"
    );
    let published: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        published["sequence"], sequence,
        "the payload is the envelope with its sequence"
    );
    let unpublished: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(h.db.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(unpublished, 0, "marked published after the broker's ack");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_never_has_more_than_max_ack_pending_in_flight() {
    const MAX_ACK_PENDING: u32 = 16;
    let slow = Recorder::new("slow", &[], false);
    slow.delay_ms.store(1, Ordering::SeqCst);
    let Some(h) = start_with(Mode::NatsPostgres, vec![slow.clone()], |s| {
        s.events.max_ack_pending = MAX_ACK_PENDING;
    })
    .await
    else {
        return;
    };
    let nats = h.nats.as_ref().unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let producer = {
        let db = h.db.clone();
        tokio::spawn(async move { emit_batched(&db, 5000, 250).await })
    };
    let mut most_in_flight = 0;
    let mut backlog_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while slow.seen().len() < 5000 {
        assert!(Instant::now() < deadline, "only {} handled", slow.seen().len());
        if let Ok(stream) = js.get_stream(&nats.stream).await {
            if let Ok(info) = stream.consumer_info("slow").await {
                most_in_flight = most_in_flight.max(info.num_ack_pending);
                backlog_seen = backlog_seen.max(info.num_pending);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ids = producer.await.unwrap();
    assert!(most_in_flight <= MAX_ACK_PENDING as usize, "{most_in_flight} in flight");
    assert!(most_in_flight > 0, "the sampling saw messages in flight");
    assert!(
        backlog_seen > u64::from(MAX_ACK_PENDING),
        "the backlog waited in the stream, not in memory"
    );
    let mut seen = slow.seen();
    seen.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(seen, expected, "every event handled once");
    h.stop().await;
}

/// A server on Postgres with `recorder` as its consumer, on a NATS server
/// of its own that the test may stop and restart (file storage, so that
/// messages outlive a restart; 2 s requests); `configure` adds settings.
async fn on_a_private_broker(
    recorder: &Arc<Recorder>,
    configure: impl FnOnce(&mut atlas_kernel::Settings),
) -> Option<(atlas_testkit::PrivateNats, TestNats, TestServer)> {
    let private = atlas_testkit::PrivateNats::start().await?;
    let nats = TestNats::on(&private.url).await?;
    let registry = ModuleRegistry::from_modules(vec![
        Arc::new(EventsModule::default()),
        Arc::new(Fixture(vec![recorder.clone()])),
    ])
    .unwrap();
    let server = TestServer::start(TestBackend::Postgres, registry, |s| {
        s.events.poll_interval_ms = 10;
        nats.apply(s);
        s.events.nats.storage = atlas_kernel::settings::NatsStorage::File;
        s.events.nats.request_timeout_secs = 2;
        configure(s);
    })
    .await?;
    Some((private, nats, server))
}

/// Wait (up to a minute: the consumer and the relay reconnect on their
/// own) until `recorder` has seen `n` events.
async fn all_arrive_after_the_restart(recorder: &Recorder, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorder.seen().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} events arrived after the restart",
            recorder.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With the broker gone, consumers stop holding writes once they notice
/// (missed heartbeats): the outbox keeps the events, writes go on, and the
/// events arrive when the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_held_while_the_broker_is_down() {
    let recorder = Recorder::new("patient", &[], false);
    let Some((mut private, nats, server)) = on_a_private_broker(&recorder, |s| {
        s.events.max_backlog = 3;
        // Longer than a relay round that times out on its acks (2 s),
        // after which the relay withdraws too.
        s.events.write_wait_ms = 5_000;
    })
    .await
    else {
        return;
    };
    let url = server.url("/api/v1/fixture/events");
    assert_eq!(server.client.post(&url).send().await.unwrap().status(), 201);
    eventually("the first event arrives", async || recorder.seen().len() == 1).await;
    private.kill();
    // Heartbeats are 5 s apart; two missed ones tell the consumer.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for i in 0..10 {
        // A write held for good would be refused with 503 after 5 s.
        let status = server.client.post(&url).send().await.unwrap().status();
        assert_eq!(status, 201, "write {i} with the broker down");
    }
    private.restart().await;
    all_arrive_after_the_restart(&recorder, 11).await;
    server.stop().await.unwrap();
    drop(nats);
}

/// A relay round reads more rows than it may have awaiting an ack: it
/// waits for acks to make room instead of waiting for ack permits that the
/// round itself holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_batch_larger_than_its_inflight_limit_publishes_everything() {
    let recorder = Recorder::new("all", &[], false);
    let Some(h) = start_with(Mode::NatsPostgres, vec![recorder.clone()], |s| {
        s.events.nats.relay_batch = 64;
        s.events.nats.relay_max_inflight = 4;
    })
    .await
    else {
        return;
    };
    let ids = emit_batched(&h.db, 300, 50).await;
    eventually("every event is published and handled", async || {
        recorder.seen().len() >= ids.len()
    })
    .await;
    let mut seen = recorder.seen();
    seen.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(seen, expected, "every event handled once");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_burst_loses_and_duplicates_nothing() {
    let recorder = Recorder::new("survivor", &[], false);
    let Some((mut private, nats, server)) = on_a_private_broker(&recorder, |_| {}).await else {
        return;
    };
    let db = server.database.connect().await;
    let producer = {
        let db = db.clone();
        tokio::spawn(async move { emit_batched(&db, 3000, 5).await })
    };
    eventually("the burst is under way", async || recorder.seen().len() >= 300).await;
    assert!(!producer.is_finished(), "the broker goes down mid-burst");
    private.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    private.restart().await;
    let ids = producer.await.unwrap();
    all_arrive_after_the_restart(&recorder, ids.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = recorder.seen();
    seen.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(seen.len(), expected.len(), "no event handled twice");
    assert_eq!(seen, expected, "every committed event handled");
    db.close().await;
    server.stop().await.unwrap();
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_database_publish_each_event_once() {
    let Some(nats) = TestNats::new().await else {
        return;
    };
    let Some(database) = atlas_testkit::TestDatabase::new(TestBackend::Postgres).await else {
        return;
    };
    let mut settings = atlas_testkit::test_settings(&database, database.dir.path());
    nats.apply(&mut settings);
    let db = database.connect().await;
    let registry = ModuleRegistry::from_modules(vec![Arc::new(EventsModule::default())]).unwrap();
    atlas_db::Migrator::new(&db)
        .up(&registry.migrations().unwrap())
        .await
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let log = atlas_events::nats::NatsLog::connect(&settings.events.nats)
            .await
            .unwrap();
        let relay = atlas_events::nats::relay::Relay::new(db.clone(), log, 10);
        relays.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    let ids = emit_batched(&db, 1000, 20).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
    let mut stream = js.get_stream(&nats.stream).await.unwrap();
    eventually("all published", async || {
        stream.info().await.unwrap().state.messages >= ids.len() as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stream.info().await.unwrap().state.messages, ids.len() as u64);
    let holders: i64 = sqlx::query("SELECT COUNT(*) FROM relay_lease")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(holders, 1, "one lease row");
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    db.close().await;
}

async fn batches_are_taken_whole_or_redelivered_one_by_one(mode: Mode) {
    let batched = Recorder::batched("batched", 50, false);
    // Its batches always fail; one by one, its events succeed.
    let fallback = Recorder::batched("fallback", 50, true);
    let Some(h) = start(mode, vec![batched.clone(), fallback.clone()]).await else {
        return;
    };
    let ids = emit_batched(&h.db, 300, 100).await;
    eventually("all batched", async || batched.seen().len() >= 300).await;
    eventually("all through the fallback", async || fallback.seen().len() >= 300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sizes = batched.batches.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| (1..=50).contains(&n)), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n > 1), "events went in batches: {sizes:?}");
    for recorder in [&batched, &fallback] {
        let mut seen = recorder.seen();
        if mode != Mode::NatsPostgres {
            assert_eq!(seen, ids, "{}: in log order", recorder.name);
        }
        seen.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(seen, expected, "{}: each event once", recorder.name);
    }
    assert_eq!(fallback.calls.load(Ordering::SeqCst), 300, "one handle call per event");
    assert!(h.dead_letters().await.list(None).await.unwrap().is_empty());
    h.stop().await;
}
all_modes!(batch_consumers, batches_are_taken_whole_or_redelivered_one_by_one);

/// Consumers far apart in the log share what one of them decoded last
/// (embedded brokers): each still gets every event once, in commit order,
/// while a slow one falls out of the shared run and reads the outbox again.
async fn consumers_at_different_speeds_each_get_the_whole_log(mode: Mode) {
    let fast = Recorder::new("fast", &[], false);
    let slow = Recorder::new("slow", &[], false);
    slow.delay_ms.store(2, Ordering::SeqCst);
    let batched = Recorder::batched("batched", 5, false);
    let recorders = vec![fast.clone(), slow.clone(), batched.clone()];
    // Batches of 8 and a shared run of 16: the run moves on many times.
    let Some(h) = start_with(mode, recorders, |s| s.events.max_ack_pending = 8).await else {
        return;
    };
    let ids = emit_batched(&h.db, 300, 7).await;
    for recorder in [&fast, &slow, &batched] {
        eventually(&format!("{} caught up", recorder.name), async || {
            recorder.seen().len() >= ids.len()
        })
        .await;
        assert_eq!(recorder.seen(), ids, "{}: every event once, in order", recorder.name);
    }
    h.stop().await;
}
all_modes!(
    consumers_at_different_speeds,
    consumers_at_different_speeds_each_get_the_whole_log
);
