//! Users and tokens in the database.

use atlas_db::sqlx::{self, any::AnyRow, AnyConnection, Row};
use atlas_db::Database;
use atlas_http::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

/// A user as the API shows it (never with the password hash).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub is_admin: bool,
    pub created_at: String,
}

const USER_COLUMNS: &str = "id, email, display_name, is_admin, created_at";

impl User {
    pub(crate) fn from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
        Ok(User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            is_admin: row.try_get::<i64, _>("is_admin")? != 0,
            created_at: row.try_get("created_at")?,
        })
    }

    /// Event data: the public fields only.
    pub(crate) fn event_data(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "email": self.email,
            "display_name": self.display_name,
            "is_admin": self.is_admin,
            "created_at": self.created_at,
        })
    }
}

pub(crate) fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

/// Normalize and check an email: trimmed, lower-cased, one `@` with text on
/// both sides, no spaces, at most 254 characters.
pub(crate) fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(ApiError::validation("email", "email must be a valid address"))
    }
}

/// Passwords are 8–256 characters.
pub(crate) fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(8..=256).contains(&n) {
        return Err(ApiError::validation("password", "password must be 8 to 256 characters"));
    }
    Ok(())
}

pub(crate) fn check_display_name(name: Option<&str>) -> Result<Option<String>, ApiError> {
    match name.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.chars().count() > 100 => Err(ApiError::validation(
            "display_name",
            "display_name must be at most 100 characters",
        )),
        Some(n) => Ok(Some(n.to_string())),
    }
}

pub(crate) async fn insert_user(
    conn: &mut AnyConnection,
    email: &str,
    display_name: Option<&str>,
    password_hash: &str,
    is_admin: bool,
) -> Result<User, ApiError> {
    let now = atlas_db::now();
    let id = uuid::Uuid::now_v7().to_string();
    let result = sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash, is_admin, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(email)
    .bind(display_name)
    .bind(password_hash)
    .bind(i64::from(is_admin))
    .bind(&now)
    .execute(&mut *conn)
    .await;
    match result {
        Ok(_) => Ok(User {
            id,
            email: email.into(),
            display_name: display_name.map(str::to_string),
            is_admin,
            created_at: now,
        }),
        Err(e) if atlas_db::unique_violation(&e).is_some() => Err(ApiError::Conflict {
            message: "a user with this email already exists".into(),
            details: [("field".to_string(), serde_json::Value::from("email"))]
                .into_iter()
                .collect(),
        }),
        Err(e) => Err(db_err(e)),
    }
}

pub(crate) async fn user_by_id(db: &Database, id: &str) -> Result<Option<User>, ApiError> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.reader())
        .await
        .map_err(db_err)?;
    row.as_ref().map(User::from_row).transpose().map_err(db_err)
}

/// The user and their password hash, for sign-in.
pub(crate) async fn credentials_by_email(db: &Database, email: &str) -> Result<Option<(User, String)>, ApiError> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(db.reader())
    .await
    .map_err(db_err)?;
    row.map(|r| Ok((User::from_row(&r)?, r.try_get("password_hash")?)))
        .transpose()
        .map_err(db_err)
}

/// Store a new refresh token for `family_id` and return the token itself.
pub(crate) async fn insert_refresh_token(
    conn: &mut AnyConnection,
    user_id: &str,
    family_id: &str,
    ttl_days: u64,
) -> Result<String, ApiError> {
    let token = atlas_auth::new_opaque_token(atlas_auth::token::REFRESH_TOKEN_PREFIX);
    let now = chrono::Utc::now();
    sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(user_id)
    .bind(family_id)
    .bind(atlas_auth::hash_token(&token))
    .bind(atlas_db::format_timestamp(now))
    .bind(atlas_db::format_timestamp(now + chrono::Duration::days(ttl_days as i64)))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(token)
}

/// A stored refresh token.
pub(crate) struct RefreshRecord {
    pub id: String,
    pub user_id: String,
    pub family_id: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub revoked_at: Option<String>,
}

pub(crate) async fn refresh_by_token(conn: &mut AnyConnection, token: &str) -> Result<Option<RefreshRecord>, ApiError> {
    let row = sqlx::query(
        "SELECT id, user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(atlas_auth::hash_token(token))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    row.map(|r| {
        Ok(RefreshRecord {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            family_id: r.try_get("family_id")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    })
    .transpose()
    .map_err(db_err)
}

pub(crate) async fn revoke_family(conn: &mut AnyConnection, family_id: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
        .bind(atlas_db::now())
        .bind(family_id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

pub(crate) async fn revoke_all_refresh_tokens(conn: &mut AnyConnection, user_id: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(atlas_db::now())
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Mark a refresh token used, atomically: `false` when it was already used
/// or revoked (a concurrent refresh won, or this is a replay).
pub(crate) async fn mark_refresh_used(conn: &mut AnyConnection, id: &str) -> Result<bool, ApiError> {
    let done =
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL")
            .bind(atlas_db::now())
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}
