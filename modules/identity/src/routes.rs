//! `/api/v1/auth/*` handlers.

use std::sync::Arc;

use atlas_auth::{Authenticator, JwtCodec, PasswordHasher, Principal};
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::{EntityRef, EventContext};
use atlas_http::{
    page_limit, ApiError, ApiResult, ClientIp, CursorCodec, ErrorBody, Json, KeyedRateLimit, Path, Query,
    RequestContext,
};
use atlas_kernel::AppContext;
use axum::extract::{FromRef, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{self, db_err, User};

/// Everything the identity handlers need.
#[derive(Clone)]
pub struct IdentityState {
    db: Database,
    hasher: PasswordHasher,
    jwt: JwtCodec,
    pub(crate) authenticator: Arc<Authenticator>,
    cursors: CursorCodec,
    refresh_ttl_days: u64,
    per_ip: KeyedRateLimit<std::net::IpAddr>,
    per_account: KeyedRateLimit<String>,
}

impl FromRef<IdentityState> for Arc<Authenticator> {
    fn from_ref(s: &IdentityState) -> Self {
        s.authenticator.clone()
    }
}

impl IdentityState {
    pub fn new(ctx: &AppContext) -> Result<Self, atlas_kernel::ModuleError> {
        let auth = &ctx.settings().auth;
        let jwt = atlas_auth::jwt_from_settings(auth)?;
        let store: Arc<dyn atlas_auth::PersonalTokenStore> =
            Arc::new(crate::directory::DbPersonalTokens::new(ctx.db().clone()));
        Ok(IdentityState {
            db: ctx.db().clone(),
            hasher: atlas_auth::hasher_from_settings(auth)?,
            authenticator: Arc::new(Authenticator::new(jwt.clone(), Some(store))),
            jwt,
            cursors: CursorCodec::new(ctx.server_secret()),
            refresh_ttl_days: auth.refresh_token_ttl_days,
            per_ip: KeyedRateLimit::per_minute(auth.login_per_ip_per_minute),
            per_account: KeyedRateLimit::per_minute(auth.login_per_account_per_minute),
        })
    }

    pub(crate) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }
}

pub fn router(state: IdentityState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(delete_token))
        .with_state(state)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "ada@example.org")]
    email: String,
    /// 8–256 characters.
    #[schema(example = "correct horse battery")]
    password: String,
    #[schema(example = "Ada")]
    display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// Tokens for a signed-in session.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    user: User,
    /// JWT for `Authorization: Bearer …`.
    access_token: String,
    /// Opaque; exchange at `/auth/refresh`. Single use: each refresh rotates it.
    refresh_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
}

impl IdentityState {
    fn auth_response(&self, user: User, refresh_token: String) -> ApiResult<AuthResponse> {
        let access_token = self.jwt.issue(&user.id, user.is_admin).map_err(ApiError::internal)?;
        Ok(AuthResponse {
            user,
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.jwt.ttl_secs(),
        })
    }
}

/// Create an account and sign in.
#[utoipa::path(post, path = "/auth/register", tag = "identity", request_body = RegisterRequest,
    responses(
        (status = 201, description = "registered and signed in", body = AuthResponse),
        (status = 409, description = "email already registered", body = ErrorBody),
        (status = 422, description = "invalid email, password or display name", body = ErrorBody),
        (status = 429, description = "too many attempts from this address", body = ErrorBody),
    ))]
async fn register(
    State(s): State<IdentityState>,
    ClientIp(ip): ClientIp,
    req_ctx: RequestContext,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<Response> {
    s.per_ip.check(&ip)?;
    let email = store::normalize_email(&body.email)?;
    store::check_password(&body.password)?;
    let display_name = store::check_display_name(body.display_name.as_deref())?;
    let hash = s.hasher.hash_async(body.password).await.map_err(ApiError::internal)?;
    let mut tx = s.db.begin().await.map_err(db_err)?;
    let user = store::insert_user(&mut tx, &email, display_name.as_deref(), &hash, false).await?;
    let ev = EventContext::from_request(Some(user.id.clone()), &req_ctx);
    emit_registered(&mut tx, &ev, &user).await?;
    let refresh =
        store::insert_refresh_token(&mut tx, &user.id, &uuid::Uuid::now_v7().to_string(), s.refresh_ttl_days).await?;
    tx.commit().await.map_err(db_err)?;
    tracing::info!(user_id = %user.id, "user registered");
    let body = s.auth_response(user, refresh)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, "/api/v1/auth/me".to_string())],
        Json(body),
    )
        .into_response())
}

pub(crate) async fn emit_registered(conn: &mut sqlx::AnyConnection, ev: &EventContext, user: &User) -> ApiResult<()> {
    let envelope = ev.envelope(
        "UserRegistered",
        EntityRef {
            entity_type: "user".into(),
            id: user.id.clone(),
            collection_id: None,
        },
        user.event_data(),
    );
    atlas_events::append(conn, &envelope)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/auth/login", tag = "identity", request_body = LoginRequest,
    responses(
        (status = 200, description = "signed in", body = AuthResponse),
        (status = 401, description = "wrong email or password (the same answer for both)", body = ErrorBody),
        (status = 429, description = "too many attempts for this address or account", body = ErrorBody),
    ))]
async fn login(
    State(s): State<IdentityState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<AuthResponse>> {
    s.per_ip.check(&ip)?;
    let email = body.email.trim().to_lowercase();
    s.per_account.check(&email)?;
    let found = store::credentials_by_email(&s.db, &email).await?;
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    // Verify even when the account does not exist (against a decoy hash) so
    // both failures take the same time.
    let ok = s.hasher.verify_async(body.password, hash).await;
    let Some(user) = user.filter(|_| ok) else {
        return Err(ApiError::Unauthorized("invalid email or password".into()));
    };
    let mut tx = s.db.begin().await.map_err(db_err)?;
    let refresh =
        store::insert_refresh_token(&mut tx, &user.id, &uuid::Uuid::now_v7().to_string(), s.refresh_ttl_days).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(Json(s.auth_response(user, refresh)?))
}

/// Exchange a refresh token for new tokens. The presented token is used up;
/// presenting a used or revoked one revokes its whole family.
#[utoipa::path(post, path = "/auth/refresh", tag = "identity", request_body = RefreshRequest,
    responses(
        (status = 200, description = "new access and refresh tokens", body = AuthResponse),
        (status = 401, description = "unknown, expired, revoked or reused refresh token", body = ErrorBody),
    ))]
async fn refresh(State(s): State<IdentityState>, Json(body): Json<RefreshRequest>) -> ApiResult<Json<AuthResponse>> {
    let unauthorized = || ApiError::Unauthorized("invalid or expired refresh token".into());
    let mut tx = s.db.begin().await.map_err(db_err)?;
    let record = store::refresh_by_token(&mut tx, &body.refresh_token)
        .await?
        .ok_or_else(unauthorized)?;
    if record.used_at.is_none() && record.revoked_at.is_some() {
        // Signed out, or the password was reset: not a reuse.
        return Err(ApiError::Unauthorized(
            "this sign-in has ended (signed out, or the password was reset); sign in again".into(),
        ));
    }
    if record.used_at.is_some() || !store::mark_refresh_used(&mut tx, &record.id).await? {
        store::revoke_family(&mut tx, &record.family_id).await?;
        tx.commit().await.map_err(db_err)?;
        tracing::warn!(user_id = %record.user_id, family_id = %record.family_id, "refresh token reuse: family revoked");
        return Err(ApiError::Unauthorized(
            "refresh token was already used; all sessions of this sign-in are revoked".into(),
        ));
    }
    if record.expires_at <= atlas_db::now() {
        return Err(unauthorized());
    }
    let row = sqlx::query("SELECT id, email, display_name, is_admin, created_at FROM users WHERE id = $1")
        .bind(&record.user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .ok_or_else(unauthorized)?;
    let user = User::from_row(&row).map_err(db_err)?;
    let token = store::insert_refresh_token(&mut tx, &user.id, &record.family_id, s.refresh_ttl_days).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(Json(s.auth_response(user, token)?))
}

/// Sign out: revoke the refresh token's family. Access tokens expire on their own.
#[utoipa::path(post, path = "/auth/logout", tag = "identity", request_body = RefreshRequest, security(("bearer" = [])),
    responses(
        (status = 204, description = "signed out"),
        (status = 401, description = "not signed in", body = ErrorBody),
    ))]
async fn logout(
    State(s): State<IdentityState>,
    principal: Principal,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let mut tx = s.db.begin().await.map_err(db_err)?;
    if let Some(record) = store::refresh_by_token(&mut tx, &body.refresh_token).await? {
        // Someone else's token is left alone (and its existence not revealed).
        if record.user_id == principal.user_id {
            store::revoke_family(&mut tx, &record.family_id).await?;
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", tag = "identity", security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller", body = User),
        (status = 401, description = "not signed in", body = ErrorBody),
    ))]
async fn me(State(s): State<IdentityState>, principal: Principal) -> ApiResult<Json<User>> {
    store::user_by_id(&s.db, &principal.user_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for, 1–100 characters.
    #[schema(example = "backup script")]
    name: String,
    /// 1–3650; without it the token does not expire.
    expires_in_days: Option<i64>,
}

/// A personal access token (its secret is only in the create response).
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonalToken {
    id: String,
    name: String,
    created_at: String,
    expires_at: Option<String>,
    /// Only in the response that created it; store it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonalTokenPage {
    items: Vec<PersonalToken>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–200, default 50.
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Create a personal access token for scripts.
#[utoipa::path(post, path = "/auth/tokens", tag = "identity", request_body = CreateTokenRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "created; `token` is shown only now", body = PersonalToken),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 422, description = "invalid name or lifetime", body = ErrorBody),
    ))]
async fn create_token(
    State(s): State<IdentityState>,
    principal: Principal,
    Json(body): Json<CreateTokenRequest>,
) -> ApiResult<Response> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::validation("name", "name must be 1 to 100 characters"));
    }
    let expires_at = match body.expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(atlas_db::format_timestamp(
            chrono::Utc::now() + chrono::Duration::days(d),
        )),
        Some(_) => {
            return Err(ApiError::validation(
                "expires_in_days",
                "expires_in_days must be between 1 and 3650",
            ))
        }
    };
    let token = atlas_auth::new_opaque_token(atlas_auth::token::PERSONAL_TOKEN_PREFIX);
    let id = uuid::Uuid::now_v7().to_string();
    let created_at = atlas_db::now();
    sqlx::query("INSERT INTO personal_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(&principal.user_id)
        .bind(name)
        .bind(atlas_auth::hash_token(&token))
        .bind(&created_at)
        .bind(&expires_at)
        .execute(s.db.writer())
        .await
        .map_err(db_err)?;
    let body = PersonalToken {
        id: id.clone(),
        name: name.to_string(),
        created_at,
        expires_at,
        token: Some(token),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/auth/tokens/{id}"))],
        Json(body),
    )
        .into_response())
}

#[derive(Serialize, Deserialize)]
struct IdCursor {
    id: String,
}

/// The caller's active personal access tokens (without their secrets).
#[utoipa::path(get, path = "/auth/tokens", tag = "identity", params(PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "tokens, oldest first", body = PersonalTokenPage),
        (status = 400, description = "invalid cursor", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
    ))]
async fn list_tokens(
    State(s): State<IdentityState>,
    principal: Principal,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<PersonalTokenPage>> {
    let limit = page_limit(q.limit)?;
    let after = match &q.cursor {
        Some(c) => s.cursors.decode::<IdCursor>(c)?.id,
        None => String::new(),
    };
    let rows = sqlx::query(
        "SELECT id, name, created_at, expires_at FROM personal_tokens
         WHERE user_id = $1 AND revoked_at IS NULL AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(&principal.user_id)
    .bind(&after)
    .bind(limit + 1)
    .fetch_all(s.db.reader())
    .await
    .map_err(db_err)?;
    let mut items = rows
        .iter()
        .map(|r| {
            Ok(PersonalToken {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                token: None,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err)?;
    let next_cursor = s
        .cursors
        .next_page(&mut items, limit, |t| IdCursor { id: t.id.clone() });
    Ok(Json(PersonalTokenPage { items, next_cursor }))
}

/// Revoke one of the caller's personal access tokens.
#[utoipa::path(delete, path = "/auth/tokens/{id}", tag = "identity", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such token of the caller", body = ErrorBody),
    ))]
async fn delete_token(
    State(s): State<IdentityState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let done =
        sqlx::query("UPDATE personal_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(atlas_db::now())
            .bind(&id)
            .bind(&principal.user_id)
            .execute(s.db.writer())
            .await
            .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("token"));
    }
    Ok(StatusCode::NO_CONTENT)
}
