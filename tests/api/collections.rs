//! Collections, slugs and members.

use atlas_testkit::{both_backends, TestBackend};
use serde_json::json;

use crate::helpers::spawn_atlas;

async fn slugs(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let ada = app.register("ada@example.org").await;
    let r = app
        .post(
            "/api/v1/collections",
            &ada.token,
            json!({"name": "Reading List!", "description": "books"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["slug"], "reading-list");
    assert_eq!(r.body["role"], "owner");
    assert_eq!(r.body["created_by"], ada.id.as_str());
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("/api/v1/collections/{}", r.body["id"].as_str().unwrap())
    );
    let second = app
        .post("/api/v1/collections", &ada.token, json!({"name": "reading list"}))
        .await;
    assert_eq!(second.body["slug"], "reading-list-2");
    let third = app
        .post("/api/v1/collections", &ada.token, json!({"name": "Reading  list"}))
        .await;
    assert_eq!(third.body["slug"], "reading-list-3");

    let explicit = app
        .post(
            "/api/v1/collections",
            &ada.token,
            json!({"name": "x", "slug": "my-slug"}),
        )
        .await;
    assert_eq!(explicit.body["slug"], "my-slug");
    app.post(
        "/api/v1/collections",
        &ada.token,
        json!({"name": "y", "slug": "my-slug"}),
    )
    .await
    .error(409, "conflict");
    for bad in ["", "Upper", "has space", &"a".repeat(65), "ünï"] {
        let r = app
            .post("/api/v1/collections", &ada.token, json!({"name": "z", "slug": bad}))
            .await;
        assert_eq!(
            r.error(422, "validation_failed")["details"]["field"],
            "slug",
            "slug {bad:?}"
        );
    }
    for bad in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "n".repeat(201)}),
    ] {
        assert_eq!(
            app.post("/api/v1/collections", &ada.token, bad)
                .await
                .error(422, "validation_failed")["details"]["field"],
            "name"
        );
    }

    // Rename, re-slug, clear the description.
    let id = r.body["id"].as_str().unwrap();
    let p = app
        .patch(
            &format!("/api/v1/collections/{id}"),
            &ada.token,
            json!({"name": "Books", "description": null}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["name"], "Books");
    assert_eq!(p.body["description"], serde_json::Value::Null);
    assert_eq!(p.body["slug"], "reading-list");
    app.patch(
        &format!("/api/v1/collections/{id}"),
        &ada.token,
        json!({"slug": "my-slug"}),
    )
    .await
    .error(409, "conflict");
    let p = app
        .patch(
            &format!("/api/v1/collections/{id}"),
            &ada.token,
            json!({"slug": "books"}),
        )
        .await;
    assert_eq!(p.body["slug"], "books");

    // Listing: mine only, with my role, paginated.
    let bob = app.register("bob@example.org").await;
    let bobs = app.collection(&bob, "Bob's").await;
    app.add_member(&bob, &bobs, &ada, "viewer").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/collections?limit=2&cursor={c}"),
            None => "/api/v1/collections?limit=2".into(),
        };
        let page = app.get(&path, &ada.token).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for c in page.body["items"].as_array().unwrap() {
            seen.push((
                c["name"].as_str().unwrap().to_string(),
                c["role"].as_str().unwrap().to_string(),
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.contains(&("Bob's".into(), "viewer".into())));
    assert_eq!(seen.iter().filter(|(_, r)| r == "owner").count(), 4);
    let bob_sees = app.get("/api/v1/collections", &bob.token).await;
    assert_eq!(bob_sees.body["items"].as_array().unwrap().len(), 1);
    app.get("/api/v1/collections?limit=0", &ada.token)
        .await
        .error(422, "validation_failed");
    app.get("/api/v1/collections?limit=201", &ada.token)
        .await
        .error(422, "validation_failed");
    app.get("/api/v1/collections?cursor=bogus", &ada.token)
        .await
        .error(400, "bad_request");
    app.stop().await;
}
both_backends!(collections_and_slugs, slugs);

async fn members(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let owner = app.register("owner@example.org").await;
    let ed = app.register("ed@example.org").await;
    let vi = app.register("vi@example.org").await;
    let c = app.collection(&owner, "Team").await;
    let base = format!("/api/v1/collections/{c}/members");

    let added = app
        .post(
            &base,
            &owner.token,
            json!({"email": "ED@example.org", "role": "editor"}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body["user_id"], ed.id.as_str());
    assert_eq!(added.body["role"], "editor");
    let by_id = app
        .post(&base, &owner.token, json!({"user_id": vi.id, "role": "viewer"}))
        .await;
    assert_eq!(by_id.status, 201);
    app.post(&base, &owner.token, json!({"user_id": vi.id, "role": "editor"}))
        .await
        .error(409, "conflict");
    app.post(
        &base,
        &owner.token,
        json!({"email": "ghost@example.org", "role": "viewer"}),
    )
    .await
    .error(404, "not_found");
    app.post(&base, &owner.token, json!({"email": "ed@example.org", "role": "admin"}))
        .await
        .error(422, "validation_failed");
    app.post(&base, &owner.token, json!({"role": "viewer"}))
        .await
        .error(422, "validation_failed");

    let list = app.get(&base, &vi.token).await;
    assert_eq!(list.status, 200);
    let roles: Vec<(String, String)> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(roles.len(), 3);
    assert!(roles.contains(&("vi@example.org".into(), "viewer".into())));

    // The last owner can be neither demoted nor removed…
    app.patch(&format!("{base}/{}", owner.id), &owner.token, json!({"role": "editor"}))
        .await
        .error(409, "conflict");
    app.delete(&format!("{base}/{}", owner.id), &owner.token)
        .await
        .error(409, "conflict");
    // …but once there is a second owner, the first may step down.
    let promoted = app
        .patch(&format!("{base}/{}", ed.id), &owner.token, json!({"role": "owner"}))
        .await;
    assert_eq!(promoted.body["role"], "owner");
    let demoted = app
        .patch(&format!("{base}/{}", owner.id), &owner.token, json!({"role": "viewer"}))
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.body);
    app.patch(&format!("{base}/{}", vi.id), &owner.token, json!({"role": "editor"}))
        .await
        .error(403, "forbidden");
    app.patch(&format!("{base}/{}", ed.id), &ed.token, json!({"role": "viewer"}))
        .await
        .error(409, "conflict");
    app.patch(
        &format!("{base}/{}", "01a00000-0000-7000-8000-000000000000"),
        &ed.token,
        json!({"role": "viewer"}),
    )
    .await
    .error(404, "not_found");

    // A viewer leaves by themself; cannot remove others.
    app.delete(&format!("{base}/{}", owner.id), &vi.token)
        .await
        .error(403, "forbidden");
    assert_eq!(app.delete(&format!("{base}/{}", vi.id), &vi.token).await.status, 204);
    app.get(&format!("/api/v1/collections/{c}"), &vi.token)
        .await
        .error(404, "not_found");
    // The owner removes a member.
    assert_eq!(app.delete(&format!("{base}/{}", owner.id), &ed.token).await.status, 204);
    assert_eq!(
        app.get(&base, &ed.token).await.body["items"].as_array().unwrap().len(),
        1
    );
    app.stop().await;
}
both_backends!(members_and_roles, members);

async fn deleting_a_collection(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let owner = app.register("del@example.org").await;
    let c = app.collection(&owner, "Doomed").await;
    let keep = app.collection(&owner, "Kept").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.item(&owner, &c, json!({"title": format!("t{i}"), "tags": ["x"]}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let kept_item = app.item(&owner, &keep, json!({"title": "stay", "tags": ["x"]})).await;
    assert_eq!(
        app.delete(&format!("/api/v1/collections/{c}"), &owner.token)
            .await
            .status,
        204
    );
    app.get(&format!("/api/v1/collections/{c}"), &owner.token)
        .await
        .error(404, "not_found");
    for id in &ids {
        app.get(&format!("/api/v1/items/{id}"), &owner.token)
            .await
            .error(404, "not_found");
    }
    assert_eq!(
        app.get(
            &format!("/api/v1/items/{}", kept_item["id"].as_str().unwrap()),
            &owner.token
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM items WHERE collection_id = '{c}'"))
            .await,
        0
    );
    assert_eq!(
        app.count(&format!("SELECT COUNT(*) FROM tags WHERE collection_id = '{c}'"))
            .await,
        0
    );

    let events = app.outbox().await;
    let tail: Vec<&str> = events
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(tail, ["ItemDeleted", "ItemDeleted", "ItemDeleted", "CollectionDeleted"]);
    let deleted: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == "ItemDeleted")
        .map(|e| e.entity.id.as_str())
        .collect();
    assert_eq!(deleted, ids.iter().map(String::as_str).collect::<Vec<_>>());
    app.stop().await;
}
both_backends!(
    deleting_a_collection_removes_its_items_with_events,
    deleting_a_collection
);
