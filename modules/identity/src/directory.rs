//! Services the identity module offers other modules.

use async_trait::async_trait;
use atlas_auth::{Credential, PersonalTokenStore, Principal};
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_http::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::db_err;

/// Public facts about a user.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct UserSummary {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
}

/// Look users up without reading identity's tables.
#[async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    async fn by_email(&self, email: &str) -> Result<Option<UserSummary>, ApiError>;
    async fn by_id(&self, id: &str) -> Result<Option<UserSummary>, ApiError>;
    /// The users among `ids` that exist, in no particular order.
    async fn by_ids(&self, ids: &[String]) -> Result<Vec<UserSummary>, ApiError>;
}

pub(crate) struct DbUserDirectory {
    db: Database,
}

impl DbUserDirectory {
    pub(crate) fn new(db: Database) -> Self {
        DbUserDirectory { db }
    }
}

fn summary(row: &sqlx::any::AnyRow) -> Result<UserSummary, sqlx::Error> {
    Ok(UserSummary {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
    })
}

#[async_trait]
impl UserDirectory for DbUserDirectory {
    async fn by_email(&self, email: &str) -> Result<Option<UserSummary>, ApiError> {
        let row = sqlx::query("SELECT id, email, display_name FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(self.db.reader())
            .await
            .map_err(db_err)?;
        row.as_ref().map(summary).transpose().map_err(db_err)
    }

    async fn by_id(&self, id: &str) -> Result<Option<UserSummary>, ApiError> {
        let row = sqlx::query("SELECT id, email, display_name FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.reader())
            .await
            .map_err(db_err)?;
        row.as_ref().map(summary).transpose().map_err(db_err)
    }

    async fn by_ids(&self, ids: &[String]) -> Result<Vec<UserSummary>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        // Chunks keep the parameter count well inside both backends' limits.
        for chunk in ids.chunks(200) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, email, display_name FROM users WHERE id IN ({})",
                params.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(self.db.reader()).await.map_err(db_err)? {
                out.push(summary(&row).map_err(db_err)?);
            }
        }
        Ok(out)
    }
}

/// Personal access tokens, for the `Principal` extractor.
pub(crate) struct DbPersonalTokens {
    db: Database,
}

impl DbPersonalTokens {
    pub(crate) fn new(db: Database) -> Self {
        DbPersonalTokens { db }
    }
}

#[async_trait]
impl PersonalTokenStore for DbPersonalTokens {
    async fn principal_for(&self, token_hash: &str) -> Result<Option<Principal>, ApiError> {
        let row = sqlx::query(
            "SELECT t.user_id, u.is_admin FROM personal_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(token_hash)
        .bind(atlas_db::now())
        .fetch_optional(self.db.reader())
        .await
        .map_err(db_err)?;
        row.map(|r| {
            Ok(Principal {
                user_id: r.try_get("user_id")?,
                is_admin: r.try_get::<i64, _>("is_admin")? != 0,
                via: Credential::PersonalToken,
            })
        })
        .transpose()
        .map_err(db_err)
    }
}
