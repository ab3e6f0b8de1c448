//! `atlas-bench-rules`: how fast rules are evaluated.
//!
//! - `eval`: in-process, one thread: `atlas_rules::eval::matching` over
//!   synthetic item events with 1, 100 and 1,000 rules loaded → rule
//!   evaluations per second per core.
//! - `drain`: a real `atlas serve` (SQLite): items are written with no rules
//!   loaded, then the server is restarted with N rules and the `rules`
//!   consumer's offset reset, and the time it takes to handle the whole log
//!   again gives events per second through the consumer (with its database
//!   reads, the rules' actions and their writes).
//!
//! The rules mix conditions on the title, the tags, the version and the
//! source URL; about one event in 700 matches a given 1,000-rule set once.
//! See bench/README.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atlas_db::sqlx::{self, Row};
use atlas_db::{Database, DatabaseSettings};
use atlas_rules::rule::{self, LoadOptions, Origin, Rule};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(about = "Rule evaluation throughput")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Evaluations per second on one thread, for each rule count.
    Eval {
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        rules: Vec<usize>,
        /// Seconds per rule count.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Events per second through the rules consumer of a real server.
    Drain {
        /// The `atlas` binary (`cargo build --release -p atlas`).
        #[arg(long)]
        atlas: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        rules: Vec<usize>,
        /// Items written before the runs.
        #[arg(long, default_value_t = 20_000)]
        items: usize,
    },
}

/// `n` rules: a quarter each on the title, the tags, the version and
/// tag count, the source URL.
fn rules_yaml(n: usize) -> String {
    let mut out = String::new();
    for k in 0..n {
        let when = match k % 4 {
            0 => format!("event.data.title.lowerAscii().contains(\"topic{k} \")"),
            1 => format!("\"tag{k}\" in event.data.tags"),
            2 => format!("event.data.version == 1 && size(event.data.tags) > {}", 3 + k % 5),
            _ => format!(
                "event.data.source_url != null && event.data.source_url.startsWith(\"https://site{k}.example/\")"
            ),
        };
        out.push_str(&format!(
            "- name: rule-{k}\n  on: [ItemCreated]\n  when: '{when}'\n  do:\n    - add_tags: [matched-{k}]\n"
        ));
    }
    out
}

fn item(i: usize) -> Value {
    let r = |salt: usize| (i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % 1000;
    json!({
        "title": format!("Notes on topic{} and more", r(1)),
        "tags": [format!("tag{}", r(2)), format!("tag{}", r(3))],
        "source_url": format!("https://site{}.example/page", r(4)),
    })
}

fn envelope(i: usize) -> Value {
    let mut data = item(i);
    data["version"] = json!(1);
    data["id"] = json!(format!("item-{i}"));
    json!({"event_id": format!("e-{i}"), "type": "ItemCreated", "version": 1,
           "entity": {"type": "item", "id": format!("item-{i}"), "collection_id": "c"},
           "data": data, "trace_id": "", "request_id": "", "causation_id": null})
}

fn load(n: usize) -> anyhow::Result<Vec<Arc<Rule>>> {
    let checked = rule::parse(&rules_yaml(n), &LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("generated rules do not load: {e:?}"))?;
    Ok(checked
        .into_iter()
        .map(|c| {
            let key = format!("bench:{}", c.name);
            Arc::new(c.into_rule(key, Origin::Test))
        })
        .collect())
}

fn eval(counts: &[usize], seconds: u64) -> anyhow::Result<()> {
    let events: Vec<Value> = (0..10_000).map(envelope).collect();
    println!("| rules | events/s | rule evaluations/s (one core) | matches per event |");
    println!("|---:|---:|---:|---:|");
    for &n in counts {
        let rules = load(n)?;
        let (mut handled, mut matched) = (0u64, 0u64);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(seconds) {
            for e in events.iter().take(500) {
                matched += atlas_rules::eval::matching(&rules, e).len() as u64;
            }
            handled += 500;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {n} | {:.0} | {:.0} | {:.3} |",
            handled as f64 / secs,
            (handled * n as u64) as f64 / secs,
            matched as f64 / handled as f64
        );
    }
    Ok(())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(atlas: &Path, dir: &Path, rules_dir: &Path, port: u16) -> anyhow::Result<Server> {
    let child = Command::new(atlas)
        .arg("serve")
        .env("ATLAS_DATA_DIR", dir)
        .env("ATLAS_SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("ATLAS_SERVER__RATE_LIMIT_PER_SECOND", "0")
        .env("ATLAS_RULES__DIR", rules_dir)
        .env("ATLAS_TELEMETRY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting atlas")?;
    Ok(Server(child))
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("atlas did not become ready")
}

async fn position(db: &Database, consumer: &str) -> anyhow::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(last_sequence), 0) FROM consumer_offsets WHERE consumer = $1")
        .bind(consumer)
        .fetch_one(db.reader())
        .await?;
    Ok(row.try_get(0)?)
}

async fn newest(db: &Database) -> anyhow::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(sequence), 0) FROM outbox")
        .fetch_one(db.reader())
        .await?;
    Ok(row.try_get(0)?)
}

fn db_settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_string(),
        max_connections: 2,
        busy_timeout: Duration::from_secs(5),
        background_connections: 0,
    }
}

async fn drain(atlas: &Path, counts: &[usize], items: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("atlas-rules-bench-{}", uuid::Uuid::now_v7().simple()));
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let url = format!("sqlite://{}", dir.join("atlas.db").display());
    {
        let _server = start(atlas, &dir, &rules_dir, port)?;
        wait_ready(&client, &base).await?;
        let user: Value = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&json!({"email": "rules@bench.org", "password": "password-123"}))
            .send()
            .await?
            .json()
            .await?;
        let token = user["access_token"].as_str().context("no token")?.to_string();
        let c: Value = client
            .post(format!("{base}/api/v1/collections"))
            .bearer_auth(&token)
            .json(&json!({"name": "Bench"}))
            .send()
            .await?
            .json()
            .await?;
        let items_url = format!("{base}/api/v1/collections/{}/items", c["id"].as_str().context("no id")?);
        let started = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..items)
            .map(|i| {
                let (client, url, token) = (client.clone(), items_url.clone(), token.clone());
                async move {
                    let r = client.post(url).bearer_auth(token).json(&item(i)).send().await?;
                    if !r.status().is_success() {
                        bail!("creating an item: {}", r.status());
                    }
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        eprintln!("wrote {items} items in {:.1} s", started.elapsed().as_secs_f64());
    }
    let db = Database::connect(&db_settings(&url)).await?;
    println!("| rules | events handled | seconds | events/s | rule evaluations/s | actions (add_tags) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in counts {
        // Forget what the rules consumer did, load n rules, start again.
        sqlx::query("UPDATE consumer_offsets SET last_sequence = 0 WHERE consumer = 'rules'")
            .execute(db.writer())
            .await?;
        for sql in [
            "DELETE FROM consumer_processed WHERE consumer = 'rules'",
            "DELETE FROM rule_firings",
        ] {
            sqlx::query(sql).execute(db.writer()).await?;
        }
        std::fs::write(rules_dir.join("bench.yaml"), rules_yaml(n))?;
        let target = newest(&db).await?;
        let actions_before = newest(&db).await?;
        let _server = start(atlas, &dir, &rules_dir, port)?;
        wait_ready(&client, &base).await?;
        // Timed from readiness: what the consumer handled during start-up
        // is left out.
        let started = Instant::now();
        let from = position(&db, "rules").await?;
        loop {
            let at = position(&db, "rules").await?;
            if at >= target {
                break;
            }
            if started.elapsed() > Duration::from_secs(900) {
                bail!("the rules consumer is stuck at {at} of {target}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let handled = target - from;
        // Every ItemCreated is evaluated against the n rules.
        let created = handled as f64 * items as f64 / target as f64;
        let actions = newest(&db).await? - actions_before;
        println!(
            "| {n} | {handled} | {secs:.2} | {:.0} | {:.0} | {actions} |",
            handled as f64 / secs,
            created * n as f64 / secs
        );
    }
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Eval { rules, seconds } => eval(&rules, seconds),
        Cmd::Drain { atlas, rules, items } => drain(&atlas, &rules, items).await,
    }
}
