//! The HTTP surface shared by every Atlas module: the error shape and its
//! status table, extractors whose rejections use that shape, request context,
//! middleware, pagination cursors, and router/OpenAPI assembly.
//!
//! This crate knows nothing about modules, items or the database; business
//! modules hand it routers and it hands back one application.

pub mod admission;
pub mod context;
pub mod cursor;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod router;

pub use admission::WriteGate;
pub use context::{ClientIp, RequestContext};
pub use cursor::{page_limit, CursorCodec};
pub use error::{ApiError, ErrorBody};
pub use extract::{double_option, Json, Path, Query};
pub use middleware::KeyedRateLimit;
pub use router::{AppRouterBuilder, HttpSettings, ModuleRouter, API_PREFIX};

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
