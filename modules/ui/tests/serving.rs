//! The embedded UI as the application serves it: through the kernel's
//! router builder, beside the API.

use atlas_http::{AppRouterBuilder, HttpSettings};
use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use tower::ServiceExt;

fn app() -> Router {
    AppRouterBuilder::new("Atlas", "test")
        .fallback(atlas_ui::router())
        .build(&HttpSettings::default())
        .0
}

async fn send(method: Method, uri: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
}

async fn text(response: Response) -> String {
    String::from_utf8(to_bytes(response.into_body(), 1 << 24).await.unwrap().to_vec()).unwrap()
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
