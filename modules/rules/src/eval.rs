//! Evaluating rules against one event: which rules react to its type, whose
//! `when` holds, in priority order. Shared by the rules engine, the webhook
//! dispatcher and dry runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::rule::{cel_env, Rule};

/// An event as a CEL value. JSON integers become CEL `int`s (so
/// `event.data.version == 1` holds), other numbers `double`s.
pub fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let entries: HashMap<cel::objects::Key, cel::Value> = map
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(entries) })
        }
    }
}

/// The rules among `rules` that react to `event`'s type and whose condition
/// holds, highest `priority` first (then by name). A condition that fails to
/// evaluate, or yields something other than a boolean, does not match; its
/// first failure per rule is logged.
pub fn matching(rules: &[Arc<Rule>], event: &Value) -> Vec<Arc<Rule>> {
    let Some(event_type) = event.get("type").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut candidates: Vec<&Arc<Rule>> = rules.iter().filter(|r| r.reacts_to(event_type)).collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    candidates.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    let started = Instant::now();
    let mut context = cel::Context::with_env(cel_env());
    context.add_variable_from_value("event", to_cel(event));
    let mut matched = Vec::new();
    let mut errors = 0u64;
    for rule in &candidates {
        let holds = match &rule.when {
            None => true,
            Some(condition) => match condition.program.execute(&context) {
                Ok(cel::Value::Bool(b)) => b,
                Ok(other) => {
                    errors += 1;
                    if rule.first_warning() {
                        tracing::warn!(rule = %rule.key, condition = %condition.source, result = ?other,
                            "a rule's condition is not a boolean; the rule does not match (logged once)");
                    }
                    false
                }
                Err(e) => {
                    errors += 1;
                    if rule.first_warning() {
                        tracing::warn!(rule = %rule.key, condition = %condition.source, error = %e,
                            "a rule's condition failed on an event; the rule does not match (logged once)");
                    }
                    false
                }
            },
        };
        if holds {
            matched.push(Arc::clone(rule));
        }
    }
    metrics::counter!("atlas_rule_evaluations_total").increment(candidates.len() as u64);
    metrics::counter!("atlas_rule_matches_total").increment(matched.len() as u64);
    if errors > 0 {
        metrics::counter!("atlas_rule_errors_total", "stage" => "condition").increment(errors);
    }
    metrics::histogram!("atlas_rule_evaluation_duration_seconds").record(started.elapsed().as_secs_f64());
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{parse, LoadOptions, Origin};
    use serde_json::json;

    fn rules(text: &str) -> Vec<Arc<Rule>> {
        parse(text, &LoadOptions::default())
            .unwrap()
            .into_iter()
            .map(|c| {
                let key = format!("test:{}", c.name);
                Arc::new(c.into_rule(key, Origin::Test))
            })
            .collect()
    }

    fn names(rules: &[Arc<Rule>]) -> Vec<String> {
        rules.iter().map(|r| r.name.clone()).collect()
    }

    fn created(title: &str) -> Value {
        json!({"type": "ItemCreated", "entity": {"type": "item", "id": "i1", "collection_id": "c1"},
               "data": {"title": title, "version": 1, "tags": ["a", "b"], "source_url": null}})
    }

    #[test]
    fn conditions_select_rules_in_priority_order() {
        let set = rules(
            r#"
- name: low
  on: [ItemCreated]
  do: [{add_tags: [x]}]
- name: high
  on: [ItemCreated]
  priority: 10
  when: 'event.data.title.lowerAscii().contains("rust") && event.data.version == 1'
  do: [{add_tags: [y]}]
- name: tags
  on: [ItemCreated]
  when: 'event.data.tags.exists(t, t == "b") && size(event.data.tags) == 2'
  do: [{add_tags: [z]}]
- name: other-type
  on: [ItemDeleted]
  do: [{webhook: {url: 'https://x.org', secret_env: S}}]
- name: disabled
  on: [ItemCreated]
  enabled: false
  do: [{add_tags: [x]}]
"#,
        );
        assert_eq!(
            names(&matching(&set, &created("Learning RUST"))),
            ["high", "low", "tags"]
        );
        assert_eq!(names(&matching(&set, &created("Go"))), ["low", "tags"]);
    }

    #[test]
    fn a_failing_condition_does_not_match() {
        let set = rules(
            r#"
- name: missing-field
  on: [ItemCreated]
  when: 'event.data.nope.deeper == 1'
  do: [{add_tags: [x]}]
- name: not-boolean
  on: [ItemCreated]
  when: 'event.data.title'
  do: [{add_tags: [x]}]
- name: null-check
  on: [ItemCreated]
  when: 'event.data.source_url != null'
  do: [{add_tags: [x]}]
"#,
        );
        assert!(matching(&set, &created("a")).is_empty());
        assert!(!set[0].first_warning(), "the failure was logged already");
        let mut with_url = created("a");
        with_url["data"]["source_url"] = json!("https://example.org");
        assert_eq!(names(&matching(&set, &with_url)), ["null-check"]);
    }
}
