//! Item and tag handlers.

use std::sync::Arc;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_db::{Database, Param, Statement};
use atlas_events::EventContext;
use atlas_http::{
    double_option, page_limit, ApiError, ApiResult, CursorCodec, ErrorBody, Json, Path, Query, RequestContext,
};
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::model::{self, Item, ITEM_COLUMNS};

#[derive(Clone)]
pub(crate) struct ItemsState {
    pub index_status: Arc<crate::IndexStatus>,
    pub db: Database,
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub cursors: CursorCodec,
}

impl FromRef<ItemsState> for Arc<Authenticator> {
    fn from_ref(s: &ItemsState) -> Self {
        s.auth.clone()
    }
}

pub(crate) fn router(state: ItemsState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_item, list_items))
        .routes(routes!(get_item, update_item, delete_item))
        .routes(routes!(list_tags))
        .with_state(state)
}

fn db_err(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    /// 1–500 characters.
    #[schema(example = "Rust async book")]
    title: String,
    /// Up to 1 MiB of UTF-8.
    body: Option<String>,
    /// An absolute http(s) URL.
    source_url: Option<String>,
    /// Each 1–64 characters; at most 32 after de-duplication.
    #[serde(default)]
    tags: Vec<String>,
    /// A JSON object, up to 64 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    title: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    body: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    source_url: Option<Option<String>>,
    /// Replaces the item's tags.
    tags: Option<Vec<String>>,
    /// Replaces the item's metadata.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    items: Vec<Item>,
    next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    CreatedAt,
    UpdatedAt,
    Title,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::CreatedAt => "created_at",
            SortKey::UpdatedAt => "updated_at",
            SortKey::Title => "title",
        }
    }

    fn key_of(self, item: &Item) -> String {
        match self {
            SortKey::CreatedAt => item.created_at.clone(),
            SortKey::UpdatedAt => item.updated_at.clone(),
            SortKey::Title => item.title.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListItemsQuery {
    /// Only items with this tag.
    tag: Option<String>,
    /// created_at (default), updated_at or title.
    #[param(inline)]
    sort: Option<SortKey>,
    /// asc (default) or desc.
    #[param(inline)]
    order: Option<SortOrder>,
    /// 1–200, default 50.
    limit: Option<i64>,
    /// Opaque cursor from a previous page.
    cursor: Option<String>,
}

/// Position after the last item of a page. The sort and order are part of
/// it so a cursor cannot be replayed against another ordering.
#[derive(Serialize, Deserialize)]
struct ItemCursor {
    s: SortKey,
    o: SortOrder,
    k: String,
    id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–200, default 50.
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The caller may act on items here; a non-member sees "not found".
async fn authorize(
    s: &ItemsState,
    principal: &Principal,
    collection_id: &str,
    action: &str,
    what: &str,
) -> ApiResult<()> {
    match s.guard.authorize(principal, collection_id, "items", action).await {
        Err(ApiError::NotFound(_)) => Err(ApiError::not_found(what)),
        other => other.map(|_| ()),
    }
}

pub(crate) async fn load(conn: &mut AnyConnection, id: &str) -> ApiResult<Option<Item>> {
    let row = sqlx::query(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(Item::from_row).transpose().map_err(ApiError::internal)
}

/// The item, read outside any transaction (on SQLite on this thread).
pub(crate) async fn read_item(db: &Database, id: &str) -> ApiResult<Option<Item>> {
    db.read_row(ITEM_BY_ID, &[Param::Text(id)], |row| Item::from_row(row))
        .await
        .map_err(ApiError::internal)
}

const ITEM_BY_ID: &str = concat!("SELECT ", model::item_columns!(), " FROM items WHERE id = $1");

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn item_response(s: &ItemsState, status: StatusCode, mut item: Item, location: bool) -> Response {
    s.index_status.apply(std::slice::from_mut(&mut item));
    item_reply(status, item, location)
}

/// The response for `item` as it is (its `index_status` already set).
fn item_reply(status: StatusCode, item: Item, location: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag(item.version));
    if location {
        if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/items/{}", item.id)) {
            headers.insert(header::LOCATION, v);
        }
    }
    (status, headers, Json(item)).into_response()
}

/// `If-Match: "3"` (also `W/"3"` or `3`) → `Some(3)`; `*` → `None`.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match must be a version like \"3\"".into()))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::BadRequest("If-Match must be a version like \"3\"".into()))
}

fn version_mismatch(current: i64) -> ApiError {
    ApiError::PreconditionFailed {
        message: "the item was changed by someone else; reload it and try again".into(),
        details: [("current_version".to_string(), json!(current))].into_iter().collect(),
    }
}

async fn emit(conn: &mut AnyConnection, ev: &EventContext, event_type: &str, item: &Item) -> ApiResult<()> {
    let envelope = ev.envelope(event_type, item.entity(), item.event_data());
    atlas_events::append(conn, &envelope)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

/// Add an item to a collection (owner, editor).
#[utoipa::path(post, path = "/collections/{id}/items", tag = "items", params(("id" = String, Path, description = "collection id")),
    request_body = CreateItem, security(("bearer" = [])),
    responses(
        (status = 201, description = "created; `ETag` holds the version", body = Item),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "viewers may not write", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "a field is invalid; `details.field` names it", body = ErrorBody),
    ))]
async fn create_item(
    State(s): State<ItemsState>,
    principal: Principal,
    req: RequestContext,
    Path(collection_id): Path<String>,
    Json(body): Json<CreateItem>,
) -> ApiResult<Response> {
    authorize(&s, &principal, &collection_id, "write", "collection").await?;
    let now = atlas_db::now();
    let item = Item {
        id: uuid::Uuid::now_v7().to_string(),
        collection_id: collection_id.clone(),
        title: model::check_title(&body.title)?,
        body: model::check_body(body.body)?,
        source_url: model::check_source_url(body.source_url)?,
        tags: model::normalize_tags(&body.tags)?,
        metadata: model::check_metadata(body.metadata)?,
        version: 1,
        created_by: principal.user_id.clone(),
        created_at: now.clone(),
        updated_at: now,
        index_status: "pending",
    };
    // The item, its tags and its event as one batch: on SQLite it runs in
    // the group commit without a round trip per statement.
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    let envelope = ev.envelope("ItemCreated", item.entity(), item.event_data());
    let mut statements = vec![Statement::new(
        "INSERT INTO items (id, collection_id, title, body, source_url, tags, metadata, version, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&item.id)
    .bind(&item.collection_id)
    .bind(&item.title)
    .bind(item.body.as_ref())
    .bind(item.source_url.as_ref())
    .bind(json!(item.tags).to_string())
    .bind(Value::Object(item.metadata.clone()).to_string())
    .bind(item.version)
    .bind(&item.created_by)
    .bind(&item.created_at)
    .bind(&item.updated_at)];
    statements.extend(model::tag_statements(&item.collection_id, &item.id, &item.tags, false));
    statements.extend(atlas_events::append_statements(s.db.backend(), &envelope).map_err(ApiError::internal)?);
    s.db.write_batch(statements).await.map_err(|e| {
        if e.is_foreign_key_violation() {
            // The collection was deleted between the role check and the insert.
            ApiError::not_found("collection")
        } else {
            ApiError::internal(e)
        }
    })?;
    // A new item's id is new to the index too: it is `pending`, no lookup
    // needed.
    Ok(item_reply(StatusCode::CREATED, item, true))
}

/// Items of a collection (members), with keyset pagination.
#[utoipa::path(get, path = "/collections/{id}/items", tag = "items", params(("id" = String, Path, description = "collection id"), ListItemsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of items", body = ItemPage),
        (status = 400, description = "invalid cursor or query", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
        (status = 422, description = "limit out of range", body = ErrorBody),
    ))]
async fn list_items(
    State(s): State<ItemsState>,
    principal: Principal,
    Path(collection_id): Path<String>,
    Query(q): Query<ListItemsQuery>,
) -> ApiResult<Json<ItemPage>> {
    authorize(&s, &principal, &collection_id, "read", "collection").await?;
    let limit = page_limit(q.limit)?;
    let sort = q.sort.unwrap_or_default();
    let order = q.order.unwrap_or_default();
    let after = match &q.cursor {
        Some(c) => {
            let cursor: ItemCursor = s.cursors.decode(c)?;
            if cursor.s != sort || cursor.o != order {
                return Err(ApiError::BadRequest("this cursor belongs to another sort order".into()));
            }
            Some(cursor)
        }
        None => None,
    };
    let col = sort.column();
    let (cmp, dir) = match order {
        SortOrder::Asc => (">", "ASC"),
        SortOrder::Desc => ("<", "DESC"),
    };
    let mut sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE collection_id = $1");
    let mut n = 1;
    let tag = q
        .tag
        .as_deref()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty());
    if tag.is_some() {
        n += 1;
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM item_tags it JOIN tags t ON t.id = it.tag_id WHERE it.item_id = items.id AND t.collection_id = $1 AND t.name = ${n})"
        ));
    }
    if after.is_some() {
        sql.push_str(&format!(" AND ({col}, id) {cmp} (${}, ${})", n + 1, n + 2));
        n += 2;
    }
    sql.push_str(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT ${}", n + 1));
    let mut params = vec![Param::Text(&collection_id)];
    if let Some(t) = &tag {
        params.push(Param::Text(t));
    }
    if let Some(c) = &after {
        params.extend([Param::Text(&c.k), Param::Text(&c.id)]);
    }
    params.push(Param::Int(limit + 1));
    let mut items =
        s.db.read_rows(&sql, &params, |row| Item::from_row(row))
            .await
            .map_err(ApiError::internal)?;
    let next_cursor = s.cursors.next_page(&mut items, limit, |i| ItemCursor {
        s: sort,
        o: order,
        k: sort.key_of(i),
        id: i.id.clone(),
    });
    s.index_status.apply(&mut items);
    Ok(Json(ItemPage { items, next_cursor }))
}

/// One item (members of its collection).
#[utoipa::path(get, path = "/items/{id}", tag = "items", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "the item; `ETag` holds its version", body = Item),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such item, or the caller is not a member of its collection", body = ErrorBody),
    ))]
async fn get_item(State(s): State<ItemsState>, principal: Principal, Path(id): Path<String>) -> ApiResult<Response> {
    let item = read_item(&s.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("item"))?;
    authorize(&s, &principal, &item.collection_id, "read", "item").await?;
    Ok(item_response(&s, StatusCode::OK, item, false))
}

/// Change an item (owner, editor). With `If-Match: "<version>"` the change
/// only applies to that version (else 412).
#[utoipa::path(patch, path = "/items/{id}", tag = "items", params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "expected version, e.g. \"3\"")),
    request_body = UpdateItem, security(("bearer" = [])),
    responses(
        (status = 200, description = "updated; `ETag` holds the new version", body = Item),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "viewers may not write", body = ErrorBody),
        (status = 404, description = "no such item, or the caller is not a member of its collection", body = ErrorBody),
        (status = 412, description = "the item is at another version", body = ErrorBody),
        (status = 422, description = "a field is invalid", body = ErrorBody),
    ))]
async fn update_item(
    State(s): State<ItemsState>,
    principal: Principal,
    req: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<UpdateItem>,
) -> ApiResult<Response> {
    let expected = if_match(&headers)?;
    let current = read_item(&s.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("item"))?;
    authorize(&s, &principal, &current.collection_id, "write", "item").await?;
    let title = body.title.as_deref().map(model::check_title).transpose()?;
    let new_body = body.body.map(model::check_body).transpose()?;
    let source_url = body.source_url.map(model::check_source_url).transpose()?;
    let tags = body.tags.as_deref().map(model::normalize_tags).transpose()?;
    let metadata = body.metadata.map(|m| model::check_metadata(Some(m))).transpose()?;

    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    let mut tx = s.db.begin().await.map_err(db_err)?;
    let item = write_update(&mut tx, &id, expected, &ev, |item| {
        if let Some(t) = title {
            item.title = t;
        }
        if let Some(b) = new_body {
            item.body = b;
        }
        if let Some(u) = source_url {
            item.source_url = u;
        }
        if let Some(t) = tags {
            item.tags = t;
        }
        if let Some(m) = metadata {
            item.metadata = m;
        }
        Ok(())
    })
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(item_response(&s, StatusCode::OK, item, false))
}

/// The one item write path, shared by `PATCH /items/{id}` and
/// [`ItemService::update`](crate::ItemService::update): load the item inside
/// `tx`, check `expected` against its version, let `change` edit it, store it
/// with a bumped version (refusing a concurrent update) and append
/// `ItemUpdated`. `change` must leave the item valid.
pub(crate) async fn write_update(
    tx: &mut AnyConnection,
    id: &str,
    expected: Option<i64>,
    ev: &EventContext,
    change: impl FnOnce(&mut Item) -> ApiResult<()>,
) -> ApiResult<Item> {
    let mut item = load(tx, id).await?.ok_or_else(|| ApiError::not_found("item"))?;
    if let Some(v) = expected {
        if v != item.version {
            return Err(version_mismatch(item.version));
        }
    }
    let old_tags = item.tags.clone();
    change(&mut item)?;
    let tags_changed = item.tags != old_tags;
    let loaded_version = item.version;
    item.version += 1;
    item.updated_at = atlas_db::now();
    let done = sqlx::query(
        "UPDATE items SET title = $1, body = $2, source_url = $3, tags = $4, metadata = $5, version = $6, updated_at = $7
         WHERE id = $8 AND version = $9",
    )
    .bind(&item.title)
    .bind(&item.body)
    .bind(&item.source_url)
    .bind(json!(item.tags).to_string())
    .bind(Value::Object(item.metadata.clone()).to_string())
    .bind(item.version)
    .bind(&item.updated_at)
    .bind(id)
    .bind(loaded_version)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    if done.rows_affected() == 0 {
        // A concurrent update won between our read and write.
        return Err(version_mismatch(loaded_version + 1));
    }
    if tags_changed {
        model::store_tags(tx, &item.collection_id, &item.id, &item.tags, true)
            .await
            .map_err(ApiError::internal)?;
    }
    emit(tx, ev, "ItemUpdated", &item).await?;
    Ok(item)
}

/// Delete an item (owner, editor).
#[utoipa::path(delete, path = "/items/{id}", tag = "items", params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "viewers may not write", body = ErrorBody),
        (status = 404, description = "no such item, or the caller is not a member of its collection", body = ErrorBody),
    ))]
async fn delete_item(
    State(s): State<ItemsState>,
    principal: Principal,
    req: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let item = read_item(&s.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("item"))?;
    authorize(&s, &principal, &item.collection_id, "write", "item").await?;
    let mut tx = s.db.begin().await.map_err(db_err)?;
    let done = sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("item"));
    }
    let ev = EventContext::from_request(Some(principal.user_id.clone()), &req);
    let envelope = ev.envelope(
        "ItemDeleted",
        item.entity(),
        model::deleted_data(&item.id, &item.collection_id),
    );
    atlas_events::append(&mut tx, &envelope)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(db_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tag and how many items carry it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagCount {
    name: String,
    count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TagPage {
    items: Vec<TagCount>,
    next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct TagCursor {
    name: String,
}

/// Tags in use in a collection, by name, with item counts (members).
#[utoipa::path(get, path = "/collections/{id}/tags", tag = "items", params(("id" = String, Path, description = "collection id"), PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of tags", body = TagPage),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such collection, or the caller is not a member", body = ErrorBody),
    ))]
async fn list_tags(
    State(s): State<ItemsState>,
    principal: Principal,
    Path(collection_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<TagPage>> {
    s.guard.authorize(&principal, &collection_id, "tags", "read").await?;
    let limit = page_limit(q.limit)?;
    let after = match &q.cursor {
        Some(c) => s.cursors.decode::<TagCursor>(c)?.name,
        None => String::new(),
    };
    let rows = sqlx::query(
        "SELECT t.name, COUNT(it.item_id) AS n FROM tags t JOIN item_tags it ON it.tag_id = t.id
         WHERE t.collection_id = $1 AND t.name > $2 GROUP BY t.name ORDER BY t.name LIMIT $3",
    )
    .bind(&collection_id)
    .bind(&after)
    .bind(limit + 1)
    .fetch_all(s.db.reader())
    .await
    .map_err(db_err)?;
    let mut items = rows
        .iter()
        .map(|r| {
            Ok(TagCount {
                name: r.try_get(0)?,
                count: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_err)?;
    let next_cursor = s
        .cursors
        .next_page(&mut items, limit, |t| TagCursor { name: t.name.clone() });
    Ok(Json(TagPage { items, next_cursor }))
}
