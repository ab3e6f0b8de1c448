//! The other built-in job types: `APPLY_DERIVED_TAGS`, `REINDEX_ITEM` and
//! `HEALTH_PROBE` (the steps of `ITEM_INTAKE` and `HEALTH_CHECK`).

use std::sync::Arc;

use async_trait::async_trait;
use atlas_items::{ItemChange, ItemService};
use atlas_kernel::AppContext;
use serde_json::{json, Value};

use crate::enrich::{item_error, payload_item};
use crate::handler::{JobError, JobHandler, JobRun, JobScope};
use crate::queue::JobQueue;

/// Tags one enrichment adds at most.
const DERIVED_TAGS_MAX: usize = 8;

/// Why nothing can be reindexed in this build.
pub const NO_SEARCH: &str = "full-text search is not part of this build, so there is no index to update";

/// `APPLY_DERIVED_TAGS {item_id}`: tags from the item's enrichment — its
/// keywords and site name, lower-cased — added to the item's own.
pub struct ApplyDerivedTags {
    pub items: Arc<ItemService>,
}

/// The tags an enrichment suggests, normalized and de-duplicated.
pub fn derived_tags(enrichment: &Value) -> Vec<String> {
    let mut candidates: Vec<String> = enrichment
        .get("keywords")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(site) = enrichment.get("site_name").and_then(Value::as_str) {
        candidates.push(site.to_string());
    }
    let mut tags: Vec<String> = Vec::new();
    for c in candidates {
        let t = c.trim().to_lowercase();
        if !t.is_empty() && t.chars().count() <= 64 && !tags.contains(&t) && tags.len() < DERIVED_TAGS_MAX {
            tags.push(t);
        }
    }
    tags
}

#[async_trait]
impl JobHandler for ApplyDerivedTags {
    fn job_type(&self) -> &'static str {
        "APPLY_DERIVED_TAGS"
    }
    fn scope(&self) -> JobScope {
        JobScope::Item
    }

    async fn run(&self, job: &JobRun) -> Result<Value, JobError> {
        let item = payload_item(&self.items, &job.payload).await?;
        let id = item.id.as_str();
        let Some(enrichment) = item.metadata.get("enrichment") else {
            return Err(JobError::Skip("the item has no enrichment to derive tags from".into()));
        };
        let mut tags = derived_tags(enrichment);
        // Never push an item over its tag limit: keep what fits.
        let room = 32usize.saturating_sub(item.tags.len());
        tags.retain(|t| !item.tags.contains(t));
        tags.truncate(room);
        if tags.is_empty() {
            return Ok(json!({ "added_tags": [] }));
        }
        let change = ItemChange {
            add_tags: tags.clone(),
            ..Default::default()
        };
        self.items.update(id, &change, &job.events).await.map_err(item_error)?;
        Ok(json!({ "added_tags": tags }))
    }
}

/// `REINDEX_ITEM {item_id}`: every api process's search index re-reads the
/// item from the database.
///
/// Indexes belong to api processes, and a worker may run the job in
/// another process, so the job does not touch an index: it checks that the
/// item exists and records the version it saw, and its `JobSucceeded` event
/// (whose data names the item) tells each process's indexer, through the
/// event log every indexer follows, to replace the item's document with
/// its current state. `GET /items/{id}` shows `index_status: pending` until
/// the index of the process answering has done so.
pub struct ReindexItem {
    pub items: Arc<ItemService>,
    /// Whether the search module runs in this application.
    pub has_search: bool,
}

#[async_trait]
impl JobHandler for ReindexItem {
    fn job_type(&self) -> &'static str {
        "REINDEX_ITEM"
    }
    fn scope(&self) -> JobScope {
        JobScope::Item
    }

    async fn run(&self, job: &JobRun) -> Result<Value, JobError> {
        if !self.has_search {
            return Err(match job.workflow_id {
                Some(_) => JobError::Skip(NO_SEARCH.into()),
                None => JobError::Fatal(NO_SEARCH.into()),
            });
        }
        let item = payload_item(&self.items, &job.payload).await?;
        Ok(json!({ "item_id": item.id, "version": item.version }))
    }
}

/// `HEALTH_PROBE {}`: the report of `HEALTH_CHECK` — the database, the
/// migrations and every other readiness check, the event log, search and
/// the job queue.
pub struct HealthProbe {
    pub ctx: AppContext,
    pub queue: JobQueue,
    pub has_search: bool,
}

#[async_trait]
impl JobHandler for HealthProbe {
    fn job_type(&self) -> &'static str {
        "HEALTH_PROBE"
    }
    fn scope(&self) -> JobScope {
        JobScope::Admin
    }

    async fn run(&self, _job: &JobRun) -> Result<Value, JobError> {
        let mut checks = serde_json::Map::new();
        let mut ok = true;
        for check in self.ctx.readiness_checks() {
            let entry = match check.check().await {
                Ok(details) => json!({"ok": true, "details": details}),
                Err(reason) => {
                    ok = false;
                    json!({"ok": false, "error": reason})
                }
            };
            checks.insert(check.name().to_string(), entry);
        }
        let event_log = match self.ctx.db().reader().acquire().await {
            Ok(mut conn) => match atlas_events::read_after(&mut conn, 0, 1).await {
                Ok(_) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            },
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        };
        ok &= event_log["ok"] == true;
        checks.insert("event_log".into(), event_log);
        let search = if self.has_search {
            json!({"ok": true})
        } else {
            json!({"ok": true, "details": {"built_in": false, "note": NO_SEARCH}})
        };
        checks.insert("search".into(), search);
        let queue = match self.queue.stats().await {
            Ok(stats) => {
                let healthy = stats.expired_leases == 0;
                ok &= healthy;
                json!({"ok": healthy, "details": {"depth": stats.depth, "expired_leases": stats.expired_leases}})
            }
            Err(e) => {
                ok = false;
                json!({"ok": false, "error": e.to_string()})
            }
        };
        checks.insert("job_queue".into(), queue);
        Ok(json!({"ok": ok, "checks": checks, "checked_at": atlas_db::now()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_from_keywords_and_site_name() {
        let e = json!({"keywords": ["Rust", "async", "rust", ""], "site_name": "Example Site"});
        assert_eq!(derived_tags(&e), ["rust", "async", "example site"]);
        assert!(derived_tags(&json!({})).is_empty());
    }
}
