//! Roles from the memberships table, and slug rules.

use async_trait::async_trait;
use atlas_auth::RoleResolver;
use atlas_db::sqlx::{self, Row};
use atlas_db::{Database, Param};
use atlas_http::ApiError;

pub(crate) struct DbRoles {
    db: Database,
}

impl DbRoles {
    pub(crate) fn new(db: Database) -> Self {
        DbRoles { db }
    }
}

#[async_trait]
impl RoleResolver for DbRoles {
    async fn role_in(&self, user_id: &str, collection_id: &str) -> Result<Option<String>, ApiError> {
        // On every request that touches a collection: a short read.
        self.db
            .read_row(
                "SELECT role FROM memberships WHERE collection_id = $1 AND user_id = $2",
                &[Param::Text(collection_id), Param::Text(user_id)],
                |row| row.text(0),
            )
            .await
            .map_err(ApiError::internal)
    }

    async fn collections_of(&self, user_id: &str) -> Result<Vec<String>, ApiError> {
        let rows = sqlx::query("SELECT collection_id FROM memberships WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(self.db.reader())
            .await
            .map_err(ApiError::internal)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(ApiError::internal)
    }
}

pub(crate) const ROLES: [&str; 3] = ["owner", "editor", "viewer"];

pub(crate) fn check_role(role: &str) -> Result<(), ApiError> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::validation("role", "role must be owner, editor or viewer"))
    }
}

/// An explicit slug: `[a-z0-9-]{1,64}`.
pub(crate) fn check_slug(slug: &str) -> Result<(), ApiError> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "slug",
            "slug must be 1 to 64 characters of a-z, 0-9 and -",
        ))
    }
}

/// A slug derived from a name: lower-case ASCII letters and digits, other
/// runs become one `-`; at most 56 characters so a `-NNN…` suffix fits.
pub(crate) fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut slug: String = out.trim_matches('-').chars().take(56).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        "collection".into()
    } else {
        slug
    }
}

/// The first of `base`, `base-2`, `base-3`, … not in `taken`.
pub(crate) fn first_free_slug(base: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == base) {
        return base.to_string();
    }
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| format!("{base}-{}", uuid::Uuid::now_v7().simple()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("  Reading List: Rust & Go!  "), "reading-list-rust-go");
        assert_eq!(slugify("!!!"), "collection");
        assert_eq!(slugify(&"a".repeat(100)).len(), 56);
        assert_eq!(first_free_slug("x", &[]), "x");
        assert_eq!(first_free_slug("x", &["x".into(), "x-2".into()]), "x-3");
        assert!(check_slug("ok-1").is_ok());
        assert!(check_slug("").is_err());
        assert!(check_slug("Not").is_err());
        assert!(check_slug(&"a".repeat(65)).is_err());
    }
}
