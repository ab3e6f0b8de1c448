//! Layered configuration.
//!
//! Later layers win: built-in defaults → `atlas.toml` (or `--config FILE`) →
//! `atlas.{profile}.toml` → `.env` → `ATLAS_*` environment variables
//! (`ATLAS_DATABASE__URL` sets `database.url`) → CLI flags. Every secret
//! `x` may instead be given as `x_file` (`ATLAS_AUTH__JWT_SECRET_FILE`),
//! naming a file whose content is the secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::{Deserialize, Serialize, Serializer};

pub use atlas_telemetry::TelemetrySettings;

/// A secret string: never printed, never serialized in clear.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// Deployment profile; selects `atlas.{profile}.toml` and strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Local,
    Staging,
    Production,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Staging => "staging",
            Profile::Production => "production",
        }
    }
}

/// What a process runs: everything, only the HTTP API, or only background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    All,
    Api,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
    pub fn runs_workers(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub profile: Profile,
    /// Where embedded mode keeps its database and generated secrets.
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseConfig,
    pub auth: AuthSettings,
    pub events: EventsSettings,
    pub audit: AuditSettings,
    pub jobs: JobsSettings,
    pub search: SearchSettings,
    pub rules: RulesSettings,
    pub telemetry: TelemetrySettings,
}

/// Rules: where the global rule files live, how deep rule chains may go,
/// and how webhooks are delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Directory of global rule files (`*.yaml`, `*.yml`), relative to the
    /// working directory. A missing directory means no global rules until
    /// it appears.
    pub dir: PathBuf,
    /// How often the directory is checked for changed files.
    pub reload_interval_ms: u64,
    /// Longest chain of events caused by rule actions; an event deeper in a
    /// chain triggers no rule (a warning is logged).
    pub max_chain_depth: u32,
    /// Time limit of one webhook request (connect included).
    pub webhook_timeout_ms: u64,
    /// Addresses (`10.1.2.3`) or networks (`10.0.0.0/8`) webhooks may reach
    /// although the SSRF guard refuses them by default.
    pub webhook_allow_networks: Vec<String>,
    /// Environment variables that per-collection rules may name as a
    /// webhook's `secret_env` (global rules may name any, or a file).
    pub collection_secret_envs: Vec<String>,
}

impl Default for RulesSettings {
    fn default() -> Self {
        RulesSettings {
            dir: PathBuf::from("rules"),
            reload_interval_ms: 1000,
            max_chain_depth: 8,
            webhook_timeout_ms: 10_000,
            webhook_allow_networks: Vec::new(),
            collection_secret_envs: Vec::new(),
        }
    }
}

/// Full-text search: where each node keeps its index, how the indexer
/// batches commits, and how queries are analyzed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// The index directory; defaults to `{data_dir}/search`. Each api
    /// process owns its own (it is a replica, never shared).
    pub dir: Option<PathBuf>,
    /// The indexer commits once this many documents changed since its last
    /// commit…
    pub commit_every_docs: u64,
    /// …or once this long passed since the first uncommitted change.
    /// Changes become searchable (and items `indexed`) at commit.
    pub commit_interval_ms: u64,
    /// Stemming language for titles and bodies: arabic, danish, dutch,
    /// english, finnish, french, german, greek, hungarian, italian,
    /// norwegian, portuguese, romanian, russian, spanish, swedish, tamil,
    /// turkish. Changing it requires `atlas search reindex`.
    pub language: String,
    /// Typo tolerance applies when the exact query matches fewer items than
    /// this (on the first page); 0 turns it off.
    pub fuzzy_below: u64,
    /// Memory budget, in MiB (at least 15), of the index writer that
    /// rebuilds an index (at start, `atlas search reindex`). The live
    /// indexer, which commits every `commit_every_docs` documents, writes
    /// with one thread and 16 MiB.
    pub writer_memory_mb: u64,
    /// Threads one search runs on, each searching some of the index's
    /// segments; 0 means one per CPU core (at most 8), 1 searches on the
    /// request's own thread.
    pub query_threads: u64,
    /// This node's durable JetStream consumer name (`search-<node>`) in
    /// cluster mode; defaults to an id generated into the index directory.
    pub node_name: Option<String>,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            dir: None,
            commit_every_docs: 1000,
            commit_interval_ms: 500,
            language: "english".into(),
            fuzzy_below: 10,
            writer_memory_mb: 512,
            query_threads: 0,
            node_name: None,
        }
    }
}

impl SearchSettings {
    /// The index directory for a data directory.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("search"))
    }
}

/// The audit trail: checkpoint cadence and the node's signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Sign a checkpoint once this many rows follow the last one; 0 leaves
    /// checkpoints to the timer alone.
    pub checkpoint_every_rows: u64,
    /// Sign a checkpoint of new rows this often; 0 leaves them to the row count.
    pub checkpoint_interval_secs: u64,
    /// The node's Ed25519 signing key: PKCS#8 PEM, or the 32-byte seed in
    /// base64. Without one, embedded mode generates `{data_dir}/audit-signing.key`.
    pub signing_key: Option<Secret>,
    pub signing_key_file: Option<PathBuf>,
    /// Public keys (base64 or PEM) of earlier signing keys whose checkpoints
    /// still verify, for key rotation.
    pub trusted_public_keys: Vec<String>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            checkpoint_every_rows: 1000,
            checkpoint_interval_secs: 60,
            signing_key: None,
            signing_key_file: None,
            trusted_public_keys: Vec::new(),
        }
    }
}

/// Where events travel and how consumers retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Broker {
    /// The outbox table is the log; consumers keep offsets in the database.
    #[default]
    Embedded,
    /// A relay publishes the outbox to NATS JetStream; consumers are durable
    /// JetStream pull consumers (`[events.nats]`).
    Nats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSettings {
    pub broker: Broker,
    /// How often an idle consumer looks for new events.
    pub poll_interval_ms: u64,
    /// Events a consumer takes at once (its bound on in-flight work).
    pub max_ack_pending: u32,
    /// Deliveries of one event before it goes to the dead letters.
    pub max_deliver: u32,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How long per-consumer "already processed" records are kept.
    pub processed_retention_hours: u64,
    /// Admission control: while a consumer (or the relay) running in this
    /// process is more than this many events behind, API writes wait for it
    /// to catch up (0: never hold writes).
    pub max_backlog: u64,
    /// How long a held write waits before it is refused with 503 and a
    /// `Retry-After`.
    pub write_wait_ms: u64,
    /// The JetStream connection, streams and relay (used when `broker = "nats"`).
    pub nats: NatsSettings,
}

/// NATS JetStream settings for `events.broker = "nats"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Stream holding the events (`<subject_prefix>.events.<entity>.<action>`).
    pub stream: String,
    /// Stream holding dead letters (`<subject_prefix>.dlq.<consumer>`).
    pub dlq_stream: String,
    /// First token of every subject Atlas uses.
    pub subject_prefix: String,
    /// How long the streams keep messages.
    pub max_age_hours: u64,
    /// Stream replicas (1 for a single server; 3 for a cluster).
    pub replicas: usize,
    /// `file` or `memory`.
    pub storage: NatsStorage,
    /// The broker drops a second publish with the same `Nats-Msg-Id` within
    /// this window.
    pub duplicate_window_secs: u64,
    /// A delivered message not acked within this time is redelivered.
    pub ack_wait_secs: u64,
    /// Outbox rows the relay reads per round.
    pub relay_batch: u32,
    /// Publishes awaiting the broker's ack at once.
    pub relay_max_inflight: u32,
    /// How long a relay's lease lasts without renewal; another process takes
    /// over after it expires.
    pub relay_lease_secs: u64,
    /// Timeout for connecting and for each JetStream request.
    pub request_timeout_secs: u64,
    /// Require TLS even when the URL says `nats://` (a `tls://` URL, or any
    /// `tls_*` setting below, requires it too).
    pub tls_required: bool,
    /// PEM file of the CA certificate(s) the server's certificate must chain
    /// to; without one, the system's roots are trusted.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers that verify clients, with
    /// `tls_key_file` holding its private key.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Authentication: one of an NKEY seed (`SU…`), a user and password, or
    /// a credentials file (`.creds`: a user JWT and its seed).
    pub nkey_seed: Option<Secret>,
    pub nkey_seed_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// The content of a `.creds` file; `creds_file` names the file itself.
    pub creds: Option<Secret>,
    pub creds_file: Option<PathBuf>,
}

impl NatsSettings {
    /// Whether the connection must use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls_required
            || self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.url.split(',').any(|u| u.trim().starts_with("tls://"))
    }

    /// The setting that authenticates this connection, for error messages.
    pub fn auth_setting(&self) -> Option<&'static str> {
        if self.nkey_seed.is_some() {
            Some(if self.nkey_seed_file.is_some() {
                "events.nats.nkey_seed_file"
            } else {
                "events.nats.nkey_seed"
            })
        } else if self.creds.is_some() {
            Some(if self.creds_file.is_some() {
                "events.nats.creds_file"
            } else {
                "events.nats.creds"
            })
        } else if self.user.is_some() {
            Some(if self.password_file.is_some() {
                "events.nats.user` / `events.nats.password_file"
            } else {
                "events.nats.user` / `events.nats.password"
            })
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    #[default]
    File,
    Memory,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            stream: "ATLAS_EVENTS".into(),
            dlq_stream: "ATLAS_DLQ".into(),
            subject_prefix: "atlas".into(),
            max_age_hours: 168,
            replicas: 1,
            storage: NatsStorage::File,
            duplicate_window_secs: 120,
            ack_wait_secs: 30,
            relay_batch: 256,
            relay_max_inflight: 256,
            relay_lease_secs: 10,
            request_timeout_secs: 5,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            nkey_seed: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            password_file: None,
            creds: None,
            creds_file: None,
        }
    }
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            broker: Broker::Embedded,
            poll_interval_ms: 50,
            max_ack_pending: 256,
            max_deliver: 5,
            backoff_initial_ms: 200,
            backoff_max_ms: 30_000,
            processed_retention_hours: 168,
            max_backlog: 5_000,
            write_wait_ms: 5_000,
            nats: NatsSettings::default(),
        }
    }
}

/// The durable job queue and its workers (the `jobs` module).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSettings {
    /// Jobs one worker process runs at the same time.
    pub concurrency: u32,
    /// How often an idle worker looks for due jobs when no wake-up arrives
    /// (`run_at` in the future, a lost notification).
    pub poll_interval_ms: u64,
    /// How long a claimed job stays leased to its worker without a heartbeat.
    pub lease_secs: u64,
    /// How often a running job's lease is extended; below `lease_secs`.
    pub heartbeat_secs: u64,
    /// Attempts of a job created without `max_attempts`.
    pub default_max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter, up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Time limit of one attempt for job types without their own.
    pub timeout_secs: u64,
    /// Time limit of one `ENRICH_URL` attempt (the whole fetch and update).
    pub enrich_timeout_secs: u64,
    /// `ENRICH_URL`: time to establish a connection.
    pub enrich_connect_timeout_ms: u64,
    /// `ENRICH_URL`: largest response body read.
    pub enrich_max_bytes: u64,
    /// `ENRICH_URL`: redirects followed at most (each target is checked again).
    pub enrich_max_redirects: u32,
    /// `ENRICH_URL`: addresses (`10.1.2.3`) or networks (`10.0.0.0/8`) that
    /// may be fetched although the SSRF guard refuses them by default.
    pub enrich_allow_networks: Vec<String>,
}

impl Default for JobsSettings {
    fn default() -> Self {
        JobsSettings {
            concurrency: 8,
            poll_interval_ms: 1000,
            lease_secs: 30,
            heartbeat_secs: 10,
            default_max_attempts: 5,
            backoff_initial_ms: 1000,
            backoff_max_ms: 300_000,
            timeout_secs: 300,
            enrich_timeout_secs: 30,
            enrich_connect_timeout_ms: 5000,
            enrich_max_bytes: 1024 * 1024,
            enrich_max_redirects: 5,
            enrich_allow_networks: Vec::new(),
        }
    }
}

/// Whether `s` is an IP address or a network in CIDR notation.
fn is_ip_or_network(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= max))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub role: Role,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_allowed_origins: Vec<String>,
    /// Global per-IP limit; 0 disables it.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://{data_dir}/atlas.db`.
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
    /// PostgreSQL: a second pool of this many connections for background
    /// work (relay, consumers), so request load cannot starve it; 0 shares
    /// the main pool.
    pub background_connections: u32,
    /// Apply pending migrations when `atlas serve` starts.
    pub auto_migrate: bool,
    pub busy_timeout_ms: u64,
}

/// JWT signing algorithm; pinned: tokens with any other `alg` are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    EdDSA,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 key. In `local`/`staging` a random one is generated and kept
    /// in `{data_dir}/jwt.secret` when absent; `production` requires it.
    pub jwt_secret: Option<Secret>,
    pub jwt_secret_file: Option<PathBuf>,
    /// EdDSA keys (PEM), for `jwt_algorithm = "EdDSA"`.
    pub jwt_private_key_file: Option<PathBuf>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_days: u64,
    /// A Casbin policy CSV replacing the built-in role policy.
    pub policy_file: Option<PathBuf>,
    /// Login/register attempts allowed per minute per client IP.
    pub login_per_ip_per_minute: u32,
    /// Failed logins allowed per minute per account.
    pub login_per_account_per_minute: u32,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            profile: Profile::Local,
            data_dir: PathBuf::from("atlas-data"),
            server: ServerSettings::default(),
            database: DatabaseConfig::default(),
            auth: AuthSettings::default(),
            events: EventsSettings::default(),
            audit: AuditSettings::default(),
            search: SearchSettings::default(),
            jobs: JobsSettings::default(),
            rules: RulesSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            role: Role::All,
            body_limit_bytes: 2 * 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 10,
            cors_allowed_origins: Vec::new(),
            rate_limit_per_second: 1000,
            rate_limit_burst: 2000,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            url_file: None,
            max_connections: 16,
            background_connections: 4,
            auto_migrate: true,
            busy_timeout_ms: 5000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_private_key_file: None,
            jwt_public_key_file: None,
            issuer: "atlas".into(),
            audience: "atlas-api".into(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_days: 30,
            policy_file: None,
            login_per_ip_per_minute: 60,
            login_per_account_per_minute: 10,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
        }
    }
}

/// A configuration error; always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot read configuration file {path}: {message}")]
    File { path: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The configuration key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::File { .. } => None,
        }
    }
}

/// Where settings come from. `Default` reads the working directory and the
/// process environment; tests pass their own directory and variables.
#[derive(Debug, Clone, Default)]
pub struct SettingsSource {
    /// Directory holding `atlas.toml`, `atlas.{profile}.toml` and `.env`.
    pub dir: PathBuf,
    /// Explicit config file (`--config`); must exist when given.
    pub config_file: Option<PathBuf>,
    /// Environment variables (only `ATLAS_*` are read).
    pub env: Vec<(String, String)>,
    /// CLI flags, as `section.key` → value; the last layer.
    pub overrides: Vec<(String, Value)>,
}

impl SettingsSource {
    /// The working directory and the real process environment.
    pub fn from_process() -> Self {
        SettingsSource {
            dir: PathBuf::from("."),
            config_file: None,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }

    pub fn with_override(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push((key.to_string(), value.into()));
        self
    }
}

impl Settings {
    /// Load, merge, resolve `_file` secrets and validate.
    pub fn load(source: &SettingsSource) -> Result<Settings, ConfigError> {
        let dotenv = read_dotenv(&source.dir.join(".env"))?;
        let profile_key = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == "ATLAS_PROFILE")
                .map(|(_, v)| v.clone())
        };
        let profile_name = source
            .overrides
            .iter()
            .rev()
            .find(|(k, _)| k == "profile")
            .and_then(|(_, v)| v.as_str().map(str::to_string))
            .or_else(|| profile_key(&source.env))
            .or_else(|| profile_key(&dotenv))
            .unwrap_or_else(|| "local".into());
        if !["local", "staging", "production"].contains(&profile_name.as_str()) {
            return Err(ConfigError::invalid(
                "profile",
                format!("unknown profile `{profile_name}`; expected local, staging or production"),
            ));
        }

        let base_file = match &source.config_file {
            Some(f) => {
                if !f.is_file() {
                    return Err(ConfigError::File {
                        path: f.display().to_string(),
                        message: "no such file".into(),
                    });
                }
                f.clone()
            }
            None => source.dir.join("atlas.toml"),
        };
        let profile_file = base_file
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("atlas.{profile_name}.toml"));

        // Lowest precedence first; the merged figment is their union.
        let mut layers = vec![
            Figment::from(Toml::file(&base_file)),
            Figment::from(Toml::file(&profile_file)),
            Figment::from(Serialized::defaults(env_dict(&dotenv))),
            Figment::from(Serialized::defaults(env_dict(&source.env))),
        ];
        for (key, value) in &source.overrides {
            layers.push(Figment::from(Serialized::default(key, value.clone())));
        }
        let figment = layers.iter().fold(
            Figment::from(Serialized::defaults(Settings::default())),
            |all, layer| all.merge(layer.clone()),
        );
        let mut settings: Settings = figment.extract().map_err(figment_error)?;
        // The layer that last set a key (`None`: only the defaults).
        let layer_of = |key: &str| layers.iter().rposition(|l| l.find_value(key).is_ok());
        settings.resolve_secret_files(&layer_of)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Read each `…_file` secret into its key. When a secret and its file
    /// come from different layers, the later layer wins (an environment
    /// variable over `atlas.toml`); set in the same layer, they are an error.
    fn resolve_secret_files(&mut self, layer_of: &dyn Fn(&str) -> Option<usize>) -> Result<(), ConfigError> {
        let pairs = [
            (&mut self.database.url, &mut self.database.url_file, "database.url"),
            (
                &mut self.auth.jwt_secret,
                &mut self.auth.jwt_secret_file,
                "auth.jwt_secret",
            ),
            (
                &mut self.audit.signing_key,
                &mut self.audit.signing_key_file,
                "audit.signing_key",
            ),
            (
                &mut self.events.nats.nkey_seed,
                &mut self.events.nats.nkey_seed_file,
                "events.nats.nkey_seed",
            ),
            (
                &mut self.events.nats.password,
                &mut self.events.nats.password_file,
                "events.nats.password",
            ),
            (
                &mut self.events.nats.creds,
                &mut self.events.nats.creds_file,
                "events.nats.creds",
            ),
        ];
        for (value, file, key) in pairs {
            if value.is_some() && file.is_some() {
                match (layer_of(key), layer_of(&format!("{key}_file"))) {
                    (Some(v), Some(f)) if v > f => *file = None,
                    (Some(v), Some(f)) if f > v => *value = None,
                    _ => {}
                }
            }
            resolve_file(value, file, key)?;
        }
        Ok(())
    }

    /// Checks beyond types; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.body_limit_bytes < 1024 {
            return Err(ConfigError::invalid("server.body_limit_bytes", "must be at least 1024"));
        }
        if s.request_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid("database.max_connections", "must be at least 1"));
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(
                "database.url",
                format!("`{}` is neither sqlite:// nor postgres://", atlas_db::redact_url(&url)),
            ));
        }
        let e = &self.events;
        if e.max_ack_pending == 0 {
            return Err(ConfigError::invalid("events.max_ack_pending", "must be at least 1"));
        }
        if e.max_deliver == 0 {
            return Err(ConfigError::invalid("events.max_deliver", "must be at least 1"));
        }
        if e.poll_interval_ms == 0 {
            return Err(ConfigError::invalid("events.poll_interval_ms", "must be at least 1"));
        }
        let n = &e.nats;
        let token_ok = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !token_ok(&n.stream) {
            return Err(ConfigError::invalid(
                "events.nats.stream",
                "letters, digits, `_` or `-` only",
            ));
        }
        if !token_ok(&n.dlq_stream) || n.dlq_stream == n.stream {
            return Err(ConfigError::invalid(
                "events.nats.dlq_stream",
                "letters, digits, `_` or `-` only, and not the events stream",
            ));
        }
        if !n.subject_prefix.split('.').all(token_ok) {
            return Err(ConfigError::invalid(
                "events.nats.subject_prefix",
                "dot-separated tokens of letters, digits, `_` or `-`",
            ));
        }
        if n.replicas == 0 || n.replicas > 5 {
            return Err(ConfigError::invalid("events.nats.replicas", "must be 1 to 5"));
        }
        for (key, value) in [
            ("events.nats.relay_batch", u64::from(n.relay_batch)),
            ("events.nats.relay_max_inflight", u64::from(n.relay_max_inflight)),
            ("events.nats.relay_lease_secs", n.relay_lease_secs),
            ("events.nats.ack_wait_secs", n.ack_wait_secs),
            ("events.nats.request_timeout_secs", n.request_timeout_secs),
            ("events.nats.max_age_hours", n.max_age_hours),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        validate_nats_security(n)?;
        if self.audit.checkpoint_every_rows == 0 && self.audit.checkpoint_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "audit.checkpoint_every_rows",
                "checkpoint_every_rows and checkpoint_interval_secs cannot both be 0 (nothing would ever be signed)",
            ));
        }
        let q = &self.search;
        if q.commit_every_docs == 0 {
            return Err(ConfigError::invalid("search.commit_every_docs", "must be at least 1"));
        }
        if q.commit_interval_ms == 0 {
            return Err(ConfigError::invalid("search.commit_interval_ms", "must be at least 1"));
        }
        if q.writer_memory_mb < 15 {
            return Err(ConfigError::invalid("search.writer_memory_mb", "must be at least 15"));
        }
        if q.query_threads > 64 {
            return Err(ConfigError::invalid(
                "search.query_threads",
                "must be at most 64 (0: one per CPU core)",
            ));
        }
        if let Some(name) = &q.node_name {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(ConfigError::invalid(
                    "search.node_name",
                    "letters, digits, `_` or `-` only",
                ));
            }
        }
        let j = &self.jobs;
        for (key, value) in [
            ("jobs.concurrency", u64::from(j.concurrency)),
            ("jobs.poll_interval_ms", j.poll_interval_ms),
            ("jobs.lease_secs", j.lease_secs),
            ("jobs.heartbeat_secs", j.heartbeat_secs),
            ("jobs.default_max_attempts", u64::from(j.default_max_attempts)),
            ("jobs.timeout_secs", j.timeout_secs),
            ("jobs.enrich_timeout_secs", j.enrich_timeout_secs),
            ("jobs.enrich_connect_timeout_ms", j.enrich_connect_timeout_ms),
            ("jobs.enrich_max_bytes", j.enrich_max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if j.heartbeat_secs >= j.lease_secs {
            return Err(ConfigError::invalid(
                "jobs.heartbeat_secs",
                "must be below jobs.lease_secs, or leases expire between heartbeats",
            ));
        }
        if j.backoff_max_ms < j.backoff_initial_ms {
            return Err(ConfigError::invalid(
                "jobs.backoff_max_ms",
                "must be at least jobs.backoff_initial_ms",
            ));
        }
        if let Some(bad) = j.enrich_allow_networks.iter().find(|n| !is_ip_or_network(n)) {
            return Err(ConfigError::invalid(
                "jobs.enrich_allow_networks",
                format!("`{bad}` is neither an IP address nor a network like 10.0.0.0/8"),
            ));
        }
        let ratio = self.telemetry.trace_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::invalid(
                "telemetry.trace_sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        let a = &self.auth;
        if a.access_token_ttl_secs == 0 {
            return Err(ConfigError::invalid("auth.access_token_ttl_secs", "must be at least 1"));
        }
        if a.issuer.is_empty() {
            return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
        }
        if a.audience.is_empty() {
            return Err(ConfigError::invalid("auth.audience", "must not be empty"));
        }
        if a.argon2_memory_kib < 8 * a.argon2_parallelism.max(1) || a.argon2_iterations == 0 {
            return Err(ConfigError::invalid(
                "auth.argon2_memory_kib",
                "argon2 parameters are out of range",
            ));
        }
        if let Some(secret) = &a.jwt_secret {
            if secret.expose().len() < 32 {
                return Err(ConfigError::invalid("auth.jwt_secret", "must be at least 32 bytes"));
            }
        }
        if a.jwt_algorithm == JwtAlgorithm::EdDSA
            && (a.jwt_private_key_file.is_none() || a.jwt_public_key_file.is_none())
        {
            return Err(ConfigError::invalid(
                "auth.jwt_private_key_file",
                "EdDSA needs jwt_private_key_file and jwt_public_key_file",
            ));
        }
        if self.profile == Profile::Production {
            if a.jwt_algorithm == JwtAlgorithm::HS256 && a.jwt_secret.is_none() {
                return Err(ConfigError::invalid(
                    "auth.jwt_secret",
                    "the production profile needs an explicit JWT secret (auth.jwt_secret or auth.jwt_secret_file)",
                ));
            }
            if self.sqlite_path().is_none() && self.audit.signing_key.is_none() {
                // Every worker must sign with the same key; one generated per
                // process would give each its own.
                return Err(ConfigError::invalid(
                    "audit.signing_key",
                    "the production profile with PostgreSQL needs an explicit audit signing key (audit.signing_key or audit.signing_key_file)",
                ));
            }
            if let Some(path) = self.sqlite_path() {
                if is_temporary(&path) {
                    return Err(ConfigError::invalid(
                        "database.url",
                        format!(
                            "the production profile refuses a SQLite database in a temporary directory ({})",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The configured database URL, or the embedded default.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("atlas.db").display()),
        }
    }

    /// The file of a SQLite database URL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
        Some(PathBuf::from(rest.split('?').next().unwrap_or_default()))
    }

    pub fn http(&self) -> atlas_http::HttpSettings {
        let s = &self.server;
        atlas_http::HttpSettings {
            body_limit_bytes: s.body_limit_bytes,
            request_timeout: Duration::from_secs(s.request_timeout_secs),
            cors_allowed_origins: s.cors_allowed_origins.clone(),
            rate_limit: (s.rate_limit_per_second > 0)
                .then_some((s.rate_limit_per_second, s.rate_limit_burst.max(s.rate_limit_per_second))),
        }
    }

    pub fn database(&self) -> atlas_db::DatabaseSettings {
        atlas_db::DatabaseSettings {
            url: self.database_url(),
            max_connections: self.database.max_connections,
            busy_timeout: Duration::from_millis(self.database.busy_timeout_ms),
            background_connections: self.database.background_connections,
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        // Show where the database is without leaking a password in the URL.
        copy.database.url = Some(Secret::new(atlas_db::redact_url(&self.database_url())));
        toml_string(&copy)
    }
}

fn toml_string(settings: &Settings) -> String {
    // `Secret` serializes as "[redacted]"; the URL above is already redacted,
    // so print it by hand in place of the redaction marker.
    let value = serde_json::to_value(settings).unwrap_or_default();
    let url = settings
        .database
        .url
        .as_ref()
        .map(|u| u.expose().to_string())
        .unwrap_or_default();
    let mut out = String::new();
    if let Some(obj) = value.as_object() {
        for (k, v) in obj.iter().filter(|(_, v)| !v.is_object()) {
            out.push_str(&format!("{k} = {}\n", toml_value(v)));
        }
        for (section, v) in obj.iter().filter(|(_, v)| v.is_object()) {
            out.push_str(&format!("\n[{section}]\n"));
            for (k, v) in v.as_object().into_iter().flatten() {
                if v.is_null() {
                    out.push_str(&format!("# {k} is not set\n"));
                } else if section == "database" && k == "url" {
                    out.push_str(&format!(
                        "{k} = {}\n",
                        toml_value(&serde_json::Value::String(url.clone()))
                    ));
                } else {
                    out.push_str(&format!("{k} = {}\n", toml_value(v)));
                }
            }
        }
    }
    out
}

fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(toml_value).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

/// At most one way to authenticate, each complete; TLS files readable.
fn validate_nats_security(n: &NatsSettings) -> Result<(), ConfigError> {
    let methods = [n.nkey_seed.is_some(), n.user.is_some(), n.creds.is_some()];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(ConfigError::invalid(
            "events.nats.nkey_seed",
            "choose one of nkey_seed, user/password and creds to authenticate with NATS",
        ));
    }
    if n.password.is_some() && n.user.is_none() {
        return Err(ConfigError::invalid("events.nats.user", "a password needs a user"));
    }
    if n.user.is_some() && n.password.is_none() {
        return Err(ConfigError::invalid(
            "events.nats.password",
            "events.nats.user needs a password (events.nats.password or events.nats.password_file)",
        ));
    }
    if let Some(seed) = &n.nkey_seed {
        // A user seed: `S` (seed) then `U` (user), base32.
        let seed = seed.expose().trim();
        if !seed.starts_with("SU") || seed.len() < 50 {
            return Err(ConfigError::invalid(
                "events.nats.nkey_seed",
                "not an NKEY user seed (expected the `SU…` line `nsc` or `nk -gen user` prints)",
            ));
        }
    }
    if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
        return Err(ConfigError::invalid(
            "events.nats.tls_cert_file",
            "a client certificate needs both tls_cert_file and tls_key_file",
        ));
    }
    for (key, file) in [
        ("events.nats.tls_ca_file", &n.tls_ca_file),
        ("events.nats.tls_cert_file", &n.tls_cert_file),
        ("events.nats.tls_key_file", &n.tls_key_file),
    ] {
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
    }
    Ok(())
}

fn resolve_file(value: &mut Option<Secret>, file: &Option<PathBuf>, key: &str) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        return Err(ConfigError::invalid(
            key,
            format!("both `{key}` and `{key}_file` are set; choose one"),
        ));
    }
    let content = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(&format!("{key}_file"), format!("cannot read {}: {e}", path.display())))?;
    let content = content.trim_end_matches(['\n', '\r']).to_string();
    if content.is_empty() {
        return Err(ConfigError::invalid(
            &format!("{key}_file"),
            format!("{} is empty", path.display()),
        ));
    }
    *value = Some(Secret(content));
    Ok(())
}

fn is_temporary(path: &Path) -> bool {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let temp = std::env::temp_dir();
    absolute.starts_with(&temp)
        || absolute.starts_with("/tmp")
        || absolute.starts_with("/var/tmp")
        || absolute.starts_with("/dev/shm")
        || path.as_os_str() == ":memory:"
}

fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    iter.map(|item| {
        item.map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    })
    .collect()
}

/// Top-level keys of [`Settings`]. `ATLAS_*` variables naming anything else
/// (`ATLAS_REQUIRE_SERVICES`, `ATLAS_TEST_POSTGRES_URL`, …) belong to other
/// tools and are ignored; inside a known section an unknown key is an error.
const TOP_LEVEL_KEYS: &[&str] = &[
    "profile",
    "data_dir",
    "server",
    "database",
    "auth",
    "events",
    "audit",
    "jobs",
    "search",
    "rules",
    "telemetry",
];

/// `ATLAS_SERVER__BIND=…` → `{server: {bind: …}}`, values parsed like figment's
/// `Env` provider (numbers, booleans, arrays).
fn env_dict(pairs: &[(String, String)]) -> Dict {
    let mut root = Dict::new();
    for (name, raw) in pairs {
        let Some(rest) = name.strip_prefix("ATLAS_") else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) || !TOP_LEVEL_KEYS.contains(&path[0].as_str()) {
            continue;
        }
        let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.clone()));
        insert_path(&mut root, &path, value);
    }
    root
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| Value::from(BTreeMap::<String, Value>::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

fn figment_error(err: figment::Error) -> ConfigError {
    let key = if err.path.is_empty() {
        match &err.kind {
            figment::error::Kind::UnknownField(field, _) => field.clone(),
            _ => "configuration".to_string(),
        }
    } else {
        err.path.join(".")
    };
    let source = err
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    ConfigError::Invalid {
        key,
        message: format!("{}{source}", err.kind),
    }
}
