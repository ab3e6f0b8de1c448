//! `GET /api/v1/search/items`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use atlas_auth::{Authenticator, CollectionGuard, Principal};
use atlas_http::{page_limit, ApiError, ApiResult, CursorCodec, ErrorBody, Json, Query};
use atlas_items::{IndexStatus, Item, ItemService};
use axum::extract::{FromRef, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::{self, Direction, Highlighter, SearchRequest, SortBy};
use crate::index::LiveIndex;
use crate::query::{Filters, Typos, UserQuery};

#[derive(Clone)]
pub(crate) struct SearchState {
    pub live: LiveIndex,
    pub items: Arc<ItemService>,
    pub auth: Arc<Authenticator>,
    pub guard: Arc<CollectionGuard>,
    pub status: Arc<IndexStatus>,
    pub cursors: CursorCodec,
    pub fuzzy_below: usize,
}

impl FromRef<SearchState> for Arc<Authenticator> {
    fn from_ref(s: &SearchState) -> Self {
        s.auth.clone()
    }
}

pub(crate) fn router(state: SearchState) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(search_items)).with_state(state)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words, "phrases", -exclusions; the last word also matches as a prefix
    /// unless the query ends with a space. Empty: every item (filtered).
    q: Option<String>,
    /// Only this collection (the caller must be a member, else 404).
    collection_id: Option<String>,
    /// Comma-separated: items having all of these tags.
    tags: Option<String>,
    /// relevance (default), created_at, updated_at or title.
    #[param(inline)]
    sort: Option<SortBy>,
    /// asc or desc; default desc, asc for title.
    #[param(inline)]
    order: Option<Direction>,
    /// 1–200, default 50.
    limit: Option<i64>,
    /// Opaque cursor from a previous page.
    cursor: Option<String>,
}

/// Matches in an item's text: `<mark>` around them, the rest HTML-escaped.
#[derive(Debug, Serialize, ToSchema, Default)]
pub struct Highlights {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    item: Item,
    /// Relevance (higher is better); comparable within one search only.
    score: f32,
    highlights: Highlights,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    items: Vec<SearchHit>,
    next_cursor: Option<String>,
    /// Items matching, as the index counts them (before the final
    /// permission and existence re-check).
    total_estimate: u64,
}

/// Position of the next page: its offset, the typo mode the first page
/// chose, and a digest of the search it belongs to.
#[derive(Serialize, Deserialize)]
struct SearchCursor {
    o: usize,
    f: bool,
    h: String,
}

fn digest(q: &str, collection_id: Option<&str>, tags: &[String], sort: SortBy, order: Direction) -> String {
    let mut h = Sha256::new();
    let canonical = serde_json::json!([q, collection_id, tags, sort, order]).to_string();
    h.update(canonical.as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// Tags as the items module stores them: trimmed, lower-cased, unique.
fn parse_tags(raw: Option<&str>) -> ApiResult<Vec<String>> {
    let mut tags: Vec<String> = Vec::new();
    for t in raw.unwrap_or("").split(',') {
        let t = t.trim().to_lowercase();
        if t.is_empty() {
            continue;
        }
        if t.chars().count() > 64 {
            return Err(ApiError::validation("tags", "each tag must be at most 64 characters"));
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > 32 {
        return Err(ApiError::validation("tags", "at most 32 tags"));
    }
    Ok(tags)
}

/// The collections the caller may search here: all of theirs, or the one
/// named (404 when not theirs). The one place the permission filter's
/// input is decided.
async fn searchable_collections(
    s: &SearchState,
    principal: &Principal,
    collection_id: Option<&str>,
) -> ApiResult<Vec<String>> {
    match collection_id {
        Some(c) => {
            s.guard.authorize(principal, c, "items", "read").await?;
            Ok(vec![c.to_string()])
        }
        None => s.guard.visible_collections(principal).await,
    }
}

/// Search items of the caller's collections.
#[utoipa::path(get, path = "/search/items", tag = "search", params(SearchQuery), security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of matching items, best first unless sorted otherwise", body = SearchPage),
        (status = 400, description = "invalid cursor, or q too long", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "collection_id names a collection the caller is not a member of", body = ErrorBody),
        (status = 422, description = "limit out of range, or an invalid tag", body = ErrorBody),
        (status = 503, description = "this node's index is being built", body = ErrorBody),
    ))]
async fn search_items(
    State(s): State<SearchState>,
    principal: Principal,
    Query(params): Query<SearchQuery>,
) -> ApiResult<Json<SearchPage>> {
    let started = Instant::now();
    let limit = page_limit(params.limit)? as usize;
    let q = params.q.unwrap_or_default();
    let user = UserQuery::parse(&q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let tags = parse_tags(params.tags.as_deref())?;
    let sort = params.sort.unwrap_or_default();
    let order = params.order.unwrap_or_else(|| sort.default_order());
    let collection_id = params.collection_id.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let fingerprint = digest(&q, collection_id, &tags, sort, order);
    let (offset, typos) = match &params.cursor {
        Some(c) => {
            let cursor: SearchCursor = s.cursors.decode(c)?;
            if cursor.h != fingerprint {
                return Err(ApiError::BadRequest("this cursor belongs to another search".into()));
            }
            let typos = if cursor.f { Typos::Tolerated } else { Typos::Exact };
            (cursor.o, Some(typos))
        }
        None => (0, None),
    };
    let collections = searchable_collections(&s, &principal, collection_id).await?;
    let generation = s
        .live
        .get()
        .ok_or_else(|| ApiError::Unavailable("the search index is being built; try again shortly".into()))?;
    if collections.is_empty() {
        return Ok(Json(SearchPage {
            items: Vec::new(),
            next_cursor: None,
            total_estimate: 0,
        }));
    }
    let request = SearchRequest {
        query: user.clone(),
        filters: Filters {
            collection_ids: collections.clone(),
            tags,
        },
        sort,
        order,
        limit,
        offset,
        typos,
    };
    let fuzzy_below = s.fuzzy_below;
    let searched = {
        let generation = generation.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || engine::search(&generation, &request, fuzzy_below))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
    };

    // Re-check every hit against the database: the item still exists and
    // its collection is one the caller belongs to now.
    let ids: Vec<String> = searched.hits.iter().map(|h| h.id.clone()).collect();
    let allowed: HashSet<&str> = collections.iter().map(String::as_str).collect();
    let mut loaded: HashMap<String, Item> = s
        .items
        .get_many(&ids)
        .await?
        .into_iter()
        .filter(|i| allowed.contains(i.collection_id.as_str()))
        .map(|i| (i.id.clone(), i))
        .collect();
    let mut highlighter = Highlighter::new(&generation, &user).map_err(ApiError::internal)?;
    let mut hits = Vec::with_capacity(searched.hits.len());
    for hit in &searched.hits {
        let Some(item) = loaded.remove(&hit.id) else {
            continue;
        };
        let highlights = Highlights {
            title: highlighter.title(&item.title),
            body: item.body.as_deref().and_then(|b| highlighter.body(b)),
        };
        hits.push(SearchHit {
            item,
            score: hit.score,
            highlights,
        });
    }
    let mut items: Vec<Item> = hits.iter().map(|h| h.item.clone()).collect();
    s.status.apply(&mut items);
    for (hit, item) in hits.iter_mut().zip(items) {
        hit.item.index_status = item.index_status;
    }
    let next_cursor = searched.more.then(|| {
        s.cursors.encode(&SearchCursor {
            o: offset + limit,
            f: searched.typos == Typos::Tolerated,
            h: fingerprint,
        })
    });
    metrics::histogram!("atlas_search_query_duration_seconds").record(started.elapsed().as_secs_f64());
    Ok(Json(SearchPage {
        items: hits,
        next_cursor,
        total_estimate: searched.total as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalized_like_items_store_them() {
        assert_eq!(parse_tags(Some(" Rust, web,,rust ")).unwrap(), ["rust", "web"]);
        assert!(parse_tags(Some(&"x".repeat(65))).is_err());
        assert!(parse_tags(None).unwrap().is_empty());
    }

    #[test]
    fn a_cursor_is_bound_to_its_search() {
        let a = digest("rust", None, &[], SortBy::Relevance, Direction::Desc);
        assert_eq!(a, digest("rust", None, &[], SortBy::Relevance, Direction::Desc));
        assert_ne!(a, digest("rust ", None, &[], SortBy::Relevance, Direction::Desc));
        assert_ne!(a, digest("rust", Some("c"), &[], SortBy::Relevance, Direction::Desc));
        assert_ne!(a, digest("rust", None, &[], SortBy::Title, Direction::Desc));
    }
}
