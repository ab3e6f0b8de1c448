//! `atlas-bench-lag`: starts the `atlas-crash-fixture` binary (Atlas plus a
//! consumer that records when it first handled each event), writes items over
//! HTTP at a fixed rate for a while, and reports the lag from each write's
//! event to its handling (p50, p99, max), the write rate reached and the
//! largest backlogs seen. See bench/README.md.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atlas_db::sqlx::{self, Row};
use atlas_db::{Database, DatabaseSettings};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "End-to-end event lag under sustained item writes")]
struct Args {
    /// Path of the atlas-crash-fixture binary (build it with
    /// `cargo build --release -p atlas-crash-fixture`).
    #[arg(long)]
    fixture: std::path::PathBuf,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Item writes per second to attempt.
    #[arg(long)]
    rate: u64,
    /// Seconds of sustained writes.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Events the recording consumer takes at once (1: one at a time).
    #[arg(long, default_value_t = 256)]
    consumer_batch: usize,
    /// Most writes awaiting a response at once.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// PostgreSQL server for the postgres modes (a fresh database is created).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
enum Mode {
    /// SQLite, the outbox as the log.
    EmbeddedSqlite,
    /// PostgreSQL, the outbox as the log.
    EmbeddedPostgres,
    /// PostgreSQL, a relay to NATS JetStream, durable JetStream consumers.
    NatsPostgres,
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("atlas-lag-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let pg_name = format!("atlas_bench_{}", uuid::Uuid::now_v7().simple());
    let database_url = match args.mode {
        Mode::EmbeddedSqlite => format!("sqlite://{}", dir.join("atlas.db").display()),
        _ => {
            let name = &pg_name;
            let admin = Database::connect(&db_settings(&args.postgres)).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(admin.writer())
                .await?;
            admin.close().await;
            let base = args.postgres.rsplit_once('/').map(|(b, _)| b).unwrap_or(&args.postgres);
            format!("{base}/{name}")
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let mut cmd = Command::new(&args.fixture);
    cmd.arg("serve")
        .env("ATLAS_DATABASE__URL", &database_url)
        .env("ATLAS_DATA_DIR", &dir)
        .env("ATLAS_SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("ATLAS_SERVER__RATE_LIMIT_PER_SECOND", "0")
        .env("ATLAS_DATABASE__MAX_CONNECTIONS", "16")
        .env("RECORDER_BATCH_SIZE", args.consumer_batch.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if args.mode == Mode::NatsPostgres {
        cmd.env("ATLAS_EVENTS__BROKER", "nats")
            .env("ATLAS_EVENTS__NATS__URL", &args.nats)
            .env("ATLAS_EVENTS__NATS__STREAM", format!("BENCH{id}_EVENTS"))
            .env("ATLAS_EVENTS__NATS__DLQ_STREAM", format!("BENCH{id}_DLQ"))
            .env("ATLAS_EVENTS__NATS__SUBJECT_PREFIX", format!("bench{id}"))
            .env("ATLAS_EVENTS__NATS__MAX_AGE_HOURS", "1");
    }
    let _server = Server {
        child: cmd.spawn().context("starting the fixture binary")?,
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    wait_ready(&client, &base).await?;
    let db = Database::connect(&db_settings(&database_url)).await?;

    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "lag@example.com", "password": "password-123"}))
        .send()
        .await?
        .json()
        .await?;
    let token = registered["access_token"]
        .as_str()
        .context("no access token")?
        .to_string();
    let collection: Value = client
        .post(format!("{base}/api/v1/collections"))
        .bearer_auth(&token)
        .json(&json!({"name": "Lag"}))
        .send()
        .await?
        .json()
        .await?;
    let url = format!(
        "{base}/api/v1/collections/{}/items",
        collection["id"].as_str().context("no collection id")?
    );
    let since = atlas_db::now();

    // Open loop: request i is due at start + i/rate; at most max_in_flight wait.
    let permits = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let total = args.rate * args.duration;
    let start = Instant::now();
    let peaks = Arc::new((AtomicI64::new(0), AtomicI64::new(0)));
    let sampler = tokio::spawn(sample_backlogs(
        db.clone(),
        args.mode == Mode::NatsPostgres,
        peaks.clone(),
    ));
    let end = start + Duration::from_secs(args.duration);
    let mut skipped = 0u64;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = permits.clone().acquire_owned().await?;
        // A write that could not be sent by the end of the run (the server
        // is slower than the rate) is not sent at all.
        if Instant::now() >= end {
            skipped = total - i;
            break;
        }
        let (client, url, token, ok, failed) = (client.clone(), url.clone(), token.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let sent = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"title": format!("lag {i}"), "body": "sustained write", "tags": ["lag"]}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().as_u16() == 201 => ok.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
    }
    let _ = permits.acquire_many(args.max_in_flight as u32).await?;
    let elapsed = start.elapsed().as_secs_f64();
    if skipped > 0 {
        eprintln!(
            "{skipped} writes not sent: the server answered slower than {} writes/s",
            args.rate
        );
    }
    let written = ok.load(Ordering::Relaxed);

    // Wait for the consumer to catch up (at most 60 s), then measure.
    let drain_started = Instant::now();
    loop {
        let pending = unhandled(&db).await?;
        if pending == 0 || drain_started.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = drain_started.elapsed().as_secs_f64();
    sampler.abort();
    let (max_unhandled, max_unpublished) = (peaks.0.load(Ordering::Relaxed), peaks.1.load(Ordering::Relaxed));
    let rows = sqlx::query(
        "SELECT o.occurred_at, r.handled_at FROM outbox o JOIN recorded_events r ON r.event_id = o.event_id
         WHERE o.event_type = 'ItemCreated' AND o.occurred_at >= $1",
    )
    .bind(&since)
    .fetch_all(db.reader())
    .await?;
    let lags = Lags::of(&rows)?;
    // The audit sink (a consumer of the same events, batching): the time
    // from each event to its audit row.
    let audit_rows = sqlx::query(
        "SELECT occurred_at, recorded_at FROM audit_events WHERE type = 'ItemCreated' AND occurred_at >= $1",
    )
    .bind(&since)
    .fetch_all(db.reader())
    .await
    .unwrap_or_default();
    let audit = Lags::of(&audit_rows).map(|l| format!("{:.1} / {:.1}", l.pct(0.50), l.pct(0.99)));
    let unpublished = match args.mode {
        Mode::NatsPostgres => max_unpublished.to_string(),
        _ => "-".into(),
    };
    println!(
        "| {:?} | {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {} |",
        args.mode,
        args.consumer_batch,
        args.rate,
        written as f64 / elapsed,
        failed.load(Ordering::Relaxed),
        lags.pct(0.50),
        lags.pct(0.99),
        lags.max(),
        max_unhandled,
        unpublished,
        drain,
        audit.unwrap_or_else(|_| "-".into()),
    );
    db.close().await;
    drop(_server);
    let _ = std::fs::remove_dir_all(&dir);
    if args.mode == Mode::NatsPostgres {
        // The run's streams go with it, like its database.
        let js = async_nats::jetstream::new(async_nats::connect(args.nats.as_str()).await?);
        for stream in [format!("BENCH{id}_EVENTS"), format!("BENCH{id}_DLQ")] {
            if let Err(e) = js.delete_stream(&stream).await {
                eprintln!("could not delete stream {stream}: {e}");
            }
        }
    }
    if args.mode != Mode::EmbeddedSqlite {
        let admin = Database::connect(&db_settings(&args.postgres)).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"))
            .execute(admin.writer())
            .await?;
        admin.close().await;
    }
    Ok(())
}

/// Milliseconds between two stored timestamps (columns 0 and 1), sorted.
struct Lags(Vec<f64>);

impl Lags {
    fn of(rows: &[atlas_db::sqlx::any::AnyRow]) -> anyhow::Result<Lags> {
        let mut lags: Vec<f64> = rows
            .iter()
            .filter_map(|r| {
                let from = atlas_db::parse_timestamp(&r.get::<String, _>(0))?;
                let to = atlas_db::parse_timestamp(&r.get::<String, _>(1))?;
                Some((to - from).num_microseconds()? as f64 / 1000.0)
            })
            .collect();
        if lags.is_empty() {
            bail!("no events were handled");
        }
        lags.sort_by(|a, b| a.total_cmp(b));
        Ok(Lags(lags))
    }

    fn pct(&self, p: f64) -> f64 {
        self.0[((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1]
    }

    fn max(&self) -> f64 {
        self.0[self.0.len() - 1]
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server never became ready")
}

/// Events committed but not yet handled by the recorder.
async fn unhandled(db: &Database) -> anyhow::Result<i64> {
    let outbox: i64 = sqlx::query("SELECT COUNT(*) FROM outbox")
        .fetch_one(db.reader())
        .await?
        .get(0);
    let handled: i64 = sqlx::query("SELECT COUNT(*) FROM recorded_events")
        .fetch_one(db.reader())
        .await?
        .get(0);
    Ok(outbox - handled)
}

fn db_settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_string(),
        max_connections: 4,
        busy_timeout: Duration::from_secs(5),
        background_connections: 0,
    }
}

/// Keeps the largest unhandled and unpublished backlogs, sampled every 500 ms.
async fn sample_backlogs(db: Database, nats: bool, peaks: Arc<(AtomicI64, AtomicI64)>) {
    loop {
        if let Ok(n) = unhandled(&db).await {
            peaks.0.fetch_max(n, Ordering::Relaxed);
        }
        if nats {
            if let Ok(row) = sqlx::query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(db.reader())
                .await
            {
                peaks.1.fetch_max(row.get::<i64, _>(0), Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
