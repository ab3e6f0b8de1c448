//! Jobs and workflows over HTTP: permissions, the job lifecycle seen by a
//! client, idempotency, `ENRICH_URL` against a local page and its SSRF
//! guard, `ITEM_INTAKE` and `HEALTH_CHECK`, and an `ITEM_INTAKE` whose
//! process is killed after its first step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atlas_db::sqlx::{self, Row};
use atlas_kernel::Settings;
use atlas_testkit::{both_backends, TestBackend, TestDatabase};
use axum::http::header;
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_with, App, User};
use crate::rbac::make_admin;

const PAGE: &str = r#"<!doctype html><html><head>
<title>Ferris and friends</title>
<meta name="description" content="All about crabs.">
<meta property="og:site_name" content="Crab Times">
<meta name="keywords" content="Rust, Crabs">
<link rel="canonical" href="/canonical">
</head><body>hello</body></html>"#;

/// A local web server for enrichment: counts requests per path.
struct Site {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Site {
    async fn start() -> Site {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap().entry(uri.path().to_string()).or_default() += 1;
                let html = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
                match uri.path() {
                    "/page" => (html, PAGE).into_response(),
                    "/redirect-private" => (
                        axum::http::StatusCode::FOUND,
                        [(header::LOCATION, "http://10.0.0.1/page")],
                    )
                        .into_response(),
                    "/redirect-loop" => {
                        (axum::http::StatusCode::FOUND, [(header::LOCATION, "/redirect-loop")]).into_response()
                    }
                    "/big" => (html, "x".repeat(100_000)).into_response(),
                    "/json" => axum::Json(json!({"title": "no"})).into_response(),
                    _ => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Site { base, hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

fn quick_jobs(s: &mut Settings) {
    s.jobs.poll_interval_ms = 100;
    s.jobs.backoff_initial_ms = 100;
    s.jobs.backoff_max_ms = 500;
    s.jobs.enrich_max_bytes = 64 * 1024;
    s.jobs.enrich_timeout_secs = 5;
}

fn allow_local(s: &mut Settings) {
    quick_jobs(s);
    s.jobs.enrich_allow_networks = vec!["127.0.0.1".into()];
}

async fn wait_job(app: &App, user: &User, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get(&format!("/api/v1/jobs/{id}"), &user.token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if ["succeeded", "dead", "cancelled"].contains(&r.body["status"].as_str().unwrap()) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "job still {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_workflow(app: &App, user: &User, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = app.get(&format!("/api/v1/workflows/{id}"), &user.token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["status"] != "running" {
            return r.body;
        }
        assert!(Instant::now() < deadline, "workflow still {}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cast {
    owner: User,
    editor: User,
    viewer: User,
    stranger: User,
    collection: String,
}

async fn cast(app: &App) -> Cast {
    let owner = app.register("owner@jobs.org").await;
    let editor = app.register("editor@jobs.org").await;
    let viewer = app.register("viewer@jobs.org").await;
    let stranger = app.register("stranger@jobs.org").await;
    let collection = app.collection(&owner, "Jobs").await;
    app.add_member(&owner, &collection, &editor, "editor").await;
    app.add_member(&owner, &collection, &viewer, "viewer").await;
    Cast {
        owner,
        editor,
        viewer,
        stranger,
        collection,
    }
}

async fn api_and_enrichment(backend: TestBackend) {
    let site = Site::start().await;
    let Some(app) = spawn_with(backend, allow_local).await else {
        return;
    };
    let c = cast(&app).await;
    let item = app
        .item(
            &c.owner,
            &c.collection,
            json!({"title": "crabs", "source_url": format!("{}/page", site.base)}),
        )
        .await;
    let item_id = item["id"].as_str().unwrap();
    let enrich = json!({"type": "ENRICH_URL", "payload": {"item_id": item_id}});

    // Who may enqueue.
    app.post("/api/v1/jobs", &c.viewer.token, enrich.clone())
        .await
        .error(403, "forbidden");
    app.post("/api/v1/jobs", &c.stranger.token, enrich.clone())
        .await
        .error(404, "not_found");
    app.call(Method::POST, "/api/v1/jobs", None, Some(enrich.clone()))
        .await
        .error(401, "unauthorized");
    let bad = app
        .post("/api/v1/jobs", &c.editor.token, json!({"type": "NOPE", "payload": {}}))
        .await;
    assert_eq!(bad.error(422, "validation_failed")["details"]["field"], "type");
    app.post("/api/v1/jobs", &c.editor.token, json!({"type": "NOOP", "payload": {}}))
        .await
        .error(403, "forbidden");
    app.post(
        "/api/v1/jobs",
        &c.editor.token,
        json!({"type": "HEALTH_PROBE", "payload": {}}),
    )
    .await
    .error(403, "forbidden");
    app.post(
        "/api/v1/jobs",
        &c.viewer.token,
        json!({"type": "REINDEX_ITEM", "payload": {"item_id": item_id}}),
    )
    .await
    .error(403, "forbidden");
    app.post(
        "/api/v1/jobs",
        &c.editor.token,
        json!({"type": "ENRICH_URL", "payload": {}}),
    )
    .await
    .error(422, "validation_failed");
    app.post(
        "/api/v1/jobs",
        &c.editor.token,
        json!({"type": "ENRICH_URL", "payload": {"item_id": item_id}, "max_attempts": 0}),
    )
    .await
    .error(422, "validation_failed");

    // The editor enqueues; the job runs and enriches the item.
    let r = app
        .call_with(
            Method::POST,
            "/api/v1/jobs",
            Some(&c.editor.token),
            Some(enrich.clone()),
            &[("x-request-id", "req-enrich")],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job_id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/api/v1/jobs/{job_id}").as_str());
    assert_eq!(r.body["type"], "ENRICH_URL");
    assert_eq!(r.body["created_by"], c.editor.id.as_str());
    let job = wait_job(&app, &c.editor, &job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["result"]["title"], "Ferris and friends");
    assert_eq!(site.hits("/page"), 1);
    let item = app.get(&format!("/api/v1/items/{item_id}"), &c.viewer.token).await;
    let e = &item.body["metadata"]["enrichment"];
    assert_eq!(e["title"], "Ferris and friends");
    assert_eq!(e["description"], "All about crabs.");
    assert_eq!(e["site_name"], "Crab Times");
    assert_eq!(e["canonical_url"], format!("{}/canonical", site.base));
    assert_eq!(item.body["version"], 2);
    let outbox = app.outbox().await;
    let updated: Vec<_> = outbox
        .iter()
        .filter(|ev| ev.event_type == "ItemUpdated" && ev.entity.id == item_id)
        .collect();
    assert_eq!(updated.len(), 1);
    assert_eq!(
        updated[0].actor_user_id.as_deref(),
        Some(c.editor.id.as_str()),
        "the job's creator is the actor"
    );
    assert_eq!(
        updated[0].request_id, "req-enrich",
        "the enqueueing request's id follows the job"
    );
    let succeeded: Vec<_> = outbox.iter().filter(|ev| ev.event_type == "JobSucceeded").collect();
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].entity.entity_type, "job");
    assert_eq!(
        succeeded[0].entity.collection_id.as_deref(),
        Some(c.collection.as_str())
    );

    // Who may read.
    assert_eq!(
        app.get(&format!("/api/v1/jobs/{job_id}"), &c.viewer.token).await.status,
        200
    );
    app.get(&format!("/api/v1/jobs/{job_id}"), &c.stranger.token)
        .await
        .error(404, "not_found");
    let listed = app
        .get("/api/v1/jobs?status=succeeded&type=ENRICH_URL", &c.owner.token)
        .await;
    assert_eq!(listed.body["items"][0]["id"], job_id.as_str());
    let none = app.get("/api/v1/jobs", &c.stranger.token).await;
    assert_eq!(none.body["items"], json!([]));
    app.get("/api/v1/jobs?status=nope", &c.owner.token)
        .await
        .error(422, "validation_failed");
    app.get("/api/v1/jobs?cursor=forged", &c.owner.token)
        .await
        .error(400, "bad_request");

    // Finished jobs cannot be cancelled or retried; viewers may not try.
    app.post(&format!("/api/v1/jobs/{job_id}/cancel"), &c.editor.token, json!({}))
        .await
        .error(409, "conflict");
    app.post(&format!("/api/v1/jobs/{job_id}/retry"), &c.editor.token, json!({}))
        .await
        .error(409, "conflict");
    app.post(&format!("/api/v1/jobs/{job_id}/cancel"), &c.viewer.token, json!({}))
        .await
        .error(403, "forbidden");
    app.post(&format!("/api/v1/jobs/{job_id}/cancel"), &c.stranger.token, json!({}))
        .await
        .error(404, "not_found");

    // Idempotency keys, per user.
    let keyed = |payload: Value| json!({"type": "ENRICH_URL", "payload": payload, "idempotency_key": "k1", "run_at": "2999-01-01T00:00:00Z"});
    let first = app
        .post("/api/v1/jobs", &c.editor.token, keyed(json!({"item_id": item_id})))
        .await;
    assert_eq!(first.status, 202);
    let again = app
        .post("/api/v1/jobs", &c.editor.token, keyed(json!({"item_id": item_id})))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["id"], first.body["id"]);
    let other = json!({"type": "ENRICH_URL", "payload": {"item_id": item_id, "x": 1}, "idempotency_key": "k1"});
    app.post("/api/v1/jobs", &c.editor.token, other)
        .await
        .error(409, "conflict");
    let owners = app
        .post("/api/v1/jobs", &c.owner.token, keyed(json!({"item_id": item_id})))
        .await;
    assert_eq!(owners.status, 202);

    // A queued job (due in 2999) is cancelled at once.
    let queued = first.body["id"].as_str().unwrap();
    let cancelled = app
        .post(&format!("/api/v1/jobs/{queued}/cancel"), &c.owner.token, json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");

    // Pagination, newest first.
    let page = app.get("/api/v1/jobs?limit=1", &c.owner.token).await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = app
        .get(&format!("/api/v1/jobs?limit=1&cursor={cursor}"), &c.owner.token)
        .await;
    assert!(next.body["items"][0]["id"].as_str().unwrap() < page.body["items"][0]["id"].as_str().unwrap());
    app.stop().await;
}
both_backends!(jobs_api_and_url_enrichment, api_and_enrichment);

async fn ssrf_guard(backend: TestBackend) {
    let site = Site::start().await;
    let port = site.base.rsplit(':').next().unwrap().to_string();
    // Without an allow-list, even the local site is refused.
    let Some(app) = spawn_with(backend, quick_jobs).await else {
        return;
    };
    let owner = app.register("ssrf@jobs.org").await;
    let collection = app.collection(&owner, "SSRF").await;
    let enrich = |url: String| {
        let app = &app;
        let owner = &owner;
        let collection = &collection;
        async move {
            let item = app
                .item(owner, collection, json!({"title": "x", "source_url": url}))
                .await;
            let r = app
                .post(
                    "/api/v1/jobs",
                    &owner.token,
                    json!({"type": "ENRICH_URL", "payload": {"item_id": item["id"]}}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.body);
            wait_job(app, owner, r.body["id"].as_str().unwrap()).await
        }
    };
    for url in [
        format!("http://127.0.0.1:{port}/page"),
        format!("http://localhost:{port}/page"),
        "http://10.0.0.1/page".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        format!("http://[::1]:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
    ] {
        let job = enrich(url.clone()).await;
        assert_eq!(job["status"], "dead", "{url}: {job}");
        assert_eq!(job["attempts"], 1, "refusals are not retried");
        assert!(job["last_error"].as_str().unwrap().contains("refused"), "{url}: {job}");
    }
    assert_eq!(site.total(), 0, "no connection was made");
    // An item without a source_url has nothing to enrich.
    let bare = app.item(&owner, &collection, json!({"title": "no url"})).await;
    let r = app
        .post(
            "/api/v1/jobs",
            &owner.token,
            json!({"type": "ENRICH_URL", "payload": {"item_id": bare["id"]}}),
        )
        .await;
    let job = wait_job(&app, &owner, r.body["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "dead");
    assert!(job["last_error"].as_str().unwrap().contains("no source_url"));
    assert_eq!(
        app.outbox().await.iter().filter(|e| e.event_type == "JobDead").count(),
        7
    );
    app.stop().await;

    // Allow-listed: redirects are checked again, size and type are capped.
    let Some(app) = spawn_with(backend, allow_local).await else {
        return;
    };
    let owner = app.register("ssrf@jobs.org").await;
    let collection = app.collection(&owner, "SSRF").await;
    let enrich = |path: &str| {
        let (app, owner, collection) = (&app, &owner, &collection);
        let url = format!("{}{path}", site.base);
        async move {
            let item = app
                .item(owner, collection, json!({"title": "x", "source_url": url}))
                .await;
            let r = app
                .post(
                    "/api/v1/jobs",
                    &owner.token,
                    json!({"type": "ENRICH_URL", "payload": {"item_id": item["id"]}, "max_attempts": 2}),
                )
                .await;
            wait_job(app, owner, r.body["id"].as_str().unwrap()).await
        }
    };
    for (path, expected) in [
        ("/redirect-private", "refused"),
        ("/redirect-loop", "redirects"),
        ("/big", "larger than"),
        ("/json", "not an HTML page"),
    ] {
        let job = enrich(path).await;
        assert_eq!(job["status"], "dead", "{path}: {job}");
        assert!(job["last_error"].as_str().unwrap().contains(expected), "{path}: {job}");
    }
    assert_eq!(site.hits("/redirect-private"), 1);
    assert_eq!(site.hits("/redirect-loop"), 6, "the first request and 5 redirects");
    app.stop().await;
}
both_backends!(enrich_url_ssrf_guard_and_limits, ssrf_guard);

async fn workflows(backend: TestBackend) {
    let site = Site::start().await;
    let Some(app) = spawn_with(backend, allow_local).await else {
        return;
    };
    let c = cast(&app).await;
    let admin = make_admin(&app, "admin@jobs.org").await;
    let item = app
        .item(
            &c.owner,
            &c.collection,
            json!({"title": "crabs", "source_url": format!("{}/page", site.base), "tags": ["mine"]}),
        )
        .await;
    let item_id = item["id"].as_str().unwrap();
    let intake = json!({"type": "ITEM_INTAKE", "input": {"item_id": item_id}});
    app.post("/api/v1/workflows", &c.viewer.token, intake.clone())
        .await
        .error(403, "forbidden");
    app.post("/api/v1/workflows", &c.stranger.token, intake.clone())
        .await
        .error(404, "not_found");
    app.post(
        "/api/v1/workflows",
        &c.editor.token,
        json!({"type": "NOPE", "input": {}}),
    )
    .await
    .error(422, "validation_failed");
    let r = app.post("/api/v1/workflows", &c.editor.token, intake).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    let id = r.body["id"].as_str().unwrap();
    let w = wait_workflow(&app, &c.editor, id).await;
    assert_eq!(w["status"], "succeeded", "{w}");
    let steps: Vec<(&str, &str, i64)> = w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
                s["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("enrich", "succeeded", 1),
            ("derive_tags", "succeeded", 1),
            ("reindex", "succeeded", 1)
        ]
    );
    assert_eq!(w["steps"][2]["output"]["item_id"], item_id);
    assert_eq!(
        w["steps"][2]["output"]["version"], 3,
        "after the enrichment and the tags"
    );
    // The workflow's output gathers its steps' outputs.
    assert_eq!(w["output"]["added_tags"], json!(["rust", "crabs", "crab times"]));
    assert_eq!(w["output"]["site_name"], "Crab Times");
    assert_eq!(w["output"]["version"], 3);
    let item = app.get(&format!("/api/v1/items/{item_id}"), &c.owner.token).await;
    assert_eq!(item.body["tags"], json!(["mine", "rust", "crabs", "crab times"]));
    assert_eq!(
        app.get(&format!("/api/v1/workflows/{id}"), &c.viewer.token)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/api/v1/workflows/{id}"), &admin.token).await.status,
        200
    );
    app.get(&format!("/api/v1/workflows/{id}"), &c.stranger.token)
        .await
        .error(404, "not_found");
    let completed = app
        .outbox()
        .await
        .into_iter()
        .filter(|e| e.event_type == "WorkflowCompleted")
        .count();
    assert_eq!(completed, 1);

    // Without a source_url, enrichment (and so tagging) is skipped; the
    // item is still reindexed.
    let bare = app.item(&c.owner, &c.collection, json!({"title": "bare"})).await;
    let r = app
        .post(
            "/api/v1/workflows",
            &c.owner.token,
            json!({"type": "ITEM_INTAKE", "input": {"item_id": bare["id"]}}),
        )
        .await;
    let w = wait_workflow(&app, &c.owner, r.body["id"].as_str().unwrap()).await;
    assert_eq!(w["status"], "succeeded", "{w}");
    let statuses: Vec<&str> = w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["skipped", "skipped", "succeeded"]);

    // HEALTH_CHECK: administrators only; its report is the output.
    app.post(
        "/api/v1/workflows",
        &c.owner.token,
        json!({"type": "HEALTH_CHECK", "input": {}}),
    )
    .await
    .error(403, "forbidden");
    let r = app
        .post("/api/v1/workflows", &admin.token, json!({"type": "HEALTH_CHECK"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let w = wait_workflow(&app, &admin, r.body["id"].as_str().unwrap()).await;
    assert_eq!(w["status"], "succeeded", "{w}");
    let report = &w["output"];
    assert_eq!(report["ok"], true, "{report}");
    for check in ["database", "migrations", "event_log", "search", "job_queue"] {
        assert!(report["checks"][check]["ok"].is_boolean(), "{check}: {report}");
    }
    app.get(
        &format!("/api/v1/workflows/{}", w["id"].as_str().unwrap()),
        &c.owner.token,
    )
    .await
    .error(404, "not_found");
    app.stop().await;
}
both_backends!(item_intake_and_health_check_workflows, workflows);

// --- a workflow across a crash -------------------------------------------

fn atlas_serve(dir: &std::path::Path, db_url: &str, failpoints: Option<&str>) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atlas"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ATLAS_DATABASE__URL", db_url)
        .env("ATLAS_JOBS__ENRICH_ALLOW_NETWORKS", "[\"127.0.0.1\"]")
        .env("ATLAS_JOBS__POLL_INTERVAL_MS", "100")
        // A job the aborted process had already claimed comes back soon.
        .env("ATLAS_JOBS__LEASE_SECS", "3")
        .env("ATLAS_JOBS__HEARTBEAT_SECS", "1")
        .env("ATLAS_AUTH__ARGON2_MEMORY_KIB", "256")
        .env("ATLAS_AUTH__ARGON2_ITERATIONS", "1")
        .env("ATLAS_SERVER__RATE_LIMIT_PER_SECOND", "0")
        .args(["serve", "--bind", &bind])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(f) = failpoints {
        cmd.env("ATLAS_FAILPOINTS", f);
    }
    (cmd.spawn().unwrap(), format!("http://{bind}"))
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "atlas did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

async fn workflow_across_a_crash(backend: TestBackend) {
    let Some(database) = TestDatabase::new(backend).await else {
        return;
    };
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut first, base) = atlas_serve(dir.path(), &database.url, Some("workflow.step_committed"));
    wait_ready(&client, &base).await;
    let user = call(
        &client,
        format!("{base}/api/v1/auth/register"),
        None,
        json!({"email": "crash@jobs.org", "password": "password-123"}),
    )
    .await;
    let token = user["access_token"].as_str().unwrap().to_string();
    let collection = call(
        &client,
        format!("{base}/api/v1/collections"),
        Some(&token),
        json!({"name": "Crash"}),
    )
    .await;
    let item = call(
        &client,
        format!("{base}/api/v1/collections/{}/items", collection["id"].as_str().unwrap()),
        Some(&token),
        json!({"title": "crabs", "source_url": format!("{}/page", site.base)}),
    )
    .await;
    let workflow = call(
        &client,
        format!("{base}/api/v1/workflows"),
        Some(&token),
        json!({"type": "ITEM_INTAKE", "input": {"item_id": item["id"]}}),
    )
    .await;
    let id = workflow["id"].as_str().unwrap().to_string();
    // The process aborts right after step 1's completion commits.
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "the failure point ended the process");
    assert_eq!(site.hits("/page"), 1);

    let db = database.connect().await;
    let steps: String = sqlx::query("SELECT steps FROM workflows WHERE id = $1")
        .bind(&id)
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    let steps: Value = serde_json::from_str(&steps).unwrap();
    assert_eq!(steps[0]["status"], "succeeded", "{steps}");
    assert_eq!(steps[1]["status"], "pending", "{steps}");

    // A new process resumes at step 2; step 1 does not run again.
    let (mut second, base) = atlas_serve(dir.path(), &database.url, None);
    wait_ready(&client, &base).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let r = client
            .get(format!("{base}/api/v1/workflows/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let w: Value = r.json().await.unwrap();
        if w["status"] != "running" {
            break w;
        }
        assert!(Instant::now() < deadline, "workflow stuck: {w}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["steps"][0]["attempts"], 1);
    assert_eq!(done["steps"][1]["status"], "succeeded");
    assert_eq!(site.hits("/page"), 1, "step 1's fetch ran once");
    let enrich_jobs: i64 = sqlx::query("SELECT COUNT(*) FROM jobs WHERE workflow_id = $1 AND type = 'ENRICH_URL'")
        .bind(&id)
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(enrich_jobs, 1);
    db.close().await;
}
both_backends!(item_intake_resumes_after_a_crash, workflow_across_a_crash);
