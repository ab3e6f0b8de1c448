//! The item: its fields, limits and storage.

use atlas_db::sqlx::AnyConnection;
use atlas_db::{DbError, DbRow, Statement};
use atlas_events::EntityRef;
use atlas_http::ApiError;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

pub const TITLE_MAX_CHARS: usize = 500;
pub const BODY_MAX_BYTES: usize = 1024 * 1024;
pub const URL_MAX_BYTES: usize = 2048;
pub const TAG_MAX_CHARS: usize = 64;
pub const TAGS_MAX: usize = 32;
pub const METADATA_MAX_BYTES: usize = 64 * 1024;

/// An item in a collection.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Item {
    pub id: String,
    pub collection_id: String,
    #[schema(example = "Rust async book")]
    pub title: String,
    pub body: Option<String>,
    #[schema(example = "https://rust-lang.github.io/async-book/")]
    pub source_url: Option<String>,
    /// Trimmed, lower-cased, unique; at most 32.
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Starts at 1, +1 per update; sent as `ETag` and checked by `If-Match`.
    pub version: i64,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// `indexed` once the search index (of the node answering) holds this
    /// version; `pending` before, and always in a build without search.
    #[schema(example = "pending")]
    pub index_status: &'static str,
}

/// The columns [`Item::from_row`] decodes, in its order (a macro, so that
/// constant queries can `concat!` it).
macro_rules! item_columns {
    () => {
        "id, collection_id, title, body, source_url, tags, metadata, version, created_by, created_at, updated_at"
    };
}
pub(crate) use item_columns;
pub(crate) const ITEM_COLUMNS: &str = item_columns!();

impl Item {
    /// An item from a row of [`ITEM_COLUMNS`], in that order.
    pub(crate) fn from_row(row: &(impl DbRow + ?Sized)) -> Result<Item, DbError> {
        fn json<T: serde::de::DeserializeOwned>(row: &(impl DbRow + ?Sized), column: usize) -> Result<T, DbError> {
            let text = row.text(column)?;
            serde_json::from_str(&text).map_err(|e| DbError::Decode(format!("items column {column}: {e}")))
        }
        Ok(Item {
            id: row.text(0)?,
            collection_id: row.text(1)?,
            title: row.text(2)?,
            body: row.opt_text(3)?,
            source_url: row.opt_text(4)?,
            tags: json(row, 5)?,
            metadata: json(row, 6)?,
            version: row.int(7)?,
            created_by: row.text(8)?,
            created_at: row.text(9)?,
            updated_at: row.text(10)?,
            index_status: "pending",
        })
    }

    /// Event data: the item's state after the change.
    pub(crate) fn event_data(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.remove("index_status");
        }
        v
    }

    pub(crate) fn entity(&self) -> EntityRef {
        item_entity(&self.id, &self.collection_id)
    }
}

pub(crate) fn item_entity(id: &str, collection_id: &str) -> EntityRef {
    EntityRef {
        entity_type: "item".into(),
        id: id.into(),
        collection_id: Some(collection_id.into()),
    }
}

pub(crate) fn deleted_data(id: &str, collection_id: &str) -> Value {
    json!({"id": id, "collection_id": collection_id})
}

pub(crate) fn check_title(title: &str) -> Result<String, ApiError> {
    let t = title.trim();
    let n = t.chars().count();
    if n == 0 {
        return Err(ApiError::validation("title", "title must not be empty"));
    }
    if n > TITLE_MAX_CHARS {
        return Err(ApiError::validation(
            "title",
            format!("title must be at most {TITLE_MAX_CHARS} characters"),
        ));
    }
    Ok(t.to_string())
}

pub(crate) fn check_body(body: Option<String>) -> Result<Option<String>, ApiError> {
    match body {
        Some(b) if b.len() > BODY_MAX_BYTES => Err(ApiError::validation("body", "body must be at most 1 MiB of UTF-8")),
        other => Ok(other),
    }
}

pub(crate) fn check_source_url(url: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = url else { return Ok(None) };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::validation("source_url", "source_url must be an absolute http(s) URL");
    if raw.len() > URL_MAX_BYTES {
        return Err(ApiError::validation(
            "source_url",
            format!("source_url must be at most {URL_MAX_BYTES} bytes"),
        ));
    }
    let parsed = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(Some(parsed.to_string()))
}

/// Trim, lower-case and de-duplicate (keeping first-seen order); each 1–64
/// characters, at most 32 after de-duplication.
pub(crate) fn normalize_tags(tags: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_lowercase();
        let n = t.chars().count();
        if n == 0 {
            return Err(ApiError::validation("tags", "tags must not be blank"));
        }
        if n > TAG_MAX_CHARS {
            return Err(ApiError::validation(
                "tags",
                format!("each tag must be at most {TAG_MAX_CHARS} characters"),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > TAGS_MAX {
        return Err(ApiError::validation(
            "tags",
            format!("an item has at most {TAGS_MAX} tags"),
        ));
    }
    Ok(out)
}

pub(crate) fn check_metadata(metadata: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match metadata {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => {
            let size = serde_json::to_vec(&map).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > METADATA_MAX_BYTES {
                return Err(ApiError::validation(
                    "metadata",
                    "metadata must be at most 64 KiB as JSON",
                ));
            }
            Ok(map)
        }
        Some(_) => Err(ApiError::validation("metadata", "metadata must be a JSON object")),
    }
}

/// Replace an item's tag associations: two statements whatever the number
/// of tags (plus one delete when replacing), since they run while the single
/// write connection is held.
/// Make `tags` the item's, on `conn` (inside the item's transaction).
pub(crate) async fn store_tags(
    conn: &mut AnyConnection,
    collection_id: &str,
    item_id: &str,
    tags: &[String],
    replace: bool,
) -> Result<(), DbError> {
    for statement in tag_statements(collection_id, item_id, tags, replace) {
        statement.execute(conn).await?;
    }
    Ok(())
}

/// The statements that make `tags` the item's: each tag row created when
/// the collection has none of that name yet, and the item linked to them
/// (after unlinking its current tags when `replace`).
pub(crate) fn tag_statements(collection_id: &str, item_id: &str, tags: &[String], replace: bool) -> Vec<Statement> {
    let mut statements = Vec::with_capacity(3);
    if replace {
        statements.push(Statement::new("DELETE FROM item_tags WHERE item_id = $1").bind(item_id));
    }
    if tags.is_empty() {
        return statements;
    }
    // Placeholders are numbered in order of first appearance (SQLite binds
    // `$n` by position of first use): ($1, $2, $3), ($4, $2, $5), …
    let mut values = Vec::with_capacity(tags.len());
    let mut next = 3;
    for i in 0..tags.len() {
        if i == 0 {
            values.push("($1, $2, $3)".to_string());
            next = 4;
        } else {
            values.push(format!("(${next}, $2, ${})", next + 1));
            next += 2;
        }
    }
    let mut upsert = Statement::new(format!(
        "INSERT INTO tags (id, collection_id, name) VALUES {} ON CONFLICT (collection_id, name) DO NOTHING",
        values.join(", ")
    ));
    for (i, name) in tags.iter().enumerate() {
        upsert = upsert.bind(uuid::Uuid::now_v7().to_string());
        if i == 0 {
            upsert = upsert.bind(collection_id);
        }
        upsert = upsert.bind(name);
    }
    statements.push(upsert);
    let mut link = Statement::new(format!(
        "INSERT INTO item_tags (item_id, tag_id) SELECT $1, id FROM tags WHERE collection_id = $2 AND name IN ({})",
        atlas_db::param_list(3, tags.len())
    ))
    .bind(item_id)
    .bind(collection_id);
    for name in tags {
        link = link.bind(name);
    }
    statements.push(link);
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalized() {
        let t = normalize_tags(&[" Rust ".into(), "rust".into(), "Go".into()]).unwrap();
        assert_eq!(t, ["rust", "go"]);
        assert!(normalize_tags(&["  ".into()]).is_err());
        assert!(normalize_tags(&["x".repeat(65)]).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        assert!(normalize_tags(&many).is_err());
        let dupes: Vec<String> = (0..40).map(|i| format!("t{}", i % 32)).collect();
        assert_eq!(normalize_tags(&dupes).unwrap().len(), 32);
    }

    #[test]
    fn urls_and_titles() {
        assert!(check_source_url(Some("ftp://x.org".into())).is_err());
        assert!(check_source_url(Some("not a url".into())).is_err());
        assert_eq!(
            check_source_url(Some("https://example.org/a".into()))
                .unwrap()
                .as_deref(),
            Some("https://example.org/a")
        );
        assert!(check_title("   ").is_err());
        assert!(check_title(&"é".repeat(500)).is_ok());
        assert!(check_title(&"é".repeat(501)).is_err());
        assert!(check_metadata(Some(json!([1]))).is_err());
    }
}
