//! The middleware stack every Atlas response passes through.
//!
//! Order, outermost first: request context (id, trace, span, metrics) →
//! error shape → panic guard → rate limit → timeout → body limit → routes.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::context::RequestContext;
use crate::error::{code_for_status, error_response, ApiError};

/// Assigns the request id and trace id, opens the request span, echoes
/// `x-request-id`, and records the HTTP metrics.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let ctx = RequestContext::from_headers(req.headers());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // Exported under the name and attributes of OpenTelemetry's HTTP server
    // conventions: "{method} {route}", kind server, the response status.
    // (Field values are only evaluated when the span is enabled.)
    let span = tracing::info_span!(
        "http.request",
        request_id = %ctx.request_id,
        trace_id = %ctx.trace_id,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.name = %if route == "unmatched" {
            method.to_string()
        } else {
            format!("{method} {route}")
        },
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    atlas_telemetry::trace::continue_trace(&span, &ctx.trace_id, ctx.parent_span_id.as_deref());
    let request_id = ctx.request_id.clone();
    req.extensions_mut().insert(ctx);
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("atlas_http_requests_total", &labels).increment(1);
    metrics::histogram!("atlas_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "request finished"
        )
    });
    response
}

/// Rewrites any non-2xx response that is not already in the error shape
/// (e.g. axum's own 405, or a layer's plain-text error) into it, so clients
/// only ever parse one error format.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no route matches this path",
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this path",
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the configured limit",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type",
        s if s.is_server_error() => "the server could not complete the request",
        _ => status.canonical_reason().unwrap_or("request failed"),
    };
    let mut rewritten = error_response(status, code_for_status(status), message, Map::new());
    for (name, value) in response.headers() {
        if name == header::ALLOW || name == header::RETRY_AFTER {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// Turns a panic in a handler into a 500 `internal` that names the request id
/// and nothing else.
pub async fn panic_guard(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.request_id.clone())
        .unwrap_or_default();
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "handler panicked");
            let mut details = Map::new();
            details.insert("request_id".into(), Value::String(request_id));
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error", details)
        }
    }
}

/// Adds the request id to every 500 body produced by `ApiError::Internal`.
pub async fn internal_error_request_id(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestContext>().map(|c| c.request_id.clone());
    let response = next.run(req).await;
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let Some(request_id) = request_id else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (parts.status, parts.headers).into_response();
    };
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::Object(Map::new()));
    if let Some(obj) = value.as_object_mut() {
        let details = obj.entry("details").or_insert_with(|| Value::Object(Map::new()));
        if let Some(d) = details.as_object_mut() {
            d.entry("request_id").or_insert(Value::String(request_id));
        }
    }
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let mut response = Response::from_parts(parts, Body::from(body));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// Fails the request with 503 `unavailable` when the handler takes longer
/// than the configured timeout.
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::Unavailable(format!("the request took longer than {} ms", limit.as_millis())).into_response()
        }
    }
}

/// Rejects a declared `Content-Length` over the limit before reading it; the
/// `DefaultBodyLimit` layer covers bodies without one.
pub async fn body_limit(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > limit as u64) {
        // Read (and drop) a moderately oversized body before answering, so
        // the client is not cut off mid-upload and does see the 413; past
        // 8× the limit, answer at once and let the connection close.
        if len <= 8 * limit as u64 {
            use futures::StreamExt;
            let mut stream = req.into_body().into_data_stream();
            while let Some(Ok(_)) = stream.next().await {}
        }
        return ApiError::PayloadTooLarge(format!("request body is larger than the limit of {limit} bytes"))
            .into_response();
    }
    next.run(req).await
}

/// A token bucket per key (client IP, account, …).
pub struct KeyedRateLimit<K: Hash + Eq + Clone> {
    limiter: Arc<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Clone for KeyedRateLimit<K> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            limiter: self.limiter.clone(),
        }
    }
}

/// The global limit is keyed by client IP.
pub type IpRateLimit = KeyedRateLimit<IpAddr>;

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    /// `per_second` sustained with bursts of `burst`; zero values are raised to one.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Self::with_quota(Quota::per_second(rate).allow_burst(burst))
    }

    /// `n` per minute, all of which may be used at once.
    pub fn per_minute(n: u32) -> Self {
        Self::with_quota(Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)))
    }

    fn with_quota(quota: Quota) -> Self {
        KeyedRateLimit {
            limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// `Ok` when the key may proceed, else 429 with the seconds to wait.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.limiter.len() > 50_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            }
        })
    }
}

/// Global per-IP rate limit → 429 `rate_limited` with `Retry-After`.
pub async fn rate_limit(State(limit): State<IpRateLimit>, req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    if let Err(e) = limit.check(&client_ip(&req)) {
        return e.into_response();
    }
    next.run(req).await
}

/// The peer address of the connection (unspecified when served without
/// connect info, e.g. in `oneshot` tests).
pub fn client_ip(req: &Request) -> IpAddr {
    crate::context::client_ip_of(req.extensions())
}
