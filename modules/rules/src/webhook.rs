//! Webhooks: the `webhooks` consumer POSTs the event envelope to each URL a
//! firing rule's `webhook` action names, signed per the Standard Webhooks
//! specification, and logs every attempt in `webhook_deliveries`.
//!
//! - Headers: `webhook-id` (the event id: the same on every retry, so a
//!   receiver can drop duplicates), `webhook-timestamp` (Unix seconds) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//!   A secret written `whsec_<base64>` is used base64-decoded, any other
//!   secret as its bytes. Secrets are read at each delivery.
//! - A 2xx answer delivers. Network errors, timeouts, 408, 429 and 5xx are
//!   retried: the consumer fails the event, so the event runtime retries it
//!   with backoff and dead-letters it after `events.max_deliver` deliveries.
//!   The first attempt goes with the event's batch, then each delivery of
//!   the event alone is one attempt, so a receiver sees at most
//!   `max_deliver + 1` requests; the attempt of the runtime's last delivery
//!   is logged as `dead`. Other answers (3xx, 4xx) are `failed` and not
//!   retried. A webhook of the same event that was delivered, failed or
//!   refused is not sent again; one that ended `dead` is, when its dead
//!   letter is replayed.
//! - The same SSRF guard as `ENRICH_URL`: private, loopback, link-local …
//!   addresses are `refused` unless `rules.webhook_allow_networks` lets them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_jobs::ssrf::{error_chain, AddressPolicy, GuardError};
use atlas_kernel::ModuleError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;

use crate::book::RuleBook;
use crate::engine::{fired, Firings, RuleWork};
use crate::rule::{Action, Origin, Rule, SecretSource};

/// The Standard Webhooks signature of one message.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts a key of any length, so creating it cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A secret's key bytes: `whsec_<base64>` decoded, anything else as is.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("the webhook secret is empty".into());
    }
    match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD
            .decode(b64)
            .map_err(|e| format!("the webhook secret starts with whsec_ but is not base64: {e}")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

fn read_secret(source: &SecretSource) -> Result<Vec<u8>, String> {
    let raw = match source {
        SecretSource::Env(name) => std::env::var(name)
            .map_err(|_| format!("the environment variable `{name}` holding the secret is not set"))?,
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?
        }
    };
    secret_key(&raw)
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A 3xx or 4xx answer (but 408/429), or no usable secret: not retried.
    Failed,
    /// The SSRF guard refused the address: not retried.
    Refused,
    /// Will be retried with the event.
    Retrying,
    /// Retryable, but this was the last delivery of the event.
    Dead,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Retrying => "retrying",
            Outcome::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Delivered,
            Outcome::Failed,
            Outcome::Refused,
            Outcome::Retrying,
            Outcome::Dead,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

struct Attempt {
    outcome: Outcome,
    status: Option<u16>,
    error: Option<String>,
}

/// The `webhooks` consumer.
pub struct WebhookDispatcher {
    pub book: Arc<RuleBook>,
    pub firings: Firings,
    pub db: Database,
    pub policy: AddressPolicy,
    pub timeout: Duration,
    pub max_depth: u32,
}

#[async_trait]
impl RuleWork for WebhookDispatcher {
    const NAME: &'static str = "webhooks";

    fn book(&self) -> &RuleBook {
        &self.book
    }

    async fn handle_fresh(&self, event: &Value) -> Result<(), ModuleError> {
        let wanted = |r: &Rule| r.actions.iter().any(|a| matches!(a, Action::Webhook { .. }));
        let (rules, _) = fired(&self.book, &self.firings, self.max_depth, event, wanted).await?;
        let event_id = event.get("event_id").and_then(Value::as_str).unwrap_or_default();
        let mut retry = Vec::new();
        for rule in rules {
            for (index, action) in rule.actions.iter().enumerate() {
                let Action::Webhook { secret, .. } = action else {
                    continue;
                };
                let index = index as i64;
                let (attempts, settled) = self.history(event_id, &rule.key, index).await?;
                if settled {
                    continue;
                }
                let url = action
                    .args(event)
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let started = Instant::now();
                let mut attempt = match read_secret(secret) {
                    Ok(key) => self.post(&url, &key, event_id, event).await,
                    Err(why) => Attempt {
                        outcome: Outcome::Failed,
                        status: None,
                        error: Some(why),
                    },
                };
                let number = attempts + 1;
                // A failure in the runtime's last delivery dead-letters the
                // event: this attempt was the webhook's last.
                let last = atlas_events::current_delivery().is_some_and(|d| d.last);
                if attempt.outcome == Outcome::Retrying && last {
                    attempt.outcome = Outcome::Dead;
                }
                metrics::counter!("atlas_webhook_deliveries_total", "outcome" => attempt.outcome.as_str()).increment(1);
                let collection_id = match &rule.origin {
                    Origin::Collection { collection_id, .. } => Some(collection_id.clone()),
                    _ => event
                        .pointer("/entity/collection_id")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                };
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, event_id, event_type, rule_key, rule_name, action_index, collection_id, url, \
                     attempt, outcome, status_code, error, duration_ms, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(event_id)
                .bind(event.get("type").and_then(Value::as_str).unwrap_or_default())
                .bind(&rule.key)
                .bind(&rule.name)
                .bind(index)
                .bind(collection_id)
                .bind(&url)
                .bind(number)
                .bind(attempt.outcome.as_str())
                .bind(attempt.status.map(i64::from))
                .bind(&attempt.error)
                .bind(started.elapsed().as_millis() as i64)
                .bind(atlas_db::now())
                .execute(self.db.writer())
                .await?;
                match attempt.outcome {
                    Outcome::Retrying | Outcome::Dead => {
                        retry.push(format!("{url}: {}", attempt.error.unwrap_or_default()));
                    }
                    Outcome::Delivered => {}
                    Outcome::Failed | Outcome::Refused => tracing::warn!(
                        rule = %rule.key, event_id, url = %url, status = ?attempt.status,
                        "a webhook was not delivered and will not be retried: {}",
                        attempt.error.unwrap_or_default()
                    ),
                }
            }
        }
        if retry.is_empty() {
            Ok(())
        } else {
            Err(format!("webhook delivery failed: {}", retry.join("; ")).into())
        }
    }
}

impl WebhookDispatcher {
    /// Attempts so far, and whether the webhook already ended (delivered,
    /// failed or refused; a `dead` one is tried again when its dead letter
    /// is replayed).
    async fn history(&self, event_id: &str, rule_key: &str, index: i64) -> Result<(i64, bool), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT outcome FROM webhook_deliveries WHERE event_id = $1 AND rule_key = $2 AND action_index = $3",
        )
        .bind(event_id)
        .bind(rule_key)
        .bind(index)
        .fetch_all(self.db.reader())
        .await?;
        let settled = rows.iter().any(|r| {
            r.try_get::<String, _>(0).is_ok_and(|o| {
                [Outcome::Delivered, Outcome::Failed, Outcome::Refused]
                    .iter()
                    .any(|ended| ended.as_str() == o)
            })
        });
        Ok((rows.len() as i64, settled))
    }

    async fn post(&self, url: &str, key: &[u8], event_id: &str, event: &Value) -> Attempt {
        let fail = |outcome, error: String| Attempt {
            outcome,
            status: None,
            error: Some(error),
        };
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return fail(Outcome::Failed, format!("`{url}` is not a URL: {e}")),
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let target = match self.policy.resolve(&parsed, deadline).await {
            Ok(t) => t,
            Err(GuardError::Refused(why)) => return fail(Outcome::Refused, format!("refused: {why}")),
            Err(GuardError::Unresolved(why)) => return fail(Outcome::Retrying, why),
        };
        // The envelope as JSON, without the span id meant for Atlas's own traces.
        let mut body = event.clone();
        if let Some(map) = body.as_object_mut() {
            map.remove("span_id");
        }
        let body = body.to_string().into_bytes();
        let timestamp = chrono::Utc::now().timestamp();
        let client = target
            .pin(reqwest::Client::builder())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .user_agent(concat!("Atlas/", env!("CARGO_PKG_VERSION"), " (+webhooks)"))
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => return fail(Outcome::Retrying, format!("HTTP client: {e}")),
        };
        let response = client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(key, event_id, timestamp, &body))
            .body(body)
            .send()
            .await;
        match response {
            Err(e) => fail(Outcome::Retrying, format!("request failed: {}", error_chain(&e))),
            Ok(r) => {
                let status = r.status();
                let outcome = if status.is_success() {
                    Outcome::Delivered
                } else if status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Outcome::Retrying
                } else {
                    Outcome::Failed
                };
                Attempt {
                    outcome,
                    status: Some(status.as_u16()),
                    error: (outcome != Outcome::Delivered).then(|| format!("answered {status}")),
                }
            }
        }
    }
}

/// One logged attempt, as `GET /webhooks/deliveries` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `global:<file>:<name>` or `collection:<rule id>`.
    pub rule_key: String,
    pub rule_name: String,
    pub collection_id: Option<String>,
    pub url: String,
    /// 1 for the first attempt of this webhook for this event.
    pub attempt: i64,
    /// delivered, failed, refused, retrying or dead.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub created_at: String,
}

/// Deliveries newest first, optionally of one collection and outcome,
/// with an id below `before`.
pub async fn list_deliveries(
    db: &Database,
    collection_id: Option<&str>,
    outcome: Option<Outcome>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT id, event_id, event_type, rule_key, rule_name, collection_id, url, attempt, outcome, status_code, error, \
         duration_ms, created_at FROM webhook_deliveries WHERE 1 = 1",
    );
    let mut binds: Vec<String> = Vec::new();
    for (column, value) in [
        ("collection_id =", collection_id.map(str::to_string)),
        ("outcome =", outcome.map(|o| o.as_str().to_string())),
        ("id <", before.map(str::to_string)),
    ] {
        if let Some(v) = value {
            binds.push(v);
            sql.push_str(&format!(" AND {column} ${}", binds.len()));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query.bind(limit).fetch_all(db.reader()).await?;
    rows.iter()
        .map(|r| {
            Ok(Delivery {
                id: r.try_get("id")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                rule_key: r.try_get("rule_key")?,
                rule_name: r.try_get("rule_name")?,
                collection_id: r.try_get("collection_id")?,
                url: r.try_get("url")?,
                attempt: r.try_get("attempt")?,
                outcome: r.try_get("outcome")?,
                status_code: r.try_get("status_code")?,
                error: r.try_get("error")?,
                duration_ms: r.try_get("duration_ms")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_scheme() {
        // Computed independently: HMAC-SHA256 over "msg_1.1700000000.{}" with
        // the key bytes "secret", base64.
        let sig = sign(b"secret", "msg_1", 1_700_000_000, b"{}");
        assert!(sig.starts_with("v1,"), "{sig}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").unwrap();
        mac.update(b"msg_1.1700000000.{}");
        assert_eq!(sig, format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())));
        assert_ne!(sig, sign(b"secret", "msg_1", 1_700_000_001, b"{}"));
    }

    #[test]
    fn whsec_secrets_are_base64() {
        assert_eq!(secret_key("whsec_aGVsbG8=").unwrap(), b"hello");
        assert_eq!(secret_key(" plain \n").unwrap(), b"plain");
        assert!(secret_key("whsec_***").is_err());
        assert!(secret_key("  ").is_err());
    }
}
