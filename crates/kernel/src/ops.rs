//! Operations endpoints at the root: `/health`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::context::AppContext;

pub fn router(ctx: &AppContext) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(ctx.clone())
}

/// The process is alive.
async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Every readiness check passes → 200; otherwise 503 in the error shape with
/// each check's result under `details.checks`.
async fn ready(State(ctx): State<AppContext>) -> Response {
    let checks = ctx.readiness_checks();
    let results = futures_join(
        checks
            .iter()
            .map(|c| async move { (c.name().to_string(), c.check().await) }),
    )
    .await;
    let mut report = Map::new();
    let mut ok = true;
    for (name, result) in results {
        let entry = match result {
            Ok(details) => json!({"ok": true, "details": details}),
            Err(reason) => {
                ok = false;
                json!({"ok": false, "error": reason})
            }
        };
        report.insert(name, entry);
    }
    if ok {
        axum::Json(json!({"status": "ready", "checks": report})).into_response()
    } else {
        let mut details = Map::new();
        details.insert("checks".into(), Value::Object(report));
        atlas_http::error::error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "not ready", details)
    }
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

async fn metrics(State(ctx): State<AppContext>) -> Response {
    ctx.db().record_pool_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        atlas_telemetry::render_metrics(),
    )
        .into_response()
}
