//! The loaded rules: global rules from the files under `rules.dir` (hot
//! reloaded), and each collection's rules from the database (cached until
//! the rules revision changes).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::rule::{self, LoadOptions, Origin, Rule, RuleIssue};
use crate::store::RuleStore;
use crate::yaml::Located;

/// A global rule file as last loaded successfully.
struct FileRules {
    digest: [u8; 32],
    rules: Vec<Arc<Rule>>,
}

#[derive(Default)]
struct CollectionCache {
    revision: Option<i64>,
    rules: HashMap<String, Arc<Vec<Arc<Rule>>>>,
}

/// What a reload of the rules directory found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// Files whose rules were (re)loaded.
    pub loaded: Vec<String>,
    /// Files that stopped existing; their rules are gone.
    pub removed: Vec<String>,
    /// Files that failed to load, with their problems; their previous
    /// rules (if any) stay in force.
    pub failed: Vec<(String, Vec<RuleIssue>)>,
}

pub struct RuleBook {
    dir: PathBuf,
    global_options: LoadOptions,
    collection_options: LoadOptions,
    files: Mutex<BTreeMap<String, FileRules>>,
    global: RwLock<Arc<Vec<Arc<Rule>>>>,
    store: RuleStore,
    cache: Mutex<CollectionCache>,
}

impl RuleBook {
    pub fn new(dir: PathBuf, global_options: LoadOptions, collection_options: LoadOptions, store: RuleStore) -> Self {
        RuleBook {
            dir,
            global_options,
            collection_options,
            files: Mutex::default(),
            global: RwLock::default(),
            store,
            cache: Mutex::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a collection's rules may use.
    pub fn collection_options(&self) -> &LoadOptions {
        &self.collection_options
    }

    /// What global rules may use.
    pub fn global_options(&self) -> &LoadOptions {
        &self.global_options
    }

    /// The global rules in force.
    pub fn global(&self) -> Arc<Vec<Arc<Rule>>> {
        self.global.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the rules directory again: changed files are parsed and, when
    /// valid, replace their previous rules; a broken file keeps its previous
    /// rules and is reported; deleted files drop theirs.
    pub fn reload(&self) -> Reload {
        let mut report = Reload::default();
        let mut present: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !is_yaml || name.starts_with('.') || !path.is_file() {
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        present.insert(name.to_string(), text);
                    }
                    Err(e) => report.failed.push((
                        name.to_string(),
                        vec![RuleIssue {
                            line: 1,
                            column: 1,
                            message: format!("cannot read the file: {e}"),
                        }],
                    )),
                }
            }
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = files
            .keys()
            .filter(|k| !present.contains_key(*k) && !report.failed.iter().any(|(f, _)| f == *k))
            .cloned()
            .collect();
        for name in gone {
            files.remove(&name);
            report.removed.push(name);
        }
        for (name, text) in present {
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            if files.get(&name).is_some_and(|f| f.digest == digest) {
                continue;
            }
            match rule::parse(&text, &self.global_options) {
                Ok(checked) => {
                    let rules = checked
                        .into_iter()
                        .map(|c| {
                            let key = format!("global:{name}:{}", c.name);
                            Arc::new(c.into_rule(key, Origin::Global { file: name.clone() }))
                        })
                        .collect();
                    files.insert(name.clone(), FileRules { digest, rules });
                    report.loaded.push(name);
                }
                Err(issues) => report.failed.push((name, issues)),
            }
        }
        let all: Vec<Arc<Rule>> = files.values().flat_map(|f| f.rules.iter().cloned()).collect();
        *self.global.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
        report
    }

    /// Reload and log what changed.
    pub fn reload_and_log(&self) {
        let report = self.reload();
        for name in &report.loaded {
            tracing::info!(file = %self.dir.join(name).display(), "rules loaded");
        }
        for name in &report.removed {
            tracing::info!(file = %self.dir.join(name).display(), "rules file removed; its rules are gone");
        }
        for (name, issues) in &report.failed {
            for issue in issues {
                tracing::error!(
                    file = %self.dir.join(name).display(), line = issue.line, column = issue.column,
                    "invalid rules file, its previous version stays in force: {}", issue.message
                );
            }
        }
        if !report.loaded.is_empty() || !report.removed.is_empty() {
            metrics::gauge!("atlas_rules_loaded", "source" => "global").set(self.global().len() as f64);
        }
    }

    /// Read the rules revision and forget the cached collection rules if it
    /// moved. Called before handling events that are already committed, it
    /// makes every rule change committed before them visible.
    pub async fn refresh(&self) -> Result<(), atlas_db::sqlx::Error> {
        let revision = self.store.revision().await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.revision != Some(revision) {
            cache.rules.clear();
            cache.revision = Some(revision);
        }
        Ok(())
    }

    /// A collection's rules, from the cache (as of the last
    /// [`refresh`](Self::refresh)).
    pub async fn collection(&self, collection_id: &str) -> Result<Arc<Vec<Arc<Rule>>>, atlas_db::sqlx::Error> {
        let revision = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(rules) = cache.rules.get(collection_id) {
                return Ok(rules.clone());
            }
            cache.revision
        };
        let mut rules = Vec::new();
        for (id, definition) in self.store.definitions(collection_id).await? {
            match self.compile_stored(collection_id, &id, definition) {
                Ok(rule) => rules.push(Arc::new(rule)),
                Err(issues) => tracing::error!(
                    rule_id = %id, collection_id, problems = ?issues,
                    "a stored collection rule no longer loads; it is skipped"
                ),
            }
        }
        let rules = Arc::new(rules);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.revision == revision {
            cache.rules.insert(collection_id.to_string(), rules.clone());
        }
        Ok(rules)
    }

    fn compile_stored(&self, collection_id: &str, id: &str, definition: Value) -> Result<Rule, Vec<RuleIssue>> {
        let doc = Located::unplaced(definition);
        let checked = rule::check_document(&doc, &self.collection_options)?
            .into_iter()
            .next()
            .ok_or_else(Vec::new)?;
        Ok(checked.into_rule(
            format!("collection:{id}"),
            Origin::Collection {
                collection_id: collection_id.to_string(),
                rule_id: id.to_string(),
            },
        ))
    }

    /// Every rule an event may trigger: the global rules and, for an event
    /// in a collection, that collection's rules.
    pub async fn for_event(&self, event: &Value) -> Result<Vec<Arc<Rule>>, atlas_db::sqlx::Error> {
        let mut rules: Vec<Arc<Rule>> = self.global().iter().cloned().collect();
        let collection = event
            .get("entity")
            .and_then(|e| e.get("collection_id"))
            .and_then(Value::as_str);
        if let Some(c) = collection {
            rules.extend(self.collection(c).await?.iter().cloned());
        }
        Ok(rules)
    }
}

/// Reload the rules directory every `interval` until `stop`.
pub async fn watch(book: Arc<RuleBook>, interval: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let b = book.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || b.reload_and_log()).await {
            tracing::error!(error = %e, "reloading the rules directory failed");
        }
    }
}
