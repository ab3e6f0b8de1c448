//! The indexer: keeps this node's index a projection of the event log.
//!
//! It is not a runtime consumer (those run in worker processes and keep
//! their offsets in the database): every api process owns its own index,
//! so the indexer runs where the API is served and keeps its log position
//! *inside the index*, in each commit's payload. Documents and position
//! are committed together; after a crash the indexer resumes from the last
//! commit and re-applies what followed.
//!
//! Applying an event is idempotent by construction: the indexer loads the
//! item's current state from the database and replaces its document (or
//! deletes it when the item is gone), so a redelivered or repeated event
//! changes nothing, whatever its `event_id`.
//!
//! Sources: the outbox table (embedded mode) or this node's durable
//! JetStream consumer `search-<node>` (cluster mode), positioned at the
//! index's position on every start. A node without a usable index first
//! rebuilds it from the database (see [`rebuild`]), having noted the log
//! position before reading, then follows from there.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::nats::NatsLog;
use atlas_events::Envelope;
use atlas_items::ItemService;
use atlas_kernel::settings::SearchSettings;
use futures::StreamExt;
use tantivy::indexer::IndexWriterOptions;
use tantivy::{IndexWriter, TantivyDocument};
use tokio_util::sync::CancellationToken;

use crate::index::{self, CommitPayload, Generation, IndexDir, LiveIndex, LogSource};
use crate::SearchError;

/// Event types the index depends on. `JobSucceeded` matters when the job
/// was a `REINDEX_ITEM`: the item's document is replaced like after an
/// update, in every node, whichever process ran the job.
pub const EVENT_TYPES: &[&str] = &[
    "ItemCreated",
    "ItemUpdated",
    "ItemDeleted",
    "CollectionDeleted",
    "JobSucceeded",
];

/// The item an event asks to re-read, if any.
fn touched_item(envelope: &Envelope) -> Option<&str> {
    match envelope.event_type.as_str() {
        "ItemCreated" | "ItemUpdated" | "ItemDeleted" => Some(envelope.entity.id.as_str()),
        "JobSucceeded" if envelope.data.get("type").and_then(|t| t.as_str()) == Some("REINDEX_ITEM") => {
            envelope.data.get("item_id").and_then(|i| i.as_str())
        }
        _ => None,
    }
}

/// Whether the event changes the index (the others only move the position).
fn applies(envelope: &Envelope) -> bool {
    touched_item(envelope).is_some() || envelope.event_type == "CollectionDeleted"
}

/// Where the indexer reads events.
#[derive(Clone)]
pub enum EventSource {
    Outbox,
    Nats { log: Box<NatsLog>, durable: String },
}

impl EventSource {
    pub fn log_source(&self) -> LogSource {
        match self {
            EventSource::Outbox => LogSource::Outbox,
            EventSource::Nats { log, .. } => LogSource::Stream {
                name: log.settings().stream.clone(),
            },
        }
    }

    /// The log's current end: rebuilding from the database after reading
    /// it, then following from it, misses nothing (an event after it was
    /// committed to the database before it was logged, so a later read
    /// sees it or the follower will).
    pub async fn head(&self, db: &Database) -> Result<u64, SearchError> {
        match self {
            EventSource::Outbox => {
                let max: Option<i64> = sqlx::query("SELECT MAX(sequence) FROM outbox")
                    .fetch_one(db.reader())
                    .await?
                    .try_get(0)?;
                Ok(max.unwrap_or(0).max(0) as u64)
            }
            EventSource::Nats { log, .. } => {
                let mut stream = log
                    .jetstream()
                    .get_stream(&log.settings().stream)
                    .await
                    .map_err(|e| SearchError::Log(e.to_string()))?;
                let info = stream.info().await.map_err(|e| SearchError::Log(e.to_string()))?;
                Ok(info.state.last_sequence)
            }
        }
    }
}

/// Memory of the live indexer's writer (Tantivy's minimum is 15 MB per thread).
const LIVE_WRITER_MEMORY: usize = 16 * 1024 * 1024;

/// Threads merging the live index's segments: one per two CPU cores, from
/// one to Tantivy's default of four. Merges compete with requests for the
/// CPU, and each merge thread keeps buffers and an allocator heap of its
/// own: on 2 cores four of them only add memory (bench/RESULTS.md).
fn live_merge_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, 4)
}

/// The live writer of a generation (`LIVE_WRITER_MEMORY`, one indexing
/// thread, `live_merge_threads()` merge threads). It commits every
/// `commit_every_docs` documents or `commit_interval_ms`: one thread and a
/// small arena suffice, and a larger one would only be memory held while it
/// is open (Tantivy flushes a segment early if a burst of large bodies
/// fills it).
fn open_live_writer(generation: &Generation) -> Result<IndexWriter, SearchError> {
    Ok(generation.index.writer_with_options(
        IndexWriterOptions::builder()
            .num_worker_threads(1)
            .memory_budget_per_thread(LIVE_WRITER_MEMORY)
            .num_merge_threads(live_merge_threads())
            .build(),
    )?)
}

/// Close the live writer, if open, once its merges are done. An open
/// writer keeps its threads and a document queue Tantivy allocates for
/// 10,000 documents (about 2.4 MB); an idle server needs none of it, and
/// releases the index's lock for `atlas search reindex --collection`.
async fn close_writer(slot: &mut Option<IndexWriter>) {
    let Some(writer) = slot.take() else {
        return;
    };
    let closed = tokio::task::spawn_blocking(move || writer.wait_merging_threads()).await;
    match closed {
        Ok(Ok(())) => tracing::debug!("search: idle index writer closed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "search: closing the idle index writer"),
        Err(e) => tracing::warn!(error = %e, "search: closing the idle index writer"),
    }
}

/// An open live writer with no change for this long is closed.
const WRITER_IDLE: Duration = Duration::from_secs(5);

/// Waiting this long for the index's lock is worth a warning.
const LOCK_WAIT_WARNING: Duration = Duration::from_secs(30);

/// What `/ready` and the metrics report of the indexer.
#[derive(Default)]
pub struct IndexerState {
    pub ready: AtomicBool,
    pub position: AtomicU64,
    /// Changes to items in the log not yet searchable here.
    pub lag: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// The indexer of one node.
pub struct Indexer {
    pub dir: IndexDir,
    pub live: LiveIndex,
    pub items: ItemService,
    pub db: Database,
    pub source: EventSource,
    pub settings: SearchSettings,
    pub poll_interval: Duration,
    pub state: Arc<IndexerState>,
}

/// How often the indexer looks for a new generation and collection requests.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

impl Indexer {
    /// Run until shutdown, restarting after errors.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(dir = %self.dir.root().display(), "search indexer started");
        while !shutdown.is_cancelled() {
            if let Err(e) = self.session(&shutdown).await {
                tracing::warn!(error = %e, "search indexer failed; restarting");
                metrics::counter!("atlas_search_indexer_errors_total").increment(1);
                *self.state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        tracing::info!("search indexer stopped");
    }

    /// Open (or build) the live generation and follow the log until it is
    /// replaced or shutdown.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), SearchError> {
        let generation = Arc::new(self.open_or_rebuild().await?);
        self.live.set(generation.clone());
        self.dir.remove_stale(&generation.name);
        // Opened now, so that a second process on this index fails at start;
        // closed while idle (see `WRITER_IDLE`), opened again by a change.
        let mut writer = Some(open_live_writer(&generation)?);
        let mut payload = generation.payload()?.unwrap_or(CommitPayload {
            source: self.source.log_source(),
            position: 0,
        });
        let mut feed = Feed::open(&self.source, payload.position).await?;
        self.state.position.store(payload.position, Ordering::Relaxed);
        self.state.ready.store(true, Ordering::Relaxed);
        *self.state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        metrics::gauge!("atlas_search_documents").set(generation.num_docs() as f64);

        let commit_every = self.settings.commit_every_docs as usize;
        let commit_after = Duration::from_millis(self.settings.commit_interval_ms);
        let mut pending_docs = 0usize;
        let mut dirty_since: Option<Instant> = None;
        let mut last_change = Instant::now();
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        loop {
            if shutdown.is_cancelled() {
                if let (Some(w), Some(_)) = (writer.as_mut(), dirty_since) {
                    self.commit(&generation, w, &payload, &mut feed).await?;
                }
                return Ok(());
            }
            let wait = dirty_since
                .map(|t| commit_after.saturating_sub(t.elapsed()))
                .unwrap_or(self.poll_interval)
                .min(self.poll_interval);
            let batch = feed.next_batch(&self.db, wait, shutdown).await?;
            if !batch.is_empty() {
                let last = batch.last().map(|(p, _)| *p).unwrap_or(payload.position);
                if writer.is_none() && !batch.iter().any(|(_, e)| applies(e)) {
                    // Nothing to write: the position moves in memory and is
                    // recorded by the next commit (replaying these events
                    // after a restart changes nothing).
                    payload.position = last;
                    self.state.position.store(last, Ordering::Relaxed);
                    // Acknowledged now, or JetStream would deliver them
                    // again; the index's own position stays the truth.
                    feed.committed().await;
                } else {
                    let Some(w) = self.writer(&generation, &mut writer, shutdown).await? else {
                        continue; // shutting down; the batch is read again at the next start
                    };
                    pending_docs += self.apply(&generation, w, &batch).await?;
                    payload.position = last;
                    dirty_since.get_or_insert_with(Instant::now);
                    last_change = Instant::now();
                }
            }
            let due = dirty_since.is_some_and(|t| pending_docs >= commit_every || t.elapsed() >= commit_after);
            if let (true, Some(w)) = (due, writer.as_mut()) {
                self.commit(&generation, w, &payload, &mut feed).await?;
                pending_docs = 0;
                dirty_since = None;
            }
            if dirty_since.is_none() && last_change.elapsed() >= WRITER_IDLE {
                close_writer(&mut writer).await;
            }
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + HOUSEKEEPING;
                if self.dir.current_name()?.as_deref() != Some(generation.name.as_str()) {
                    tracing::info!("search: a rebuilt index was made live; switching to it");
                    if let (Some(w), Some(_)) = (writer.as_mut(), dirty_since) {
                        self.commit(&generation, w, &payload, &mut feed).await?;
                    }
                    return Ok(());
                }
                // Another process may have committed while this one had no
                // writer (`atlas search reindex --collection`).
                if writer.is_none() && generation.reload_if_changed()? {
                    metrics::gauge!("atlas_search_documents").set(generation.num_docs() as f64);
                }
                let requests = pending_collection_requests(&self.dir);
                if !requests.is_empty() {
                    if let Some(w) = self.writer(&generation, &mut writer, shutdown).await? {
                        self.collection_requests(&generation, w, &payload, requests).await?;
                        self.report(&generation, &payload);
                        last_change = Instant::now();
                    }
                }
                self.state
                    .lag
                    .store(feed.lag(&self.db, payload.position).await, Ordering::Relaxed);
                metrics::gauge!("atlas_search_index_lag_changes").set(self.state.lag.load(Ordering::Relaxed) as f64);
            }
        }
    }

    /// The live writer, opened again if it was closed. While another
    /// process holds the index's lock (`atlas search reindex --collection`
    /// found it free), waits for it; `None` if shutdown comes first.
    async fn writer<'w>(
        &self,
        generation: &Generation,
        slot: &'w mut Option<IndexWriter>,
        shutdown: &CancellationToken,
    ) -> Result<Option<&'w mut IndexWriter>, SearchError> {
        let started = Instant::now();
        let mut warned = false;
        while slot.is_none() {
            match open_live_writer(generation) {
                Ok(w) => *slot = Some(w),
                Err(SearchError::Locked) => {
                    if !warned && started.elapsed() >= LOCK_WAIT_WARNING {
                        warned = true;
                        tracing::warn!(
                            dir = %self.dir.root().display(),
                            "search: waiting for the index's lock, held by another process \
                             (a long `atlas search reindex --collection`, or two Atlas processes on one data directory?)"
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(slot.as_mut())
    }

    async fn commit(
        &self,
        generation: &Generation,
        writer: &mut IndexWriter,
        payload: &CommitPayload,
        feed: &mut Feed,
    ) -> Result<(), SearchError> {
        let started = Instant::now();
        index::commit(generation, writer, payload)?;
        feed.committed().await;
        metrics::counter!("atlas_search_commits_total").increment(1);
        metrics::histogram!("atlas_search_commit_duration_seconds").record(started.elapsed().as_secs_f64());
        self.report(generation, payload);
        Ok(())
    }

    fn report(&self, generation: &Generation, payload: &CommitPayload) {
        self.state.position.store(payload.position, Ordering::Relaxed);
        metrics::gauge!("atlas_search_documents").set(generation.num_docs() as f64);
    }

    /// Apply a batch of events; returns how many documents changed.
    async fn apply(
        &self,
        generation: &Generation,
        writer: &IndexWriter,
        batch: &[(u64, Envelope)],
    ) -> Result<usize, SearchError> {
        let fields = &generation.fields;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        // Each event's trace shows the indexer, for as long as its batch takes.
        let _spans: Vec<tracing::Span> = batch
            .iter()
            .filter(|(_, e)| !e.trace_id.is_empty() && applies(e))
            .map(|(_, e)| atlas_events::consume_span("search", e))
            .collect();
        for (_, envelope) in batch {
            if let Some(id) = touched_item(envelope) {
                touched.insert(id.to_string());
            } else if envelope.event_type == "CollectionDeleted" {
                index::remove_collection(writer, fields, &envelope.entity.id);
            }
        }
        let ids: Vec<String> = touched.into_iter().collect();
        let items = self
            .items
            .get_many(&ids)
            .await
            .map_err(|e| SearchError::Load(e.to_string()))?;
        let found: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        for item in &items {
            index::upsert(writer, fields, item)?;
        }
        for id in ids.iter().filter(|id| !found.contains(id.as_str())) {
            index::remove(writer, fields, id);
        }
        metrics::counter!("atlas_search_documents_written_total").increment(ids.len() as u64);
        Ok(ids.len())
    }

    /// A usable live generation, rebuilt from the database when there is
    /// none (first start, a wiped directory, a switch of event log).
    async fn open_or_rebuild(&self) -> Result<Generation, SearchError> {
        let wanted = self.source.log_source();
        if let Some(name) = self.dir.current_name()? {
            match self.dir.open(&name) {
                Ok(generation) => match generation.payload()? {
                    Some(p) if p.source == wanted => {
                        // A position past the log's end means the log is not
                        // the one the index followed: the database (or the
                        // stream) was restored from an older backup. The
                        // index may hold items the database lost, and would
                        // skip the next events up to its old position.
                        let head = self.source.head(&self.db).await?;
                        if p.position <= head {
                            return Ok(generation);
                        }
                        tracing::warn!(
                            generation = %name,
                            index_position = p.position,
                            log_end = head,
                            "search: the index is ahead of the event log (restored from a backup?); rebuilding"
                        );
                    }
                    _ => tracing::warn!(generation = %name, "search: the index follows another event log; rebuilding"),
                },
                Err(e) => tracing::warn!(generation = %name, error = %e, "search: cannot open the index; rebuilding"),
            }
        }
        tracing::info!("search: building the index from the database");
        let report = rebuild(&self.dir, &self.items, &self.db, &self.source, &self.settings).await?;
        tracing::info!(
            documents = report.documents,
            secs = report.seconds,
            "search: index built"
        );
        self.dir.open(&report.generation)
    }

    /// Re-index the collections `atlas search reindex --collection` asked
    /// for (`requests`) while this process held the writer.
    async fn collection_requests(
        &self,
        generation: &Generation,
        writer: &mut IndexWriter,
        payload: &CommitPayload,
        requests: Vec<(String, std::path::PathBuf)>,
    ) -> Result<(), SearchError> {
        for (collection_id, path) in requests {
            let n = reindex_collection(generation, writer, &self.items, &collection_id).await?;
            index::commit(generation, writer, payload)?;
            tracing::info!(collection_id = %collection_id, documents = n, "search: collection re-indexed");
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// Folder of `--collection` requests for the process holding the writer.
pub fn requests_dir(dir: &IndexDir) -> std::path::PathBuf {
    dir.root().join("requests")
}

fn pending_collection_requests(dir: &IndexDir) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(requests_dir(dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
        .filter(|(name, _)| !name.starts_with('.'))
        .collect()
}

/// Replace a collection's documents with its items' current state (not
/// committed: the caller commits, so searches never see it half done).
pub async fn reindex_collection(
    generation: &Generation,
    writer: &IndexWriter,
    items: &ItemService,
    collection_id: &str,
) -> Result<u64, SearchError> {
    index::remove_collection(writer, &generation.fields, collection_id);
    add_items(generation, writer, items, Some(collection_id)).await
}

/// Add a document for every item (of one collection, or all), reading the
/// database in pages of 1,000 by id. Returns how many were added.
async fn add_items(
    generation: &Generation,
    writer: &IndexWriter,
    items: &ItemService,
    collection_id: Option<&str>,
) -> Result<u64, SearchError> {
    let mut after = String::new();
    let mut n = 0;
    loop {
        let page = items
            .page_by_id(collection_id, &after, 1000)
            .await
            .map_err(|e| SearchError::Load(e.to_string()))?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for item in &page {
            writer.add_document(index::document(&generation.fields, item))?;
            n += 1;
        }
    }
    Ok(n)
}

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RebuildReport {
    pub generation: String,
    pub documents: u64,
    pub position: u64,
    pub seconds: f64,
}

/// Build a new generation from the database and make it live. Searches
/// keep using the previous one until the switch.
pub async fn rebuild(
    dir: &IndexDir,
    items: &ItemService,
    db: &Database,
    source: &EventSource,
    settings: &SearchSettings,
) -> Result<RebuildReport, SearchError> {
    let started = Instant::now();
    let position = source.head(db).await?;
    let generation = dir.create()?;
    let mut writer: IndexWriter<TantivyDocument> = generation
        .index
        .writer(settings.writer_memory_mb as usize * 1024 * 1024)?;
    let documents = add_items(&generation, &writer, items, None).await?;
    let payload = CommitPayload {
        source: source.log_source(),
        position,
    };
    index::commit(&generation, &mut writer, &payload)?;
    writer.wait_merging_threads()?;
    dir.make_current(&generation.name)?;
    Ok(RebuildReport {
        generation: generation.name.clone(),
        documents,
        position,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Events after a position, from either log.
/// Events read from the outbox at once.
const OUTBOX_BATCH: i64 = 1000;

enum Feed {
    Outbox {
        position: u64,
        /// The last read took less than a full batch: the next one waits
        /// first, so that under load a read takes a whole interval's events.
        caught_up: bool,
    },
    Nats {
        consumer: Box<PullConsumer>,
        /// The last message received and not yet acknowledged (acking it
        /// acknowledges every earlier one: `AckPolicy::All`).
        unacked: Option<Box<async_nats::jetstream::Message>>,
        /// Subjects of [`EVENT_TYPES`]: other messages only move the
        /// position, unread.
        wanted: HashSet<String>,
    },
}

impl Feed {
    async fn open(source: &EventSource, position: u64) -> Result<Feed, SearchError> {
        match source {
            EventSource::Outbox => Ok(Feed::Outbox {
                position,
                caught_up: false,
            }),
            EventSource::Nats { log, durable } => {
                let err = |e: &dyn std::fmt::Display| SearchError::Log(e.to_string());
                let stream = log
                    .jetstream()
                    .get_stream(&log.settings().stream)
                    .await
                    .map_err(|e| err(&e))?;
                // The index, not the broker, knows what was applied: the
                // durable is re-created at the index's position each time.
                let _ = stream.delete_consumer(durable).await;
                let config = pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some("Atlas search index of one api node".into()),
                    deliver_policy: if position == 0 {
                        DeliverPolicy::All
                    } else {
                        DeliverPolicy::ByStartSequence {
                            start_sequence: position + 1,
                        }
                    },
                    ack_policy: AckPolicy::All,
                    ack_wait: Duration::from_secs(120),
                    max_ack_pending: 100_000,
                    // One filter covering item events and `JobSucceeded`
                    // (of a `REINDEX_ITEM`): every event, before NATS 2.10.
                    // Deleting a collection emits an `ItemDeleted` per item.
                    filter_subject: log.filter_for(EVENT_TYPES),
                    num_replicas: log.settings().replicas,
                    ..Default::default()
                };
                let consumer = stream.create_consumer(config).await.map_err(|e| err(&e))?;
                Ok(Feed::Nats {
                    consumer: Box::new(consumer),
                    unacked: None,
                    wanted: EVENT_TYPES.iter().map(|t| log.event_subject(t)).collect(),
                })
            }
        }
    }

    /// The next events (with their log positions), waiting up to `wait`
    /// when there are none.
    async fn next_batch(
        &mut self,
        db: &Database,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(u64, Envelope)>, SearchError> {
        match self {
            Feed::Outbox { position, caught_up } => {
                if *caught_up {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(Vec::new()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                let envelopes = atlas_events::read_envelopes_after(db, *position as i64, OUTBOX_BATCH)
                    .await
                    .map_err(|e| SearchError::Log(e.to_string()))?;
                *caught_up = envelopes.len() < OUTBOX_BATCH as usize;
                if envelopes.is_empty() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::with_capacity(envelopes.len());
                for e in envelopes {
                    let seq = e.sequence.unwrap_or(0).max(0) as u64;
                    *position = seq;
                    if EVENT_TYPES.contains(&e.event_type.as_str()) {
                        out.push((seq, e));
                    }
                }
                // Events of other kinds still move the position.
                if out.is_empty() {
                    return Ok(vec![(*position, skip_marker())]);
                }
                if let Some(last) = out.last_mut() {
                    last.0 = *position;
                }
                Ok(out)
            }
            Feed::Nats {
                consumer,
                unacked,
                wanted,
            } => {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1000)
                    .expires(wait.max(Duration::from_millis(10)))
                    .messages()
                    .await
                    .map_err(|e| SearchError::Log(e.to_string()))?;
                let mut out = Vec::new();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        next = batch.next() => match next {
                            Some(Ok(message)) => {
                                let seq = message.info().map(|i| i.stream_sequence).map_err(|e| SearchError::Log(e.to_string()))?;
                                if !wanted.contains(message.subject.as_str()) {
                                    out.push((seq, skip_marker()));
                                } else {
                                    match serde_json::from_slice::<Envelope>(&message.payload) {
                                        Ok(envelope) => out.push((seq, envelope)),
                                        Err(e) => {
                                            tracing::error!(sequence = seq, error = %e, "search: skipping a message that is not an event envelope");
                                            out.push((seq, skip_marker()));
                                        }
                                    }
                                }
                                *unacked = Some(Box::new(message));
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "search: pull hiccup");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// The index committed everything received: acknowledge it.
    async fn committed(&mut self) {
        if let Feed::Nats { unacked, .. } = self {
            if let Some(message) = unacked.take() {
                if let Err(e) = message.ack().await {
                    // Unacknowledged messages are redelivered and re-applied
                    // harmlessly.
                    tracing::debug!(error = %e, "search: ack failed");
                }
            }
        }
    }

    /// Item changes in the log after `position`.
    async fn lag(&mut self, db: &Database, position: u64) -> u64 {
        match self {
            Feed::Outbox { .. } => {
                sqlx::query("SELECT COUNT(*) FROM outbox WHERE sequence > $1 AND entity_type = 'item'")
                    .bind(position as i64)
                    .fetch_one(db.reader())
                    .await
                    .and_then(|r| r.try_get::<i64, _>(0))
                    .map(|n| n.max(0) as u64)
                    .unwrap_or(0)
            }
            Feed::Nats { consumer, .. } => consumer
                .info()
                .await
                .map(|i| i.num_pending + i.num_ack_pending as u64)
                .unwrap_or(0),
        }
    }
}

/// An event that only moves the position.
fn skip_marker() -> Envelope {
    Envelope {
        event_id: String::new(),
        event_type: String::new(),
        version: 1,
        occurred_at: String::new(),
        actor_user_id: None,
        entity: atlas_events::EntityRef {
            entity_type: String::new(),
            id: String::new(),
            collection_id: None,
        },
        data: serde_json::Value::Null,
        trace_id: String::new(),
        request_id: String::new(),
        causation_id: None,
        sequence: None,
        span_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, entity: &str, data: serde_json::Value) -> Envelope {
        let mut e = skip_marker();
        e.event_type = event_type.into();
        e.entity.id = entity.into();
        e.data = data;
        e
    }

    #[test]
    fn item_events_and_reindex_jobs_touch_an_item_and_nothing_else_does() {
        let created = event("ItemCreated", "i1", serde_json::json!({}));
        assert_eq!(touched_item(&created), Some("i1"));
        let reindex = event(
            "JobSucceeded",
            "job1",
            serde_json::json!({"type": "REINDEX_ITEM", "item_id": "i2"}),
        );
        assert_eq!(touched_item(&reindex), Some("i2"));
        let enrich = event(
            "JobSucceeded",
            "job2",
            serde_json::json!({"type": "ENRICH_URL", "item_id": "i3"}),
        );
        assert_eq!(touched_item(&enrich), None);
        assert!(!applies(&enrich));
        assert!(!applies(&event("MembershipAdded", "m1", serde_json::json!({}))));
        assert!(applies(&event("CollectionDeleted", "c1", serde_json::json!({}))));
    }
}
