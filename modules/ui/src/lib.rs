//! The web UI: the React app built into `web/dist` (committed, so a build
//! needs no Node), embedded in the binary and served at the root for every
//! path outside `/api/` that no other route takes.
//!
//! `build.rs` gzips every file at build time and only the compressed bytes
//! are embedded; they are sent as they are with `Content-Encoding: gzip`.
//! A request whose `Accept-Encoding` refuses gzip gets 406 (every browser
//! accepts it, and a request without the header accepts any coding).
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

/// One file of the build, as `build.rs` embedded it.
struct Asset {
    /// Relative to `web/dist`, `/`-separated.
    path: &'static str,
    content_type: &'static str,
    /// Quoted; from the CRC-32 and length of the uncompressed file.
    etag: &'static str,
    gzip: &'static [u8],
}

/// Every file of `web/dist`, sorted by path.
static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .and_then(|i| ASSETS.get(i))
}

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
    let file = match asset(path).filter(|_| !path.is_empty()) {
        Some(file) => file,
        None if path.starts_with(HASHED_PREFIX) => {
            return ApiError::NotFound("no such asset".into()).into_response();
        }
        None => match asset(INDEX) {
            Some(file) => file,
            None => return ApiError::NotFound("this build has no web UI".into()).into_response(),
        },
    };
    if !accepts_gzip(&headers) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "the web UI is only available gzip-encoded; send Accept-Encoding: gzip",
        )
            .into_response();
    }
    respond(file, &headers, method == Method::HEAD)
}

fn respond(file: &'static Asset, request: &HeaderMap, head_only: bool) -> Response {
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == file.etag));
    let cache = if file.path.starts_with(HASHED_PREFIX) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if head_only {
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, Body::from(file.gzip))
    };
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    out.insert(header::ETAG, HeaderValue::from_static(file.etag));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if status == StatusCode::OK {
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    for (name, value) in SECURITY_HEADERS {
        out.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): absent means
/// any coding; otherwise `gzip` or `*` must be listed without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut listed = false;
    let mut gzip: Option<bool> = None;
    let mut any: Option<bool> = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            listed = true;
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(!refused),
                "*" => any = Some(!refused),
                _ => {}
            }
        }
    }
    !listed || gzip.or(any).unwrap_or(false)
}
