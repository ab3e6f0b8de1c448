//! Extractors whose rejections are `ApiError`s, so malformed input gets the
//! same error shape as everything else.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

/// JSON body extractor and response. Rejections map to 400 (syntax), 413
/// (too large), 415 (wrong content type) and 422 (well-formed but wrong shape).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the path, e.g. "title: invalid type ...".
            let text = e.body_text();
            let field = field_from_serde_message(&text);
            ApiError::Validation {
                field,
                message: text
                    .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
                    .to_string(),
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!(
            "malformed JSON: {}",
            e.body_text()
                .trim_start_matches("Failed to parse the request body as JSON: ")
        )),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
        }
        JsonRejection::BytesRejection(e) => {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is larger than the configured limit".into())
            } else {
                ApiError::BadRequest(e.body_text())
            }
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Best effort: serde_path_to_error style messages start with `path: `, and
/// missing-field messages name the field in backticks.
fn field_from_serde_message(text: &str) -> String {
    let text = text.trim_start_matches("Failed to deserialize the JSON body into the target type: ");
    if let Some(start) = text.find("missing field `") {
        let rest = &text[start + "missing field `".len()..];
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    if let Some(start) = text.find("unknown field `") {
        let rest = &text[start + "unknown field `".len()..];
        if let Some(end) = rest.find('`') {
            return rest[..end].to_string();
        }
    }
    match text.split_once(": ") {
        Some((path, _)) if !path.contains(' ') && path != "." => path.to_string(),
        _ => "body".to_string(),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query-string extractor whose rejection is a 400 `bad_request`.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::BadRequest(
                e.body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
                    .to_string(),
            )),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Path extractor: a path segment that does not parse (e.g. a malformed id)
/// names nothing that exists, so it is a 404.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::NotFound("no resource has that id".into()))
            }
            Err(e) => Err(ApiError::internal(std::io::Error::other(e.body_text()))),
        }
    }
}

/// For PATCH bodies: tells "absent" (`None`) from "explicitly null"
/// (`Some(None)`). Use with `#[serde(default, deserialize_with = "double_option")]`.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::field_from_serde_message;

    #[test]
    fn field_is_found_in_serde_messages() {
        assert_eq!(
            field_from_serde_message("missing field `title` at line 1 column 2"),
            "title"
        );
        assert_eq!(
            field_from_serde_message("tags: invalid type: integer `3`, expected a sequence"),
            "tags"
        );
        assert_eq!(field_from_serde_message("invalid type: integer"), "body");
    }
}
