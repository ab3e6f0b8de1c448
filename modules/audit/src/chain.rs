//! The audit row and its place in the hash chain.
//!
//! # The hash of a row
//!
//! A row is the JSON object `GET /api/v1/audit` returns:
//!
//! ```json
//! {"sequence": 7, "event_id": "…", "type": "ItemCreated",
//!  "occurred_at": "2026-11-23T12:00:00.123000Z", "recorded_at": "2026-11-23T12:00:00.130512Z",
//!  "actor_user_id": "…" | null,
//!  "entity": {"type": "item", "id": "…", "collection_id": "…" | null},
//!  "data": {…}, "trace_id": "…", "request_id": "…",
//!  "prev_hash": "…64 hex…", "hash": "…64 hex…"}
//! ```
//!
//! Its hash is computed so that any program can redo it:
//!
//! 1. `data_sha256` = lowercase hex of SHA-256 over the canonical JSON
//!    (RFC 8785, see [`crate::canonical`]) of `data`, as UTF-8.
//! 2. The *content* is the row object without `prev_hash` and `hash`, with
//!    `data` replaced by `data_sha256`; every other member is kept with its
//!    exact value (absent values are `null`, never left out). Twelve
//!    members: `actor_user_id, data_sha256, entity{collection_id, id, type},
//!    event_id, occurred_at, recorded_at, request_id, sequence, trace_id, type`.
//! 3. `hash` = lowercase hex of SHA-256 over the bytes of the canonical JSON
//!    of the content immediately followed by the 64 ASCII characters of
//!    `prev_hash`.
//!
//! `prev_hash` of sequence 1 is [`GENESIS_HASH`] (64 zeros); every later
//! row's is the `hash` of the row before it. Because the content commits to
//! `data` through its digest, an export can leave out the data of rows it
//! must not disclose (other collections) and still be checked end to end.
//!
//! In shell terms, for a row in `row.json` (with a JCS tool such as `jcs`):
//! `printf '%s%s' "$(jcs content.json)" "$prev_hash" | sha256sum`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::canonical::to_canonical_string;

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit row is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntity {
    /// `user`, `collection`, `membership`, `item`, `job` or `workflow`.
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
    pub collection_id: Option<String>,
}

/// One row of the audit trail, as stored, served and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the chain: 1, 2, 3, … without gaps.
    pub sequence: i64,
    pub event_id: String,
    /// The event type, e.g. `ItemCreated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the change happened (from the event).
    pub occurred_at: String,
    /// When the audit sink appended the row; never decreases along the chain.
    pub recorded_at: String,
    /// The user whose request caused the event (for jobs and workflows, their creator).
    pub actor_user_id: Option<String>,
    pub entity: AuditEntity,
    /// The event's data, secrets redacted.
    #[schema(value_type = Object)]
    pub data: Value,
    pub trace_id: String,
    pub request_id: String,
    /// The `hash` of the previous row (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 of this row's canonical content and `prev_hash`, lowercase hex.
    pub hash: String,
}

/// A row with its data replaced by the data's digest: what the hash covers,
/// and how an export carries rows whose data it leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    pub sequence: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: String,
    pub recorded_at: String,
    pub actor_user_id: Option<String>,
    pub entity: AuditEntity,
    pub data_sha256: String,
    pub trace_id: String,
    pub request_id: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The members of the content, borrowed, in the shape step 2 describes.
#[derive(Serialize)]
struct Content<'a> {
    sequence: i64,
    event_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    occurred_at: &'a str,
    recorded_at: &'a str,
    actor_user_id: Option<&'a str>,
    entity: &'a AuditEntity,
    data_sha256: &'a str,
    trace_id: &'a str,
    request_id: &'a str,
}

/// Lowercase hex SHA-256 of the canonical JSON of `data`.
pub fn data_digest(data: &Value) -> String {
    hex::encode(Sha256::digest(to_canonical_string(data).as_bytes()))
}

impl AuditRecord {
    /// The sealed form of this row (its data replaced by the digest).
    pub fn seal(&self) -> SealedRecord {
        SealedRecord {
            sequence: self.sequence,
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            occurred_at: self.occurred_at.clone(),
            recorded_at: self.recorded_at.clone(),
            actor_user_id: self.actor_user_id.clone(),
            entity: self.entity.clone(),
            data_sha256: data_digest(&self.data),
            trace_id: self.trace_id.clone(),
            request_id: self.request_id.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }

    /// The hash this row should carry, given its content and `prev_hash`.
    pub fn compute_hash(&self) -> String {
        self.seal().compute_hash()
    }
}

impl SealedRecord {
    /// The canonical JSON of the content (step 2).
    pub fn canonical_content(&self) -> String {
        let content = Content {
            sequence: self.sequence,
            event_id: &self.event_id,
            event_type: &self.event_type,
            occurred_at: &self.occurred_at,
            recorded_at: &self.recorded_at,
            actor_user_id: self.actor_user_id.as_deref(),
            entity: &self.entity,
            data_sha256: &self.data_sha256,
            trace_id: &self.trace_id,
            request_id: &self.request_id,
        };
        // Serializing plain strings and integers into a `Value` cannot fail.
        to_canonical_string(&serde_json::to_value(content).unwrap_or(Value::Null))
    }

    /// The hash this row should carry (step 3).
    pub fn compute_hash(&self) -> String {
        chain_hash(&self.canonical_content(), &self.prev_hash)
    }
}

/// SHA-256 over the canonical content followed by `prev_hash`, lowercase hex.
pub fn chain_hash(canonical_content: &str, prev_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical_content.as_bytes());
    hasher.update(prev_hash.as_bytes());
    hex::encode(hasher.finalize())
}

/// Field names whose values never enter the audit trail. Events must carry
/// none (the outbox refuses the ones in `atlas_events::SECRET_FIELDS`); the
/// sink checks again, with a wider net, and redacts what it finds.
const DENIED_FIELDS: &[&str] = &[
    "api_key",
    "authorization",
    "client_secret",
    "cookie",
    "credentials",
    "private_key",
    "session_token",
    "signing_key",
];

/// The value put in place of a redacted one.
pub const REDACTED: &str = "[redacted]";

fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    atlas_events::SECRET_FIELDS.contains(&name.as_str())
        || DENIED_FIELDS.contains(&name.as_str())
        || name.contains("password")
        || name.ends_with("_token")
        || name.ends_with("_secret")
}

/// Replace the value of every secret-looking field, at any depth, with
/// [`REDACTED`]; returns the paths of the fields it redacted.
pub fn redact(value: &mut Value) -> Vec<String> {
    let mut found = Vec::new();
    redact_at(value, "", &mut found);
    found
}

fn redact_at(value: &mut Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (name, member) in map.iter_mut() {
                let here = format!("{path}/{name}");
                if is_secret_field(name) {
                    *member = Value::String(REDACTED.into());
                    found.push(here);
                } else {
                    redact_at(member, &here, found);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                redact_at(item, &format!("{path}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> AuditRecord {
        AuditRecord {
            sequence: 1,
            event_id: "0192a0b0-0000-7000-8000-000000000001".into(),
            event_type: "ItemCreated".into(),
            occurred_at: "2026-11-23T12:00:00.123000Z".into(),
            recorded_at: "2026-11-23T12:00:00.130512Z".into(),
            actor_user_id: Some("0191a0b0-0000-7000-8000-000000000002".into()),
            entity: AuditEntity {
                entity_type: "item".into(),
                id: "0192a0b0-0000-7000-8000-000000000003".into(),
                collection_id: None,
            },
            data: json!({"title": "Rust", "tags": ["a"], "version": 1}),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            request_id: "req-1".into(),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_content_is_exactly_the_documented_object() {
        let sealed = record().seal();
        assert_eq!(
            sealed.canonical_content(),
            format!(
                concat!(
                    r#"{{"actor_user_id":"0191a0b0-0000-7000-8000-000000000002","data_sha256":"{}","#,
                    r#""entity":{{"collection_id":null,"id":"0192a0b0-0000-7000-8000-000000000003","type":"item"}},"#,
                    r#""event_id":"0192a0b0-0000-7000-8000-000000000001","occurred_at":"2026-11-23T12:00:00.123000Z","#,
                    r#""recorded_at":"2026-11-23T12:00:00.130512Z","request_id":"req-1","sequence":1,"#,
                    r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","type":"ItemCreated"}}"#
                ),
                hex::encode(Sha256::digest(br#"{"tags":["a"],"title":"Rust","version":1}"#))
            )
        );
        // The hash is SHA-256 of those bytes followed by the previous hash.
        let mut h = Sha256::new();
        h.update(sealed.canonical_content().as_bytes());
        h.update(GENESIS_HASH.as_bytes());
        assert_eq!(record().compute_hash(), hex::encode(h.finalize()));
    }

    #[test]
    fn every_member_changes_the_hash() {
        let base = record().compute_hash();
        type Edit = Box<dyn Fn(&mut AuditRecord)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.sequence = 2),
            Box::new(|r| r.event_id.push('x')),
            Box::new(|r| r.event_type = "ItemUpdated".into()),
            Box::new(|r| r.occurred_at.push('x')),
            Box::new(|r| r.recorded_at.push('x')),
            Box::new(|r| r.actor_user_id = None),
            Box::new(|r| r.entity.collection_id = Some("c".into())),
            Box::new(|r| r.entity.id.push('x')),
            Box::new(|r| r.entity.entity_type = "user".into()),
            Box::new(|r| r.data["title"] = json!("Rust!")),
            Box::new(|r| r.trace_id.push('x')),
            Box::new(|r| r.request_id.push('x')),
            Box::new(|r| r.prev_hash = "1".repeat(64)),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut r = record();
            edit(&mut r);
            assert_ne!(r.compute_hash(), base, "edit {i} went unnoticed");
        }
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = json!({"title": "password tips", "nested": [{"Password": "x", "refresh_token": "y"}],
                           "idempotency_key": "k", "webhook_secret": "s", "ok": {"token_count": 3}});
        let found = redact(&mut v);
        assert_eq!(
            found,
            vec!["/nested/0/Password", "/nested/0/refresh_token", "/webhook_secret"]
        );
        assert_eq!(v["nested"][0]["Password"], REDACTED);
        assert_eq!(v["title"], "password tips");
        assert_eq!(v["idempotency_key"], "k");
        assert_eq!(v["ok"]["token_count"], 3);
    }
}
