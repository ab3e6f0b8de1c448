//! The rule language: what a rule says (`RuleSpec`, as written in YAML or
//! JSON), and a compiled [`Rule`] with its CEL condition and checked actions.
//!
//! Everything that can be checked is checked when a rule is loaded — the
//! YAML, unknown fields, event types, the CEL expression, templates, job and
//! workflow types, webhook URLs and secrets — and each problem is reported
//! with its line and column. What can only fail while an event is handled (a
//! CEL expression reading a field the event lacks) makes the rule not match.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::template;
use crate::yaml::{self, Located, Pos};

/// The event types rules may react to (SPEC §3).
pub const EVENT_TYPES: &[&str] = &[
    "ItemCreated",
    "ItemUpdated",
    "ItemDeleted",
    "CollectionCreated",
    "CollectionUpdated",
    "CollectionDeleted",
    "MembershipAdded",
    "MembershipRoleChanged",
    "MembershipRemoved",
    "UserRegistered",
    "JobSucceeded",
    "JobDead",
    "WorkflowCompleted",
    "WorkflowFailed",
];

/// Event types whose entity is an item that still exists, which the item
/// actions (`add_tags`, `remove_tags`, `set_metadata`) change.
pub const ITEM_ACTION_EVENTS: &[&str] = &["ItemCreated", "ItemUpdated"];

/// Longest rule name.
const NAME_MAX: usize = 100;

/// One problem found in rule text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RuleIssue {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl RuleIssue {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        RuleIssue {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RuleIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

/// `on:` takes one event type or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    on: OneOrMany,
    #[serde(default)]
    when: Option<String>,
    #[serde(rename = "do")]
    actions: Vec<ActionSpec>,
    #[serde(default = "enabled_default")]
    enabled: bool,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    description: Option<String>,
}

fn enabled_default() -> bool {
    true
}

/// An action as written: a mapping with one key, the action's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ActionSpec {
    AddTags(Vec<String>),
    RemoveTags(Vec<String>),
    SetMetadata(Map<String, Value>),
    EnqueueJob(JobSpec),
    StartWorkflow(WorkflowSpec),
    Webhook(WebhookSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSpec {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowSpec {
    #[serde(rename = "type")]
    workflow_type: String,
    #[serde(default)]
    input: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
    url: String,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
}

/// Where a webhook's signing secret is read from (at delivery time, so a
/// rotated secret applies without reloading rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// A checked action. Arguments may hold `${event.…}` templates.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AddTags(Vec<String>),
    RemoveTags(Vec<String>),
    SetMetadata(Map<String, Value>),
    EnqueueJob {
        job_type: String,
        payload: Map<String, Value>,
        priority: i64,
        max_attempts: Option<i64>,
    },
    StartWorkflow {
        workflow_type: String,
        input: Map<String, Value>,
    },
    Webhook {
        url: String,
        secret: SecretSource,
    },
}

impl Action {
    /// The action's name as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::AddTags(_) => "add_tags",
            Action::RemoveTags(_) => "remove_tags",
            Action::SetMetadata(_) => "set_metadata",
            Action::EnqueueJob { .. } => "enqueue_job",
            Action::StartWorkflow { .. } => "start_workflow",
            Action::Webhook { .. } => "webhook",
        }
    }

    /// Whether it changes the event's item.
    pub fn is_item_change(&self) -> bool {
        matches!(
            self,
            Action::AddTags(_) | Action::RemoveTags(_) | Action::SetMetadata(_)
        )
    }

    /// The arguments with templates filled in from `event`, as JSON (what a
    /// dry run shows and what the engine executes).
    pub fn args(&self, event: &Value) -> Value {
        let raw = match self {
            Action::AddTags(tags) | Action::RemoveTags(tags) => serde_json::json!(tags),
            Action::SetMetadata(map) => Value::Object(map.clone()),
            Action::EnqueueJob {
                job_type,
                payload,
                priority,
                max_attempts,
            } => {
                serde_json::json!({"type": job_type, "payload": payload, "priority": priority, "max_attempts": max_attempts})
            }
            Action::StartWorkflow { workflow_type, input } => {
                serde_json::json!({"type": workflow_type, "input": input})
            }
            Action::Webhook { url, secret } => {
                let secret = match secret {
                    SecretSource::Env(name) => serde_json::json!({"secret_env": name}),
                    SecretSource::File(path) => serde_json::json!({"secret_file": path}),
                };
                let mut args = serde_json::json!({"url": url});
                if let (Some(a), Some(s)) = (args.as_object_mut(), secret.as_object()) {
                    a.extend(s.clone());
                }
                args
            }
        };
        template::render(&raw, event)
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file under `rules.dir`; sees every event.
    Global { file: String },
    /// A collection's rule; sees only that collection's events.
    Collection { collection_id: String, rule_id: String },
    /// A rule given to a dry run.
    Test,
}

/// A compiled CEL condition.
pub struct Condition {
    pub source: String,
    pub program: cel::Program,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").field("source", &self.source).finish()
    }
}

/// A loaded rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique among loaded rules: `global:<file>:<name>`, `collection:<id>`.
    pub key: String,
    pub name: String,
    pub origin: Origin,
    pub on: Vec<String>,
    pub when: Option<Condition>,
    pub actions: Vec<Action>,
    pub enabled: bool,
    pub priority: i64,
    /// The rule as a JSON object (what the API returns and versions keep).
    pub definition: Value,
    /// Whether a runtime error of `when` was already logged.
    warned: AtomicBool,
}

impl Rule {
    pub fn reacts_to(&self, event_type: &str) -> bool {
        self.enabled && self.on.iter().any(|t| t == event_type)
    }

    /// True the first time it is called: runtime errors are logged once.
    pub fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// The CEL environment every condition is compiled and run in: the
/// standard library plus the strings extension (`lowerAscii`, `split`, …).
pub fn cel_env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        if let Err(e) = env.add_extension(cel::extensions::strings) {
            tracing::error!(error = %e, "the CEL strings extension could not be registered");
        }
        Arc::new(env)
    })
    .clone()
}

/// What a job or workflow type may be used for, as rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeScope {
    /// About one item (`item_id`): collection rules may use it.
    Item,
    /// Operations work: only global rules.
    Admin,
    /// Not startable by a rule.
    Internal,
}

/// The job and workflow types this build offers.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub jobs: Vec<(String, TypeScope)>,
    pub workflows: Vec<(String, TypeScope)>,
}

impl Catalog {
    fn scope(list: &[(String, TypeScope)], name: &str) -> Option<TypeScope> {
        list.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

/// What loading a rule may allow.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `None`: job and workflow types are not checked (`atlas rules check`).
    pub catalog: Option<Catalog>,
    /// A collection's rule: only item-scoped job and workflow types, and
    /// only the listed environment variables as webhook secrets.
    pub collection: bool,
    pub allowed_secret_envs: Vec<String>,
}

/// Parse rule text (one rule, or a list) and check each rule. On success,
/// each rule's spec as JSON; otherwise every problem found.
pub fn parse(text: &str, options: &LoadOptions) -> Result<Vec<Checked>, Vec<RuleIssue>> {
    let doc = yaml::parse(text).map_err(|e| vec![RuleIssue::at(e.pos, e.message)])?;
    check_document(&doc, options)
}

/// A rule that passed every check, not yet bound to an origin.
#[derive(Debug)]
pub struct Checked {
    pub name: String,
    pub on: Vec<String>,
    pub when: Option<Condition>,
    pub actions: Vec<Action>,
    pub enabled: bool,
    pub priority: i64,
    pub definition: Value,
}

impl Checked {
    pub fn into_rule(self, key: String, origin: Origin) -> Rule {
        Rule {
            key,
            name: self.name,
            origin,
            on: self.on,
            when: self.when,
            actions: self.actions,
            enabled: self.enabled,
            priority: self.priority,
            definition: self.definition,
            warned: AtomicBool::new(false),
        }
    }
}

/// Check a parsed document: a rule or a list of rules.
pub fn check_document(doc: &Located, options: &LoadOptions) -> Result<Vec<Checked>, Vec<RuleIssue>> {
    let entries: Vec<(String, &Value)> = match &doc.value {
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (format!("/{i}"), v)).collect(),
        Value::Object(_) => vec![(String::new(), &doc.value)],
        Value::Null => return Ok(Vec::new()),
        _ => {
            return Err(vec![RuleIssue::at(
                doc.value_pos(""),
                "expected a rule (a mapping) or a list of rules",
            )])
        }
    };
    let mut issues = Vec::new();
    let mut rules = Vec::new();
    let mut names = BTreeSet::new();
    for (pointer, value) in entries {
        match check_rule(doc, &pointer, value, options) {
            Ok(rule) => {
                if !names.insert(rule.name.clone()) {
                    issues.push(RuleIssue::at(
                        doc.value_pos(&format!("{pointer}/name")),
                        format!("a second rule is named `{}`", rule.name),
                    ));
                }
                rules.push(rule);
            }
            Err(mut e) => issues.append(&mut e),
        }
    }
    if issues.is_empty() {
        Ok(rules)
    } else {
        Err(issues)
    }
}

/// The JSON pointer of a serde path.
fn pointer_of(prefix: &str, path: &serde_path_to_error::Path) -> (String, bool) {
    use serde_path_to_error::Segment;
    let mut pointer = prefix.to_string();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push('/');
                pointer.push_str(&yaml::pointer_segment(key));
            }
            Segment::Unknown => {}
        }
    }
    let unknown_field = path
        .iter()
        .next_back()
        .is_some_and(|s| matches!(s, Segment::Map { .. }));
    (pointer, unknown_field)
}

fn check_rule(doc: &Located, at: &str, value: &Value, options: &LoadOptions) -> Result<Checked, Vec<RuleIssue>> {
    let spec: RuleSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let (pointer, names_key) = pointer_of(at, e.path());
        let message = e.inner().to_string();
        let pos = if names_key && message.starts_with("unknown") {
            doc.key_pos(&pointer)
        } else {
            doc.value_pos(&pointer)
        };
        let message = match message.as_str() {
            m if m.starts_with("data did not match any variant") => {
                "`on` must be an event type or a list of event types".to_string()
            }
            _ => message,
        };
        vec![RuleIssue::at(pos, message)]
    })?;
    let mut issues = Vec::new();
    let mut issue = |pointer: String, message: String| issues.push(RuleIssue::at(doc.value_pos(&pointer), message));

    let name = spec.name.trim().to_string();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        issue(format!("{at}/name"), format!("`name` must be 1–{NAME_MAX} characters"));
    }
    let on = match spec.on {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(ts) => ts,
    };
    if on.is_empty() {
        issue(format!("{at}/on"), "`on` lists no event type".into());
    }
    for (i, t) in on.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            issue(
                format!("{at}/on/{i}"),
                format!("unknown event type `{t}`; known: {}", EVENT_TYPES.join(", ")),
            );
        }
    }
    let when = match spec.when.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        None => None,
        Some(source) => match compile_condition(source) {
            Ok(c) => Some(c),
            Err(message) => {
                issue(format!("{at}/when"), message);
                None
            }
        },
    };
    if spec.actions.is_empty() {
        issue(format!("{at}/do"), "`do` lists no action".into());
    }
    let mut actions = Vec::new();
    for (i, a) in spec.actions.into_iter().enumerate() {
        let pointer = format!("{at}/do/{i}");
        match check_action(a, &on, options) {
            Ok(action) => actions.push(action),
            Err(message) => issue(pointer, message),
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let mut definition = value.clone();
    if let Some(map) = definition.as_object_mut() {
        map.insert("name".into(), Value::String(name.clone()));
        map.insert("on".into(), serde_json::json!(on));
        map.insert("enabled".into(), Value::Bool(spec.enabled));
        map.insert("priority".into(), Value::from(spec.priority));
        if let Some(d) = spec.description {
            map.insert("description".into(), Value::String(d));
        }
    }
    Ok(Checked {
        name,
        on,
        when,
        actions,
        enabled: spec.enabled,
        priority: spec.priority,
        definition,
    })
}

/// Compile a `when` expression: it must parse and read only `event`.
pub fn compile_condition(source: &str) -> Result<Condition, String> {
    let program = cel_env().compile(source).map_err(|e| {
        let first = e.errors.first();
        match first {
            Some(p) => format!(
                "CEL: {} (at {}:{} of the expression)",
                p.msg,
                p.pos.0.max(1),
                p.pos.1.max(0) + 1
            ),
            None => format!("CEL: {e}"),
        }
    })?;
    let references = program.references();
    // Variables bound by a macro (`event.data.tags.exists(t, t == "x")`)
    // are references too; only free ones must be `event`.
    let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let bound = |v: &str| {
        ["all", "exists", "exists_one", "map", "filter"]
            .iter()
            .any(|m| compact.contains(&format!(".{m}({v},")))
    };
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|v| *v != "event" && !bound(v))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        return Err(format!(
            "CEL: unknown variable `{}`; a condition reads only `event`",
            unknown.join("`, `")
        ));
    }
    Ok(Condition {
        source: source.to_string(),
        program,
    })
}

fn check_templates(value: &Value) -> Result<(), String> {
    template::check(value).map_err(|e| e.message)
}

fn check_type(
    kind: &str,
    name: &str,
    list: Option<&[(String, TypeScope)]>,
    options: &LoadOptions,
) -> Result<(), String> {
    let Some(list) = list else { return Ok(()) };
    match Catalog::scope(list, name) {
        None => Err(format!(
            "unknown {kind} type `{name}`; known: {}",
            list.iter()
                .filter(|(_, s)| *s != TypeScope::Internal)
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(TypeScope::Internal) => Err(format!("the {kind} type `{name}` cannot be started by a rule")),
        Some(TypeScope::Admin) if options.collection => Err(format!(
            "the {kind} type `{name}` is for administrators; a collection's rules may only use item {kind}s"
        )),
        Some(_) => Ok(()),
    }
}

fn check_action(spec: ActionSpec, on: &[String], options: &LoadOptions) -> Result<Action, String> {
    let action = match spec {
        ActionSpec::AddTags(tags) => Action::AddTags(tags),
        ActionSpec::RemoveTags(tags) => Action::RemoveTags(tags),
        ActionSpec::SetMetadata(map) => Action::SetMetadata(map),
        ActionSpec::EnqueueJob(job) => {
            check_type(
                "job",
                &job.job_type,
                options.catalog.as_ref().map(|c| c.jobs.as_slice()),
                options,
            )?;
            if let Some(n) = job.max_attempts {
                if !(1..=100).contains(&n) {
                    return Err("`max_attempts` must be 1–100".into());
                }
            }
            Action::EnqueueJob {
                job_type: job.job_type,
                payload: job.payload.unwrap_or_default(),
                priority: job.priority,
                max_attempts: job.max_attempts,
            }
        }
        ActionSpec::StartWorkflow(w) => {
            check_type(
                "workflow",
                &w.workflow_type,
                options.catalog.as_ref().map(|c| c.workflows.as_slice()),
                options,
            )?;
            Action::StartWorkflow {
                workflow_type: w.workflow_type,
                input: w.input.unwrap_or_default(),
            }
        }
        ActionSpec::Webhook(hook) => {
            if !hook.url.contains("${") {
                let url = url::Url::parse(&hook.url).map_err(|e| format!("`{}` is not a URL: {e}", hook.url))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!("webhook URLs must be http or https, not `{}`", url.scheme()));
                }
            }
            let secret = match (hook.secret_env, hook.secret_file) {
                (Some(env), None) => {
                    if options.collection && !options.allowed_secret_envs.contains(&env) {
                        return Err(format!(
                            "`{env}` is not a secret a collection's rules may use (rules.collection_secret_envs)"
                        ));
                    }
                    SecretSource::Env(env)
                }
                (None, Some(file)) if !options.collection => SecretSource::File(file),
                (None, Some(_)) => return Err("a collection's webhooks name their secret with `secret_env`".into()),
                _ => {
                    return Err("a webhook needs its signing secret: `secret_env` or `secret_file`, one of them".into())
                }
            };
            Action::Webhook { url: hook.url, secret }
        }
    };
    check_templates(&raw_args(&action))?;
    if action.is_item_change() {
        let known = |t: &&String| EVENT_TYPES.contains(&t.as_str());
        if let Some(t) = on
            .iter()
            .filter(known)
            .find(|t| !ITEM_ACTION_EVENTS.contains(&t.as_str()))
        {
            return Err(format!(
                "`{}` changes the event's item, so the rule may only react to {}, not `{t}`",
                action.kind(),
                ITEM_ACTION_EVENTS.join(" and ")
            ));
        }
    }
    Ok(action)
}

/// The arguments before templates are rendered.
fn raw_args(action: &Action) -> Value {
    match action {
        Action::AddTags(t) | Action::RemoveTags(t) => serde_json::json!(t),
        Action::SetMetadata(m) => Value::Object(m.clone()),
        Action::EnqueueJob { payload, .. } => Value::Object(payload.clone()),
        Action::StartWorkflow { input, .. } => Value::Object(input.clone()),
        Action::Webhook { url, .. } => Value::String(url.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            catalog: Some(Catalog {
                jobs: vec![
                    ("ENRICH_URL".into(), TypeScope::Item),
                    ("NOOP".into(), TypeScope::Admin),
                ],
                workflows: vec![("ITEM_INTAKE".into(), TypeScope::Item)],
            }),
            ..Default::default()
        }
    }

    fn issues(text: &str, options: &LoadOptions) -> Vec<RuleIssue> {
        parse(text, options).expect_err("invalid")
    }

    #[test]
    fn the_spec_example_loads() {
        let text = r#"
- name: enrich-links
  on: [ItemCreated]
  when: 'event.data.source_url != null'
  do:
    - enqueue_job: { type: ENRICH_URL, payload: { item_id: '${event.entity.id}' } }
- name: tag-rust
  on: [ItemCreated, ItemUpdated]
  when: 'event.data.title.lowerAscii().contains("rust")'
  do:
    - add_tags: [rust]
- name: notify
  on: [ItemDeleted]
  do:
    - webhook: { url: 'https://example.org/hook', secret_env: HOOK_SECRET }
"#;
        let rules = parse(text, &opts()).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1].on, ["ItemCreated", "ItemUpdated"]);
        assert!(rules[1].when.is_some());
        assert_eq!(rules[2].actions[0].kind(), "webhook");
        assert!(rules[2].enabled);
    }

    #[test]
    fn unknown_fields_are_reported_at_their_key() {
        let found = issues(
            "- name: a\n  on: ItemCreated\n  whn: 'true'\n  do: [{add_tags: [x]}]\n",
            &opts(),
        );
        assert_eq!((found[0].line, found[0].column), (3, 3), "{found:?}");
        assert!(found[0].message.contains("unknown field `whn`"), "{found:?}");
        let found = issues(
            "name: a\non: ItemCreated\ndo:\n  - add_tags: [x]\n  - tag_it: [y]\n",
            &opts(),
        );
        assert_eq!(found[0].line, 5, "{found:?}");
        assert!(found[0].message.contains("unknown variant `tag_it`"), "{found:?}");
        let found = issues(
            "name: a\non: ItemCreated\ndo:\n  - enqueue_job: {type: ENRICH_URL, paylod: {}}\n",
            &opts(),
        );
        assert_eq!(found[0].line, 4, "{found:?}");
        assert!(found[0].message.contains("paylod"), "{found:?}");
    }

    #[test]
    fn cel_errors_are_caught_at_load_time() {
        let found = issues(
            "name: a\non: ItemCreated\nwhen: 'event.data.title ==='\ndo: [{add_tags: [x]}]\n",
            &opts(),
        );
        assert_eq!((found[0].line, found[0].column), (3, 7), "{found:?}");
        assert!(found[0].message.starts_with("CEL:"), "{found:?}");
        let found = issues(
            "name: a\non: ItemCreated\nwhen: 'evnt.type == \"x\"'\ndo: [{add_tags: [x]}]\n",
            &opts(),
        );
        assert!(found[0].message.contains("unknown variable `evnt`"), "{found:?}");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let text = "- name: a\n  on: [ItemCreatd]\n  do: [{add_tags: ['${event.nope}']}]\n- name: a\n  on: ItemDeleted\n  do: [{add_tags: [x]}]\n";
        let found = issues(text, &opts());
        let lines: Vec<usize> = found.iter().map(|i| i.line).collect();
        assert_eq!(lines, [2, 3, 6], "{found:?}");
        assert!(found[1].message.contains("not an event path"), "{found:?}");
        assert!(found[2].message.contains("only react to"), "{found:?}");
    }

    #[test]
    fn jobs_workflows_and_webhooks_are_checked() {
        let found = issues("name: a\non: ItemCreated\ndo: [{enqueue_job: {type: NOPE}}]\n", &opts());
        assert!(found[0].message.contains("unknown job type `NOPE`"), "{found:?}");
        let collection = LoadOptions {
            collection: true,
            allowed_secret_envs: vec!["HOOK_OK".into()],
            ..opts()
        };
        let found = issues(
            "name: a\non: ItemCreated\ndo: [{enqueue_job: {type: NOOP}}]\n",
            &collection,
        );
        assert!(found[0].message.contains("for administrators"), "{found:?}");
        let found = issues(
            "name: a\non: ItemCreated\ndo: [{webhook: {url: 'https://x.org', secret_env: ATLAS_AUTH__JWT_SECRET}}]\n",
            &collection,
        );
        assert!(found[0].message.contains("collection_secret_envs"), "{found:?}");
        parse(
            "name: a\non: ItemCreated\ndo: [{webhook: {url: 'https://x.org', secret_env: HOOK_OK}}]\n",
            &collection,
        )
        .unwrap();
        let found = issues(
            "name: a\non: ItemCreated\ndo: [{webhook: {url: 'ftp://x.org', secret_env: S}}]\n",
            &opts(),
        );
        assert!(found[0].message.contains("http or https"), "{found:?}");
        let found = issues(
            "name: a\non: ItemCreated\ndo: [{webhook: {url: 'https://x.org'}}]\n",
            &opts(),
        );
        assert!(found[0].message.contains("signing secret"), "{found:?}");
    }

    #[test]
    fn json_rules_are_read_too() {
        let rules = parse(
            r#"{"name": "j", "on": ["ItemCreated"], "when": "event.data.version == 1", "do": [{"add_tags": ["new"]}], "priority": 3}"#,
            &opts(),
        )
        .unwrap();
        assert_eq!(rules[0].priority, 3);
        assert_eq!(rules[0].definition["enabled"], true);
    }
}
