//! User administration for the CLI (`atlas user create|reset-password`).

use atlas_events::EventContext;
use atlas_http::{ApiError, RequestContext};
use atlas_kernel::AppContext;

use crate::routes::IdentityState;
use crate::store::{self, db_err, User};

/// Creates users and resets passwords outside HTTP.
pub struct UserAdmin {
    ctx: AppContext,
    state: std::sync::Arc<IdentityState>,
}

impl UserAdmin {
    /// Needs an initialized application with the identity module.
    pub fn new(ctx: &AppContext) -> Result<Self, ApiError> {
        let state = ctx
            .get::<IdentityState>()
            .ok_or_else(|| ApiError::Unavailable("the identity module is not initialized".into()))?;
        Ok(UserAdmin {
            ctx: ctx.clone(),
            state,
        })
    }

    /// Create a user (emits `UserRegistered` with no actor).
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        display_name: Option<&str>,
        is_admin: bool,
    ) -> Result<User, ApiError> {
        let email = store::normalize_email(email)?;
        store::check_password(password)?;
        let display_name = store::check_display_name(display_name)?;
        let hash = self
            .state
            .hasher()
            .hash_async(password.to_string())
            .await
            .map_err(ApiError::internal)?;
        let mut tx = self.ctx.db().begin().await.map_err(db_err)?;
        let user = store::insert_user(&mut tx, &email, display_name.as_deref(), &hash, is_admin).await?;
        let ev = EventContext::from_request(None, &RequestContext::detached());
        crate::routes::emit_registered(&mut tx, &ev, &user).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(user)
    }

    /// Set a new password and revoke every refresh token of the user.
    pub async fn reset_password(&self, email: &str, password: &str) -> Result<(), ApiError> {
        let email = store::normalize_email(email)?;
        store::check_password(password)?;
        let hash = self
            .state
            .hasher()
            .hash_async(password.to_string())
            .await
            .map_err(ApiError::internal)?;
        let mut tx = self.ctx.db().begin().await.map_err(db_err)?;
        let done =
            atlas_db::sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE email = $3 RETURNING id")
                .bind(&hash)
                .bind(atlas_db::now())
                .bind(&email)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let Some(row) = done else {
            return Err(ApiError::NotFound(format!("no user with email {email}")));
        };
        let id: String = atlas_db::sqlx::Row::try_get(&row, 0).map_err(db_err)?;
        store::revoke_all_refresh_tokens(&mut tx, &id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }
}
