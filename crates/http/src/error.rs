//! The one error type every Atlas HTTP handler returns, and the table that maps
//! each variant to its status code and stable `code` string.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The JSON body of every non-2xx response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({"code": "validation_failed", "message": "title must not be empty", "details": {"field": "title"}}))]
pub struct ErrorBody {
    /// Stable, snake_case machine-readable code.
    pub code: String,
    /// Human-readable explanation, safe to show to users.
    pub message: String,
    /// Extra structured context; always an object, possibly empty.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

/// Errors a handler can return. Each variant's doc names its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `bad_request`: malformed JSON, bad cursor, bad query string.
    #[error("{0}")]
    BadRequest(String),
    /// 401 `unauthorized`: missing, invalid or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: a member without the permission.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`: also used for collections the caller may not see.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `conflict`: uniqueness, last owner, idempotency key reuse.
    #[error("{message}")]
    Conflict {
        message: String,
        details: Map<String, Value>,
    },
    /// 412 `precondition_failed`: `If-Match` version mismatch.
    #[error("{message}")]
    PreconditionFailed {
        message: String,
        details: Map<String, Value>,
    },
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `validation_failed`, naming the offending field.
    #[error("{message}")]
    Validation { field: String, message: String },
    /// 422 `validation_failed` with structured details, such as every error
    /// of a submitted document with its line and column.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Map<String, Value>,
    },
    /// 429 `rate_limited`, with `Retry-After` in seconds.
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 500 `internal`: the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 503 `unavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `unavailable` for a while, with `Retry-After` in seconds.
    #[error("{message}")]
    Overloaded { message: String, retry_after_secs: u64 },
}

/// Whether `err` (or a cause of it) is SQLite's `SQLITE_BUSY` ("database is
/// locked") or `SQLITE_LOCKED` ("database table is locked"), whose texts
/// SQLite keeps stable.
fn is_database_busy(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if text.contains("database is locked") || text.contains("database table is locked") {
            return true;
        }
        next = e.source();
    }
    false
}

/// One row of the error table: status and code of a variant.
pub struct ErrorKind {
    pub status: StatusCode,
    pub code: &'static str,
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict {
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// 500 `internal` — except when the cause is SQLite refusing a write
    /// because another process holds the database's lock past the busy
    /// timeout (an `atlas` command writing beside the server): that passes,
    /// so it is 503 `unavailable` with `Retry-After`.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        if is_database_busy(&err) {
            tracing::warn!(error = %err, "the database stayed locked past its busy timeout");
            return ApiError::Overloaded {
                message: "the database is busy; retry shortly".into(),
                retry_after_secs: 1,
            };
        }
        ApiError::Internal(Box::new(err))
    }

    /// The error table: the single place that decides status and code.
    pub fn kind(&self) -> ErrorKind {
        let (status, code) = match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::PreconditionFailed { .. } => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Validation { .. } | ApiError::Invalid { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ErrorKind { status, code }
    }

    /// The response body for this error.
    pub fn body(&self) -> ErrorBody {
        let mut details = Map::new();
        match self {
            ApiError::Validation { field, .. } => {
                details.insert("field".into(), Value::String(field.clone()));
            }
            ApiError::Conflict { details: d, .. }
            | ApiError::PreconditionFailed { details: d, .. }
            | ApiError::Invalid { details: d, .. } => {
                details = d.clone();
            }
            ApiError::RateLimited { retry_after_secs } | ApiError::Overloaded { retry_after_secs, .. } => {
                details.insert("retry_after_secs".into(), Value::from(*retry_after_secs));
            }
            _ => {}
        }
        ErrorBody {
            code: self.kind().code.to_string(),
            message: self.to_string(),
            details,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        if let ApiError::Internal(source) = &self {
            // The cause goes to the log (inside the request span, so it carries
            // the request id); the client only learns the request id.
            tracing::error!(error = %source, "internal error");
        }
        let body = self.body();
        let mut response = (kind.status, axum::Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } | ApiError::Overloaded { retry_after_secs, .. } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Build a complete error response from parts (used by middleware that
/// rewrites responses produced outside handlers).
pub fn error_response(status: StatusCode, code: &str, message: &str, details: Map<String, Value>) -> Response {
    let body = ErrorBody {
        code: code.to_string(),
        message: message.to_string(),
        details,
    };
    (status, axum::Json(body)).into_response()
}

/// The canonical code for a status, for responses not produced by `ApiError`.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        412 => "precondition_failed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_failed",
        429 => "rate_limited",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}
