//! Rule text → a JSON value plus where each of its nodes was written.
//!
//! Rules arrive as YAML (files, `application/yaml` bodies) or JSON (which
//! YAML reads too), so one reader serves both. Every mapping key and every
//! value is remembered by its JSON pointer (`/0/do/1/add_tags`), so errors
//! found after parsing — a field serde rejects, a CEL expression that does
//! not compile — still name a line and column.
//!
//! Plain scalars follow the YAML 1.2 core schema (`null`, `true`, `12`,
//! `1.5`); quoted and block scalars are strings. Anchors and aliases are
//! refused: rules have no use for them and they allow exponential blow-ups.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::Serialize;
use serde_json::{Map, Number, Value};

/// A position in rule text; both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// Text that is not well-formed YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// A parsed document and the positions of its nodes.
#[derive(Debug, Clone, Default)]
pub struct Located {
    pub value: Value,
    /// Value positions by JSON pointer.
    values: HashMap<String, Pos>,
    /// Key positions by the JSON pointer of the value they name.
    keys: HashMap<String, Pos>,
}

impl Located {
    /// A value that was not read from text (a stored rule, a JSON body
    /// already parsed): every position is the start.
    pub fn unplaced(value: Value) -> Self {
        Located {
            value,
            ..Default::default()
        }
    }

    /// Where the value at `pointer` starts, or the nearest enclosing one.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.nearest(pointer, &self.values)
    }

    /// Where the key naming the value at `pointer` is (for unknown fields),
    /// falling back to the value.
    pub fn key_pos(&self, pointer: &str) -> Pos {
        match self.keys.get(pointer) {
            Some(p) => *p,
            None => self.value_pos(pointer),
        }
    }

    fn nearest(&self, pointer: &str, map: &HashMap<String, Pos>) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = map.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Pos::START,
            }
        }
    }
}

/// Escape one JSON pointer segment.
pub fn pointer_segment(s: &str) -> Cow<'_, str> {
    if s.contains(['~', '/']) {
        Cow::Owned(s.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(s)
    }
}

enum Frame {
    Seq {
        pointer: String,
        items: Vec<Value>,
    },
    Map {
        pointer: String,
        entries: Map<String, Value>,
        key: Option<String>,
    },
}

impl Frame {
    /// The pointer of the next child, and whether that child is a key.
    fn next_child(&self) -> (String, bool) {
        match self {
            Frame::Seq { pointer, items } => (format!("{pointer}/{}", items.len()), false),
            Frame::Map { pointer, key: None, .. } => (pointer.clone(), true),
            Frame::Map {
                pointer, key: Some(k), ..
            } => (format!("{pointer}/{}", pointer_segment(k)), false),
        }
    }
}

/// Parse one YAML (or JSON) document. Empty text is `null`.
pub fn parse(text: &str) -> Result<Located, SyntaxError> {
    let mut out = Located::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos::of(&span);
        let fail = |message: &str| SyntaxError {
            pos,
            message: message.to_string(),
        };
        let (pointer, is_key) = stack.last().map(Frame::next_child).unwrap_or_default();
        let value = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail("expected one YAML document, found a second"));
                }
                continue;
            }
            Event::Alias(_) => return Err(fail("anchors and aliases are not supported in rules")),
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 {
                    return Err(fail("anchors and aliases are not supported in rules"));
                }
                let verbatim = style != ScalarStyle::Plain || tag.as_ref().is_some_and(|t| t.suffix == "str");
                if is_key {
                    if let Some(Frame::Map { key, entries, .. }) = stack.last_mut() {
                        if entries.contains_key(text.as_ref()) {
                            return Err(fail(&format!("duplicate key `{text}`")));
                        }
                        let child = format!("{pointer}/{}", pointer_segment(&text));
                        out.keys.insert(child, pos);
                        *key = Some(text.into_owned());
                    }
                    continue;
                }
                if verbatim {
                    Value::String(text.into_owned())
                } else {
                    plain_scalar(&text)
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    return Err(fail("anchors and aliases are not supported in rules"));
                }
                if is_key {
                    return Err(fail("a mapping key must be a plain value, not a list or mapping"));
                }
                out.values.insert(pointer.clone(), pos);
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq {
                        pointer,
                        items: Vec::new(),
                    },
                    _ => Frame::Map {
                        pointer,
                        entries: Map::new(),
                        key: None,
                    },
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { items, .. }) => Value::Array(items),
                Some(Frame::Map { entries, .. }) => Value::Object(entries),
                None => continue,
            },
            _ => continue,
        };
        // A finished value: a scalar, or a list or mapping just closed.
        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => {
                if !matches!(value, Value::Array(_) | Value::Object(_)) {
                    out.values.insert(pointer, pos);
                }
                items.push(value);
            }
            Some(Frame::Map { entries, key, .. }) => {
                if !matches!(value, Value::Array(_) | Value::Object(_)) {
                    out.values.insert(pointer, pos);
                }
                if let Some(k) = key.take() {
                    entries.insert(k, value);
                }
            }
            None => {
                if !matches!(value, Value::Array(_) | Value::Object(_)) {
                    out.values.insert(String::new(), pos);
                }
                root = Some(value);
            }
        }
    }
    out.value = root.unwrap_or(Value::Null);
    Ok(out)
}

/// A plain scalar under the YAML 1.2 core schema.
fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Number(i.into());
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Number(i.into());
        }
    }
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric {
        if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_yaml_with_positions() {
        let text = "- name: a\n  on: [ItemCreated]\n  when: 'event.data.x > 1'\n  do:\n    - add_tags: [rust, 2]\n";
        let doc = parse(text).unwrap();
        assert_eq!(
            doc.value,
            json!([{"name": "a", "on": ["ItemCreated"], "when": "event.data.x > 1", "do": [{"add_tags": ["rust", 2]}]}])
        );
        assert_eq!(doc.value_pos("/0/when"), Pos { line: 3, column: 9 });
        assert_eq!(doc.key_pos("/0/when"), Pos { line: 3, column: 3 });
        assert_eq!(doc.value_pos("/0/do/0/add_tags/1"), Pos { line: 5, column: 24 });
        // A pointer with no node of its own falls back to its parent.
        assert_eq!(doc.value_pos("/0/do/0/add_tags/7"), doc.value_pos("/0/do/0/add_tags"));
    }

    #[test]
    fn reads_json_too() {
        let doc = parse("{\"name\": \"a\",\n \"priority\": 5, \"enabled\": false, \"x\": null}").unwrap();
        assert_eq!(
            doc.value,
            json!({"name": "a", "priority": 5, "enabled": false, "x": null})
        );
        assert_eq!(doc.key_pos("/priority"), Pos { line: 2, column: 2 });
    }

    #[test]
    fn core_schema_scalars() {
        let doc = parse("[1, -2, 1.5, 1e3, 0x1f, '12', \"true\", ~, yes, 1.2.3, .5]").unwrap();
        assert_eq!(
            doc.value,
            json!([1, -2, 1.5, 1000.0, 31, "12", "true", null, "yes", "1.2.3", 0.5])
        );
    }

    #[test]
    fn refuses_what_rules_never_need() {
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert!(e.message.contains("anchors"), "{e:?}");
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((e.pos.line, e.message.as_str()), (2, "duplicate key `a`"));
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second"), "{e:?}");
        let e = parse("a: [1, 2\nb: 3").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
    }
}
