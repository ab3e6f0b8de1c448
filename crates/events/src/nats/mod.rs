//! The NATS JetStream event log (`events.broker = "nats"`).
//!
//! The outbox stays the source of truth: a write commits its event there in
//! the same transaction as the change. The [`relay`] publishes outbox rows to
//! the events stream and marks them published only after the broker acked;
//! [`consumer`] runs every module's consumer as a durable JetStream pull
//! consumer; [`dead letters`](dlq) go to their own stream.
//!
//! Subjects (with the default `subject_prefix = "atlas"`):
//! - `atlas.events.<entity>.<action>` — events, e.g. `atlas.events.item.created`;
//! - `atlas.dlq.<consumer>` — dead letters of one consumer.

pub mod consumer;
pub mod dlq;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use atlas_db::Database;
use atlas_kernel::settings::{EventsSettings, NatsSettings, NatsStorage};
use atlas_kernel::Consumer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Header naming the one consumer a replayed dead letter is for.
pub const REPLAY_FOR_HEADER: &str = "Atlas-Replay-For";

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    /// The server refused the credentials, or they could not be used.
    #[error("NATS at {url} refused the credentials of `{setting}`: {message}")]
    Credentials {
        url: String,
        setting: &'static str,
        message: String,
    },
    /// The TLS handshake failed or the TLS files could not be used.
    #[error("TLS with NATS at {url} failed (check `{setting}`): {message}")]
    Tls {
        url: String,
        setting: &'static str,
        message: String,
    },
    #[error("JetStream stream `{stream}`: {message}")]
    Stream { stream: String, message: String },
    #[error("JetStream consumer `{consumer}`: {message}")]
    Consumer { consumer: String, message: String },
    #[error("publishing to JetStream: {0}")]
    Publish(String),
    #[error(transparent)]
    Database(#[from] atlas_db::sqlx::Error),
    #[error(transparent)]
    Db(#[from] atlas_db::DbError),
    #[error("stored envelope is not valid JSON: {0}")]
    Envelope(#[from] serde_json::Error),
}

/// A connection to JetStream with Atlas's stream names and subjects.
#[derive(Clone)]
pub struct NatsLog {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: Arc<NatsSettings>,
}

impl NatsLog {
    /// Connect and make sure both streams exist with the configured settings.
    pub async fn connect(settings: &NatsSettings) -> Result<NatsLog, NatsError> {
        let timeout = Duration::from_secs(settings.request_timeout_secs);
        let client = connect_options(settings)?
            .name("atlas")
            .connection_timeout(timeout)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            })
            .connect(settings.url.as_str())
            .await
            .map_err(|e| connect_error(settings, e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .max_ack_inflight(settings.relay_max_inflight as usize)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let log = NatsLog {
            client,
            js,
            settings: Arc::new(settings.clone()),
        };
        log.ensure_streams().await?;
        Ok(log)
    }

    async fn ensure_streams(&self) -> Result<(), NatsError> {
        let s = &self.settings;
        for (name, subjects) in [
            (&s.stream, format!("{}.events.>", s.subject_prefix)),
            (&s.dlq_stream, format!("{}.dlq.>", s.subject_prefix)),
        ] {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subjects],
                retention: stream::RetentionPolicy::Limits,
                max_age: Duration::from_secs(s.max_age_hours * 3600),
                num_replicas: s.replicas,
                storage: match s.storage {
                    NatsStorage::File => stream::StorageType::File,
                    NatsStorage::Memory => stream::StorageType::Memory,
                },
                duplicate_window: Duration::from_secs(s.duplicate_window_secs),
                ..Default::default()
            };
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(|e| NatsError::Stream {
                    stream: name.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// `<prefix>.events.<entity>.<action>` for an event type.
    pub fn event_subject(&self, event_type: &str) -> String {
        event_subject(&self.settings.subject_prefix, event_type)
    }

    pub fn filter_for(&self, event_types: &[&str]) -> String {
        filter_for(&self.settings.subject_prefix, event_types)
    }

    /// `<prefix>.dlq.<consumer>`.
    pub fn dlq_subject(&self, consumer: &str) -> String {
        format!("{}.dlq.{}", self.settings.subject_prefix, token(consumer))
    }

    /// Start the relay and one durable consumer task per consumer.
    pub fn spawn(
        &self,
        db: Database,
        events: EventsSettings,
        consumers: Vec<Arc<dyn Consumer>>,
        gate: Arc<atlas_http::WriteGate>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let relay = relay::Relay::new(db.clone(), self.clone(), events.poll_interval_ms).with_gate(gate.clone());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move { relay.run(token).await }));
        for consumer in consumers {
            let task = consumer::NatsConsumer::new(db.clone(), self.clone(), events.clone(), consumer, gate.clone());
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move { task.run(token).await }));
        }
        tasks
    }
}

/// TLS and authentication from `[events.nats]`.
fn connect_options(settings: &NatsSettings) -> Result<async_nats::ConnectOptions, NatsError> {
    let mut options = async_nats::ConnectOptions::new();
    if settings.uses_tls() {
        // rustls picks its crypto provider from cargo features; with both
        // ring and aws-lc-rs in the dependency tree it cannot, and panics at
        // the handshake. Choose ring (what async-nats is built with) unless
        // the process chose one already; an `Err` only means it had.
        let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
        options = options.require_tls(true);
    }
    if let Some(ca) = &settings.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert_file, &settings.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if let Some(seed) = &settings.nkey_seed {
        options = options.nkey(seed.expose().trim().to_string());
    } else if let Some(creds) = &settings.creds {
        let setting = settings.auth_setting().unwrap_or("events.nats.creds");
        options = options
            .credentials(creds.expose())
            .map_err(|e| NatsError::Credentials {
                url: settings.url.clone(),
                setting,
                message: format!("not a NATS credentials file: {e}"),
            })?;
    } else if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    Ok(options)
}

/// A connection error that names the setting to look at.
fn connect_error(settings: &NatsSettings, error: async_nats::ConnectError) -> NatsError {
    use async_nats::ConnectErrorKind as Kind;
    let url = settings.url.clone();
    let message = error.to_string();
    match error.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => NatsError::Credentials {
            url,
            setting: settings
                .auth_setting()
                .unwrap_or("events.nats.nkey_seed` | `events.nats.user` | `events.nats.creds"),
            message: if settings.auth_setting().is_none() {
                format!("{message} (the server requires authentication; none is configured)")
            } else {
                message
            },
        },
        // A refused handshake surfaces as an I/O error of the TLS stream.
        Kind::Tls => NatsError::Tls {
            url,
            setting: tls_setting(settings, &message),
            message,
        },
        Kind::Io if settings.uses_tls() && is_tls_failure(&message) => NatsError::Tls {
            url,
            setting: tls_setting(settings, &message),
            message,
        },
        _ => NatsError::Connect { url, message },
    }
}

fn is_tls_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    // "corrupt message": the server answered a TLS hello in plain text.
    ["certificate", "tls", "handshake", "peer", "alert", "corrupt message"]
        .iter()
        .any(|w| m.contains(w))
}

/// Which TLS setting a handshake error most likely concerns.
fn tls_setting(settings: &NatsSettings, message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if settings.tls_cert_file.is_some() && (m.contains("client") || m.contains("key")) {
        "events.nats.tls_cert_file"
    } else if settings.tls_ca_file.is_some() || m.contains("certificate") || m.contains("issuer") {
        "events.nats.tls_ca_file"
    } else {
        "events.nats.tls_required"
    }
}

/// `<prefix>.events.<entity>.<action>` for an event type.
pub fn event_subject(prefix: &str, event_type: &str) -> String {
    let (entity, action) = crate::entity_and_action(event_type);
    format!("{prefix}.events.{entity}.{action}")
}

/// The narrowest single subject filter covering `event_types` (a NATS 2.9
/// consumer takes one filter); the runtime acks the other types unread.
pub fn filter_for(prefix: &str, event_types: &[&str]) -> String {
    match event_types {
        [] => format!("{prefix}.events.>"),
        [one] => event_subject(prefix, one),
        many => {
            let entities: std::collections::BTreeSet<String> =
                many.iter().map(|t| crate::entity_and_action(t).0).collect();
            match entities.into_iter().collect::<Vec<_>>().as_slice() {
                [entity] => format!("{prefix}.events.{entity}.*"),
                _ => format!("{prefix}.events.>"),
            }
        }
    }
}

/// A consumer or subject token: NATS forbids `.`, `*`, `>` and whitespace.
pub fn token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Readiness: the NATS connection is up.
pub struct NatsReadiness(pub NatsLog);

#[async_trait::async_trait]
impl atlas_kernel::ReadinessCheck for NatsReadiness {
    fn name(&self) -> &str {
        "event_log"
    }

    async fn check(&self) -> Result<serde_json::Value, String> {
        if self.0.is_connected() {
            Ok(serde_json::json!({"broker": "nats", "stream": self.0.settings.stream}))
        } else {
            Err(format!("not connected to NATS at {}", self.0.settings.url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_as_narrow_as_one_subject_allows() {
        assert_eq!(filter_for("atlas", &[]), "atlas.events.>");
        assert_eq!(filter_for("atlas", &["ItemCreated"]), "atlas.events.item.created");
        assert_eq!(
            filter_for("atlas", &["ItemCreated", "ItemDeleted"]),
            "atlas.events.item.*"
        );
        assert_eq!(filter_for("atlas", &["ItemCreated", "JobDead"]), "atlas.events.>");
        assert_eq!(
            event_subject("x.y", "WorkflowCompleted"),
            "x.y.events.workflow.completed"
        );
    }

    #[test]
    fn tokens_are_safe_subject_parts() {
        assert_eq!(token("search-indexer"), "search-indexer");
        assert_eq!(token("a.b *>c"), "a_b___c");
    }
}
