//! Items: fields and limits, optimistic concurrency, tags, pagination.

use std::collections::HashSet;

use atlas_testkit::{both_backends, TestBackend};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_atlas, App, User};

async fn create_read_update_delete(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("crud@example.org").await;
    let c = app.collection(&u, "Links").await;
    let r = app
        .post(
            &format!("/api/v1/collections/{c}/items"),
            &u.token,
            json!({"title": "  Rust book ", "body": "ownership", "source_url": "https://doc.rust-lang.org/book/",
                   "tags": ["Rust", " rust ", "Books"], "metadata": {"stars": 5}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"].to_str().unwrap(), format!("/api/v1/items/{id}"));
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.body["title"], "Rust book");
    assert_eq!(r.body["tags"], json!(["rust", "books"]));
    assert_eq!(r.body["metadata"], json!({"stars": 5}));
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["collection_id"], c.as_str());
    assert_eq!(r.body["created_by"], u.id.as_str());
    assert_eq!(r.body["index_status"], "pending");
    uuid::Uuid::parse_str(&id).unwrap();

    let got = app.get(&format!("/api/v1/items/{id}"), &u.token).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["etag"], "\"1\"");
    assert_eq!(got.body, r.body);

    // PATCH: stale If-Match → 412; matching → applied; null clears.
    let path = format!("/api/v1/items/{id}");
    let stale = app
        .call_with(
            Method::PATCH,
            &path,
            Some(&u.token),
            Some(json!({"title": "x"})),
            &[("if-match", "\"7\"")],
        )
        .await;
    assert_eq!(stale.error(412, "precondition_failed")["details"]["current_version"], 1);
    let ok = app
        .call_with(
            Method::PATCH,
            &path,
            Some(&u.token),
            Some(json!({"title": "Rust book 2e", "body": null, "tags": ["rust"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.headers["etag"], "\"2\"");
    assert_eq!(ok.body["version"], 2);
    assert_eq!(ok.body["body"], Value::Null);
    assert_eq!(ok.body["source_url"], "https://doc.rust-lang.org/book/");
    assert_eq!(ok.body["tags"], json!(["rust"]));
    assert!(ok.body["updated_at"].as_str() > r.body["updated_at"].as_str());
    // Without If-Match the write applies to the current version.
    let blind = app.patch(&path, &u.token, json!({"metadata": {"read": true}})).await;
    assert_eq!(blind.body["version"], 3);
    assert_eq!(blind.body["metadata"], json!({"read": true}));
    app.call_with(
        Method::PATCH,
        &path,
        Some(&u.token),
        Some(json!({"title": "y"})),
        &[("if-match", "\"2\"")],
    )
    .await
    .error(412, "precondition_failed");
    app.call_with(
        Method::PATCH,
        &path,
        Some(&u.token),
        Some(json!({"title": "y"})),
        &[("if-match", "three")],
    )
    .await
    .error(400, "bad_request");

    assert_eq!(app.delete(&path, &u.token).await.status, 204);
    app.get(&path, &u.token).await.error(404, "not_found");
    app.delete(&path, &u.token).await.error(404, "not_found");
    app.get("/api/v1/items/not-a-uuid", &u.token)
        .await
        .error(404, "not_found");
    app.stop().await;
}
both_backends!(item_lifecycle, create_read_update_delete);

async fn limits(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("limits@example.org").await;
    let c = app.collection(&u, "Limits").await;
    let path = format!("/api/v1/collections/{c}/items");
    let too_many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"title": "t".repeat(501)}), "title"),
        (json!({"body": "no title"}), "title"),
        (json!({"title": 7}), "title"),
        (json!({"title": "ok", "body": "b".repeat(1024 * 1024 + 1)}), "body"),
        (
            json!({"title": "ok", "source_url": "ftp://example.org/x"}),
            "source_url",
        ),
        (
            json!({"title": "ok", "source_url": "javascript:alert(1)"}),
            "source_url",
        ),
        (json!({"title": "ok", "source_url": "not a url"}), "source_url"),
        (json!({"title": "ok", "tags": ["fine", "  "]}), "tags"),
        (json!({"title": "ok", "tags": ["x".repeat(65)]}), "tags"),
        (json!({"title": "ok", "tags": too_many}), "tags"),
        (json!({"title": "ok", "tags": "rust"}), "tags"),
        (json!({"title": "ok", "metadata": [1, 2]}), "metadata"),
        (json!({"title": "ok", "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let r = app.post(&path, &u.token, body.clone()).await;
        let shown = body.to_string().chars().take(80).collect::<String>();
        assert_eq!(r.error(422, "validation_failed")["details"]["field"], field, "{shown}");
    }
    // At the limits it is accepted: 500-character title, 1 MiB body, 32 tags after de-duplication.
    let dup_tags: Vec<String> = (0..40).map(|i| format!("T{}", i % 32)).collect();
    let at_limit = app
        .post(
            &path,
            &u.token,
            json!({"title": "é".repeat(500), "body": "b".repeat(1024 * 1024), "tags": dup_tags}),
        )
        .await;
    assert_eq!(at_limit.status, 201, "{}", at_limit.body);
    assert_eq!(at_limit.body["tags"].as_array().unwrap().len(), 32);
    // Malformed JSON and a body over the 2 MiB request limit.
    let raw = app
        .server
        .client
        .post(app.server.url(&path))
        .bearer_auth(&u.token)
        .header("content-type", "application/json")
        .body("{\"title\":");
    assert_eq!(raw.send().await.unwrap().status(), 400);
    let huge = app
        .post(
            &path,
            &u.token,
            json!({"title": "x", "body": "b".repeat(3 * 1024 * 1024)}),
        )
        .await;
    huge.error(413, "payload_too_large");
    assert_eq!(app.count("SELECT COUNT(*) FROM items").await, 1);
    app.stop().await;
}
both_backends!(item_field_limits, limits);

async fn tags(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("tags@example.org").await;
    let c = app.collection(&u, "Tagged").await;
    let other = app.collection(&u, "Other").await;
    app.item(&u, &c, json!({"title": "a", "tags": ["rust", "web"]})).await;
    app.item(&u, &c, json!({"title": "b", "tags": ["rust"]})).await;
    let third = app.item(&u, &c, json!({"title": "c", "tags": ["go"]})).await;
    app.item(&u, &other, json!({"title": "d", "tags": ["rust"]})).await;
    let t = app.get(&format!("/api/v1/collections/{c}/tags"), &u.token).await;
    assert_eq!(
        t.body,
        json!({"items": [{"name": "go", "count": 1}, {"name": "rust", "count": 2}, {"name": "web", "count": 1}], "next_cursor": null})
    );
    let page1 = app
        .get(&format!("/api/v1/collections/{c}/tags?limit=2"), &u.token)
        .await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 2);
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(
            &format!("/api/v1/collections/{c}/tags?limit=2&cursor={cursor}"),
            &u.token,
        )
        .await;
    assert_eq!(page2.body["items"], json!([{"name": "web", "count": 1}]));

    // Filter by tag; retagging moves counts.
    let rust = app
        .get(&format!("/api/v1/collections/{c}/items?tag=Rust"), &u.token)
        .await;
    let titles: Vec<&str> = rust.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["a", "b"]);
    app.patch(
        &format!("/api/v1/items/{}", third["id"].as_str().unwrap()),
        &u.token,
        json!({"tags": ["rust", "go"]}),
    )
    .await;
    let t = app.get(&format!("/api/v1/collections/{c}/tags"), &u.token).await;
    assert_eq!(t.body["items"][1], json!({"name": "rust", "count": 3}));
    app.stop().await;
}
both_backends!(tags_with_counts_and_filter, tags);

async fn walk(app: &App, u: &User, c: &str, sort: &str, order: &str, during: impl AsyncFnMut(usize)) -> Vec<Value> {
    let mut during = during;
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/v1/collections/{c}/items?limit=7&sort={sort}&order={order}");
        if let Some(cur) = &cursor {
            path.push_str(&format!("&cursor={cur}"));
        }
        let page = app.get(&path, &u.token).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        out.extend(items.iter().cloned());
        pages += 1;
        during(pages).await;
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    out
}

async fn pagination(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("pages@example.org").await;
    let c = app.collection(&u, "Many").await;
    let mut originals = HashSet::new();
    for i in 0..33 {
        // Titles repeat so that ties on the sort key are broken by id.
        let item = app
            .item(&u, &c, json!({"title": format!("title {:02}", (i * 7) % 11)}))
            .await;
        originals.insert(item["id"].as_str().unwrap().to_string());
    }
    // Touch some so updated_at order differs from created_at order.
    for id in originals.iter().take(5) {
        app.patch(&format!("/api/v1/items/{id}"), &u.token, json!({"body": "touched"}))
            .await;
    }
    for sort in ["created_at", "updated_at", "title"] {
        for order in ["asc", "desc"] {
            let items = walk(&app, &u, &c, sort, order, async |_| {}).await;
            let ids: Vec<String> = items.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
            assert_eq!(ids.len(), 33, "{sort} {order}");
            assert_eq!(
                ids.iter().collect::<HashSet<_>>().len(),
                33,
                "no duplicates for {sort} {order}"
            );
            let keys: Vec<(String, String)> = items
                .iter()
                .map(|i| {
                    (
                        i[sort].as_str().unwrap().to_string(),
                        i["id"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if order == "desc" {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "order of {sort} {order}");
        }
    }
    // Inserts during the walk: every original item still appears exactly once.
    for (sort, order) in [("created_at", "asc"), ("created_at", "desc"), ("title", "asc")] {
        let inserted = std::cell::Cell::new(0);
        let items = walk(&app, &u, &c, sort, order, async |page| {
            if page <= 3 {
                for k in 0..3 {
                    app.item(&u, &c, json!({"title": format!("title {:02} new {page}{k}", k * 4)}))
                        .await;
                    inserted.set(inserted.get() + 1);
                }
            }
        })
        .await;
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            ids.len(),
            "no duplicates while inserting ({sort} {order})"
        );
        for id in &originals {
            assert_eq!(
                ids.iter().filter(|x| **x == id).count(),
                1,
                "original {id} seen once ({sort} {order})"
            );
        }
    }
    // Cursors are tamper-proof and tied to their ordering.
    let first = app
        .get(&format!("/api/v1/collections/{c}/items?limit=7"), &u.token)
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let mut tampered = cursor.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    app.get(&format!("/api/v1/collections/{c}/items?cursor={tampered}"), &u.token)
        .await
        .error(400, "bad_request");
    app.get(
        &format!("/api/v1/collections/{c}/items?cursor={cursor}&sort=title"),
        &u.token,
    )
    .await
    .error(400, "bad_request");
    app.get(&format!("/api/v1/collections/{c}/items?sort=colour"), &u.token)
        .await
        .error(400, "bad_request");
    app.get(&format!("/api/v1/collections/{c}/items?limit=500"), &u.token)
        .await
        .error(422, "validation_failed");
    let default_page = app.get(&format!("/api/v1/collections/{c}/items"), &u.token).await;
    assert_eq!(default_page.body["items"].as_array().unwrap().len(), 50);
    app.stop().await;
}
both_backends!(pagination_walks_are_complete_and_stable, pagination);

/// Another process holding SQLite's write lock past the busy timeout (an
/// `atlas` command beside the server) makes a write 503 with `Retry-After`,
/// not a 500; the write goes through once the lock is released.
#[tokio::test]
async fn a_locked_sqlite_database_answers_503_with_retry_after() {
    let Some(app) = crate::helpers::spawn_with(TestBackend::Sqlite, |s| s.database.busy_timeout_ms = 100).await else {
        return;
    };
    let u = app.register("locked@example.org").await;
    let c = app.collection(&u, "Locked").await;
    // `app.db` is a pool of its own on the same file: another writer.
    let mut other = app.db.writer().acquire().await.unwrap();
    atlas_db::sqlx::Executor::execute(&mut *other, "BEGIN EXCLUSIVE")
        .await
        .unwrap();
    let r = app
        .post(
            &format!("/api/v1/collections/{c}/items"),
            &u.token,
            json!({"title": "waits"}),
        )
        .await;
    r.error(503, "unavailable");
    assert_eq!(r.headers["retry-after"], "1");
    atlas_db::sqlx::Executor::execute(&mut *other, "ROLLBACK")
        .await
        .unwrap();
    drop(other);
    app.item(&u, &c, json!({"title": "waits"})).await;
    app.stop().await;
}

/// Upgrading a database that already holds tagged items keeps every link:
/// on SQLite `item_tags` is rebuilt as a WITHOUT ROWID table (one b-tree
/// insert fewer per tag written), its rows copied; on PostgreSQL the
/// migration changes nothing. Tag filters and counts read the same after.
async fn tag_links_survive_the_item_tags_rebuild(backend: TestBackend) {
    let Some(db) = atlas_testkit::TestDatabase::new(backend).await else {
        return;
    };
    let pool = db.connect().await;
    let all = atlas_kernel::ModuleRegistry::discover()
        .expect("modules")
        .migrations()
        .expect("migrations");
    let rebuild = |m: &atlas_db::Migration| m.module == "items" && m.name == "item_tags_without_rowid";
    assert!(all.iter().any(rebuild), "the migration exists");
    let before: Vec<atlas_db::Migration> = all.iter().filter(|m| !rebuild(m)).cloned().collect();
    let migrator = atlas_db::Migrator::new(&pool);
    migrator.up(&before).await.expect("migrations before the rebuild");
    let now = "2026-11-25T10:00:00.000000Z";
    let rows = [
        "INSERT INTO users (id, email, password_hash, created_at, updated_at) VALUES ('u1', 'u1@example.org', 'x', $1, $1)",
        "INSERT INTO collections (id, name, slug, created_by, created_at, updated_at) VALUES ('c1', 'C', 'c', 'u1', $1, $1)",
        "INSERT INTO items (id, collection_id, title, tags, version, created_by, created_at, updated_at)
         VALUES ('i1', 'c1', 'one', '[\"rust\",\"go\"]', 1, 'u1', $1, $1), ('i2', 'c1', 'two', '[\"rust\"]', 1, 'u1', $1, $1)",
        "INSERT INTO tags (id, collection_id, name) VALUES ('t1', 'c1', 'rust'), ('t2', 'c1', 'go')",
        "INSERT INTO item_tags (item_id, tag_id) VALUES ('i1', 't1'), ('i1', 't2'), ('i2', 't1')",
    ];
    for sql in rows {
        atlas_db::sqlx::query(sql)
            .bind(now)
            .execute(pool.writer())
            .await
            .expect(sql);
    }
    let applied = migrator.up(&all).await.expect("the rebuild");
    assert_eq!(applied.len(), 1, "only the rebuild was pending");
    let links: Vec<(String, String)> =
        atlas_db::sqlx::query_as("SELECT item_id, tag_id FROM item_tags ORDER BY item_id, tag_id")
            .fetch_all(pool.reader())
            .await
            .unwrap();
    let links: Vec<(&str, &str)> = links.iter().map(|(i, t)| (i.as_str(), t.as_str())).collect();
    assert_eq!(links, [("i1", "t1"), ("i1", "t2"), ("i2", "t1")]);
    // The by-tag index is back, and the links still cascade.
    let by_tag: Vec<(String,)> =
        atlas_db::sqlx::query_as("SELECT item_id FROM item_tags WHERE tag_id = 't1' ORDER BY item_id")
            .fetch_all(pool.reader())
            .await
            .unwrap();
    assert_eq!(by_tag, [("i1".to_string(),), ("i2".to_string(),)]);
    if backend == TestBackend::Sqlite {
        let (sql,): (String,) = atlas_db::sqlx::query_as("SELECT sql FROM sqlite_master WHERE name = 'item_tags'")
            .fetch_one(pool.reader())
            .await
            .unwrap();
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
        let (indexes,): (i64,) = atlas_db::sqlx::query_as(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'item_tags' AND name = 'item_tags_by_tag'",
        )
        .fetch_one(pool.reader())
        .await
        .unwrap();
        assert_eq!(indexes, 1);
    }
    atlas_db::sqlx::query("DELETE FROM items WHERE id = 'i1'")
        .execute(pool.writer())
        .await
        .unwrap();
    let (left,): (i64,) = atlas_db::sqlx::query_as("SELECT COUNT(*) FROM item_tags")
        .fetch_one(pool.reader())
        .await
        .unwrap();
    assert_eq!(left, 1, "deleting an item deletes its links");
}
both_backends!(item_tags_rebuild_keeps_links, tag_links_survive_the_item_tags_rebuild);
