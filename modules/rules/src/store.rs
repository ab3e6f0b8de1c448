//! Collection rules in the database: the current version of each rule and
//! every version before it, and the revision counter engines watch.

use atlas_db::sqlx::{self, AnyConnection, Row};
use atlas_db::Database;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A collection's rule, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredRule {
    pub id: String,
    pub collection_id: String,
    pub name: String,
    /// 1 when created; each update adds one.
    pub version: i64,
    /// The rule as checked: `name`, `on`, `when`, `do`, `enabled`, `priority`.
    #[schema(value_type = Object)]
    pub definition: Value,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_by: Option<String>,
    pub updated_at: String,
}

/// One version of a collection rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleVersion {
    pub rule_id: String,
    pub version: i64,
    /// `created`, `updated` or `deleted`.
    pub change: String,
    #[schema(value_type = Object)]
    pub definition: Value,
    /// The text as submitted (YAML or JSON).
    pub source: String,
    pub author_user_id: Option<String>,
    pub created_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this collection already has a rule named `{0}`")]
    NameTaken(String),
    #[error("rule not found")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<StoreError> for atlas_http::ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken(_) => atlas_http::ApiError::conflict(e.to_string()),
            StoreError::NotFound => atlas_http::ApiError::not_found("rule"),
            StoreError::Database(e) => atlas_http::ApiError::internal(e),
        }
    }
}

const COLUMNS: &str = "id, collection_id, name, version, definition, created_by, created_at, updated_by, updated_at";

fn json_column(row: &sqlx::any::AnyRow, column: &str) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn rule_from_row(row: &sqlx::any::AnyRow) -> Result<StoredRule, sqlx::Error> {
    Ok(StoredRule {
        id: row.try_get("id")?,
        collection_id: row.try_get("collection_id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        definition: json_column(row, "definition")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// What a change writes: the checked definition and the submitted text.
pub struct RuleChange<'a> {
    pub name: &'a str,
    pub definition: &'a Value,
    pub source: &'a str,
    pub author: &'a str,
}

#[derive(Clone)]
pub struct RuleStore {
    db: Database,
}

impl RuleStore {
    pub fn new(db: Database) -> Self {
        RuleStore { db }
    }

    pub async fn list(&self, collection_id: &str) -> Result<Vec<StoredRule>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM collection_rules WHERE collection_id = $1 ORDER BY name"
        ))
        .bind(collection_id)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows.iter().map(rule_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, collection_id: &str, id: &str) -> Result<StoredRule, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM collection_rules WHERE collection_id = $1 AND id = $2"
        ))
        .bind(collection_id)
        .bind(id)
        .fetch_optional(self.db.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(rule_from_row(&row)?)
    }

    pub async fn create(&self, collection_id: &str, change: RuleChange<'_>) -> Result<StoredRule, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = atlas_db::now();
        let mut tx = self.db.begin().await?;
        name_free(&mut tx, collection_id, change.name, &id).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO collection_rules ({COLUMNS}) VALUES ($1, $2, $3, 1, $4, $5, $6, $5, $6) RETURNING {COLUMNS}"
        ))
        .bind(&id)
        .bind(collection_id)
        .bind(change.name)
        .bind(change.definition.to_string())
        .bind(change.author)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await?;
        record_version(&mut tx, &id, 1, collection_id, "created", &change, &now).await?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(rule_from_row(&row)?)
    }

    pub async fn update(
        &self,
        collection_id: &str,
        id: &str,
        change: RuleChange<'_>,
    ) -> Result<StoredRule, StoreError> {
        let now = atlas_db::now();
        let mut tx = self.db.begin().await?;
        name_free(&mut tx, collection_id, change.name, id).await?;
        let row = sqlx::query(&format!(
            "UPDATE collection_rules SET name = $3, version = version + 1, definition = $4, updated_by = $5, updated_at = $6 \
             WHERE collection_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(collection_id)
        .bind(id)
        .bind(change.name)
        .bind(change.definition.to_string())
        .bind(change.author)
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let rule = rule_from_row(&row)?;
        record_version(&mut tx, id, rule.version, collection_id, "updated", &change, &now).await?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(rule)
    }

    pub async fn delete(&self, collection_id: &str, id: &str, author: &str) -> Result<(), StoreError> {
        let now = atlas_db::now();
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(&format!(
            "DELETE FROM collection_rules WHERE collection_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(collection_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let rule = rule_from_row(&row)?;
        let change = RuleChange {
            name: &rule.name,
            definition: &rule.definition,
            source: "",
            author,
        };
        record_version(&mut tx, id, rule.version + 1, collection_id, "deleted", &change, &now).await?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every version of a rule, oldest first (also after it was deleted).
    pub async fn versions(&self, collection_id: &str, id: &str) -> Result<Vec<RuleVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT rule_id, version, change, definition, source, author_user_id, created_at \
             FROM collection_rule_versions WHERE collection_id = $1 AND rule_id = $2 ORDER BY version",
        )
        .bind(collection_id)
        .bind(id)
        .fetch_all(self.db.reader())
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound);
        }
        let versions = rows
            .iter()
            .map(|row| {
                Ok(RuleVersion {
                    rule_id: row.try_get("rule_id")?,
                    version: row.try_get("version")?,
                    change: row.try_get("change")?,
                    definition: json_column(row, "definition")?,
                    source: row.try_get("source")?,
                    author_user_id: row.try_get("author_user_id")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(versions)
    }

    /// The revision counter: it changes whenever any collection rule does.
    pub async fn revision(&self) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT revision FROM rules_revision WHERE id = 1")
            .fetch_one(self.db.reader())
            .await?;
        row.try_get(0)
    }

    /// A collection's rules (id, definition) for the engine.
    pub async fn definitions(&self, collection_id: &str) -> Result<Vec<(String, Value)>, sqlx::Error> {
        let rows = sqlx::query("SELECT id, definition FROM collection_rules WHERE collection_id = $1 ORDER BY name")
            .bind(collection_id)
            .fetch_all(self.db.reader())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, json_column(row, "definition")?)))
            .collect()
    }
}

/// Remove a deleted collection's rules and their history (inside the
/// collection's delete transaction).
pub async fn delete_collection(conn: &mut AnyConnection, collection_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM collection_rules WHERE collection_id = $1")
        .bind(collection_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM collection_rule_versions WHERE collection_id = $1")
        .bind(collection_id)
        .execute(&mut *conn)
        .await?;
    bump_revision(conn).await
}

async fn name_free(conn: &mut AnyConnection, collection_id: &str, name: &str, id: &str) -> Result<(), StoreError> {
    let taken = sqlx::query("SELECT id FROM collection_rules WHERE collection_id = $1 AND name = $2 AND id <> $3")
        .bind(collection_id)
        .bind(name)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match taken {
        Some(_) => Err(StoreError::NameTaken(name.to_string())),
        None => Ok(()),
    }
}

async fn record_version(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
    collection_id: &str,
    change_kind: &str,
    change: &RuleChange<'_>,
    now: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO collection_rule_versions (rule_id, version, collection_id, change, definition, source, author_user_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(version)
    .bind(collection_id)
    .bind(change_kind)
    .bind(change.definition.to_string())
    .bind(change.source)
    .bind(change.author)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn bump_revision(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rules_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
