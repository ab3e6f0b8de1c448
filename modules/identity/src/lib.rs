//! Identity: users, sign-in with rotating refresh tokens, access tokens and
//! personal access tokens (`/api/v1/auth/*`).
//!
//! Provides to other modules: the [`Authenticator`](atlas_auth::Authenticator)
//! behind the `Principal` extractor, and a [`UserDirectory`] to look users up
//! without touching this module's tables.

mod admin;
mod directory;
mod routes;
mod store;

use std::sync::Arc;

use atlas_auth::Authenticator;
use atlas_kernel::{AppContext, Module, ModuleError};
use include_dir::{include_dir, Dir};

pub use admin::UserAdmin;
pub use directory::{UserDirectory, UserSummary};
pub use store::User;

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

#[derive(Default)]
pub struct IdentityModule;

atlas_kernel::register_module!(IdentityModule);

#[async_trait::async_trait]
impl Module for IdentityModule {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn depends_on(&self) -> &'static [&'static str] {
        &["events"]
    }

    fn migrations(&self) -> Result<Vec<atlas_db::Migration>, atlas_db::MigrationError> {
        atlas_db::migrations_from_dir(self.name(), &MIGRATIONS)
    }

    async fn init(&self, ctx: &AppContext) -> Result<(), ModuleError> {
        let state = routes::IdentityState::new(ctx)?;
        ctx.provide::<Authenticator>(state.authenticator.clone());
        ctx.provide::<dyn UserDirectory>(Arc::new(directory::DbUserDirectory::new(ctx.db().clone())));
        ctx.provide::<routes::IdentityState>(Arc::new(state));
        Ok(())
    }

    fn routes(&self, ctx: &AppContext) -> Option<atlas_http::ModuleRouter> {
        let state = ctx.get::<routes::IdentityState>()?;
        Some(routes::router((*state).clone()))
    }
}
