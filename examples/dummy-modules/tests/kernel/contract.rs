//! The HTTP contract: every non-2xx response is `{code, message, details}`,
//! every response carries `x-request-id`, operations endpoints answer.

use atlas_kernel::ModuleRegistry;
use atlas_testkit::{both_backends, TestBackend, TestServer};
use serde_json::{json, Value};

async fn server(configure: impl FnOnce(&mut atlas_kernel::Settings)) -> TestServer {
    TestServer::start(TestBackend::Sqlite, ModuleRegistry::discover().unwrap(), configure)
        .await
        .unwrap()
}

/// Assert the error shape and return the body.
async fn error_body(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["details"].is_object(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    body
}

#[tokio::test]
async fn success_and_every_error_status_have_the_contract_shape() {
    let s = server(|st| st.server.body_limit_bytes = 4096).await;
    let echo = s.url("/api/v1/alpha/echo");

    // 200
    let ok = s.client.post(&echo).json(&json!({"title": "hi"})).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-request-id"));
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"title": "hi"}));

    // 400 malformed JSON
    let r = s
        .client
        .post(&echo)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    let b = error_body(r, 400, "bad_request").await;
    assert!(b["message"].as_str().unwrap().contains("malformed JSON"), "{b}");

    // 404 unknown route
    error_body(
        s.client.get(s.url("/api/v1/nowhere")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    // 405 wrong method, with Allow
    let r = s.client.delete(&echo).send().await.unwrap();
    assert!(r.headers().contains_key("allow"));
    error_body(r, 405, "method_not_allowed").await;

    // 413 body over the limit (declared length and streamed)
    let big = json!({"title": "x".repeat(10_000)}).to_string();
    let r = s
        .client
        .post(&echo)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    error_body(r, 413, "payload_too_large").await;
    let r = s
        .client
        .post(&echo)
        .header("content-type", "application/json")
        .body(chunked(big))
        .send()
        .await
        .unwrap();
    error_body(r, 413, "payload_too_large").await;

    // 415 wrong content type
    let r = s
        .client
        .post(&echo)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    error_body(r, 415, "unsupported_media_type").await;

    // 422 well-formed but invalid: wrong type, missing field, unknown field, rule
    let b = error_body(
        s.client.post(&echo).json(&json!({"title": 5})).send().await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(b["details"]["field"], "title");
    let b = error_body(
        s.client.post(&echo).json(&json!({})).send().await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(b["details"]["field"], "title");
    let b = error_body(
        s.client
            .post(&echo)
            .json(&json!({"title": "a", "x": 1}))
            .send()
            .await
            .unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(b["details"]["field"], "x");
    let b = error_body(
        s.client.post(&echo).json(&json!({"title": ""})).send().await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        b,
        json!({"code": "validation_failed", "message": "title must not be empty", "details": {"field": "title"}})
    );

    // 500 from a panic: request id in details, nothing internal leaked
    let r = s
        .client
        .get(s.url("/api/v1/alpha/panic"))
        .header("x-request-id", "req-500-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-500-test");
    let b = error_body(r, 500, "internal").await;
    assert_eq!(b["details"]["request_id"], "req-500-test");
    assert!(!b.to_string().contains("secret internal detail"));

    // The server survives the panic.
    assert_eq!(s.client.get(s.url("/health")).send().await.unwrap().status(), 200);
    s.stop().await.unwrap();
}

/// The same body as a chunked stream, without a declared length.
fn chunked(text: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text.into_bytes().chunks(1000).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn request_ids_are_kept_or_generated() {
    let s = server(|_| {}).await;
    let r = s
        .client
        .get(s.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let a = s.client.get(s.url("/health")).send().await.unwrap();
    let b = s.client.get(s.url("/health")).send().await.unwrap();
    let (a, b) = (
        a.headers()["x-request-id"].to_str().unwrap().to_string(),
        b.headers()["x-request-id"].to_str().unwrap().to_string(),
    );
    assert!(!a.is_empty() && a != b);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_global_rate_limit_answers_429_with_retry_after() {
    let s = server(|st| {
        st.server.rate_limit_per_second = 1;
        st.server.rate_limit_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let r = s.client.get(s.url("/health")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200]);
    let r = limited.expect("a request was limited");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    error_body(r, 429, "rate_limited").await;
    s.stop().await.unwrap();
}

async fn operations_endpoints(backend: TestBackend) {
    let Some(s) = TestServer::start(backend, ModuleRegistry::discover().unwrap(), |_| {}).await else {
        return;
    };
    let health: Value = s
        .client
        .get(s.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let ready = s.client.get(s.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"]["ok"], true);
    assert_eq!(ready["checks"]["migrations"]["details"]["pending"], 0);

    // Traffic shows up in the metrics, labelled by route template.
    s.client
        .post(s.url("/api/v1/alpha/echo"))
        .json(&json!({"title": "m"}))
        .send()
        .await
        .unwrap();
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("atlas_http_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/alpha/echo\""), "{metrics}");
    assert!(
        metrics.contains("atlas_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("atlas_db_pool_connections"), "{metrics}");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("atlas_") || l.starts_with("# TYPE atlas_"))
    {
        let name = line.trim_start_matches("# TYPE ").split(['{', ' ']).next().unwrap();
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            atlas_telemetry::is_conventional_metric_name(base),
            "metric {name} breaks the naming convention"
        );
    }

    let doc: Value = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/api/v1/alpha/echo"]["post"].is_object());
    let docs = s.client.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
    s.stop().await.unwrap();
}
both_backends!(ops_endpoints, operations_endpoints);

#[tokio::test]
async fn ready_is_503_in_the_error_shape_with_pending_migrations() {
    let s = server(|_| {}).await;
    // Forget one applied migration: the check must notice.
    let db = s.database.connect().await;
    atlas_db::sqlx::query("DELETE FROM _migrations WHERE module = 'alpha'")
        .execute(db.writer())
        .await
        .unwrap();
    let b = error_body(s.client.get(s.url("/ready")).send().await.unwrap(), 503, "unavailable").await;
    assert_eq!(b["details"]["checks"]["migrations"]["ok"], false);
    assert_eq!(b["details"]["checks"]["database"]["ok"], true);
    db.close().await;
    s.stop().await.unwrap();
}
