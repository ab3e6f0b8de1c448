//! The embedded consumer runtime against real databases: delivery in order,
//! retries, dead letters and their replay, idempotent redelivery, filters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::{EntityRef, EventContext, EventsModule};
use atlas_kernel::{AppContext, Consumer, Module, ModuleError, ModuleRegistry};
use atlas_testkit::{both_backends, TestBackend, TestServer};

/// Records the event ids it handled; fails while `failing` is set.
struct Recorder {
    name: &'static str,
    types: &'static [&'static str],
    seen: Mutex<Vec<String>>,
    calls: AtomicUsize,
    failing: AtomicBool,
}

impl Recorder {
    fn new(name: &'static str, types: &'static [&'static str], failing: bool) -> Arc<Self> {
        Arc::new(Recorder {
            name,
            types,
            seen: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            failing: AtomicBool::new(failing),
        })
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
    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
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
}

async fn start(backend: TestBackend, recorders: Vec<Arc<Recorder>>) -> Option<(TestServer, Database)> {
    let registry =
        ModuleRegistry::from_modules(vec![Arc::new(EventsModule::default()), Arc::new(Fixture(recorders))]).unwrap();
    let server = TestServer::start(backend, registry, |s| {
        s.events.poll_interval_ms = 10;
        s.events.max_deliver = 3;
        s.events.backoff_initial_ms = 10;
        s.events.backoff_max_ms = 50;
    })
    .await?;
    let db = server.database.connect().await;
    Some((server, db))
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

async fn delivery_in_order_with_filters(backend: TestBackend) {
    let all = Recorder::new("all", &[], false);
    let created = Recorder::new("created-only", &["ItemCreated"], false);
    let Some((server, db)) = start(backend, vec![all.clone(), created.clone()]).await else {
        return;
    };
    let mut ids = emit(&db, "ItemCreated", 30).await;
    let deleted = emit(&db, "ItemDeleted", 5).await;
    ids.extend(deleted.iter().cloned());
    eventually("every event delivered", async || all.seen().len() == 35).await;
    assert_eq!(all.seen(), ids, "in commit order, once each");
    eventually("filtered consumer caught up", async || created.seen().len() == 30).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(created.seen(), ids[..30].to_vec(), "only the types it asked for");
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
    db.close().await;
    server.stop().await.unwrap();
}
both_backends!(events_reach_consumers_in_order, delivery_in_order_with_filters);

async fn poison_pill(backend: TestBackend) {
    let healthy = Recorder::new("healthy", &[], false);
    let poisoned = Recorder::new("poisoned", &[], true);
    let Some((server, db)) = start(backend, vec![healthy.clone(), poisoned.clone()]).await else {
        return;
    };
    let ids = emit(&db, "ItemCreated", 2).await;
    eventually("both events dead-lettered", async || {
        atlas_events::dlq::list(&db, Some("poisoned")).await.unwrap().len() == 2
    })
    .await;
    let letters = atlas_events::dlq::list(&db, Some("poisoned")).await.unwrap();
    assert_eq!(letters.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>(), ids);
    assert!(
        letters
            .iter()
            .all(|d| d.attempts == 3 && d.last_error == "cannot handle ItemCreated"),
        "{letters:?}"
    );
    assert_eq!(poisoned.calls.load(Ordering::SeqCst), 6, "max_deliver attempts each");
    assert!(atlas_events::dlq::list(&db, Some("healthy")).await.unwrap().is_empty());
    eventually("the healthy consumer is unaffected", async || healthy.seen() == ids).await;

    // Fix the handler, replay one, then the rest: each is handled once.
    poisoned.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        atlas_events::dlq::request_replay(&db, Some(&letters[0].id))
            .await
            .unwrap(),
        1
    );
    eventually("first replayed", async || poisoned.seen() == ids[..1].to_vec()).await;
    assert_eq!(atlas_events::dlq::request_replay(&db, None).await.unwrap(), 1);
    eventually("second replayed", async || poisoned.seen() == ids).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(poisoned.seen(), ids, "replayed exactly once");
    let letters = atlas_events::dlq::list(&db, Some("poisoned")).await.unwrap();
    assert!(letters.iter().all(|d| d.replayed_at.is_some()));
    assert_eq!(
        atlas_events::dlq::request_replay(&db, None).await.unwrap(),
        0,
        "nothing left to replay"
    );
    assert_eq!(atlas_events::dlq::purge(&db, Some("poisoned")).await.unwrap(), 2);
    db.close().await;
    server.stop().await.unwrap();
}
both_backends!(a_poison_pill_is_dead_lettered_and_replayed_once, poison_pill);

async fn redelivery_is_a_no_op(backend: TestBackend) {
    let recorder = Recorder::new("once", &[], false);
    let Some((server, db)) = start(backend, vec![recorder.clone()]).await else {
        return;
    };
    let ids = emit(&db, "ItemUpdated", 10).await;
    eventually("delivered", async || recorder.seen().len() == 10).await;
    // Rewind the offset, as a crash before the offset commit would: the same
    // event ids come again and the handler is not called for them.
    sqlx::query("UPDATE consumer_offsets SET last_sequence = 0 WHERE consumer = 'once'")
        .execute(db.writer())
        .await
        .unwrap();
    let more = emit(&db, "ItemUpdated", 1).await;
    eventually("the new event delivered", async || recorder.seen().len() == 11).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        recorder.calls.load(Ordering::SeqCst),
        11,
        "no handler call for a duplicate"
    );
    assert_eq!(recorder.seen(), [ids, more].concat());
    db.close().await;
    server.stop().await.unwrap();
}
both_backends!(duplicate_delivery_is_a_no_op, redelivery_is_a_no_op);

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
