//! The transactional outbox: every write commits exactly its event, with the
//! spec's envelope, in the same transaction as the change.

use atlas_db::{sqlx, Backend};
use atlas_testkit::{both_backends, TestBackend};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::spawn_atlas;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn each_write_emits_its_event(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let traced = |req: &str| {
        vec![
            ("x-request-id", req.to_string()),
            ("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01")),
        ]
    };
    let mut expected: Vec<(&str, &str, Option<String>, String)> = Vec::new(); // (type, entity type, actor, request id)

    let call = |method: Method, path: String, token: Option<String>, body: Option<Value>, req: &'static str| {
        let app = &app;
        async move {
            let headers = traced(req);
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.call_with(method, &path, token.as_deref(), body, &h).await
        }
    };

    let r = call(
        Method::POST,
        "/api/v1/auth/register".into(),
        None,
        Some(json!({"email": "ev@example.org", "password": "password-123"})),
        "req-register",
    )
    .await;
    let ada_id = r.body["user"]["id"].as_str().unwrap().to_string();
    let ada = r.body["access_token"].as_str().unwrap().to_string();
    expected.push(("UserRegistered", "user", Some(ada_id.clone()), "req-register".into()));
    let bob = app.register("bob@example.org").await;
    expected.push(("UserRegistered", "user", Some(bob.id.clone()), String::new()));

    let a = Some(ada.clone());
    let c = call(
        Method::POST,
        "/api/v1/collections".into(),
        a.clone(),
        Some(json!({"name": "Events"})),
        "req-1",
    )
    .await;
    let cid = c.body["id"].as_str().unwrap().to_string();
    expected.push(("CollectionCreated", "collection", Some(ada_id.clone()), "req-1".into()));
    call(
        Method::PATCH,
        format!("/api/v1/collections/{cid}"),
        a.clone(),
        Some(json!({"name": "Events!"})),
        "req-2",
    )
    .await;
    expected.push(("CollectionUpdated", "collection", Some(ada_id.clone()), "req-2".into()));
    call(
        Method::POST,
        format!("/api/v1/collections/{cid}/members"),
        a.clone(),
        Some(json!({"email": "bob@example.org", "role": "viewer"})),
        "req-3",
    )
    .await;
    expected.push(("MembershipAdded", "membership", Some(ada_id.clone()), "req-3".into()));
    call(
        Method::PATCH,
        format!("/api/v1/collections/{cid}/members/{}", bob.id),
        a.clone(),
        Some(json!({"role": "editor"})),
        "req-4",
    )
    .await;
    expected.push((
        "MembershipRoleChanged",
        "membership",
        Some(ada_id.clone()),
        "req-4".into(),
    ));
    let it = call(
        Method::POST,
        format!("/api/v1/collections/{cid}/items"),
        Some(bob.token.clone()),
        Some(json!({"title": "t", "tags": ["a"]})),
        "req-5",
    )
    .await;
    let iid = it.body["id"].as_str().unwrap().to_string();
    expected.push(("ItemCreated", "item", Some(bob.id.clone()), "req-5".into()));
    call(
        Method::PATCH,
        format!("/api/v1/items/{iid}"),
        a.clone(),
        Some(json!({"title": "t2"})),
        "req-6",
    )
    .await;
    expected.push(("ItemUpdated", "item", Some(ada_id.clone()), "req-6".into()));
    call(Method::DELETE, format!("/api/v1/items/{iid}"), a.clone(), None, "req-7").await;
    expected.push(("ItemDeleted", "item", Some(ada_id.clone()), "req-7".into()));
    call(
        Method::DELETE,
        format!("/api/v1/collections/{cid}/members/{}", bob.id),
        a.clone(),
        None,
        "req-8",
    )
    .await;
    expected.push(("MembershipRemoved", "membership", Some(ada_id.clone()), "req-8".into()));
    call(
        Method::DELETE,
        format!("/api/v1/collections/{cid}"),
        a.clone(),
        None,
        "req-9",
    )
    .await;
    expected.push(("CollectionDeleted", "collection", Some(ada_id.clone()), "req-9".into()));
    // Reads and failed writes emit nothing.
    call(Method::GET, "/api/v1/collections".into(), a.clone(), None, "req-read").await;
    call(
        Method::POST,
        "/api/v1/collections".into(),
        a.clone(),
        Some(json!({"name": ""})),
        "req-bad",
    )
    .await;

    let events = app.outbox().await;
    assert_eq!(
        events.len(),
        expected.len(),
        "{:#?}",
        events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
    let mut last_seq = 0;
    for (e, (ty, entity, actor, req)) in events.iter().zip(&expected) {
        assert_eq!(e.event_type, *ty);
        assert_eq!(e.entity.entity_type, *entity, "{ty}");
        assert_eq!(&e.actor_user_id, actor, "{ty}");
        assert_eq!(e.version, 1);
        assert!(e.causation_id.is_none());
        let id = uuid::Uuid::parse_str(&e.event_id).unwrap();
        assert_eq!(id.get_version_num(), 7, "event ids are UUIDv7");
        assert!(chrono::DateTime::parse_from_rfc3339(&e.occurred_at).is_ok() && e.occurred_at.ends_with('Z'));
        let seq = e.sequence.unwrap();
        assert!(seq > last_seq, "sequence increases");
        last_seq = seq;
        if !req.is_empty() {
            assert_eq!(&e.request_id, req, "{ty}");
            assert_eq!(e.trace_id, TRACE, "{ty}: the trace of the request");
        }
        match *entity {
            "user" => assert!(e.entity.collection_id.is_none()),
            "collection" => assert_eq!(e.entity.collection_id.as_deref(), Some(e.entity.id.as_str())),
            _ => assert_eq!(e.entity.collection_id.as_deref(), Some(cid.as_str()), "{ty}"),
        }
        // No secret, anywhere in the envelope.
        let text = serde_json::to_string(e).unwrap();
        for secret in ["password", "argon2", "atlas_rt_", "atlas_pat_", "token_hash"] {
            assert!(!text.contains(secret), "{ty} carries {secret}: {text}");
        }
    }
    // Data: state after the change; ids only for deletes.
    let created = events.iter().find(|e| e.event_type == "ItemCreated").unwrap();
    assert_eq!(created.data["title"], "t");
    assert_eq!(created.data["tags"], json!(["a"]));
    assert_eq!(created.data["version"], 1);
    let updated = events.iter().find(|e| e.event_type == "ItemUpdated").unwrap();
    assert_eq!(updated.data["title"], "t2");
    assert_eq!(updated.data["version"], 2);
    let deleted = events.iter().find(|e| e.event_type == "ItemDeleted").unwrap();
    assert_eq!(deleted.data, json!({"id": iid, "collection_id": cid}));
    let role = events.iter().find(|e| e.event_type == "MembershipRoleChanged").unwrap();
    assert_eq!(role.data["role"], "editor");
    assert_eq!(role.data["previous_role"], "viewer");
    app.stop().await;
}
both_backends!(every_write_emits_exactly_its_event, each_write_emits_its_event);

async fn rolled_back_writes_leave_no_event(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("atomic@example.org").await;
    let c = app.collection(&u, "Atomic").await;
    let before = app.outbox().await.len();
    // Inject a failure after the domain insert: the outbox insert of an
    // ItemCreated event is refused by a trigger.
    let trigger = match app.db.backend() {
        Backend::Sqlite => vec![
            "CREATE TRIGGER inject_failure BEFORE INSERT ON outbox WHEN NEW.event_type IN ('ItemCreated', 'UserRegistered')
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                .to_string(),
        ],
        Backend::Postgres => vec![
            "CREATE FUNCTION inject_failure() RETURNS trigger AS $$ BEGIN
               IF NEW.event_type IN ('ItemCreated', 'UserRegistered') THEN RAISE EXCEPTION 'injected failure'; END IF;
               RETURN NEW; END $$ LANGUAGE plpgsql"
                .to_string(),
            "CREATE TRIGGER inject_failure BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION inject_failure()".to_string(),
        ],
    };
    for sql in trigger {
        sqlx::query(&sql).execute(app.db.writer()).await.unwrap();
    }
    let r = app
        .post(
            &format!("/api/v1/collections/{c}/items"),
            &u.token,
            json!({"title": "never", "tags": ["ghost"]}),
        )
        .await;
    let body = r.error(500, "internal");
    assert!(body["details"]["request_id"].is_string());
    assert!(!body.to_string().contains("injected"), "no internals leak: {body}");
    assert_eq!(app.count("SELECT COUNT(*) FROM items").await, 0, "the item rolled back");
    assert_eq!(app.count("SELECT COUNT(*) FROM item_tags").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM tags").await, 0);
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"email": "ghost@example.org", "password": "password-123"})),
        )
        .await;
    r.error(500, "internal");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE email = 'ghost@example.org'")
            .await,
        0
    );
    assert_eq!(app.outbox().await.len(), before, "and no event exists");
    // Other writes still commit with their events.
    let ok = app
        .patch(
            &format!("/api/v1/collections/{c}"),
            &u.token,
            json!({"name": "still works"}),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(app.outbox().await.last().unwrap().event_type, "CollectionUpdated");
    app.stop().await;
}
both_backends!(
    a_failed_transaction_leaves_neither_row_nor_event,
    rolled_back_writes_leave_no_event
);
