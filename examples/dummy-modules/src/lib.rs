//! Small modules used to test the kernel and the HTTP surface.
//!
//! - `alpha` (always built): a table, a consumer, and routes that echo a
//!   JSON body, panic, or answer slowly.
//! - `beta` (cargo feature `beta`): depends on `alpha`; a table, a consumer
//!   and a route. Building without the feature must leave all three out.

use std::time::Duration;

use async_trait::async_trait;
use atlas_http::{ApiError, ApiResult, Json, Query};
use atlas_kernel::{AppContext, Consumer, Module, ModuleError};
use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

static ALPHA_MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations/alpha");

#[derive(Default)]
pub struct Alpha;

atlas_kernel::register_module!(Alpha);

#[async_trait]
impl Module for Alpha {
    fn name(&self) -> &'static str {
        "alpha"
    }
    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir("alpha", &ALPHA_MIGRATIONS)
    }
    fn routes(&self, _ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        Some(
            OpenApiRouter::new()
                .routes(routes!(echo))
                .routes(routes!(explode))
                .routes(routes!(slow)),
        )
    }
    fn consumers(&self, _ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        vec![Arc::new(NamedConsumer("alpha-consumer"))]
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Echo {
    title: String,
}

/// Echo a JSON body; an empty title is a validation error.
#[utoipa::path(post, path = "/alpha/echo", request_body = Echo, responses((status = 200, body = Echo)))]
async fn echo(Json(body): Json<Echo>) -> ApiResult<Json<Echo>> {
    if body.title.is_empty() {
        return Err(ApiError::validation("title", "title must not be empty"));
    }
    Ok(Json(body))
}

/// Always panics (for the 500 contract test).
#[utoipa::path(get, path = "/alpha/panic", responses((status = 500)))]
async fn explode() -> &'static str {
    panic!("secret internal detail")
}

#[derive(Debug, Deserialize)]
struct SlowQuery {
    ms: u64,
}

/// Answers after `ms` milliseconds (for graceful-shutdown tests).
#[utoipa::path(get, path = "/alpha/slow", params(("ms" = u64, Query)), responses((status = 200)))]
async fn slow(Query(q): Query<SlowQuery>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    "done"
}

/// A consumer that does nothing but exist under a name.
pub struct NamedConsumer(pub &'static str);

#[async_trait]
impl Consumer for NamedConsumer {
    fn name(&self) -> &str {
        self.0
    }
    fn event_types(&self) -> &[&'static str] {
        &[]
    }
    async fn handle(&self, _envelope: &serde_json::Value) -> Result<(), ModuleError> {
        Ok(())
    }
}

#[cfg(feature = "beta")]
mod beta {
    use super::*;

    static BETA_MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations/beta");

    #[derive(Default)]
    pub struct Beta;

    atlas_kernel::register_module!(Beta);

    #[async_trait]
    impl Module for Beta {
        fn name(&self) -> &'static str {
            "beta"
        }
        fn depends_on(&self) -> &'static [&'static str] {
            &["alpha"]
        }
        fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
            atlas_db::migrations_from_dir("beta", &BETA_MIGRATIONS)
        }
        fn routes(&self, _ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
            Some(OpenApiRouter::new().routes(routes!(ping)))
        }
        fn consumers(&self, _ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
            vec![Arc::new(NamedConsumer("beta-consumer"))]
        }
    }

    /// Beta is here.
    #[utoipa::path(get, path = "/beta/ping", responses((status = 200)))]
    async fn ping() -> &'static str {
        "pong"
    }
}
