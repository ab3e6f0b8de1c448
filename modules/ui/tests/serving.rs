//! The embedded UI as the application serves it: through the kernel's
//! router builder, beside the API.

use atlas_http::{AppRouterBuilder, HttpSettings};
use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use std::io::Read;
use tower::ServiceExt;

fn app() -> Router {
    AppRouterBuilder::new("Atlas", "test")
        .fallback(atlas_ui::router())
        .build(&HttpSettings::default())
        .0
}

async fn send(method: Method, uri: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept-encoding")) {
        req = req.header(header::ACCEPT_ENCODING, "gzip, deflate, br");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
}

/// The body, gunzipped when the response says it is gzip-encoded.
async fn text(response: Response) -> String {
    let gzipped = header(&response, "content-encoding") == "gzip";
    let bytes = to_bytes(response.into_body(), 1 << 24).await.unwrap().to_vec();
    if !gzipped {
        return String::from_utf8(bytes).unwrap();
    }
    let mut out = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn the_page_is_served_at_the_root_and_for_client_side_routes() {
    for path in ["/", "/c/0192f0c4-6a4e-7c1d-9d6e-6d7f7f1a2b3c", "/search?q=rust"] {
        let response = send(Method::GET, path, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&response, "cache-control"), "no-cache");
        assert!(text(response).await.contains("<div id=\"root\">"), "{path}");
    }
}

#[tokio::test]
async fn ui_responses_carry_the_security_headers() {
    let response = send(Method::GET, "/", &[]).await;
    let csp = header(&response, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "referrer-policy"), "no-referrer");
    assert_eq!(header(&response, "x-frame-options"), "DENY");
}

#[tokio::test]
async fn hashed_assets_are_cached_for_good_and_a_missing_one_is_a_404() {
    let page = text(send(Method::GET, "/", &[]).await).await;
    let start = page.find("/assets/").expect("index.html references an asset");
    let asset = &page[start..start + page[start..].find('"').unwrap()];
    let response = send(Method::GET, asset, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control"),
        "public, max-age=31536000, immutable"
    );

    let missing = send(Method::GET, "/assets/index-00000000.js", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(header(&missing, "content-type").starts_with("application/json"));
}

#[tokio::test]
async fn the_api_keeps_its_json_404() {
    for path in ["/api/v1/nothing-here", "/api", "/api/v2/items"] {
        let response = send(Method::GET, path, &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(text(response).await.contains("\"code\":\"not_found\""), "{path}");
    }
    let post = send(Method::POST, "/somewhere", &[]).await;
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_revalidated_page_is_not_sent_again() {
    let first = send(Method::GET, "/", &[]).await;
    let etag = header(&first, "etag").to_string();
    assert!(!etag.is_empty());
    let again = send(Method::GET, "/", &[(header::IF_NONE_MATCH.as_str(), &etag)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(text(again).await.is_empty());
}

#[tokio::test]
async fn files_go_out_gzipped_unless_the_client_refuses_gzip() {
    let response = send(Method::GET, "/", &[]).await;
    assert_eq!(header(&response, "content-encoding"), "gzip");
    assert_eq!(header(&response, "vary"), "accept-encoding");

    let no_header = app()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        no_header.status(),
        StatusCode::OK,
        "no Accept-Encoding means any coding"
    );
    assert_eq!(header(&no_header, "content-encoding"), "gzip");

    for refusal in ["identity", "gzip;q=0, identity", "br", "*;q=0"] {
        let response = send(Method::GET, "/", &[("accept-encoding", refusal)]).await;
        assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE, "{refusal}");
    }
    for acceptance in ["*", "br, gzip;q=0.5", "GZIP", "x-gzip"] {
        let response = send(Method::GET, "/", &[("accept-encoding", acceptance)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{acceptance}");
    }
}

#[tokio::test]
async fn a_head_request_gets_the_headers_only() {
    let response = send(Method::HEAD, "/", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "no-cache");
    assert!(to_bytes(response.into_body(), 1 << 20).await.unwrap().is_empty());
}
