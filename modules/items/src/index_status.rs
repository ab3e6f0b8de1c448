//! `index_status` of items: `indexed` once the search index holds the
//! item's current version, else `pending`.
//!
//! Items know nothing of search: the search module, when built in, hands an
//! [`IndexedVersions`] to the [`IndexStatus`] this module provides. Every
//! item this module returns passes through [`IndexStatus::apply`], the one
//! place the field is set.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::Item;

/// Which version of each item is searchable now.
pub trait IndexedVersions: Send + Sync + 'static {
    /// For each id the version the index holds; ids it does not hold are absent.
    fn indexed_versions(&self, ids: &[&str]) -> HashMap<String, i64>;
}

/// Sets `index_status` on items; provided in the `AppContext`.
#[derive(Default)]
pub struct IndexStatus {
    source: RwLock<Option<Arc<dyn IndexedVersions>>>,
}

impl IndexStatus {
    /// Called once by the module that indexes items.
    pub fn set_source(&self, source: Arc<dyn IndexedVersions>) {
        *self.source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// `indexed` for each item whose indexed version reached its version,
    /// `pending` otherwise (and always, when nothing indexes items).
    pub fn apply(&self, items: &mut [Item]) {
        let source = self.source.read().unwrap_or_else(|e| e.into_inner()).clone();
        let versions = match source {
            Some(source) if !items.is_empty() => {
                let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
                source.indexed_versions(&ids)
            }
            _ => HashMap::new(),
        };
        for item in items {
            let indexed = versions.get(&item.id).is_some_and(|v| *v >= item.version);
            item.index_status = if indexed { "indexed" } else { "pending" };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(HashMap<String, i64>);

    impl IndexedVersions for Fixed {
        fn indexed_versions(&self, ids: &[&str]) -> HashMap<String, i64> {
            ids.iter()
                .filter_map(|id| self.0.get(*id).map(|v| (id.to_string(), *v)))
                .collect()
        }
    }

    fn item(id: &str, version: i64) -> Item {
        Item {
            id: id.into(),
            collection_id: "c".into(),
            title: "t".into(),
            body: None,
            source_url: None,
            tags: vec![],
            metadata: Default::default(),
            version,
            created_by: "u".into(),
            created_at: "x".into(),
            updated_at: "x".into(),
            index_status: "pending",
        }
    }

    #[test]
    fn indexed_only_once_the_current_version_is() {
        let status = IndexStatus::default();
        let mut items = vec![item("a", 2), item("b", 1), item("c", 1)];
        status.apply(&mut items);
        assert!(items.iter().all(|i| i.index_status == "pending"), "no indexer: pending");
        status.set_source(Arc::new(Fixed(
            [("a".to_string(), 1), ("b".to_string(), 1)].into_iter().collect(),
        )));
        status.apply(&mut items);
        let got: Vec<_> = items.iter().map(|i| i.index_status).collect();
        assert_eq!(got, ["pending", "indexed", "pending"]);
    }
}
