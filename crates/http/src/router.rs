//! Assembles module routers, the operations endpoints and the middleware
//! stack into one axum `Router`, and module OpenAPI fragments into one document.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::admission::WriteGate;
use crate::error::ApiError;
use crate::middleware::{self, IpRateLimit};

/// The prefix every module route is mounted under.
pub const API_PREFIX: &str = "/api/v1";

/// A module's routes together with their OpenAPI paths.
pub type ModuleRouter = OpenApiRouter;

/// Settings of the HTTP surface (a section of Atlas's configuration).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub cors_allowed_origins: Vec<String>,
    /// Per-IP requests per second and burst; `None` disables the global limit.
    pub rate_limit: Option<(u32, u32)>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            body_limit_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            cors_allowed_origins: Vec::new(),
            rate_limit: Some((200, 400)),
        }
    }
}

/// Collects what modules contribute, then builds the application.
pub struct AppRouterBuilder {
    api: OpenApiRouter,
    root: Router,
    fallback: Option<Router>,
    doc: OpenApi,
    write_gate: Option<Arc<WriteGate>>,
}

impl AppRouterBuilder {
    pub fn new(title: &str, version: &str) -> Self {
        let doc = OpenApiBuilder::new()
            .info(InfoBuilder::new().title(title).version(version).build())
            .components(Some(
                ComponentsBuilder::new()
                    .security_scheme(
                        "bearer",
                        SecurityScheme::Http(
                            Http::builder()
                                .scheme(HttpAuthScheme::Bearer)
                                .bearer_format("JWT")
                                .build(),
                        ),
                    )
                    .schema_from::<crate::error::ErrorBody>()
                    .build(),
            ))
            .build();
        AppRouterBuilder {
            api: OpenApiRouter::new(),
            root: Router::new(),
            fallback: None,
            doc,
            write_gate: None,
        }
    }

    /// Mount a module's routes under `/api/v1`.
    pub fn api(mut self, routes: ModuleRouter) -> Self {
        self.api = self.api.merge(routes);
        self
    }

    /// Merge an extra OpenAPI fragment (schemas, tags) into the document.
    pub fn openapi(mut self, fragment: OpenApi) -> Self {
        self.doc.merge(fragment);
        self
    }

    /// Hold API writes at `gate` (see [`crate::admission`]).
    pub fn write_gate(mut self, gate: Arc<WriteGate>) -> Self {
        self.write_gate = Some(gate);
        self
    }

    /// Routes served at the root (operations endpoints, the UI).
    pub fn root(mut self, routes: Router) -> Self {
        self.root = self.root.merge(routes);
        self
    }

    /// Serve requests that match no route and lie outside the API prefix
    /// with `routes` (a web UI whose client-side routes are not known here).
    /// Paths under `/api/` keep the JSON 404. A later call replaces an
    /// earlier one.
    pub fn fallback(mut self, routes: Router) -> Self {
        self.fallback = Some(routes);
        self
    }

    /// The OpenAPI document as it will be served.
    pub fn build(self, settings: &HttpSettings) -> (Router, OpenApi) {
        let fallback = self.fallback;
        let (mut api_router, api_doc) = OpenApiRouter::new().nest(API_PREFIX, self.api).split_for_parts();
        if let Some(gate) = self.write_gate {
            api_router = api_router.layer(from_fn_with_state(gate, crate::admission::admit_writes));
        }
        let mut doc = self.doc;
        doc.merge(api_doc);
        let router = self
            .root
            .merge(api_router)
            .route(DOCUMENT_PATH, get(serve_document(&doc)))
            .merge(SwaggerUi::new("/docs").config(Config::from(DOCUMENT_PATH)))
            .fallback(move |req: Request| unmatched(fallback, req));
        (with_middleware(router, settings), doc)
    }
}

/// Where the OpenAPI document is served (and where `/docs` loads it from).
const DOCUMENT_PATH: &str = "/openapi.json";

/// A handler that serves `doc` as JSON. The document is serialized once,
/// here: the server keeps its bytes (about 66 kB), not the document's tree
/// of schemas, and a request copies nothing.
fn serve_document(doc: &OpenApi) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    // Serializing fails only for a map whose keys are not strings, which
    // an OpenAPI document does not have; the error is kept for the log.
    let json = serde_json::to_vec(doc).map(Bytes::from).map_err(Arc::new);
    move || {
        std::future::ready(match &json {
            Ok(bytes) => ([(CONTENT_TYPE, "application/json")], bytes.clone()).into_response(),
            Err(e) => ApiError::Internal(format!("serializing the OpenAPI document: {e}").into()).into_response(),
        })
    }
}

/// A request no route matched: the fallback router's, unless it is addressed
/// to the API (where a client expects the JSON 404, not a web page).
async fn unmatched(fallback: Option<Router>, req: Request) -> Response {
    match fallback {
        Some(routes) if !is_api_path(req.uri().path()) => match routes.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        _ => ApiError::NotFound("no route matches this path".into()).into_response(),
    }
}

/// `/api` and everything under `/api/` belong to the API, present or future versions.
fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Wrap a router in the standard middleware stack (see [`crate::middleware`]).
pub fn with_middleware(router: Router, settings: &HttpSettings) -> Router {
    let mut router = router
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(from_fn_with_state(settings.body_limit_bytes, middleware::body_limit))
        .layer(from_fn_with_state(settings.request_timeout, middleware::timeout));
    if let Some((per_second, burst)) = settings.rate_limit {
        router = router.layer(from_fn_with_state(
            IpRateLimit::new(per_second, burst),
            middleware::rate_limit,
        ));
    }
    router
        .layer(from_fn(middleware::panic_guard))
        .layer(from_fn(middleware::internal_error_request_id))
        .layer(from_fn(middleware::error_shape))
        .layer(cors_layer(&settings.cors_allowed_origins))
        .layer(from_fn(middleware::request_context))
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers(Any)
        .expose_headers([
            axum::http::header::ETAG,
            axum::http::header::LOCATION,
            axum::http::HeaderName::from_static("x-request-id"),
        ]);
    if origins.iter().any(|o| o == "*") {
        return layer.allow_origin(Any);
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    layer.allow_origin(AllowOrigin::list(list))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;

    use super::*;

    async fn get(router: &Router, path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_document_is_served_as_built_and_the_docs_page_loads_it() {
        let settings = HttpSettings {
            rate_limit: None,
            ..HttpSettings::default()
        };
        let (router, doc) = AppRouterBuilder::new("Test API", "1.2.3").build(&settings);
        let (status, content_type, body) = get(&router, "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let served: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(served, serde_json::to_value(&doc).unwrap());
        assert_eq!(served["info"]["version"], "1.2.3");
        assert!(served["components"]["securitySchemes"]["bearer"].is_object());

        let (status, _, page) = get(&router, "/docs/swagger-initializer.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("/openapi.json"), "{page}");
    }
}
