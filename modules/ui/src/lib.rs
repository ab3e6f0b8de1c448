//! The web UI: the React app built into `web/dist` (committed, so a build
//! needs no Node), embedded in the binary and served at the root for every
//! path outside `/api/` that no other route takes.
//!
//! - `/assets/*` are content-hashed by the bundler: cached for a year,
//!   `immutable`. A missing one is a 404, never the page, so a stale
//!   reference fails loudly instead of parsing HTML as a script.
//! - Every other path without a file of its own gets `index.html` (the app
//!   routes on the client), with `no-cache` so a new release is picked up
//!   at the next load; its `ETag` makes that revalidation cheap.
//! - Responses carry the security headers of a page that runs no inline
//!   script and may not be framed (see [`SECURITY_HEADERS`]).
//!
//! The module owns no tables, routes under `/api/v1` or consumers; it only
//! answers what the kernel's fallback hands it.

use async_trait::async_trait;
use atlas_http::ApiError;
use atlas_kernel::{AppContext, Module};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rust_embed::{EmbeddedFile, RustEmbed};

/// The bundler's output, embedded at compile time.
#[derive(RustEmbed)]
#[folder = "../../web/dist"]
struct Dist;

/// The page every client-side route is served.
const INDEX: &str = "index.html";

/// Where the bundler puts content-hashed files.
const HASHED_PREFIX: &str = "assets/";

/// Sent with every UI response. The policy allows scripts, styles, images
/// and API calls from this origin only; `frame-ancestors 'none'` and
/// `X-Frame-Options` (for older browsers) refuse framing.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

#[derive(Default)]
pub struct UiModule;

atlas_kernel::register_module!(UiModule);

#[async_trait]
impl Module for UiModule {
    fn name(&self) -> &'static str {
        "ui"
    }

    fn fallback(&self, _ctx: &AppContext) -> Option<Router> {
        Some(router())
    }
}

/// The UI's router: every path, served from the embedded build.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::NotFound("no route matches this path".into()).into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let (name, file) = match Dist::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path, file),
        None if path.starts_with(HASHED_PREFIX) => {
            return ApiError::NotFound("no such asset".into()).into_response();
        }
        None => match Dist::get(INDEX) {
            Some(file) => (INDEX, file),
            None => return ApiError::NotFound("this build has no web UI".into()).into_response(),
        },
    };
    respond(name, file, &headers, method == Method::HEAD)
}

fn respond(name: &str, file: EmbeddedFile, request: &HeaderMap, head_only: bool) -> Response {
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let cache = if name.starts_with(HASHED_PREFIX) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if head_only {
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, Body::from(file.data.into_owned()))
    };
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&content_type(file.metadata.mimetype())) {
        out.insert(header::CONTENT_TYPE, v);
    }
    for (name, value) in SECURITY_HEADERS {
        out.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

/// The bundler writes UTF-8; say so for text, so no browser guesses.
fn content_type(mime: &str) -> String {
    if mime.starts_with("text/") || mime == "image/svg+xml" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
