//! The outbox's batch append on both backends: one call stores every
//! envelope in order, returns their sequences, and interleaves correctly
//! with single appends; a secret anywhere in the batch stores nothing.

use std::sync::Arc;

use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::{EntityRef, Envelope, EventContext, EventsModule, OutboxError};
use atlas_kernel::ModuleRegistry;
use atlas_testkit::{both_backends, TestBackend, TestDatabase};
use serde_json::json;

async fn migrated(backend: TestBackend) -> Option<(TestDatabase, Database)> {
    let database = TestDatabase::new(backend).await?;
    let db = database.connect().await;
    let registry = ModuleRegistry::from_modules(vec![Arc::new(EventsModule::default())]).unwrap();
    atlas_db::Migrator::new(&db)
        .up(&registry.migrations().unwrap())
        .await
        .unwrap();
    Some((database, db))
}

fn envelope(n: usize, data: serde_json::Value) -> Envelope {
    let ctx = EventContext {
        actor_user_id: Some("u1".into()),
        request_id: format!("req-{n}"),
        trace_id: "trace".into(),
        causation_id: None,
        span_id: None,
    };
    let entity = EntityRef {
        entity_type: "job".into(),
        id: format!("job-{n}"),
        collection_id: n.is_multiple_of(2).then(|| "c1".to_string()),
    };
    ctx.envelope("JobSucceeded", entity, data)
}

async fn stored(db: &Database) -> Vec<Envelope> {
    let mut conn = db.reader().acquire().await.unwrap();
    atlas_events::read_after(&mut conn, 0, 10_000).await.unwrap()
}

async fn batch_append(backend: TestBackend) {
    let Some((_database, db)) = migrated(backend).await else {
        return;
    };
    // More than one insert's worth, so the chunks must line up.
    let first: Vec<Envelope> = (0..1200).map(|n| envelope(n, json!({ "n": n }))).collect();
    let single = envelope(5000, json!({ "single": true }));
    let last: Vec<Envelope> = (1200..1203).map(|n| envelope(n, json!({ "n": n }))).collect();

    let mut tx = db.begin().await.unwrap();
    let seqs = atlas_events::append_many(&mut tx, &first).await.unwrap();
    let one = atlas_events::append(&mut tx, &single).await.unwrap();
    let more = atlas_events::append_many(&mut tx, &last).await.unwrap();
    assert!(atlas_events::append_many(&mut tx, &[]).await.unwrap().is_empty());
    tx.commit().await.unwrap();

    assert_eq!(seqs.len(), first.len());
    assert_eq!(more.len(), last.len());
    let all: Vec<i64> = seqs.iter().chain([&one]).chain(more.iter()).copied().collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sequences increase in call order");

    let log = stored(&db).await;
    let expected: Vec<&Envelope> = first.iter().chain([&single]).chain(last.iter()).collect();
    assert_eq!(log.len(), expected.len());
    for ((got, want), seq) in log.iter().zip(expected).zip(&all) {
        assert_eq!(got.sequence, Some(*seq));
        let mut want = want.clone();
        want.sequence = Some(*seq);
        assert_eq!(got, &want, "the envelope is stored as given");
    }
    // The outbox's own columns are filled as `append` fills them.
    let row =
        sqlx::query("SELECT entity_type, entity_id, collection_id, actor_user_id FROM outbox WHERE sequence = $1")
            .bind(seqs[2])
            .fetch_one(db.reader())
            .await
            .unwrap();
    assert_eq!(row.get::<String, _>(0), "job");
    assert_eq!(row.get::<String, _>(1), "job-2");
    assert_eq!(row.get::<Option<String>, _>(2).as_deref(), Some("c1"));
    assert_eq!(row.get::<Option<String>, _>(3).as_deref(), Some("u1"));
    db.close().await;
}
both_backends!(append_many_stores_a_batch_in_order, batch_append);

async fn batch_with_secret(backend: TestBackend) {
    let Some((_database, db)) = migrated(backend).await else {
        return;
    };
    let batch = vec![
        envelope(1, json!({ "ok": 1 })),
        envelope(2, json!({ "nested": { "access_token": "x" } })),
    ];
    let mut tx = db.begin().await.unwrap();
    let err = atlas_events::append_many(&mut tx, &batch).await.unwrap_err();
    assert!(
        matches!(&err, OutboxError::SecretInEvent { field, .. } if field == "access_token"),
        "{err}"
    );
    tx.commit().await.unwrap();
    assert!(stored(&db).await.is_empty(), "nothing of the batch is written");
    db.close().await;
}
both_backends!(append_many_refuses_a_batch_with_a_secret, batch_with_secret);
