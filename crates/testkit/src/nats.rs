//! NATS JetStream for tests: unique stream names and subjects per test on the
//! shared server, or a private `nats-server` a test may stop and restart.

use std::time::Duration;

/// The shared test server; override with `ATLAS_TEST_NATS_URL`.
pub fn nats_url() -> String {
    std::env::var("ATLAS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Stream names and a subject prefix of one test, removed on drop.
pub struct TestNats {
    pub url: String,
    pub stream: String,
    pub dlq_stream: String,
    pub subject_prefix: String,
}

impl TestNats {
    /// Names on the shared server, or `None` when it is unreachable and
    /// services are not required (the test is then skipped, loudly).
    pub async fn new() -> Option<TestNats> {
        Self::on(&nats_url()).await
    }

    /// Names on the server at `url`.
    pub async fn on(url: &str) -> Option<TestNats> {
        if let Err(e) = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
        {
            if crate::services_required() {
                panic!("ATLAS_REQUIRE_SERVICES=1 but NATS at {url} is unreachable: {e}");
            }
            eprintln!("SKIPPED: NATS at {url} is unreachable ({e})");
            return None;
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        Some(TestNats {
            url: url.to_string(),
            stream: format!("T{id}_EVENTS"),
            dlq_stream: format!("T{id}_DLQ"),
            subject_prefix: format!("t{id}"),
        })
    }

    /// Point `settings` at this test's streams (memory storage, short waits).
    pub fn apply(&self, settings: &mut atlas_kernel::Settings) {
        let n = &mut settings.events.nats;
        settings.events.broker = atlas_kernel::settings::Broker::Nats;
        n.url = self.url.clone();
        n.stream = self.stream.clone();
        n.dlq_stream = self.dlq_stream.clone();
        n.subject_prefix = self.subject_prefix.clone();
        n.storage = atlas_kernel::settings::NatsStorage::Memory;
        n.max_age_hours = 1;
        n.ack_wait_secs = 5;
        n.relay_lease_secs = 3;
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let (url, streams) = (self.url.clone(), [self.stream.clone(), self.dlq_stream.clone()]);
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url.as_str())
                    .await
                {
                    let js = async_nats::jetstream::new(client);
                    for stream in streams {
                        let _ = js.delete_stream(&stream).await;
                    }
                }
            });
        })
        .join();
    }
}

/// A private `nats-server` with JetStream on a free port, for tests that
/// stop and restart the broker.
pub struct PrivateNats {
    pub url: String,
    port: u16,
    store: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    /// Start one, or `None` when `nats-server` is not installed and services
    /// are not required.
    pub async fn start() -> Option<PrivateNats> {
        let binary = nats_server_binary();
        if !std::path::Path::new(&binary).exists() {
            if crate::services_required() {
                panic!("ATLAS_REQUIRE_SERVICES=1 but {binary} is not installed");
            }
            eprintln!("SKIPPED: {binary} is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut nats = PrivateNats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        nats.launch().await;
        Some(nats)
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not listen on port {}", self.port);
    }

    /// Kill the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn nats_server_binary() -> String {
    std::env::var("ATLAS_TEST_NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into())
}
