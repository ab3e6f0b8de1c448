//! [`ItemService`]: what other modules may do with items, through the same
//! write path as the HTTP handlers (so every change has its `ItemUpdated`).

use atlas_db::sqlx;
use atlas_db::{Database, Param};
use atlas_events::EventContext;
use atlas_http::{ApiError, ApiResult};
use serde_json::Value;

use crate::model::{self, Item, ITEM_COLUMNS};
use crate::routes::{read_item, write_update};

/// A change another module (a job, a rule) makes to an item on behalf of a
/// user. Validated like a request body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemChange {
    /// `metadata[key] = value` for each pair; other keys are kept.
    pub set_metadata: Vec<(String, Value)>,
    /// Tags to add (trimmed, lower-cased, de-duplicated; at most 32 in all).
    pub add_tags: Vec<String>,
    /// Tags to remove (compared after the same normalization), after adding.
    pub remove_tags: Vec<String>,
}

/// Reads and changes items for other modules; provided in the `AppContext`.
/// It does not check permissions: the caller decided who may act.
#[derive(Clone)]
pub struct ItemService {
    db: Database,
}

impl ItemService {
    pub fn new(db: Database) -> Self {
        ItemService { db }
    }

    /// The item, if it exists.
    pub async fn get(&self, id: &str) -> ApiResult<Option<Item>> {
        read_item(&self.db, id).await
    }

    /// The items among `ids` that exist, in no particular order. Lookups by
    /// key, 500 at a time (on SQLite on this thread, like other short reads).
    pub async fn get_many(&self, ids: &[String]) -> ApiResult<Vec<Item>> {
        let mut items = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {ITEM_COLUMNS} FROM items WHERE id IN ({})",
                atlas_db::param_list(1, chunk.len())
            );
            let params: Vec<Param<'_>> = chunk.iter().map(|id| Param::Text(id)).collect();
            let rows = self.db.read_rows(&sql, &params, |row| Item::from_row(row)).await;
            items.extend(rows.map_err(ApiError::internal)?);
        }
        Ok(items)
    }

    /// Up to `limit` items with an id after `after_id`, by id, optionally of
    /// one collection: a full scan in pages, for rebuilding projections.
    pub async fn page_by_id(&self, collection_id: Option<&str>, after_id: &str, limit: i64) -> ApiResult<Vec<Item>> {
        let rows = match collection_id {
            Some(c) => {
                sqlx::query(&format!(
                    "SELECT {ITEM_COLUMNS} FROM items WHERE collection_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(c)
                .bind(after_id)
                .bind(limit)
                .fetch_all(self.db.reader())
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ITEM_COLUMNS} FROM items WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(after_id)
                .bind(limit)
                .fetch_all(self.db.reader())
                .await
            }
        }
        .map_err(ApiError::internal)?;
        rows.iter()
            .map(Item::from_row)
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)
    }

    /// Apply `change` and commit it with its `ItemUpdated` event. A change
    /// that would leave the item as it is writes nothing and emits nothing,
    /// so a job that repeats its work after a crash changes nothing twice.
    pub async fn update(&self, id: &str, change: &ItemChange, ev: &EventContext) -> ApiResult<Item> {
        let current = self.get(id).await?.ok_or_else(|| ApiError::not_found("item"))?;
        let mut preview = current.clone();
        apply(&mut preview, change)?;
        if preview == current {
            return Ok(current);
        }
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let item = write_update(&mut tx, id, None, ev, |item| apply(item, change)).await?;
        tx.commit().await.map_err(ApiError::internal)?;
        Ok(item)
    }
}

fn apply(item: &mut Item, change: &ItemChange) -> ApiResult<()> {
    if !change.set_metadata.is_empty() {
        let mut metadata = item.metadata.clone();
        for (key, value) in &change.set_metadata {
            metadata.insert(key.clone(), value.clone());
        }
        item.metadata = model::check_metadata(Some(Value::Object(metadata)))?;
    }
    if !change.add_tags.is_empty() {
        let mut tags = item.tags.clone();
        tags.extend(change.add_tags.iter().cloned());
        item.tags = model::normalize_tags(&tags)?;
    }
    if !change.remove_tags.is_empty() {
        let remove = model::normalize_tags(&change.remove_tags)?;
        item.tags.retain(|t| !remove.contains(t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item() -> Item {
        Item {
            id: "i".into(),
            collection_id: "c".into(),
            title: "t".into(),
            body: None,
            source_url: None,
            tags: vec!["rust".into()],
            metadata: json!({"a": 1}).as_object().cloned().unwrap_or_default(),
            version: 1,
            created_by: "u".into(),
            created_at: "x".into(),
            updated_at: "x".into(),
            index_status: "pending",
        }
    }

    #[test]
    fn changes_merge_metadata_and_normalize_tags() {
        let mut i = item();
        let change = ItemChange {
            set_metadata: vec![("enrichment".into(), json!({"title": "T"}))],
            add_tags: vec![" Rust ".into(), "Web".into()],
            ..Default::default()
        };
        apply(&mut i, &change).unwrap();
        assert_eq!(i.tags, ["rust", "web"]);
        assert_eq!(
            Value::Object(i.metadata.clone()),
            json!({"a": 1, "enrichment": {"title": "T"}})
        );
        let mut again = i.clone();
        apply(&mut again, &change).unwrap();
        assert_eq!(again, i, "applying a change twice is a no-op");
        let remove = ItemChange {
            remove_tags: vec!["WEB ".into(), "absent".into()],
            ..Default::default()
        };
        apply(&mut i, &remove).unwrap();
        assert_eq!(i.tags, ["rust"]);
        let blank = ItemChange {
            add_tags: vec!["  ".into()],
            ..Default::default()
        };
        assert!(matches!(apply(&mut i, &blank), Err(ApiError::Validation { .. })));
    }
}
