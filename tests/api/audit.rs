//! The audit trail over HTTP and against the database: every event lands
//! once, the database refuses changes, tampering is found at the exact row,
//! concurrent writers never fork the chain, and nobody sees rows they may not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_audit::{AuditSink, AuditStore, NodeKey, PublicKey};
use atlas_db::sqlx::{self, Row};
use atlas_db::{Backend, Database};
use atlas_events::{EntityRef, EventContext};
use atlas_kernel::{Consumer, ModuleError};
use atlas_testkit::{both_backends, TestBackend};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_with, App, User};
use crate::rbac::make_admin;

/// Checkpoints by row count only, small enough that tests see several.
async fn spawn(backend: TestBackend) -> Option<App> {
    spawn_with(backend, |s| {
        s.audit.checkpoint_every_rows = 4;
        s.audit.checkpoint_interval_secs = 0;
    })
    .await
}

/// Wait until the audit sink has caught up with the outbox.
async fn caught_up(app: &App) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outbox = app.count("SELECT COUNT(*) FROM outbox").await;
        let audited = app.count("SELECT COUNT(*) FROM audit_events").await;
        if audited >= outbox {
            assert_eq!(audited, outbox, "one audit row per event, never more");
            return audited;
        }
        assert!(
            Instant::now() < deadline,
            "the audit sink is behind: {audited}/{outbox}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn rows(db: &Database) -> Vec<Value> {
    sqlx::query("SELECT sequence, event_id, type, actor_user_id, collection_id, entity_type, data, prev_hash, hash FROM audit_events ORDER BY sequence")
        .fetch_all(db.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            json!({
                "sequence": r.get::<i64, _>(0),
                "event_id": r.get::<String, _>(1),
                "type": r.get::<String, _>(2),
                "actor_user_id": r.get::<Option<String>, _>(3),
                "collection_id": r.get::<Option<String>, _>(4),
                "entity_type": r.get::<String, _>(5),
                "data": r.get::<String, _>(6),
                "prev_hash": r.get::<String, _>(7),
                "hash": r.get::<String, _>(8),
            })
        })
        .collect()
}

/// Collections, members, items: every event type the modules emit today.
async fn activity(app: &App) -> (User, User, String) {
    let ada = app.register("ada@audit.org").await;
    let bob = app.register("bob@audit.org").await;
    let c = app.collection(&ada, "Audited").await;
    app.patch(
        &format!("/api/v1/collections/{c}"),
        &ada.token,
        json!({"name": "Audited!"}),
    )
    .await;
    app.add_member(&ada, &c, &bob, "viewer").await;
    app.patch(
        &format!("/api/v1/collections/{c}/members/{}", bob.id),
        &ada.token,
        json!({"role": "editor"}),
    )
    .await;
    let item = app.item(&bob, &c, json!({"title": "t", "tags": ["a"]})).await;
    let iid = item["id"].as_str().unwrap();
    app.patch(&format!("/api/v1/items/{iid}"), &ada.token, json!({"title": "t2"}))
        .await;
    app.delete(&format!("/api/v1/items/{iid}"), &ada.token).await;
    app.delete(&format!("/api/v1/collections/{c}/members/{}", bob.id), &ada.token)
        .await;
    app.item(&ada, &c, json!({"title": "left behind"})).await;
    app.delete(&format!("/api/v1/collections/{c}"), &ada.token).await;
    (ada, bob, c)
}

async fn every_event_lands_once(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    activity(&app).await;
    let total = caught_up(&app).await;
    let events = app.outbox().await;
    let audited = rows(&app.db).await;
    let types: Vec<&str> = audited.iter().map(|r| r["type"].as_str().unwrap()).collect();
    for t in [
        "UserRegistered",
        "CollectionCreated",
        "CollectionUpdated",
        "MembershipAdded",
        "MembershipRoleChanged",
        "ItemCreated",
        "ItemUpdated",
        "ItemDeleted",
        "MembershipRemoved",
        "CollectionDeleted",
    ] {
        assert!(types.contains(&t), "{t} was not audited: {types:?}");
    }
    for e in &events {
        let matching: Vec<&Value> = audited.iter().filter(|r| r["event_id"] == e.event_id).collect();
        assert_eq!(matching.len(), 1, "{} audited {} times", e.event_type, matching.len());
        let r = matching[0];
        assert_eq!(r["type"], e.event_type);
        assert_eq!(r["actor_user_id"], json!(e.actor_user_id), "{}", e.event_type);
        assert_eq!(r["collection_id"], json!(e.entity.collection_id), "{}", e.event_type);
        assert_eq!(r["entity_type"], e.entity.entity_type);
        let data: Value = serde_json::from_str(r["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, e.data);
    }
    // The chain: 1, 2, 3, … each linked to the one before.
    for (i, r) in audited.iter().enumerate() {
        assert_eq!(r["sequence"], i as i64 + 1);
        let prev = if i == 0 {
            atlas_audit::GENESIS_HASH.to_string()
        } else {
            audited[i - 1]["hash"].as_str().unwrap().to_string()
        };
        assert_eq!(r["prev_hash"], prev);
    }
    // No secret in any row.
    let text = serde_json::to_string(&audited).unwrap();
    for secret in [
        "password",
        "argon2",
        "atlas_rt_",
        "atlas_pat_",
        "token_hash",
        "access_token",
    ] {
        assert!(!text.contains(secret), "an audit row carries {secret}");
    }

    // Redelivery: rewind the sink's offset and forget what it processed;
    // the runtime delivers every event again and nothing is added.
    sqlx::query("DELETE FROM consumer_processed WHERE consumer = 'audit'")
        .execute(app.db.writer())
        .await
        .unwrap();
    sqlx::query("UPDATE consumer_offsets SET last_sequence = 0 WHERE consumer = 'audit'")
        .execute(app.db.writer())
        .await
        .unwrap();
    let head = events.last().unwrap().sequence.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .count("SELECT COALESCE(MAX(last_sequence), 0) FROM consumer_offsets WHERE consumer = 'audit'")
        .await
        < head
    {
        assert!(Instant::now() < deadline, "the redelivery did not finish");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, total);
    assert_eq!(app.count("SELECT COUNT(*) FROM dead_letters").await, 0);
    app.stop().await;
}
both_backends!(every_event_is_audited_once, every_event_lands_once);

async fn triggers_refuse_changes(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    activity(&app).await;
    caught_up(&app).await;
    assert!(app.count("SELECT COUNT(*) FROM audit_checkpoints").await > 0);
    for sql in [
        "UPDATE audit_events SET data = '{}' WHERE sequence = 1",
        "DELETE FROM audit_events WHERE sequence = 1",
        "DELETE FROM audit_events",
        "UPDATE audit_checkpoints SET hash = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = sqlx::query(sql).execute(app.db.writer()).await.unwrap_err();
        assert!(
            err.to_string().contains("the audit trail is append-only"),
            "{sql}: {err}"
        );
    }
    if backend == TestBackend::Postgres {
        let err = sqlx::query("TRUNCATE audit_events")
            .execute(app.db.writer())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    assert!(verify(&app).await["ok"].as_bool().unwrap());
    app.stop().await;
}
both_backends!(the_database_refuses_update_and_delete, triggers_refuse_changes);

/// Test-only: lift the append-only triggers so a test can play the attacker.
async fn disable_triggers(db: &Database) {
    let statements: &[&str] = match db.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
            "DROP TRIGGER audit_checkpoints_no_update",
        ],
        Backend::Postgres => &[
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
        ],
    };
    for sql in statements {
        sqlx::query(sql).execute(db.writer()).await.unwrap();
    }
}

/// The chain in `db` verifies against `signer`'s key, `rows` rows long.
async fn assert_chain_verifies(db: &Database, signer: &NodeKey, rows: i64) {
    let trusted = atlas_audit::TrustedKeys::new([signer.public().clone()]);
    let report = atlas_audit::verify_database(&AuditStore::new(db.clone()), &trusted)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, rows);
}

async fn exec(db: &Database, sql: &str) {
    sqlx::query(sql).execute(db.writer()).await.unwrap();
}

async fn verify(app: &App) -> Value {
    let admin = make_admin(app, &format!("admin-{}@audit.org", uuid::Uuid::now_v7().simple())).await;
    let r = app.get("/api/v1/audit/verify", &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[track_caller]
fn assert_bad(report: &Value, sequence: i64, problem: &str) {
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_sequence"], sequence, "{report}");
    assert_eq!(report["problem"], problem, "{report}");
    assert!(report["reason"].is_string(), "{report}");
}

async fn tampering_is_found(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    activity(&app).await;
    let admin = make_admin(&app, "root@audit.org").await;
    let total = caught_up(&app).await;
    assert!(total >= 14, "{total}");
    let ok = app.get("/api/v1/audit/verify", &admin.token).await;
    assert_eq!(ok.body["ok"], true, "{}", ok.body);
    assert_eq!(ok.body["checked"], total);
    assert!(ok.body["last_checkpoint"]["sequence"].as_i64().unwrap() >= 12);
    disable_triggers(&app.db).await;
    let db = &app.db;
    let check = || async { app.get("/api/v1/audit/verify", &admin.token).await.body };

    // An edited `data`.
    let original: String = sqlx::query("SELECT data FROM audit_events WHERE sequence = 7")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    exec(
        db,
        r#"UPDATE audit_events SET data = '{"title":"forged"}' WHERE sequence = 7"#,
    )
    .await;
    assert_bad(&check().await, 7, "hash_mismatch");
    assert_eq!(check().await["checked"], 6);
    sqlx::query("UPDATE audit_events SET data = $1 WHERE sequence = 7")
        .bind(&original)
        .execute(db.writer())
        .await
        .unwrap();
    assert_eq!(check().await["ok"], true);

    // A forged hash.
    let forged_hash = "f".repeat(64);
    exec(
        db,
        &format!("UPDATE audit_events SET hash = '{forged_hash}' WHERE sequence = 3"),
    )
    .await;
    assert_bad(&check().await, 3, "hash_mismatch");
    let real: String = sqlx::query("SELECT prev_hash FROM audit_events WHERE sequence = 4")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    exec(
        db,
        &format!("UPDATE audit_events SET hash = '{real}' WHERE sequence = 3"),
    )
    .await;

    // A deleted row.
    exec(
        db,
        "CREATE TABLE saved AS SELECT * FROM audit_events WHERE sequence = 5",
    )
    .await;
    exec(db, "DELETE FROM audit_events WHERE sequence = 5").await;
    assert_bad(&check().await, 5, "gap");
    exec(db, "INSERT INTO audit_events SELECT * FROM saved").await;
    assert_eq!(check().await["ok"], true);

    // Two rows in swapped order.
    exec(db, "UPDATE audit_events SET sequence = -9 WHERE sequence = 9").await;
    exec(db, "UPDATE audit_events SET sequence = 9 WHERE sequence = 10").await;
    exec(db, "UPDATE audit_events SET sequence = 10 WHERE sequence = -9").await;
    assert_bad(&check().await, 9, "broken_link");
    exec(db, "UPDATE audit_events SET sequence = -9 WHERE sequence = 9").await;
    exec(db, "UPDATE audit_events SET sequence = 9 WHERE sequence = 10").await;
    exec(db, "UPDATE audit_events SET sequence = 10 WHERE sequence = -9").await;
    assert_eq!(check().await["ok"], true);

    // A forged checkpoint signature.
    let cp: i64 = app.count("SELECT MIN(sequence) FROM audit_checkpoints").await;
    let signature: String = sqlx::query("SELECT signature FROM audit_checkpoints WHERE sequence = $1")
        .bind(cp)
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    sqlx::query("UPDATE audit_checkpoints SET signature = $1 WHERE sequence = $2")
        .bind(format!("{flipped}{}", &signature[1..]))
        .bind(cp)
        .execute(db.writer())
        .await
        .unwrap();
    assert_bad(&check().await, cp, "bad_signature");
    sqlx::query("UPDATE audit_checkpoints SET signature = $1 WHERE sequence = $2")
        .bind(&signature)
        .bind(cp)
        .execute(db.writer())
        .await
        .unwrap();

    // Rows cut from the end, behind a checkpoint.
    let last_cp = app.count("SELECT MAX(sequence) FROM audit_checkpoints").await;
    exec(db, &format!("DELETE FROM audit_events WHERE sequence >= {last_cp}")).await;
    assert_bad(&check().await, last_cp, "missing_rows");
    app.stop().await;
}
both_backends!(tampering_is_found_at_the_exact_row, tampering_is_found);

async fn bundles_verify_offline(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    let (ada, _, first) = activity(&app).await;
    let other = app.collection(&ada, "Second").await;
    app.item(&ada, &other, json!({"title": "in the second"})).await;
    app.collection(&ada, "Third, not exported").await;
    app.item(&ada, &other, json!({"title": "also"})).await;
    let total = caught_up(&app).await;
    let key_body = app.call(Method::GET, "/api/v1/audit/public-key", None, None).await.body;
    let public = PublicKey::parse(key_body["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(public.key_id(), key_body["key_id"]);
    let (signer, _) = NodeKey::load(&Default::default(), app.server.data_dir.path(), false)
        .unwrap()
        .unwrap();
    assert_eq!(signer.key_id(), public.key_id());
    let store = AuditStore::new(app.db.clone());

    // The whole chain; the export signs a checkpoint of the head if needed.
    let mut whole = Vec::new();
    let summary = atlas_audit::export(&store, &Default::default(), Some(&signer), &mut whole)
        .await
        .unwrap();
    assert_eq!((summary.first_sequence, summary.last_sequence), (1, total));
    assert_eq!(summary.rows, total);
    let report = atlas_audit::verify_bundle(&whole[..], &public).unwrap();
    assert!(report.report.ok, "{report:?}");
    assert_eq!(report.report.checked, total);

    // One collection: its rows with data, rows in between elided.
    let filter = atlas_audit::ExportFilter {
        collection_id: Some(other.clone()),
        ..Default::default()
    };
    let mut scoped = Vec::new();
    let summary = atlas_audit::export(&store, &filter, None, &mut scoped).await.unwrap();
    assert_eq!((summary.rows, summary.elided), (3, 1), "{summary:?}");
    let text = String::from_utf8(scoped.clone()).unwrap();
    assert!(!text.contains("Third"), "another collection's data leaked");
    assert!(!text.contains(&first) && !text.contains("left behind"));
    assert!(text.contains("in the second"));
    let report = atlas_audit::verify_bundle(&scoped[..], &public).unwrap();
    assert!(report.report.ok, "{report:?}");
    assert_eq!((report.rows, report.elided), (3, 1));

    // One byte changed in a row's data.
    let needle = b"in the second";
    let at = whole.windows(needle.len()).position(|w| w == needle).unwrap();
    let mut changed = whole.clone();
    changed[at] = b'I';
    let report = atlas_audit::verify_bundle(&changed[..], &public).unwrap();
    assert!(!report.report.ok);
    assert_eq!(report.report.problem, Some(atlas_audit::Problem::HashMismatch));
    assert!(report.report.first_bad_sequence.is_some() && report.line.is_some());

    // Checked with another key.
    let stranger = NodeKey::generate();
    let report = atlas_audit::verify_bundle(&whole[..], stranger.public()).unwrap();
    assert!(!report.report.ok);
    assert_eq!(report.report.problem, Some(atlas_audit::Problem::UnknownKey));

    // The last lines cut off: no checkpoint vouches for the rest.
    let lines: Vec<&[u8]> = whole.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let truncated = lines[..lines.len() - 1].join(&b'\n');
    assert!(!atlas_audit::verify_bundle(&truncated[..], &public).unwrap().report.ok);
    app.stop().await;
}
both_backends!(exported_bundles_verify_offline, bundles_verify_offline);

async fn visibility(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    let owner = app.register("owner@vis.org").await;
    let member = app.register("member@vis.org").await;
    let outsider = app.register("outsider@vis.org").await;
    let shared = app.collection(&owner, "Shared").await;
    app.add_member(&owner, &shared, &member, "editor").await;
    let item = app
        .item(&member, &shared, json!({"title": "shared secret plans"}))
        .await;
    let item_id = item["id"].as_str().unwrap().to_string();
    app.item(&owner, &shared, json!({"title": "owner's"})).await;
    let private = app.collection(&outsider, "Private").await;
    app.item(&outsider, &private, json!({"title": "outsider's own"})).await;
    let admin = make_admin(&app, "admin@vis.org").await;
    let total = caught_up(&app).await;

    let list = |token: String, query: String| {
        let app = &app;
        async move {
            let r = app.get(&format!("/api/v1/audit{query}"), &token).await;
            assert_eq!(r.status, 200, "{query}: {}", r.body);
            r.body["items"].as_array().unwrap().clone()
        }
    };
    let queries = [
        String::new(),
        format!("?entity_type=item&entity_id={item_id}"),
        format!("?actor_user_id={}", owner.id),
        format!("?actor_user_id={}", member.id),
        format!("?entity_type=collection&entity_id={shared}"),
        "?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z".to_string(),
        format!("?actor_user_id={}&from=2000-01-01T00:00:00Z", owner.id),
    ];
    // The outsider never sees the shared collection's rows, through any filter.
    for q in &queries {
        for row in list(outsider.token.clone(), q.clone()).await {
            let own = row["actor_user_id"] == outsider.id.as_str();
            let theirs = row["entity"]["collection_id"] == private.as_str();
            assert!(own || theirs, "{q}: the outsider sees {row}");
            assert_ne!(row["entity"]["collection_id"], shared.as_str(), "{q}");
        }
    }
    app.get(&format!("/api/v1/audit?collection_id={shared}"), &outsider.token)
        .await
        .error(404, "not_found");
    // The outsider sees their own registration and collection.
    let mine = list(outsider.token.clone(), String::new()).await;
    assert!(mine.iter().any(|r| r["type"] == "UserRegistered"));
    assert_eq!(mine.iter().filter(|r| r["type"] == "ItemCreated").count(), 1);

    // A member sees the whole collection, but not the owner's registration.
    let in_shared = list(member.token.clone(), format!("?collection_id={shared}")).await;
    assert_eq!(in_shared.len(), 4, "created, member added, two items");
    let owners = list(member.token.clone(), format!("?actor_user_id={}", owner.id)).await;
    assert!(owners.iter().all(|r| r["entity"]["collection_id"] == shared.as_str()));
    assert!(!owners.is_empty());
    let by_entity = list(member.token.clone(), format!("?entity_type=item&entity_id={item_id}")).await;
    assert_eq!(by_entity.len(), 1);
    assert_eq!(by_entity[0]["actor_user_id"], member.id.as_str());
    assert_eq!(by_entity[0]["entity"]["type"], "item");

    // An admin sees every row, with any collection, newest first.
    let everything = list(admin.token.clone(), "?limit=200".into()).await;
    assert_eq!(everything.len() as i64, total);
    let keys: Vec<(String, i64)> = everything
        .iter()
        .map(|r| {
            (
                r["occurred_at"].as_str().unwrap().to_string(),
                r["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(
        list(admin.token.clone(), format!("?collection_id={private}"))
            .await
            .len(),
        2
    );

    // Cursor pagination walks every row once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=3&cursor={c}"),
            None => "/api/v1/audit?limit=3".to_string(),
        };
        let r = app.get(&q, &admin.token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["sequence"].as_i64().unwrap()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len() as i64, total);

    // Time range: from inclusive, to exclusive.
    let newest = &everything[0];
    let at = newest["occurred_at"].as_str().unwrap();
    let from_newest = list(admin.token.clone(), format!("?from={at}")).await;
    assert!(from_newest.iter().any(|r| r["sequence"] == newest["sequence"]));
    let before_newest = list(admin.token.clone(), format!("?to={at}&limit=200")).await;
    assert!(before_newest.iter().all(|r| r["occurred_at"].as_str().unwrap() < at));

    // Errors.
    app.call(Method::GET, "/api/v1/audit", None, None)
        .await
        .error(401, "unauthorized");
    app.get("/api/v1/audit?cursor=garbage", &member.token)
        .await
        .error(400, "bad_request");
    app.get("/api/v1/audit?from=yesterday", &member.token)
        .await
        .error(400, "bad_request");
    app.get("/api/v1/audit?entity_id=x", &member.token)
        .await
        .error(400, "bad_request");
    app.get("/api/v1/audit?limit=0", &member.token)
        .await
        .error(422, "validation_failed");
    app.call(Method::GET, "/api/v1/audit/verify", None, None)
        .await
        .error(401, "unauthorized");
    app.get("/api/v1/audit/verify", &member.token)
        .await
        .error(403, "forbidden");
    let report = app.get("/api/v1/audit/verify", &admin.token).await;
    assert_eq!(report.body["ok"], true, "{}", report.body);
    let key = app.call(Method::GET, "/api/v1/audit/public-key", None, None).await;
    assert_eq!(key.status, 200);
    assert_eq!(key.body["algorithm"], "Ed25519");

    // No row served to anyone contains a password, hash or token.
    let text = serde_json::to_string(&everything).unwrap();
    for secret in ["password", "argon2", "token"] {
        assert!(!text.contains(secret), "an audit row carries {secret}");
    }
    app.stop().await;
}
both_backends!(visibility_over_http, visibility);

/// The sink under another durable name: a second, independent delivery of
/// every event, as a redelivering broker would make.
struct Renamed(&'static str, Arc<AuditSink>);

#[async_trait]
impl Consumer for Renamed {
    fn name(&self) -> &str {
        self.0
    }
    fn event_types(&self) -> &[&'static str] {
        &[]
    }
    async fn handle(&self, envelope: &Value) -> Result<(), ModuleError> {
        self.1.handle(envelope).await
    }
}

/// Several worker processes (each its own pool and consumer runtime, some
/// sharing the `audit` offsets, one consuming everything again under
/// another name) append while 2,000 events are written: one chain, no fork.
async fn concurrent_workers(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    let (signer, _) = NodeKey::load(&Default::default(), app.server.data_dir.path(), false)
        .unwrap()
        .unwrap();
    let signer = Arc::new(signer);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut workers = Vec::new();
    let mut pools = Vec::new();
    for w in 0..4 {
        let db = app.server.database.connect().await;
        let sink = Arc::new(AuditSink::new(AuditStore::new(db.clone()), signer.clone(), 50));
        let consumer: Arc<dyn Consumer> = if w == 3 {
            Arc::new(Renamed("audit-replica", sink))
        } else {
            sink
        };
        let settings = atlas_kernel::settings::EventsSettings {
            poll_interval_ms: 5,
            max_ack_pending: 64,
            ..Default::default()
        };
        let runtime = atlas_events::runtime::ConsumerRuntime::new(
            db.clone(),
            settings,
            vec![consumer],
            std::sync::Arc::new(atlas_http::WriteGate::open()),
        );
        workers.extend(runtime.spawn(shutdown.clone()));
        pools.push(db);
    }

    // 2,000 writes from 8 concurrent writers, 25 events per transaction.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let db = app.db.clone();
            tokio::spawn(async move {
                let ev = EventContext {
                    actor_user_id: Some(format!("user-{w}")),
                    request_id: format!("req-{w}"),
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    causation_id: None,
                    span_id: None,
                };
                for batch in 0..10 {
                    let mut tx = db.begin().await.unwrap();
                    for i in 0..25 {
                        let envelope = ev.envelope(
                            "ItemCreated",
                            EntityRef {
                                entity_type: "item".into(),
                                id: format!("item-{w}-{batch}-{i}"),
                                collection_id: Some(format!("collection-{}", i % 3)),
                            },
                            json!({"title": format!("{w}/{batch}/{i}")}),
                        );
                        atlas_events::append(&mut tx, &envelope).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2000);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let replica_done = app
            .count("SELECT COALESCE(MAX(last_sequence), 0) FROM consumer_offsets WHERE consumer = 'audit-replica'")
            .await
            >= app.count("SELECT MAX(sequence) FROM outbox").await;
        if replica_done && app.count("SELECT COUNT(*) FROM audit_events").await >= 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    for w in workers {
        let _ = w.await;
    }
    for db in pools {
        db.close().await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 2000);
    assert_eq!(
        app.count("SELECT COUNT(DISTINCT event_id) FROM audit_events").await,
        2000
    );
    assert_eq!(
        app.count("SELECT COUNT(DISTINCT prev_hash) FROM audit_events").await,
        2000
    );
    assert_eq!(app.count("SELECT MAX(sequence) FROM audit_events").await, 2000);
    assert_chain_verifies(&app.db, &signer, 2000).await;
    app.stop().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_never_fork_the_chain_on_postgres() {
    // SQLite has one writing process by design; several workers share a
    // PostgreSQL database.
    concurrent_workers(TestBackend::Postgres).await
}

/// Tasks append the same and different events at once, straight through
/// the sink: on PostgreSQL each with its own connection pool (the advisory
/// lock serializes them), on SQLite sharing the server's database handle
/// (its in-process chain lock serializes them, and none may fail).
async fn concurrent_appends(backend: TestBackend) {
    let Some(app) = spawn(backend).await else { return };
    let signer = Arc::new(NodeKey::generate());
    let ev = EventContext {
        actor_user_id: None,
        request_id: "r".into(),
        trace_id: "t".into(),
        causation_id: None,
        span_id: None,
    };
    let envelopes: Arc<Vec<_>> = Arc::new(
        (0..200)
            .map(|i| {
                ev.envelope(
                    "UserRegistered",
                    EntityRef {
                        entity_type: "user".into(),
                        id: format!("u{i}"),
                        collection_id: None,
                    },
                    json!({"email": format!("u{i}@x.org"), "password": "never stored"}),
                )
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for t in 0..6 {
        let own_pool = backend == TestBackend::Postgres;
        let db = if own_pool {
            app.server.database.connect().await
        } else {
            app.db.clone()
        };
        let envelopes = envelopes.clone();
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            let sink = AuditSink::new(AuditStore::new(db.clone()), signer, 10);
            // Every task appends every event, each from another starting point.
            for k in 0..envelopes.len() {
                let e = &envelopes[(k + t * 33) % envelopes.len()];
                // Nothing to retry on SQLite, where appends take turns.
                let retries = if own_pool { 4 } else { 0 };
                let mut attempts = 0;
                while let Err(err) = sink.record(e).await {
                    attempts += 1;
                    assert!(attempts <= retries, "{err}");
                }
            }
            if own_pool {
                db.close().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, 200);
    assert_eq!(
        app.count("SELECT COUNT(DISTINCT prev_hash) FROM audit_events").await,
        200
    );
    let data = rows(&app.db).await;
    assert!(data
        .iter()
        .all(|r| r["data"].as_str().unwrap().contains("\"password\":\"[redacted]\"")));
    assert_chain_verifies(&app.db, &signer, 200).await;
    app.stop().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_never_fork_the_chain_on_postgres() {
    concurrent_appends(TestBackend::Postgres).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_never_fork_the_chain_on_sqlite() {
    concurrent_appends(TestBackend::Sqlite).await
}

/// Append `ItemCreated` events for items `i{n}`, n in `range`.
async fn append_items(sink: &AuditSink, range: std::ops::Range<u32>) {
    let ev = EventContext {
        actor_user_id: Some("u0".into()),
        request_id: "r".into(),
        trace_id: "t".into(),
        causation_id: None,
        span_id: None,
    };
    for i in range {
        let envelope = ev.envelope(
            "ItemCreated",
            EntityRef {
                entity_type: "item".into(),
                id: format!("i{i}"),
                collection_id: Some("c1".into()),
            },
            json!({"title": format!("item {i}")}),
        );
        sink.record(&envelope).await.unwrap();
    }
}

/// A trail written under the first schema (with its unique `prev_hash`
/// index) comes through `20261125000000_audit_chain_keys` unchanged: same
/// rows, still verifying, still append-only, and appends go on after it.
async fn chain_keys_upgrade(backend: TestBackend) {
    use atlas_kernel::Module;
    let Some(database) = atlas_testkit::TestDatabase::new(backend).await else {
        return;
    };
    let db = database.connect().await;
    let all = atlas_audit::AuditModule::default().migrations().unwrap();
    let before: Vec<_> = all.iter().filter(|m| m.version < 20261125000000).cloned().collect();
    assert!(
        before.len() < all.len(),
        "the upgrade migration is among the audit migrations"
    );
    let migrator = atlas_db::Migrator::new(&db);
    migrator.up(&before).await.unwrap();

    let signer = Arc::new(NodeKey::generate());
    let sink = AuditSink::new(AuditStore::new(db.clone()), signer.clone(), 4);
    append_items(&sink, 0..30).await;
    let written = rows(&db).await;
    assert_eq!(written.len(), 30);

    migrator.up(&all).await.unwrap();
    assert_eq!(rows(&db).await, written, "the rebuild copies every row as it was");
    let indexes = match backend {
        TestBackend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events'",
        TestBackend::Postgres => "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'audit_events'",
    };
    // The four query indexes and `event_id`'s; on PostgreSQL also the
    // primary key's (on SQLite `sequence` is now the rowid).
    let expected = if backend == TestBackend::Sqlite { 5 } else { 6 };
    let found: i64 = sqlx::query(indexes).fetch_one(db.reader()).await.unwrap().get(0);
    assert_eq!(found, expected);
    for sql in [
        "UPDATE audit_events SET data = '{}' WHERE sequence = 1",
        "DELETE FROM audit_events WHERE sequence = 30",
    ] {
        let err = sqlx::query(sql).execute(db.writer()).await.unwrap_err();
        assert!(
            err.to_string().contains("the audit trail is append-only"),
            "{sql}: {err}"
        );
    }

    append_items(&sink, 30..40).await;
    assert_chain_verifies(&db, &signer, 40).await;
    // A second row on an existing sequence is still refused.
    let copy = "INSERT INTO audit_events (sequence, event_id, type, occurred_at, recorded_at, entity_type, entity_id, data, trace_id, request_id, prev_hash, hash) \
                SELECT sequence, 'copy', type, occurred_at, recorded_at, entity_type, entity_id, data, trace_id, request_id, 'x', hash FROM audit_events WHERE sequence = 40";
    let err = sqlx::query(copy).execute(db.writer()).await.unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Database(d) if d.is_unique_violation()),
        "{err}"
    );
    db.close().await;
}
both_backends!(the_chain_keys_upgrade_keeps_the_trail, chain_keys_upgrade);
