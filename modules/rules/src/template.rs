//! `${event.…}` templates in action arguments.
//!
//! A template names a path into the event envelope: `${event.entity.id}`,
//! `${event.data.tags[0]}`. A string that is exactly one template takes the
//! value's own JSON type (a number stays a number); a template inside longer
//! text is replaced by the value's text. A path that is missing from an
//! event renders as `null` (or nothing, inside text). Paths are checked when
//! the rule is loaded: they must start at `event` and name an envelope field.

use serde_json::{Map, Value};

/// The envelope's top-level fields (SPEC §3).
pub const ENVELOPE_FIELDS: &[&str] = &[
    "event_id",
    "type",
    "version",
    "occurred_at",
    "actor_user_id",
    "entity",
    "data",
    "trace_id",
    "request_id",
    "causation_id",
    "sequence",
];

/// One step of a path: a field or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

/// A piece of templated text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Path(Vec<Step>),
}

/// A template error: where in the string, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
}

fn error(message: String) -> TemplateError {
    TemplateError { message }
}

/// Parse `${…}` references in `s`.
fn pieces(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| error(format!("unclosed template `{}`", &rest[start..])))?;
        out.push(Piece::Path(path(after[..end].trim())?));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// Parse `event.a.b[0].c`.
fn path(expr: &str) -> Result<Vec<Step>, TemplateError> {
    let bad = || {
        error(format!(
            "`${{{expr}}}` is not an event path; write `${{event.<field>…}}` with one of: {}",
            ENVELOPE_FIELDS.join(", ")
        ))
    };
    let rest = expr.strip_prefix("event").ok_or_else(bad)?;
    let mut steps = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if name.is_empty() {
                    return Err(bad());
                }
                steps.push(Step::Field(name));
            }
            '[' => {
                let mut digits = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    digits.push(c);
                }
                steps.push(Step::Index(digits.trim().parse().map_err(|_| bad())?));
            }
            _ => return Err(bad()),
        }
    }
    match steps.first() {
        Some(Step::Field(f)) if ENVELOPE_FIELDS.contains(&f.as_str()) => Ok(steps),
        _ => Err(bad()),
    }
}

/// Check every template inside `value` (strings at any depth, keys too).
pub fn check(value: &Value) -> Result<(), TemplateError> {
    match value {
        Value::String(s) => pieces(s).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(check),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            pieces(k)?;
            check(v)
        }),
        _ => Ok(()),
    }
}

fn lookup<'a>(event: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps.iter().try_fold(event, |v, step| match step {
        Step::Field(f) => v.get(f),
        Step::Index(i) => v.get(i),
    })
}

fn as_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn render_str(s: &str, event: &Value) -> Value {
    let Ok(parts) = pieces(s) else {
        // Checked at load time; a string that does not parse stays as it is.
        return Value::String(s.to_string());
    };
    match parts.as_slice() {
        [] => Value::String(String::new()),
        [Piece::Path(steps)] => lookup(event, steps).cloned().unwrap_or(Value::Null),
        _ => Value::String(
            parts
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => t.clone(),
                    Piece::Path(steps) => as_text(lookup(event, steps)),
                })
                .collect(),
        ),
    }
}

/// `value` with every template replaced from `event`.
pub fn render(value: &Value, event: &Value) -> Value {
    match value {
        Value::String(s) if s.contains("${") => render_str(s, event),
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, event)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = if k.contains("${") {
                        as_text(Some(&render_str(k, event)))
                    } else {
                        k.clone()
                    };
                    (key, render(v, event))
                })
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"event_id": "e1", "type": "ItemCreated", "sequence": 42,
               "entity": {"type": "item", "id": "i1", "collection_id": "c1"},
               "data": {"title": "Hello", "tags": ["a", "b"], "version": 3}})
    }

    #[test]
    fn whole_templates_keep_their_type_and_text_templates_become_text() {
        let args = json!({"item_id": "${event.entity.id}", "n": "${event.sequence}",
                          "label": "seq ${event.sequence} of ${ event.data.title }",
                          "second": "${event.data.tags[1]}", "missing": "${event.data.nope}",
                          "in_text": "[${event.data.nope}]", "plain": "no templates", "k": 5});
        check(&args).unwrap();
        assert_eq!(
            render(&args, &event()),
            json!({"item_id": "i1", "n": 42, "label": "seq 42 of Hello", "second": "b",
                   "missing": null, "in_text": "[]", "plain": "no templates", "k": 5})
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for bad in [
            "${entity.id}",
            "${event}",
            "${event.}",
            "${event.nosuch}",
            "${event.data[x]}",
            "${event.data",
        ] {
            let e = check(&json!({"a": [bad]})).unwrap_err();
            assert!(
                e.message.contains("not an event path") || e.message.contains("unclosed"),
                "{bad}: {e:?}"
            );
        }
    }
}
