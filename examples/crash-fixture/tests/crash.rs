//! `kill -9` a real Atlas process in the middle of a burst of 5,000 item
//! writes; after a restart every event that committed (as the database sees
//! it) reaches the recording consumer, once by event id — in embedded mode
//! on SQLite and PostgreSQL and in nats mode.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atlas_db::sqlx::{self, Row};
use atlas_testkit::{TestBackend, TestDatabase, TestNats};
use serde_json::{json, Value};

const BURST: usize = 5000;
const KILL_AFTER: usize = 1500;

struct Fixture {
    env: Vec<(String, String)>,
    base_url: String,
    child: Option<Child>,
}

impl Fixture {
    fn new(database: &TestDatabase, nats: Option<&TestNats>) -> Fixture {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut env: Vec<(String, String)> = [
            ("ATLAS_DATABASE__URL", database.url.clone()),
            ("ATLAS_DATA_DIR", database.dir.path().display().to_string()),
            ("ATLAS_SERVER__BIND", format!("127.0.0.1:{port}")),
            ("ATLAS_SERVER__RATE_LIMIT_PER_SECOND", "0".into()),
            ("ATLAS_AUTH__ARGON2_MEMORY_KIB", "256".into()),
            ("ATLAS_AUTH__ARGON2_ITERATIONS", "1".into()),
            ("ATLAS_AUTH__JWT_SECRET", "crash-test-secret-crash-test-secret!".into()),
            ("ATLAS_EVENTS__POLL_INTERVAL_MS", "10".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(n) = nats {
            for (k, v) in [
                ("ATLAS_EVENTS__BROKER", "nats".to_string()),
                ("ATLAS_EVENTS__NATS__URL", n.url.clone()),
                ("ATLAS_EVENTS__NATS__STREAM", n.stream.clone()),
                ("ATLAS_EVENTS__NATS__DLQ_STREAM", n.dlq_stream.clone()),
                ("ATLAS_EVENTS__NATS__SUBJECT_PREFIX", n.subject_prefix.clone()),
                ("ATLAS_EVENTS__NATS__STORAGE", "memory".into()),
                // Redeliver what the dead process held, and let the new
                // relay take over the lease, without long waits.
                ("ATLAS_EVENTS__NATS__ACK_WAIT_SECS", "3".into()),
                ("ATLAS_EVENTS__NATS__RELAY_LEASE_SECS", "3".into()),
            ] {
                env.push((k.to_string(), v));
            }
        }
        Fixture {
            env,
            base_url: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    async fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atlas-crash-fixture"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start the fixture binary"));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{}/ready", self.base_url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "the fixture never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown hooks, no flushing.
    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill_9();
    }
}

async fn count(db: &atlas_db::Database, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(db.reader()).await.unwrap().get(0)
}

async fn crash_mid_burst(backend: TestBackend, nats: bool) {
    let nats = match nats {
        true => match TestNats::new().await {
            Some(n) => Some(n),
            None => return,
        },
        false => None,
    };
    let Some(database) = TestDatabase::new(backend).await else {
        return;
    };
    let mut fixture = Fixture::new(&database, nats.as_ref());
    fixture.start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = fixture.base_url.clone();
    let registered: Value = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": "crash@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["access_token"].as_str().unwrap().to_string();
    let collection: Value = client
        .post(format!("{base}/api/v1/collections"))
        .bearer_auth(&token)
        .json(&json!({"name": "Crash"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items_url = format!("{base}/api/v1/collections/{}/items", collection["id"].as_str().unwrap());

    // 16 writers share the burst; the process dies under them.
    let started = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, token) = (client.clone(), items_url.clone(), token.clone());
            let (started, created) = (started.clone(), created.clone());
            tokio::spawn(async move {
                while started.fetch_add(1, Ordering::SeqCst) < BURST {
                    let n = started.load(Ordering::SeqCst);
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"title": format!("item {n}"), "tags": ["crash"]}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            created.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while created.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(Instant::now() < deadline, "the burst is too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fixture.kill_9();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = created.load(Ordering::SeqCst);
    assert!(acknowledged < BURST, "the process died mid-burst");

    fixture.start().await;
    let db = database.connect().await;
    let items = count(&db, "SELECT COUNT(*) FROM items").await as usize;
    assert!(
        items >= acknowledged,
        "{items} items stored, {acknowledged} acknowledged"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM outbox WHERE event_type = 'ItemCreated'").await as usize,
        items,
        "every committed item has its event"
    );
    let committed = count(&db, "SELECT COUNT(*) FROM outbox").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let recorded = count(&db, "SELECT COUNT(*) FROM recorded_events").await;
        if recorded >= committed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{recorded} of {committed} committed events reached the consumer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let missing = count(
        &db,
        "SELECT COUNT(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM recorded_events r WHERE r.event_id = o.event_id)",
    )
    .await;
    let unknown = count(
        &db,
        "SELECT COUNT(*) FROM recorded_events r WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = r.event_id)",
    )
    .await;
    assert_eq!((missing, unknown), (0, 0), "exactly the committed events arrived");
    // The runtime skips events its consumer already processed; only the one
    // event in hand when the process died may run its handler twice.
    let repeated = count(&db, "SELECT COUNT(*) FROM recorded_events WHERE deliveries > 1").await;
    assert!(repeated <= 1, "{repeated} events handled more than once");
    db.close().await;
    fixture.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sqlite() {
    crash_mid_burst(TestBackend::Sqlite, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_postgres() {
    crash_mid_burst(TestBackend::Postgres, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_postgres() {
    crash_mid_burst(TestBackend::Postgres, true).await
}
