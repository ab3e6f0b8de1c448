//! `/api/v1/collections/*` handlers.

use std::sync::Arc;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_db::sqlx::{self, any::AnyRow, AnyConnection, Row};
use atlas_db::Database;
use atlas_events::{EntityRef, EventContext};
use atlas_http::{
    double_option, page_limit, ApiError, ApiResult, CursorCodec, ErrorBody, Json, Path, Query, RequestContext,
};
use atlas_identity::UserDirectory;
use axum::extract::{FromRef, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::{check_role, check_slug, first_free_slug, slugify};
use crate::CollectionHooks;

#[derive(Clone)]
pub(crate) struct CollectionsState {
    pub db: Database,
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub hooks: Arc<CollectionHooks>,
    pub users: Arc<dyn UserDirectory>,
    pub cursors: CursorCodec,
}

impl FromRef<CollectionsState> for Arc<Authenticator> {
    fn from_ref(s: &CollectionsState) -> Self {
        s.auth.clone()
    }
}

pub(crate) fn router(state: CollectionsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_collection, list_collections))
        .routes(routes!(get_collection, update_collection, delete_collection))
        .routes(routes!(list_members, add_member))
        .routes(routes!(update_member, remove_member))
        .with_state(state)
}

fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

/// A collection, with the caller's role in it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Collection {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// The caller's role: owner, editor or viewer.
    #[schema(example = "owner")]
    pub role: String,
}

const COLLECTION_COLUMNS: &str = "c.id, c.name, c.slug, c.description, c.created_by, c.created_at, c.updated_at";

impl Collection {
    fn from_row(row: &AnyRow, role: String) -> Result<Self, sqlx::Error> {
        Ok(Collection {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            slug: row.try_get("slug")?,
            description: row.try_get("description")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            role,
        })
    }

    fn event_data(&self) -> serde_json::Value {
        json!({
            "id": self.id, "name": self.name, "slug": self.slug, "description": self.description,
            "created_by": self.created_by, "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionPage {
    items: Vec<Collection>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// 1–200 characters.
    #[schema(example = "Reading list")]
    name: String,
    /// `[a-z0-9-]{1,64}`, globally unique; derived from the name when absent.
    slug: Option<String>,
    /// Up to 2,000 characters.
    description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCollection {
    name: Option<String>,
    slug: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–200, default 50.
    limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`.
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct IdCursor {
    id: String,
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "name must be 1 to 200 characters"));
    }
    Ok(name.to_string())
}

fn check_description(d: Option<&str>) -> ApiResult<Option<String>> {
    match d {
        Some(d) if d.chars().count() > 2000 => Err(ApiError::validation(
            "description",
            "description must be at most 2000 characters",
        )),
        Some(d) => Ok(Some(d.to_string())),
        None => Ok(None),
    }
}

fn collection_entity(id: &str) -> EntityRef {
    EntityRef {
        entity_type: "collection".into(),
        id: id.into(),
        collection_id: Some(id.into()),
    }
}

async fn emit(
    conn: &mut AnyConnection,
    ev: &EventContext,
    event_type: &str,
    entity: EntityRef,
    data: serde_json::Value,
) -> ApiResult<()> {
    atlas_events::append(conn, &ev.envelope(event_type, entity, data))
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

fn slug_taken() -> ApiError {
    ApiError::Conflict {
        message: "this slug is already taken".into(),
        details: [("field".to_string(), json!("slug"))].into_iter().collect(),
    }
}

/// Create a collection; the caller becomes its owner.
#[utoipa::path(post, path = "/collections", tag = "collections", request_body = CreateCollection, security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Collection),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 409, description = "the explicit slug is taken", body = ErrorBody),
        (status = 422, description = "invalid name, slug or description", body = ErrorBody),
    ))]
async fn create_collection(
    State(s): State<CollectionsState>,
    principal: Principal,
    req: RequestContext,
    Json(body): Json<CreateCollection>,
) -> ApiResult<Response> {
    let name = check_name(&body.name)?;
    let description = check_description(body.description.as_deref())?;
    if let Some(slug) = &body.slug {
        check_slug(slug)?;
    }
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    // A derived slug may race with another insert; retry with the next free one.
    for _attempt in 0..5 {
        let mut tx = s.db.begin().await.map_err(db_err)?;
        let slug = match &body.slug {
            Some(explicit) => explicit.clone(),
            None => {
                let base = slugify(&name);
                let taken: Vec<String> = sqlx::query("SELECT slug FROM collections WHERE slug = $1 OR slug LIKE $2")
                    .bind(&base)
                    .bind(format!("{base}-%"))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.try_get::<String, _>(0))
                    .collect::<Result<_, _>>()
                    .map_err(db_err)?;
                first_free_slug(&base, &taken)
            }
        };
        let now = atlas_db::now();
        let collection = Collection {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.clone(),
            slug,
            description: description.clone(),
            created_by: principal.user_id.clone(),
            created_at: now.clone(),
            updated_at: now.clone(),
            role: "owner".into(),
        };
        let inserted = sqlx::query(
            "INSERT INTO collections (id, name, slug, description, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&collection.id)
        .bind(&collection.name)
        .bind(&collection.slug)
        .bind(&collection.description)
        .bind(&collection.created_by)
        .bind(&now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if atlas_db::unique_violation(&e).is_some() => {
                drop(tx);
                if body.slug.is_some() {
                    return Err(slug_taken());
                }
                continue;
            }
            Err(e) => return Err(db_err(e)),
        }
        sqlx::query("INSERT INTO memberships (id, collection_id, user_id, role, created_at, updated_at) VALUES ($1, $2, $3, 'owner', $4, $4)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(&collection.id)
            .bind(&principal.user_id)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut data = collection.event_data();
        data["owner_user_id"] = json!(principal.user_id);
        emit(
            &mut tx,
            &ev,
            "CollectionCreated",
            collection_entity(&collection.id),
            data,
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        let location = format!("/api/v1/collections/{}", collection.id);
        return Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(collection)).into_response());
    }
    Err(ApiError::Unavailable(
        "could not find a free slug; try again or pass one".into(),
    ))
}

/// The caller's collections, oldest first.
#[utoipa::path(get, path = "/collections", tag = "collections", params(PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of the caller's collections", body = CollectionPage),
        (status = 400, description = "invalid cursor", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 422, description = "limit out of range", body = ErrorBody),
    ))]
async fn list_collections(
    State(s): State<CollectionsState>,
    principal: Principal,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<CollectionPage>> {
    let limit = page_limit(q.limit)?;
    let after = match &q.cursor {
        Some(c) => s.cursors.decode::<IdCursor>(c)?.id,
        None => String::new(),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLLECTION_COLUMNS}, m.role FROM memberships m JOIN collections c ON c.id = m.collection_id
         WHERE m.user_id = $1 AND c.id > $2 ORDER BY c.id LIMIT $3"
    ))
    .bind(&principal.user_id)
    .bind(&after)
    .bind(limit + 1)
    .fetch_all(s.db.reader())
    .await
    .map_err(db_err)?;
    let mut items = rows
        .iter()
        .map(|r| Collection::from_row(r, r.try_get("role")?))
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    let next_cursor = s
        .cursors
        .next_page(&mut items, limit, |c| IdCursor { id: c.id.clone() });
    Ok(Json(CollectionPage { items, next_cursor }))
}

async fn load(conn: &mut AnyConnection, id: &str, role: String) -> ApiResult<Collection> {
    let row = sqlx::query(&format!(
        "SELECT {COLLECTION_COLUMNS} FROM collections c WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?
    .ok_or_else(|| ApiError::not_found("collection"))?;
    Collection::from_row(&row, role).map_err(db_err)
}

/// Take the collection's row lock (PostgreSQL) so owner-count checks and
/// concurrent membership changes serialize; SQLite writes are serial anyway.
async fn lock_collection(conn: &mut AnyConnection, id: &str) -> ApiResult<()> {
    let done = sqlx::query("UPDATE collections SET updated_at = updated_at WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("collection"));
    }
    Ok(())
}

/// One collection (members only).
#[utoipa::path(get, path = "/collections/{id}", tag = "collections", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the collection", body = Collection),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
    ))]
async fn get_collection(
    State(s): State<CollectionsState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Collection>> {
    let role = s.guard.authorize(&principal, &id, "collection", "read").await?;
    let mut conn = s.db.reader().acquire().await.map_err(db_err)?;
    Ok(Json(load(&mut conn, &id, role).await?))
}

/// Rename, re-slug or describe a collection (owner).
#[utoipa::path(patch, path = "/collections/{id}", tag = "collections", params(("id" = String, Path)), request_body = UpdateCollection, security(("bearer" = [])),
    responses(
        (status = 200, description = "updated", body = Collection),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
        (status = 409, description = "slug taken", body = ErrorBody),
        (status = 422, description = "invalid field", body = ErrorBody),
    ))]
async fn update_collection(
    State(s): State<CollectionsState>,
    principal: Principal,
    req: RequestContext,
    Path(id): Path<String>,
    Json(body): Json<UpdateCollection>,
) -> ApiResult<Json<Collection>> {
    let role = s.guard.authorize(&principal, &id, "collection", "update").await?;
    let name = body.name.as_deref().map(check_name).transpose()?;
    if let Some(slug) = &body.slug {
        check_slug(slug)?;
    }
    let description = match &body.description {
        Some(d) => Some(check_description(d.as_deref())?),
        None => None,
    };
    let mut tx = s.db.begin().await.map_err(db_err)?;
    let mut c = load(&mut tx, &id, role).await?;
    if let Some(n) = name {
        c.name = n;
    }
    if let Some(slug) = &body.slug {
        c.slug = slug.clone();
    }
    if let Some(d) = description {
        c.description = d;
    }
    c.updated_at = atlas_db::now();
    let result =
        sqlx::query("UPDATE collections SET name = $1, slug = $2, description = $3, updated_at = $4 WHERE id = $5")
            .bind(&c.name)
            .bind(&c.slug)
            .bind(&c.description)
            .bind(&c.updated_at)
            .bind(&id)
            .execute(&mut *tx)
            .await;
    match result {
        Ok(_) => {}
        Err(e) if atlas_db::unique_violation(&e).is_some() => return Err(slug_taken()),
        Err(e) => return Err(db_err(e)),
    }
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    emit(
        &mut tx,
        &ev,
        "CollectionUpdated",
        collection_entity(&id),
        c.event_data(),
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(Json(c))
}

/// Delete a collection with everything in it (owner). Emits a delete event
/// for each item and then `CollectionDeleted`.
#[utoipa::path(delete, path = "/collections/{id}", tag = "collections", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
    ))]
async fn delete_collection(
    State(s): State<CollectionsState>,
    principal: Principal,
    req: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.guard.authorize(&principal, &id, "collection", "delete").await?;
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    let mut tx = s.db.begin().await.map_err(db_err)?;
    lock_collection(&mut tx, &id).await?;
    for hook in s.hooks.deletion_hooks() {
        hook.on_collection_deleted(&mut tx, &id, &ev).await?;
    }
    sqlx::query("DELETE FROM memberships WHERE collection_id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    sqlx::query("DELETE FROM collections WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    emit(
        &mut tx,
        &ev,
        "CollectionDeleted",
        collection_entity(&id),
        json!({"id": id}),
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member of a collection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub display_name: Option<String>,
    #[schema(example = "editor")]
    pub role: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    items: Vec<Member>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The user's email; give this or `user_id`.
    email: Option<String>,
    user_id: Option<String>,
    /// owner, editor or viewer.
    #[schema(example = "viewer")]
    role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    #[schema(example = "editor")]
    role: String,
}

struct MembershipRow {
    id: String,
    user_id: String,
    role: String,
    created_at: String,
    updated_at: String,
}

fn membership_from_row(r: &AnyRow) -> Result<MembershipRow, sqlx::Error> {
    Ok(MembershipRow {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn membership(conn: &mut AnyConnection, collection_id: &str, user_id: &str) -> ApiResult<Option<MembershipRow>> {
    let row = sqlx::query(
        "SELECT id, user_id, role, created_at, updated_at FROM memberships WHERE collection_id = $1 AND user_id = $2",
    )
    .bind(collection_id)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(membership_from_row).transpose().map_err(db_err)
}

async fn owner_count(conn: &mut AnyConnection, collection_id: &str) -> ApiResult<i64> {
    sqlx::query("SELECT COUNT(*) FROM memberships WHERE collection_id = $1 AND role = 'owner'")
        .bind(collection_id)
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .map_err(db_err)
}

fn membership_entity(m: &MembershipRow, collection_id: &str) -> EntityRef {
    EntityRef {
        entity_type: "membership".into(),
        id: m.id.clone(),
        collection_id: Some(collection_id.into()),
    }
}

fn last_owner() -> ApiError {
    ApiError::conflict("a collection must keep at least one owner")
}

async fn with_user(s: &CollectionsState, m: MembershipRow) -> ApiResult<Member> {
    let user = s
        .users
        .by_id(&m.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Member {
        user_id: m.user_id,
        email: user.email,
        display_name: user.display_name,
        role: m.role,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

#[derive(Serialize, Deserialize)]
struct MemberCursor {
    user_id: String,
}

/// Members of a collection (members only).
#[utoipa::path(get, path = "/collections/{id}/members", tag = "collections", params(("id" = String, Path), PageQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of members", body = MemberPage),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
    ))]
async fn list_members(
    State(s): State<CollectionsState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<MemberPage>> {
    s.guard.authorize(&principal, &id, "members", "read").await?;
    let limit = page_limit(q.limit)?;
    let after = match &q.cursor {
        Some(c) => s.cursors.decode::<MemberCursor>(c)?.user_id,
        None => String::new(),
    };
    let rows = sqlx::query(
        "SELECT id, user_id, role, created_at, updated_at FROM memberships WHERE collection_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
    )
    .bind(&id)
    .bind(&after)
    .bind(limit + 1)
    .fetch_all(s.db.reader())
    .await
    .map_err(db_err)?;
    let mut memberships = rows
        .iter()
        .map(membership_from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    let next_cursor = s.cursors.next_page(&mut memberships, limit, |m| MemberCursor {
        user_id: m.user_id.clone(),
    });
    let ids: Vec<String> = memberships.iter().map(|m| m.user_id.clone()).collect();
    let users = s.users.by_ids(&ids).await?;
    let items = memberships
        .into_iter()
        .filter_map(|m| {
            let u = users.iter().find(|u| u.id == m.user_id)?;
            Some(Member {
                user_id: m.user_id,
                email: u.email.clone(),
                display_name: u.display_name.clone(),
                role: m.role,
                created_at: m.created_at,
                updated_at: m.updated_at,
            })
        })
        .collect();
    Ok(Json(MemberPage { items, next_cursor }))
}

/// Add a user to a collection by email or user id (owner).
#[utoipa::path(post, path = "/collections/{id}/members", tag = "collections", params(("id" = String, Path)), request_body = AddMember, security(("bearer" = [])),
    responses(
        (status = 201, description = "added", body = Member),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "no such collection (or not a member), or no such user", body = ErrorBody),
        (status = 409, description = "already a member", body = ErrorBody),
        (status = 422, description = "invalid role, or neither/both of email and user_id", body = ErrorBody),
    ))]
async fn add_member(
    State(s): State<CollectionsState>,
    principal: Principal,
    req: RequestContext,
    Path(id): Path<String>,
    Json(body): Json<AddMember>,
) -> ApiResult<Response> {
    s.guard.authorize(&principal, &id, "members", "manage").await?;
    check_role(&body.role)?;
    let user = match (&body.email, &body.user_id) {
        (Some(email), None) => s.users.by_email(email).await?,
        (None, Some(user_id)) => s.users.by_id(user_id).await?,
        _ => return Err(ApiError::validation("email", "give exactly one of email and user_id")),
    }
    .ok_or_else(|| ApiError::NotFound("no user with that email or id".into()))?;
    let now = atlas_db::now();
    let m = MembershipRow {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        role: body.role.clone(),
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let mut tx = s.db.begin().await.map_err(db_err)?;
    lock_collection(&mut tx, &id).await?;
    let inserted = sqlx::query("INSERT INTO memberships (id, collection_id, user_id, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)")
        .bind(&m.id)
        .bind(&id)
        .bind(&m.user_id)
        .bind(&m.role)
        .bind(&now)
        .execute(&mut *tx)
        .await;
    match inserted {
        Ok(_) => {}
        Err(e) if atlas_db::unique_violation(&e).is_some() => {
            return Err(ApiError::conflict("this user is already a member"))
        }
        Err(e) => return Err(db_err(e)),
    }
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    let data = json!({"collection_id": id, "user_id": m.user_id, "role": m.role});
    emit(&mut tx, &ev, "MembershipAdded", membership_entity(&m, &id), data).await?;
    tx.commit().await.map_err(db_err)?;
    let location = format!("/api/v1/collections/{id}/members/{}", m.user_id);
    let member = Member {
        user_id: m.user_id,
        email: user.email,
        display_name: user.display_name,
        role: m.role,
        created_at: m.created_at,
        updated_at: m.updated_at,
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(member)).into_response())
}

/// Change a member's role (owner). The last owner cannot be demoted.
#[utoipa::path(patch, path = "/collections/{id}/members/{user_id}", tag = "collections",
    params(("id" = String, Path), ("user_id" = String, Path)), request_body = UpdateMember, security(("bearer" = [])),
    responses(
        (status = 200, description = "updated", body = Member),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "no such collection or member", body = ErrorBody),
        (status = 409, description = "would leave the collection without an owner", body = ErrorBody),
        (status = 422, description = "invalid role", body = ErrorBody),
    ))]
async fn update_member(
    State(s): State<CollectionsState>,
    principal: Principal,
    req: RequestContext,
    Path((id, user_id)): Path<(String, String)>,
    Json(body): Json<UpdateMember>,
) -> ApiResult<Json<Member>> {
    s.guard.authorize(&principal, &id, "members", "manage").await?;
    check_role(&body.role)?;
    let mut tx = s.db.begin().await.map_err(db_err)?;
    lock_collection(&mut tx, &id).await?;
    let mut m = membership(&mut tx, &id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    let previous = m.role.clone();
    if previous == "owner" && body.role != "owner" && owner_count(&mut tx, &id).await? <= 1 {
        return Err(last_owner());
    }
    m.role = body.role.clone();
    m.updated_at = atlas_db::now();
    sqlx::query("UPDATE memberships SET role = $1, updated_at = $2 WHERE collection_id = $3 AND user_id = $4")
        .bind(&m.role)
        .bind(&m.updated_at)
        .bind(&id)
        .bind(&user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    if previous != m.role {
        let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
        let data = json!({"collection_id": id, "user_id": user_id, "role": m.role, "previous_role": previous});
        emit(&mut tx, &ev, "MembershipRoleChanged", membership_entity(&m, &id), data).await?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(Json(with_user(&s, m).await?))
}

/// Remove a member (owner), or leave a collection (any member, for themself).
/// The last owner cannot be removed.
#[utoipa::path(delete, path = "/collections/{id}/members/{user_id}", tag = "collections",
    params(("id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "removed"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not the owner, and not leaving", body = ErrorBody),
        (status = 404, description = "no such collection or member", body = ErrorBody),
        (status = 409, description = "the last owner", body = ErrorBody),
    ))]
async fn remove_member(
    State(s): State<CollectionsState>,
    principal: Principal,
    req: RequestContext,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let action = if user_id == principal.user_id {
        "leave"
    } else {
        "manage"
    };
    s.guard.authorize(&principal, &id, "members", action).await?;
    let mut tx = s.db.begin().await.map_err(db_err)?;
    lock_collection(&mut tx, &id).await?;
    let m = membership(&mut tx, &id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    if m.role == "owner" && owner_count(&mut tx, &id).await? <= 1 {
        return Err(last_owner());
    }
    sqlx::query("DELETE FROM memberships WHERE collection_id = $1 AND user_id = $2")
        .bind(&id)
        .bind(&user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    emit(
        &mut tx,
        &ev,
        "MembershipRemoved",
        membership_entity(&m, &id),
        json!({"collection_id": id, "user_id": user_id}),
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(StatusCode::NO_CONTENT)
}
