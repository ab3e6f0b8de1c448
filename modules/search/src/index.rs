//! The index on disk: generations, the live one, and writing documents.
//!
//! `{search.dir}/CURRENT` names the live generation, a directory beside it
//! holding one Tantivy index. A rebuild writes a new generation next to the
//! live one and then replaces `CURRENT` (write and rename, atomic), so
//! searches never see a half-built index; the indexer notices the switch
//! and follows the log from the new generation's position.
//!
//! Every commit carries a payload naming the log position (outbox sequence
//! or JetStream stream sequence) of the last event it includes: the index
//! and its position are committed together, so a crash loses neither half.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use atlas_items::Item;
use serde::{Deserialize, Serialize};
use tantivy::collector::Count;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{IndexRecordOption, Term};
use tantivy::tokenizer::Language;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

use crate::schema::{register_analyzers, Fields};
use crate::SearchError;

/// Documents holding any of `terms` (keyword fields: no scores, no positions).
///
/// A `TermSetQuery` builds an FST of its terms, whose builder allocates and
/// zeroes a large table each time: for the few ids of an item response (run
/// on every GET) that cost more than the rest of the request. Up to
/// [`FEW_TERMS`] terms are a union of term queries instead.
pub(crate) fn any_term(terms: Vec<Term>) -> Box<dyn Query> {
    if terms.len() > FEW_TERMS {
        return Box::new(TermSetQuery::new(terms));
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = terms
        .into_iter()
        .map(|t| {
            (
                Occur::Should,
                Box::new(TermQuery::new(t, IndexRecordOption::Basic)) as Box<dyn Query>,
            )
        })
        .collect();
    if clauses.len() == 1 {
        return clauses.remove(0).1;
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Above this many terms, [`any_term`] builds a `TermSetQuery`.
const FEW_TERMS: usize = 64;

/// Where an index's position points into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogSource {
    /// The outbox table (embedded mode): positions are outbox sequences.
    Outbox,
    /// A JetStream stream (cluster mode): positions are stream sequences.
    Stream { name: String },
}

/// What each commit records beside the documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitPayload {
    pub source: LogSource,
    /// The last log position whose effect the commit includes.
    pub position: u64,
}

/// One opened generation.
pub struct Generation {
    pub name: String,
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
}

impl Generation {
    /// The payload of the last commit, if any.
    pub fn payload(&self) -> Result<Option<CommitPayload>, SearchError> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// Reload the reader if the index on disk holds segments it does not
    /// show (a commit by another process); returns whether it did. Reading
    /// `meta.json` is cheap, reopening every segment is not.
    pub fn reload_if_changed(&self) -> Result<bool, SearchError> {
        let metas = self.index.load_metas()?;
        let searcher = self.reader.searcher();
        let shown = searcher.generation().segments();
        let same = metas.segments.len() == shown.len()
            && metas
                .segments
                .iter()
                .all(|m| shown.get(&m.id()) == Some(&m.delete_opstamp()));
        if !same {
            self.reader.reload()?;
        }
        Ok(!same)
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The indexed version of each of `ids` that the index holds.
    pub fn indexed_versions(&self, ids: &[&str]) -> Result<HashMap<String, i64>, SearchError> {
        // Read straight from each segment: the postings of each id term and
        // the numeric `version` column. (Collecting through a sort on the
        // `id` string column created a zstd decompression context per read,
        // a third of a list request's CPU time.)
        use tantivy::{DocSet, TERMINATED};
        let searcher = self.reader.searcher();
        let mut out = HashMap::with_capacity(ids.len());
        for segment in searcher.segment_readers() {
            let postings = segment.inverted_index(self.fields.id)?;
            let versions = segment.fast_fields().i64("version")?;
            let alive = segment.alive_bitset();
            for id in ids {
                let term = Term::from_field_text(self.fields.id, id);
                let Some(mut docs) = postings.read_postings(&term, IndexRecordOption::Basic)? else {
                    continue;
                };
                let mut doc = docs.doc();
                while doc != TERMINATED {
                    let live = alive.is_none_or(|a| a.is_alive(doc));
                    if let Some(version) = versions.first(doc).filter(|_| live) {
                        let entry = out.entry(id.to_string()).or_insert(version);
                        *entry = (*entry).max(version);
                    }
                    doc = docs.advance();
                }
            }
        }
        Ok(out)
    }

    /// How many documents `collection_id` has (for reports and tests).
    pub fn count_in_collection(&self, collection_id: &str) -> Result<usize, SearchError> {
        let searcher = self.reader.searcher();
        let q = any_term(vec![Term::from_field_text(self.fields.collection_id, collection_id)]);
        Ok(searcher.search(&*q, &Count)?)
    }
}

/// The directory of search generations.
#[derive(Clone, Debug)]
pub struct IndexDir {
    root: PathBuf,
    language: Language,
    /// Threads one search spreads its segments over (1: the calling thread).
    query_threads: usize,
}

impl IndexDir {
    pub fn new(root: PathBuf, language: Language) -> Self {
        IndexDir {
            root,
            language,
            query_threads: 1,
        }
    }

    /// Search the segments of each query on `threads` threads in parallel.
    pub fn with_query_threads(mut self, threads: usize) -> Self {
        self.query_threads = threads.max(1);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn current_file(&self) -> PathBuf {
        self.root.join("CURRENT")
    }

    /// The live generation's name, if there is one.
    pub fn current_name(&self) -> Result<Option<String>, SearchError> {
        match std::fs::read_to_string(self.current_file()) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Open a generation by name.
    pub fn open(&self, name: &str) -> Result<Generation, SearchError> {
        let dir = MmapDirectory::open(self.root.join(name))?;
        let index = Index::open(dir)?;
        self.prepare(name, index)
    }

    /// Create a new, empty generation (not live until [`make_current`](Self::make_current)).
    pub fn create(&self) -> Result<Generation, SearchError> {
        let name = format!("g-{}", uuid::Uuid::now_v7().simple());
        let path = self.root.join(&name);
        std::fs::create_dir_all(&path)?;
        let (schema, _) = Fields::schema();
        let index = Index::create_in_dir(&path, schema)?;
        self.prepare(&name, index)
    }

    fn prepare(&self, name: &str, mut index: Index) -> Result<Generation, SearchError> {
        register_analyzers(&index, self.language);
        if self.query_threads > 1 {
            index.set_multithread_executor(self.query_threads)?;
        }
        let fields = Fields::of(&index)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Generation {
            name: name.to_string(),
            index,
            reader,
            fields,
        })
    }

    /// Make `name` the live generation and delete every other one that no
    /// process holds open for writing.
    pub fn make_current(&self, name: &str) -> Result<(), SearchError> {
        let tmp = self.root.join(format!("CURRENT.{}", uuid::Uuid::now_v7().simple()));
        std::fs::write(&tmp, name)?;
        std::fs::rename(&tmp, self.current_file())?;
        Ok(())
    }

    /// Remove generations other than the live one and `keep`.
    pub fn remove_stale(&self, keep: &str) {
        let current = self.current_name().ok().flatten();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with("g-") || Some(&name) == current.as_ref() || name == keep {
                continue;
            }
            // The writer lock tells whether some process still writes it.
            if entry.path().join(".tantivy-writer.lock").exists() {
                if let Ok(gen) = self.open(&name) {
                    if gen.index.writer::<TantivyDocument>(15_000_000).is_err() {
                        continue;
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::debug!(generation = %name, error = %e, "search: could not remove an old generation");
            }
        }
    }
}

/// The live generation, swapped when a rebuild completes. Cheap to clone.
#[derive(Clone, Default)]
pub struct LiveIndex {
    current: Arc<RwLock<Option<Arc<Generation>>>>,
}

impl LiveIndex {
    pub fn get(&self) -> Option<Arc<Generation>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, generation: Arc<Generation>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(generation);
    }
}

impl atlas_items::IndexedVersions for LiveIndex {
    fn indexed_versions(&self, ids: &[&str]) -> HashMap<String, i64> {
        let Some(generation) = self.get() else {
            return HashMap::new();
        };
        generation.indexed_versions(ids).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "search: reading indexed versions failed");
            HashMap::new()
        })
    }
}

/// Microseconds since the epoch of a stored timestamp (0 if unreadable).
fn micros(ts: &str) -> i64 {
    atlas_db::parse_timestamp(ts).map(|t| t.timestamp_micros()).unwrap_or(0)
}

/// The document of an item.
pub fn document(fields: &Fields, item: &Item) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, &item.id);
    doc.add_text(fields.collection_id, &item.collection_id);
    doc.add_i64(fields.version, item.version);
    doc.add_text(fields.title, &item.title);
    if let Some(body) = &item.body {
        doc.add_text(fields.body, body);
    }
    for tag in &item.tags {
        doc.add_text(fields.tags, tag);
    }
    if let Some(host) = item
        .source_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    {
        doc.add_text(fields.host, host);
    }
    doc.add_i64(fields.created_at, micros(&item.created_at));
    doc.add_i64(fields.updated_at, micros(&item.updated_at));
    doc.add_text(fields.title_sort, item.title.to_lowercase());
    doc
}

/// Replace (or add) the document of `item`.
pub fn upsert(writer: &IndexWriter, fields: &Fields, item: &Item) -> Result<(), SearchError> {
    writer.delete_term(Term::from_field_text(fields.id, &item.id));
    writer.add_document(document(fields, item))?;
    Ok(())
}

/// Remove the document of item `id`.
pub fn remove(writer: &IndexWriter, fields: &Fields, id: &str) {
    writer.delete_term(Term::from_field_text(fields.id, id));
}

/// Remove every document of a collection.
pub fn remove_collection(writer: &IndexWriter, fields: &Fields, collection_id: &str) {
    writer.delete_term(Term::from_field_text(fields.collection_id, collection_id));
}

/// Commit with `payload`, then make the commit visible to searches.
pub fn commit(generation: &Generation, writer: &mut IndexWriter, payload: &CommitPayload) -> Result<(), SearchError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&serde_json::to_string(payload)?);
    prepared.commit()?;
    generation.reader.reload()?;
    Ok(())
}
