//! `GET /api/v1/audit`, `GET /api/v1/audit/verify`, `GET /api/v1/audit/public-key`.

use std::sync::Arc;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_db::sqlx;
use atlas_http::{page_limit, ApiError, ApiResult, CursorCodec, ErrorBody, Json, Query};
use axum::extract::{FromRef, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::chain::AuditRecord;
use crate::signing::{PublicKey, TrustedKeys};
use crate::store::{AuditStore, StoredRow, RECORD_COLUMNS};
use crate::verify::{verify_database, VerifyReport};

#[derive(Clone)]
pub(crate) struct AuditState {
    pub store: AuditStore,
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub cursors: CursorCodec,
    pub public_key: PublicKey,
    pub trusted: TrustedKeys,
}

impl FromRef<AuditState> for Arc<Authenticator> {
    fn from_ref(s: &AuditState) -> Self {
        s.auth.clone()
    }
}

pub(crate) fn router(state: AuditState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(verify_chain))
        .routes(routes!(public_key))
        .with_state(state)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `user`, `collection`, `membership`, `item`, `job` or `workflow`.
    entity_type: Option<String>,
    /// Needs `entity_type`.
    entity_id: Option<String>,
    /// Rows caused by this user.
    actor_user_id: Option<String>,
    /// Rows of this collection (the caller must be a member; admins may name any).
    collection_id: Option<String>,
    /// `occurred_at` at or after this instant (RFC 3339).
    from: Option<String>,
    /// `occurred_at` before this instant (RFC 3339).
    to: Option<String>,
    /// 1–200, default 50.
    limit: Option<i64>,
    /// Opaque cursor from a previous page.
    cursor: Option<String>,
}

/// A page of audit rows, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    items: Vec<AuditRecord>,
    next_cursor: Option<String>,
}

/// Position after the last row of a page.
#[derive(Serialize, Deserialize)]
struct AuditCursor {
    /// `occurred_at`
    t: String,
    /// `sequence`
    s: i64,
}

fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

fn instant(name: &str, value: &Option<String>) -> ApiResult<Option<String>> {
    value
        .as_deref()
        .map(|v| {
            atlas_db::parse_timestamp(v.trim())
                .map(atlas_db::format_timestamp)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`{name}` must be an RFC 3339 timestamp such as 2026-11-23T12:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// Audit rows the caller may see, newest first: filter by entity, by actor,
/// or by collection and time range (any combination). A member sees the
/// rows of the collections they belong to and the rows of their own
/// actions; an admin sees every row.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of audit rows, newest first", body = AuditPage),
        (status = 400, description = "invalid cursor, timestamp or filter", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "`collection_id` names a collection the caller is not a member of", body = ErrorBody),
        (status = 422, description = "limit out of range", body = ErrorBody),
    ))]
async fn list_audit(
    State(s): State<AuditState>,
    principal: Principal,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = page_limit(q.limit)?;
    if q.entity_id.is_some() && q.entity_type.is_none() {
        return Err(ApiError::BadRequest("`entity_id` needs `entity_type`".into()));
    }
    let from = instant("from", &q.from)?;
    let to = instant("to", &q.to)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| s.cursors.decode::<AuditCursor>(c))
        .transpose()?;
    // Who may see what: a collection filter is checked once up front (so
    // its query stays one index range scan); otherwise a non-admin's rows
    // are limited to their collections and their own actions.
    let mut visible: Option<Vec<String>> = None;
    if !principal.is_admin {
        match &q.collection_id {
            Some(c) => {
                s.guard.membership(&principal, c).await?;
            }
            None => visible = Some(s.guard.visible_collections(&principal).await?),
        }
    }

    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_events WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    for (column, value) in [
        ("entity_type", &q.entity_type),
        ("entity_id", &q.entity_id),
        ("actor_user_id", &q.actor_user_id),
        ("collection_id", &q.collection_id),
    ] {
        if let Some(v) = value {
            let p = param(&mut binds, Bind::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = {p}"));
        }
    }
    if let Some(f) = from {
        let p = param(&mut binds, Bind::Text(f));
        sql.push_str(&format!(" AND occurred_at >= {p}"));
    }
    if let Some(t) = to {
        let p = param(&mut binds, Bind::Text(t));
        sql.push_str(&format!(" AND occurred_at < {p}"));
    }
    if let Some(collections) = &visible {
        let me = param(&mut binds, Bind::Text(principal.user_id.clone()));
        if collections.is_empty() {
            sql.push_str(&format!(" AND actor_user_id = {me}"));
        } else {
            let list: Vec<String> = collections
                .iter()
                .map(|c| param(&mut binds, Bind::Text(c.clone())))
                .collect();
            sql.push_str(&format!(
                " AND (actor_user_id = {me} OR collection_id IN ({}))",
                list.join(", ")
            ));
        }
    }
    if let Some(c) = after {
        let t = param(&mut binds, Bind::Text(c.t));
        let seq = param(&mut binds, Bind::Int(c.s));
        sql.push_str(&format!(" AND (occurred_at, sequence) < ({t}, {seq})"));
    }
    let l = param(&mut binds, Bind::Int(limit + 1));
    sql.push_str(&format!(" ORDER BY occurred_at DESC, sequence DESC LIMIT {l}"));

    let mut query = sqlx::query(&sql);
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t),
            Bind::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(s.store.db().reader()).await.map_err(db_err)?;
    let mut items = rows
        .iter()
        .map(|r| StoredRow::from_row(r).map(|stored| stored.record))
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    let next_cursor = s.cursors.next_page(&mut items, limit, |r| AuditCursor {
        t: r.occurred_at.clone(),
        s: r.sequence,
    });
    Ok(Json(AuditPage { items, next_cursor }))
}

enum Bind {
    Text(String),
    Int(i64),
}

/// Add a bind parameter; returns its placeholder (`$n`).
fn param(binds: &mut Vec<Bind>, value: Bind) -> String {
    binds.push(value);
    format!("${}", binds.len())
}

/// Walk the whole chain and its checkpoints (admins). `ok` is false when a
/// row or checkpoint fails; `first_bad_sequence` and `reason` say where and why.
#[utoipa::path(get, path = "/audit/verify", tag = "audit", security(("bearer" = [])),
    responses(
        (status = 200, description = "the verification report", body = VerifyReport),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "only admins may verify the chain", body = ErrorBody),
    ))]
async fn verify_chain(State(s): State<AuditState>, principal: Principal) -> ApiResult<Json<VerifyReport>> {
    if !principal.is_admin {
        return Err(ApiError::Forbidden("only admins may verify the audit chain".into()));
    }
    let report = verify_database(&s.store, &s.trusted)
        .await
        .map_err(ApiError::internal)?;
    if !report.ok {
        tracing::error!(first_bad_sequence = ?report.first_bad_sequence, reason = ?report.reason,
            "audit: chain verification failed");
    }
    Ok(Json(report))
}

/// The node's checkpoint-signing key.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyResponse {
    /// First 16 hex digits of SHA-256 over the 32 key bytes; checkpoints name it.
    key_id: String,
    /// Always `Ed25519`.
    algorithm: &'static str,
    /// The 32 key bytes, standard base64 (what `atlas audit verify-bundle --public-key` takes).
    public_key: String,
    /// The same key as an SPKI PEM.
    public_key_pem: String,
}

/// The public key that checkpoints are signed with, for checking exported
/// bundles offline. Needs no sign-in.
#[utoipa::path(get, path = "/audit/public-key", tag = "audit",
    responses(
        (status = 200, description = "the node's public key", body = PublicKeyResponse),
        (status = 429, description = "rate limited", body = ErrorBody),
    ))]
async fn public_key(State(s): State<AuditState>) -> ApiResult<Json<PublicKeyResponse>> {
    Ok(Json(PublicKeyResponse {
        key_id: s.public_key.key_id().to_string(),
        algorithm: "Ed25519",
        public_key: s.public_key.to_base64(),
        public_key_pem: s.public_key.to_pem().map_err(ApiError::internal)?,
    }))
}
