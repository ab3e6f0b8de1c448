//! Search over HTTP: permissions (including highlights and membership
//! removal), relevance basics, the query language, sorts and pages, updates
//! and deletes, and a rebuild giving the same results as incremental
//! indexing. Index state is eventual: tests poll `index_status` with a
//! deadline.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use atlas_testkit::{both_backends, test_settings, TestBackend};
use serde_json::{json, Value};

use crate::helpers::{spawn_atlas, App, User};

/// Wait until `GET /items/{id}` reports `indexed`.
async fn wait_indexed(app: &App, user: &User, item_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.get(&format!("/api/v1/items/{item_id}"), &user.token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["index_status"] == "indexed" {
            return;
        }
        assert!(Instant::now() < deadline, "item {item_id} never became indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll a search until `done` holds for its page.
async fn wait_search(app: &App, user: &User, query: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.get(&format!("/api/v1/search/items?{query}"), &user.token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if done(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "search `{query}` never reached the expected state: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll a job until it leaves `queued` and `running`.
async fn wait_job(app: &App, user: &User, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app.get(path, &user.token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["status"] != "queued" && r.body["status"] != "running" {
            return r.body;
        }
        assert!(Instant::now() < deadline, "job still {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn search(app: &App, user: &User, query: &str) -> Value {
    let r = app.get(&format!("/api/v1/search/items?{query}"), &user.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["item"]["title"].as_str().unwrap().to_string())
        .collect()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn add(app: &App, user: &User, collection: &str, body: Value) -> String {
    let item = app.item(user, collection, body).await;
    assert_eq!(item["index_status"], "pending", "a new item is not searchable yet");
    item["id"].as_str().unwrap().to_string()
}

async fn permissions(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let alice = app.register("alice@s.org").await;
    let bob = app.register("bob@s.org").await;
    let mine = app.collection(&alice, "Alice's").await;
    let shared = app.collection(&bob, "Shared").await;
    let secret = app.collection(&bob, "Bob's secrets").await;
    app.add_member(&bob, &shared, &alice, "viewer").await;
    add(
        &app,
        &alice,
        &mine,
        json!({"title": "zebra notes", "tags": ["animals"]}),
    )
    .await;
    add(
        &app,
        &bob,
        &shared,
        json!({"title": "zebra crossing", "body": "a shared zebra", "tags": ["animals"]}),
    )
    .await;
    let hidden = add(
        &app,
        &bob,
        &secret,
        json!({"title": "zebra secret", "body": "the zebra password is <b>", "tags": ["animals"]}),
    )
    .await;
    wait_indexed(&app, &bob, &hidden).await;
    // Bob sees the items of his two collections.
    let bobs = wait_search(&app, &bob, "q=zebra", |p| p["items"].as_array().unwrap().len() == 2).await;
    assert_eq!(bobs["total_estimate"], 2);

    // Alice: matching words, tags, an empty query — never Bob's secret.
    for query in ["q=zebra", "q=secret", "tags=animals", "q=", "q=zebr", "q=password"] {
        let page = wait_search(&app, &alice, query, |_| true).await;
        for hit in page["items"].as_array().unwrap() {
            assert_ne!(hit["item"]["collection_id"], secret, "{query} leaked {hit}");
            let highlights = hit["highlights"].to_string();
            assert!(
                !highlights.contains("secret") && !highlights.contains("password"),
                "{query}: {hit}"
            );
        }
    }
    let page = search(&app, &alice, "q=zebra").await;
    let mut got = titles(&page);
    got.sort();
    assert_eq!(got, ["zebra crossing", "zebra notes"]);
    assert_eq!(
        page["total_estimate"], 2,
        "the estimate counts only the caller's collections"
    );
    assert!(search(&app, &alice, "q=password").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // Naming the secret collection: 404, as for any collection one is not in.
    let r = app
        .get(
            &format!("/api/v1/search/items?q=zebra&collection_id={secret}"),
            &alice.token,
        )
        .await;
    r.error(404, "not_found");
    let r = app
        .get(
            &format!("/api/v1/search/items?q=zebra&collection_id={shared}"),
            &alice.token,
        )
        .await;
    assert_eq!(titles(&r.body), ["zebra crossing"]);

    // Highlights mark matches and escape everything else.
    let own = search(&app, &bob, &format!("q=password&collection_id={secret}")).await;
    assert_eq!(
        own["items"][0]["highlights"]["body"],
        "the zebra <mark>password</mark> is &lt;b&gt;"
    );

    // Removed from the shared collection, Alice no longer finds its items.
    let r = app
        .delete(
            &format!("/api/v1/collections/{shared}/members/{}", alice.id),
            &bob.token,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(titles(&search(&app, &alice, "q=zebra").await), ["zebra notes"]);

    // Unauthenticated: 401.
    app.call(reqwest::Method::GET, "/api/v1/search/items?q=zebra", None, None)
        .await
        .error(401, "unauthorized");
    app.stop().await;
}

both_backends!(search_permissions, permissions);

async fn relevance(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("rel@s.org").await;
    let c = app.collection(&u, "Library").await;
    let body_only = add(
        &app,
        &u,
        &c,
        json!({"title": "Cooking at home", "body": "tips about kubernetes clusters"}),
    )
    .await;
    add(
        &app,
        &u,
        &c,
        json!({"title": "Kubernetes in practice", "body": "running containers", "tags": ["ops", "k8s"]}),
    )
    .await;
    add(
        &app,
        &u,
        &c,
        json!({"title": "Async Rust book", "body": "futures and executors explained", "tags": ["rust"]}),
    )
    .await;
    add(
        &app,
        &u,
        &c,
        json!({"title": "Book review", "body": "a rust novel about async people", "tags": ["rust", "fiction"]}),
    )
    .await;
    let last = add(
        &app,
        &u,
        &c,
        json!({"title": "Programming databases", "body": "indexes, queries and transactions", "tags": ["ops"]}),
    )
    .await;
    wait_indexed(&app, &u, &body_only).await;
    wait_indexed(&app, &u, &last).await;

    // A title match outranks a body match.
    assert_eq!(
        titles(&search(&app, &u, "q=kubernetes").await),
        ["Kubernetes in practice", "Cooking at home"]
    );
    // Words match anywhere; a phrase only in that order.
    let words = titles(&search(&app, &u, &format!("q={}", enc("rust async "))).await);
    assert_eq!(words.len(), 2, "{words:?}");
    assert_eq!(
        titles(&search(&app, &u, &format!("q={}", enc("\"async rust\""))).await),
        ["Async Rust book"]
    );
    // Exclusion.
    assert_eq!(
        titles(&search(&app, &u, &format!("q={}", enc("rust -novel"))).await),
        ["Async Rust book"]
    );
    // Stemming: "queries" finds "query".
    assert_eq!(titles(&search(&app, &u, "q=query").await), ["Programming databases"]);
    // The last word is a prefix; with a trailing space it is not.
    let prefix = search(&app, &u, "q=kubern").await;
    assert_eq!(titles(&prefix)[0], "Kubernetes in practice");
    assert_eq!(
        prefix["items"][0]["highlights"]["title"],
        "<mark>Kubernetes</mark> in practice"
    );
    assert!(titles(&search(&app, &u, &format!("q={}", enc("kubern "))).await).is_empty());
    assert_eq!(
        titles(&search(&app, &u, "q=programmi").await),
        ["Programming databases"]
    );
    // One typo in a 6+ letter word still finds it.
    assert_eq!(
        titles(&search(&app, &u, &format!("q={}", enc("databsaes "))).await),
        ["Programming databases"]
    );
    assert_eq!(
        titles(&search(&app, &u, &format!("q={}", enc("kubernetis "))).await)[0],
        "Kubernetes in practice"
    );
    // Tags: all of them.
    let mut tagged = titles(&search(&app, &u, "tags=rust").await);
    tagged.sort();
    assert_eq!(tagged, ["Async Rust book", "Book review"]);
    assert_eq!(titles(&search(&app, &u, "tags=RUST,fiction").await), ["Book review"]);
    assert_eq!(titles(&search(&app, &u, "q=book&tags=fiction").await), ["Book review"]);

    // Sorts.
    let by_title = titles(&search(&app, &u, "sort=title").await);
    let mut expected = by_title.clone();
    expected.sort_by_key(|t| t.to_lowercase());
    assert_eq!(by_title, expected);
    assert_eq!(by_title.len(), 5);
    let desc = titles(&search(&app, &u, "sort=title&order=desc").await);
    assert_eq!(desc, by_title.iter().rev().cloned().collect::<Vec<_>>());
    let newest = titles(&search(&app, &u, "sort=created_at").await);
    assert_eq!(newest[0], "Programming databases");
    assert_eq!(newest[4], "Cooking at home");
    let oldest = titles(&search(&app, &u, "sort=created_at&order=asc").await);
    assert_eq!(oldest, newest.iter().rev().cloned().collect::<Vec<_>>());
    let r = app
        .patch(
            &format!("/api/v1/items/{body_only}"),
            &u.token,
            json!({"body": "now about gardening"}),
        )
        .await;
    assert_eq!(r.status, 200);
    wait_indexed(&app, &u, &body_only).await;
    assert_eq!(titles(&search(&app, &u, "sort=updated_at").await)[0], "Cooking at home");

    // Bad input.
    app.get("/api/v1/search/items?limit=0", &u.token)
        .await
        .error(422, "validation_failed");
    app.get("/api/v1/search/items?cursor=abc.def", &u.token)
        .await
        .error(400, "bad_request");
    app.get(&format!("/api/v1/search/items?q={}", "x".repeat(1001)), &u.token)
        .await
        .error(400, "bad_request");
    app.stop().await;
}

both_backends!(search_relevance, relevance);

async fn pages_updates_and_deletes(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("pages@s.org").await;
    let c = app.collection(&u, "Many").await;
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(
            add(
                &app,
                &u,
                &c,
                json!({"title": format!("walrus {i}"), "body": "walrus facts"}),
            )
            .await,
        );
    }
    for id in &ids {
        wait_indexed(&app, &u, id).await;
    }
    for sort in ["relevance", "created_at", "title"] {
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = format!("q=walrus&limit=5&sort={sort}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = search(&app, &u, &q).await;
            assert_eq!(page["total_estimate"], 23);
            for hit in page["items"].as_array().unwrap() {
                assert!(
                    seen.insert(hit["item"]["id"].as_str().unwrap().to_string()),
                    "duplicate in {sort}"
                );
            }
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!((seen.len(), pages), (23, 5), "{sort}");
    }
    // A cursor is bound to its search and cannot be edited.
    let first = search(&app, &u, "q=walrus&limit=5").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    app.get(
        &format!("/api/v1/search/items?q=other&limit=5&cursor={cursor}"),
        &u.token,
    )
    .await
    .error(400, "bad_request");
    let mut tampered = cursor.to_string();
    tampered.replace_range(0..1, if tampered.starts_with('e') { "f" } else { "e" });
    app.get(
        &format!("/api/v1/search/items?q=walrus&limit=5&cursor={tampered}"),
        &u.token,
    )
    .await
    .error(400, "bad_request");

    // An update is reflected, a delete removes the item.
    let r = app
        .patch(
            &format!("/api/v1/items/{}", ids[0]),
            &u.token,
            json!({"title": "narwhal 0"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["index_status"], "pending");
    wait_indexed(&app, &u, &ids[0]).await;
    assert_eq!(titles(&search(&app, &u, "q=narwhal").await), ["narwhal 0"]);
    assert_eq!(
        search(&app, &u, "q=walrus&limit=50").await["total_estimate"],
        23,
        "body still says walrus"
    );
    let r = app.delete(&format!("/api/v1/items/{}", ids[1]), &u.token).await;
    assert_eq!(r.status, 204);
    wait_search(&app, &u, "q=walrus&limit=50", |p| p["total_estimate"] == 22).await;

    // Deleting the collection removes its documents.
    let r = app.delete(&format!("/api/v1/collections/{c}"), &u.token).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let other = app.collection(&u, "Other").await;
    let probe = add(&app, &u, &other, json!({"title": "walrus probe"})).await;
    wait_indexed(&app, &u, &probe).await;
    assert_eq!(titles(&search(&app, &u, "q=walrus").await), ["walrus probe"]);
    app.stop().await;
}

both_backends!(search_pages_updates_and_deletes, pages_updates_and_deletes);

/// `REINDEX_ITEM` replaces an item's document with its current state in
/// the database, even after a change no event announced (an edit made with
/// SQL, a partial restore). Who may ask is the item's editors and owners.
async fn reindex_item_job(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let owner = app.register("reindex-owner@s.org").await;
    let viewer = app.register("reindex-viewer@s.org").await;
    let c = app.collection(&owner, "Birds").await;
    app.add_member(&owner, &c, &viewer, "viewer").await;
    let id = add(
        &app,
        &owner,
        &c,
        json!({"title": "heron notes", "body": "a tall wader"}),
    )
    .await;
    wait_indexed(&app, &owner, &id).await;

    atlas_db::sqlx::query(&format!("UPDATE items SET title = 'egret notes' WHERE id = '{id}'"))
        .execute(app.db.writer())
        .await
        .unwrap();
    assert_eq!(search(&app, &owner, "q=egret").await["total_estimate"], 0);
    assert_eq!(search(&app, &owner, "q=heron").await["total_estimate"], 1);

    let job = json!({"type": "REINDEX_ITEM", "payload": {"item_id": id}});
    app.post("/api/v1/jobs", &viewer.token, job.clone())
        .await
        .error(403, "forbidden");
    let r = app.post("/api/v1/jobs", &owner.token, job).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let path = format!("/api/v1/jobs/{}", r.body["id"].as_str().unwrap());
    let done = wait_job(&app, &owner, &path).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"item_id": id, "version": 1}));
    let page = wait_search(&app, &owner, "q=egret", |p| p["total_estimate"] == 1).await;
    assert_eq!(titles(&page), ["egret notes"]);
    assert_eq!(search(&app, &owner, "q=heron").await["total_estimate"], 0);

    // An item deleted before its job runs: the job is dead, not retried.
    let gone = add(&app, &owner, &c, json!({"title": "dodo"})).await;
    let run_at = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let r = app
        .post(
            "/api/v1/jobs",
            &owner.token,
            json!({"type": "REINDEX_ITEM", "payload": {"item_id": gone}, "run_at": run_at}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let path = format!("/api/v1/jobs/{}", r.body["id"].as_str().unwrap());
    assert_eq!(
        app.delete(&format!("/api/v1/items/{gone}"), &owner.token).await.status,
        204
    );
    let dead = wait_job(&app, &owner, &path).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["last_error"].as_str().unwrap().contains("does not exist"),
        "{dead}"
    );
    app.stop().await;
}

both_backends!(search_reindex_item_job, reindex_item_job);

/// Every search's result, for comparing two indexes of the same data.
async fn snapshot(app: &App, u: &User) -> Vec<Value> {
    let mut out = Vec::new();
    for q in [
        "q=alpha",
        "q=beta",
        "q=gamm",
        "q=%22alpha+beta%22",
        "q=alpha+-gamma",
        "tags=t1",
        "sort=title",
        "q=alphx+",
    ] {
        let page = search(app, u, q).await;
        let rows: Vec<Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| json!([h["item"]["id"], h["item"]["version"], h["highlights"]]))
            .collect();
        out.push(json!({"q": q, "rows": rows, "total": page["total_estimate"]}));
    }
    out
}

async fn rebuild_matches_incremental(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("rebuild@s.org").await;
    let c = app.collection(&u, "Greek").await;
    let words = ["alpha", "beta", "gamma", "delta"];
    let mut last = String::new();
    for i in 0..12 {
        let title = format!("{} {}", words[i % 4], words[(i + 1) % 4]);
        let body = format!("{} and {} item {i}", words[(i + 2) % 4], words[i % 4]);
        last = add(
            &app,
            &u,
            &c,
            json!({"title": title, "body": body, "tags": [format!("t{}", i % 3)]}),
        )
        .await;
    }
    wait_indexed(&app, &u, &last).await;
    let r = app
        .patch(
            &format!("/api/v1/items/{last}"),
            &u.token,
            json!({"title": "alpha omega"}),
        )
        .await;
    assert_eq!(r.status, 200);
    wait_indexed(&app, &u, &last).await;
    let incremental = snapshot(&app, &u).await;
    let before = app.get("/ready", &u.token).await;
    let generation = before.body["checks"]["search"]["details"]["generation"].clone();
    assert!(generation.is_string(), "{}", before.body);

    let settings = test_settings(&app.server.database, app.server.data_dir.path());
    let report = atlas_search::reindex_all(&settings, &app.db).await.expect("reindex");
    assert_eq!(report.documents, 12);
    // The server switches to the rebuilt index.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = app.get("/ready", &u.token).await;
        if ready.body["checks"]["search"]["details"]["generation"] == report.generation.as_str() {
            assert_eq!(ready.status, 200, "{}", ready.body);
            break;
        }
        assert!(Instant::now() < deadline, "the server never switched: {}", ready.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snapshot(&app, &u).await, incremental);
    // And it keeps following the log.
    let after = add(&app, &u, &c, json!({"title": "alpha after rebuild"})).await;
    wait_indexed(&app, &u, &after).await;
    assert!(titles(&search(&app, &u, "q=rebuild").await).contains(&"alpha after rebuild".to_string()));
    app.stop().await;
}

both_backends!(search_rebuild_matches_incremental, rebuild_matches_incremental);

/// `atlas search reindex --collection` next to a running server: while the
/// server's index writer is open the server is asked to do it; once the
/// writer has been idle long enough to be closed the command does it
/// itself, the server's searches see the result, and the server opens its
/// writer again for the next change.
async fn collection_reindex_beside_a_server(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let u = app.register("collection-reindex@s.org").await;
    let c = app.collection(&u, "Waders").await;
    let id = add(&app, &u, &c, json!({"title": "heron notes"})).await;
    wait_indexed(&app, &u, &id).await;
    let settings = test_settings(&app.server.database, app.server.data_dir.path());
    let edit = |title: &'static str| {
        let db = app.db.clone();
        let id = id.clone();
        async move {
            // A change no event announces, which only a re-index shows.
            atlas_db::sqlx::query(&format!("UPDATE items SET title = '{title}' WHERE id = '{id}'"))
                .execute(db.writer())
                .await
                .unwrap();
        }
    };

    // Just after a change the writer is open (unless this machine took
    // longer than its idle time to get here): the server does the work.
    edit("egret notes").await;
    let first = atlas_search::reindex_collection(&settings, &app.db, &c)
        .await
        .expect("reindex");
    assert!(
        matches!(
            first,
            atlas_search::CollectionReindex::Requested | atlas_search::CollectionReindex::Done(1)
        ),
        "{first:?}"
    );
    let page = wait_search(&app, &u, "q=egret", |p| p["total_estimate"] == 1).await;
    assert_eq!(titles(&page), ["egret notes"]);

    // Idle for longer than the writer's idle time: the lock is free and
    // the command re-indexes the collection itself.
    edit("stork notes").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(7)).await;
        let outcome = atlas_search::reindex_collection(&settings, &app.db, &c)
            .await
            .expect("reindex");
        if outcome == atlas_search::CollectionReindex::Done(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the server never let go of its idle writer");
    }
    let page = wait_search(&app, &u, "q=stork", |p| p["total_estimate"] == 1).await;
    assert_eq!(titles(&page), ["stork notes"]);
    assert_eq!(search(&app, &u, "q=egret").await["total_estimate"], 0);

    // The server writes again: a new item is indexed.
    let next = add(&app, &u, &c, json!({"title": "ibis notes"})).await;
    wait_indexed(&app, &u, &next).await;
    let page = wait_search(&app, &u, "q=notes", |p| p["total_estimate"] == 2).await;
    let mut found = titles(&page);
    found.sort();
    assert_eq!(found, ["ibis notes", "stork notes"]);
    app.stop().await;
}

both_backends!(
    search_collection_reindex_beside_a_server,
    collection_reindex_beside_a_server
);
