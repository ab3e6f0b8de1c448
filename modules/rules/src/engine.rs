//! The rules engine: an event consumer that evaluates the rules an event
//! may trigger and carries out their actions (all but webhooks, which the
//! [dispatcher](crate::webhook) delivers).
//!
//! Item actions go through the items module's write path, jobs and
//! workflows through the job queue, all with the triggering event as their
//! `causation_id`. What an action did is recorded in `rule_firings` once it
//! is done: a redelivered event skips finished actions, and an event an
//! action caused finds there its depth in the chain and the rule that
//! caused it. An event deeper than `rules.max_chain_depth` triggers nothing,
//! and a rule never reacts to the change its own action made to an item.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::EventContext;
use atlas_http::ApiError;
use atlas_items::{ItemChange, ItemService};
use atlas_jobs::workflow::{self, WorkflowStart};
use atlas_jobs::{JobQueue, JobScope, NewJob};
use atlas_kernel::{Consumer, ModuleError};
use serde_json::Value;

use crate::book::RuleBook;
use crate::eval;
use crate::rule::{Action, Origin, Rule};

/// Where an event stands in a chain of rule actions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chain {
    /// 0 for an event no rule caused; one more than its cause otherwise.
    pub depth: u32,
    /// Rules whose own action produced this event on its entity.
    pub caused_by: HashSet<String>,
}

/// Reads and writes `rule_firings`.
#[derive(Clone)]
pub struct Firings {
    db: Database,
}

impl Firings {
    pub fn new(db: Database) -> Self {
        Firings { db }
    }

    /// The chain an event belongs to.
    pub async fn chain(&self, event: &Value) -> Result<Chain, sqlx::Error> {
        let Some(cause) = event.get("causation_id").and_then(Value::as_str) else {
            return Ok(Chain::default());
        };
        let rows =
            sqlx::query("SELECT rule_key, entity_id, result_version, depth FROM rule_firings WHERE event_id = $1")
                .bind(cause)
                .fetch_all(self.db.reader())
                .await?;
        let entity = event.pointer("/entity/id").and_then(Value::as_str);
        let version = event.pointer("/data/version").and_then(Value::as_i64);
        let mut chain = Chain {
            depth: 1,
            ..Default::default()
        };
        for row in &rows {
            let depth: i64 = row.try_get("depth")?;
            chain.depth = chain.depth.max(depth as u32 + 1);
            let (e, v): (String, Option<i64>) = (row.try_get("entity_id")?, row.try_get("result_version")?);
            if Some(e.as_str()) == entity && v.is_some() && v == version {
                chain.caused_by.insert(row.try_get("rule_key")?);
            }
        }
        Ok(chain)
    }

    /// Action indexes of `rule` already done for `event_id`.
    pub async fn done(&self, event_id: &str, rule_key: &str) -> Result<HashSet<i64>, sqlx::Error> {
        let rows = sqlx::query("SELECT action_index FROM rule_firings WHERE event_id = $1 AND rule_key = $2")
            .bind(event_id)
            .bind(rule_key)
            .fetch_all(self.db.reader())
            .await?;
        rows.iter().map(|r| r.try_get::<i64, _>(0)).collect()
    }

    pub async fn record(&self, f: &Firing<'_>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO rule_firings (event_id, rule_key, action_index, entity_id, result_version, depth, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id, rule_key, action_index) DO NOTHING",
        )
        .bind(f.event_id)
        .bind(f.rule_key)
        .bind(f.action_index)
        .bind(f.entity_id)
        .bind(f.result_version)
        .bind(f.depth as i64)
        .bind(atlas_db::now())
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    /// Forget firings older than `hours` (a chain never spans that long).
    pub async fn prune(&self, hours: u64) -> Result<u64, sqlx::Error> {
        let cutoff = atlas_db::format_timestamp(chrono::Utc::now() - chrono::Duration::hours(hours as i64));
        let done = sqlx::query("DELETE FROM rule_firings WHERE created_at < $1")
            .bind(cutoff)
            .execute(self.db.writer())
            .await?;
        Ok(done.rows_affected())
    }
}

/// One finished action.
pub struct Firing<'a> {
    pub event_id: &'a str,
    pub rule_key: &'a str,
    pub action_index: i64,
    pub entity_id: &'a str,
    pub result_version: Option<i64>,
    pub depth: u32,
}

/// The rules that fire for `event` among those `wanted` (the engine wants
/// rules with actions other than webhooks, the dispatcher rules with
/// webhooks), after the chain guards: nothing past the depth limit, and no
/// rule on the change its own action caused.
pub async fn fired(
    book: &RuleBook,
    firings: &Firings,
    max_depth: u32,
    event: &Value,
    wanted: fn(&Rule) -> bool,
) -> Result<(Vec<Arc<Rule>>, Chain), ModuleError> {
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or_default();
    let mut rules = book.for_event(event).await?;
    rules.retain(|r| r.reacts_to(event_type) && wanted(r));
    if rules.is_empty() {
        return Ok((Vec::new(), Chain::default()));
    }
    let chain = firings.chain(event).await?;
    if chain.depth > max_depth {
        metrics::counter!("atlas_rule_chains_stopped_total").increment(1);
        let event_id = event.get("event_id").and_then(Value::as_str).unwrap_or_default();
        tracing::warn!(
            event_id,
            depth = chain.depth,
            max_depth,
            "a chain of rule actions reached the depth limit; no rule runs on this event"
        );
        return Ok((Vec::new(), chain));
    }
    rules.retain(|r| !chain.caused_by.contains(&r.key));
    Ok((eval::matching(&rules, event), chain))
}

/// Events a rules consumer takes at once: one offset commit per batch. The
/// events are still handled one at a time, in order, each in its own span;
/// a failure fails the batch, and the runtime then retries its events one
/// by one (those already done are skipped: both consumers are idempotent).
pub const BATCH: usize = 256;

/// Handle `events` in order with `handle`, each inside its own consumer span.
async fn one_by_one<'a, F, Fut>(consumer: &str, events: &[&'a Value], mut handle: F) -> Result<(), ModuleError>
where
    F: FnMut(&'a Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), ModuleError>>,
{
    use tracing::Instrument as _;
    for &event in events {
        let span = atlas_events::consume_span_json(consumer, event).unwrap_or_else(tracing::Span::none);
        handle(event).instrument(span).await?;
    }
    Ok(())
}

/// The event context of an action's writes: the triggering event's actor,
/// request and trace, and the event as the cause.
pub fn action_events(event: &Value) -> EventContext {
    let text = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_string);
    EventContext {
        actor_user_id: text("actor_user_id"),
        request_id: text("request_id").unwrap_or_default(),
        trace_id: text("trace_id").unwrap_or_default(),
        causation_id: text("event_id"),
        span_id: atlas_telemetry::trace::span_id(&tracing::Span::current()),
    }
}

/// The `rules` consumer.
pub struct RulesEngine {
    pub book: Arc<RuleBook>,
    pub firings: Firings,
    pub items: Arc<ItemService>,
    pub queue: Option<Arc<JobQueue>>,
    pub max_depth: u32,
}

/// How one action ended.
enum Done {
    /// It took effect; an item action reports the item's new version.
    Applied(Option<i64>),
    /// It cannot take effect (an item gone, a limit exceeded); logged.
    Skipped(String),
}

/// What one of the two rules consumers does with an event; [`RuleConsumer`]
/// gives both the same runtime behaviour.
#[async_trait]
pub trait RuleWork: Send + Sync + 'static {
    /// The consumer's durable name.
    const NAME: &'static str;
    fn book(&self) -> &RuleBook;
    /// Handle one event, the rules revision having been read after it was
    /// committed.
    async fn handle_fresh(&self, event: &Value) -> Result<(), ModuleError>;
}

/// A rules consumer: events of every type, in batches of [`BATCH`] handled
/// one at a time in their own spans, the rules revision read once per
/// batch, no processed records (the work is idempotent: `rule_firings` and
/// the webhook delivery log say what is already done).
pub struct RuleConsumer<W>(pub W);

#[async_trait]
impl<W: RuleWork> Consumer for RuleConsumer<W> {
    fn name(&self) -> &str {
        W::NAME
    }

    fn event_types(&self) -> &[&'static str] {
        &[]
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn batch_size(&self) -> usize {
        BATCH
    }

    fn spans_each_event(&self) -> bool {
        true
    }

    async fn handle_batch(&self, events: &[&Value]) -> Result<(), ModuleError> {
        self.0.book().refresh().await?;
        one_by_one(W::NAME, events, |e| self.0.handle_fresh(e)).await
    }

    async fn handle(&self, event: &Value) -> Result<(), ModuleError> {
        self.0.book().refresh().await?;
        self.0.handle_fresh(event).await
    }
}

#[async_trait]
impl RuleWork for RulesEngine {
    const NAME: &'static str = "rules";

    fn book(&self) -> &RuleBook {
        &self.book
    }

    async fn handle_fresh(&self, event: &Value) -> Result<(), ModuleError> {
        let wanted = |r: &Rule| r.actions.iter().any(|a| !matches!(a, Action::Webhook { .. }));
        let (rules, chain) = fired(&self.book, &self.firings, self.max_depth, event, wanted).await?;
        for rule in rules {
            self.run(&rule, event, chain.depth).await?;
        }
        Ok(())
    }
}

impl RulesEngine {
    /// Carry out `rule`'s actions for `event` (its item changes as one).
    async fn run(&self, rule: &Rule, event: &Value, depth: u32) -> Result<(), ModuleError> {
        let event_id = event.get("event_id").and_then(Value::as_str).unwrap_or_default();
        let entity_id = event.pointer("/entity/id").and_then(Value::as_str).unwrap_or_default();
        let done = self.firings.done(event_id, &rule.key).await?;
        let ev = action_events(event);
        let item_actions: Vec<(usize, &Action)> = rule
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_item_change())
            .collect();
        let mut steps: Vec<(i64, Vec<&Action>)> = Vec::new();
        if let Some((first, _)) = item_actions.first() {
            steps.push((*first as i64, item_actions.iter().map(|(_, a)| *a).collect()));
        }
        for (i, action) in rule.actions.iter().enumerate() {
            if !action.is_item_change() && !matches!(action, Action::Webhook { .. }) {
                steps.push((i as i64, vec![action]));
            }
        }
        steps.sort_by_key(|(i, _)| *i);
        for (index, actions) in steps {
            if done.contains(&index) {
                continue;
            }
            let outcome = if actions.iter().all(|a| a.is_item_change()) {
                self.change_item(entity_id, &actions, event, &ev).await?
            } else {
                self.start_work(rule, actions[0], event, &ev).await?
            };
            let result_version = match outcome {
                Done::Applied(version) => {
                    for a in &actions {
                        metrics::counter!("atlas_rule_actions_total", "kind" => a.kind()).increment(1);
                    }
                    version
                }
                Done::Skipped(why) => {
                    metrics::counter!("atlas_rule_errors_total", "stage" => "action").increment(1);
                    tracing::warn!(rule = %rule.key, event_id, action = actions[0].kind(), "a rule's action was skipped: {why}");
                    None
                }
            };
            self.firings
                .record(&Firing {
                    event_id,
                    rule_key: &rule.key,
                    action_index: index,
                    entity_id,
                    result_version,
                    depth,
                })
                .await?;
        }
        Ok(())
    }

    async fn change_item(
        &self,
        item_id: &str,
        actions: &[&Action],
        event: &Value,
        ev: &EventContext,
    ) -> Result<Done, ModuleError> {
        let mut change = ItemChange::default();
        for action in actions {
            let args = action.args(event);
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|t| !t.is_null())
                            .map(|t| t.as_str().map(str::to_string).unwrap_or_else(|| t.to_string()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match action {
                Action::AddTags(_) => change.add_tags.extend(strings(&args)),
                Action::RemoveTags(_) => change.remove_tags.extend(strings(&args)),
                Action::SetMetadata(_) => {
                    if let Value::Object(map) = args {
                        change.set_metadata.extend(map);
                    }
                }
                _ => {}
            }
        }
        match self.items.update(item_id, &change, ev).await {
            Ok(item) => Ok(Done::Applied(Some(item.version))),
            Err(ApiError::NotFound(_)) => Ok(Done::Skipped(format!("item {item_id} no longer exists"))),
            Err(e @ ApiError::Validation { .. }) => Ok(Done::Skipped(e.to_string())),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// `enqueue_job` or `start_workflow`.
    async fn start_work(
        &self,
        rule: &Rule,
        action: &Action,
        event: &Value,
        ev: &EventContext,
    ) -> Result<Done, ModuleError> {
        let Some(queue) = &self.queue else {
            return Ok(Done::Skipped("this build has no job queue".into()));
        };
        let args = action.args(event);
        let input = match action {
            Action::EnqueueJob { .. } => args.get("payload"),
            _ => args.get("input"),
        }
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
        let type_name = args.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let scope = match action {
            Action::EnqueueJob { .. } => self.job_scope(&type_name),
            _ => queue.workflows().get(&type_name).map(|d| d.scope),
        };
        let Some(scope) = scope else {
            return Ok(Done::Skipped(format!("unknown type `{type_name}`")));
        };
        // Item work belongs to the item's collection; a collection's rule may
        // only start work on its own collection's items.
        let collection_id = match scope {
            JobScope::Item => {
                let Some(item_id) = input.get("item_id").and_then(Value::as_str) else {
                    return Ok(Done::Skipped(format!("`{type_name}` needs `item_id`")));
                };
                let Some(item) = self.items.get(item_id).await? else {
                    return Ok(Done::Skipped(format!("item {item_id} no longer exists")));
                };
                if let Origin::Collection { collection_id, .. } = &rule.origin {
                    if *collection_id != item.collection_id {
                        return Ok(Done::Skipped(format!("item {item_id} is not in the rule's collection")));
                    }
                }
                Some(item.collection_id)
            }
            JobScope::Admin if matches!(rule.origin, Origin::Global { .. }) => None,
            _ => return Ok(Done::Skipped(format!("a rule may not start `{type_name}`"))),
        };
        match action {
            Action::EnqueueJob { max_attempts, .. } => {
                let mut job = NewJob::new(type_name, input);
                job.priority = args.get("priority").and_then(Value::as_i64).unwrap_or(0);
                job.max_attempts = *max_attempts;
                job.created_by = ev.actor_user_id.clone();
                job.collection_id = collection_id;
                job.request_id = ev.request_id.clone();
                job.trace_id = ev.trace_id.clone();
                job.causation_id = ev.causation_id.clone();
                job.span_id = ev.span_id.clone();
                queue.enqueue(job).await?;
            }
            _ => {
                let Some(definition) = queue.workflows().get(&type_name).cloned() else {
                    return Ok(Done::Skipped(format!("unknown workflow `{type_name}`")));
                };
                let who = WorkflowStart {
                    created_by: ev.actor_user_id.clone(),
                    collection_id,
                    request_id: ev.request_id.clone(),
                    trace_id: ev.trace_id.clone(),
                    causation_id: ev.causation_id.clone(),
                    span_id: ev.span_id.clone(),
                };
                workflow::start(queue, &definition, input, who).await?;
            }
        }
        Ok(Done::Applied(None))
    }

    fn job_scope(&self, job_type: &str) -> Option<JobScope> {
        self.book
            .global_options()
            .catalog
            .as_ref()
            .and_then(|c| c.jobs.iter().find(|(n, _)| n == job_type))
            .map(|(_, s)| match s {
                crate::rule::TypeScope::Item => JobScope::Item,
                crate::rule::TypeScope::Admin => JobScope::Admin,
                crate::rule::TypeScope::Internal => JobScope::Internal,
            })
    }
}
