//! A NATS server of the test's own with TLS (certificates made here) and
//! authentication (an NKEY user and a user with a password): Atlas connects
//! over TLS, publishes and consumes; wrong credentials or a wrong CA fail at
//! startup with an error naming the setting to fix.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atlas_events::nats::{NatsError, NatsLog};
use atlas_events::{EntityRef, EventContext, EventsModule};
use atlas_kernel::settings::{Broker, NatsSettings, NatsStorage};
use atlas_kernel::{AppContext, Consumer, Module, ModuleError, ModuleRegistry, Secret};
use atlas_testkit::{TestBackend, TestServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// Certificates and keys written to a directory.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(name: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn make_pki(dir: &Path) -> Pki {
    let (ca_cert, issuer) = ca("Atlas test CA");
    let (other_cert, _) = ca("Some other CA");
    let (server_cert, server_key) = leaf("nats-server", &issuer);
    let (client_cert, client_key) = leaf("atlas", &issuer);
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        other_ca: write("other-ca.pem", &other_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

/// A `nats-server` requiring TLS with client certificates and one of two users.
struct SecureNats {
    url: String,
    pki: Pki,
    nkey_seed: String,
    password: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for SecureNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SecureNats {
    async fn start() -> Option<SecureNats> {
        let binary = std::env::var("ATLAS_TEST_NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        if !Path::new(&binary).exists() {
            assert!(
                !atlas_testkit::services_required(),
                "ATLAS_REQUIRE_SERVICES=1 but {binary} is not installed"
            );
            eprintln!("SKIPPED: {binary} is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path());
        let user = nkeys::KeyPair::new_user();
        let password = format!("pw-{}", uuid::Uuid::now_v7().simple());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = format!(
            r#"
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify: true
  timeout: 5
}}
authorization {{
  users: [
    {{ nkey: "{nkey}" }}
    {{ user: "atlas", password: "{password}" }}
  ]
}}
"#,
            store = dir.path().join("js").display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            ca = pki.ca.display(),
            nkey = user.public_key(),
        );
        let config_file = dir.path().join("nats.conf");
        std::fs::write(&config_file, config).unwrap();
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&config_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(SecureNats {
            url: format!("nats://127.0.0.1:{port}"),
            pki,
            nkey_seed: user.seed().unwrap(),
            password,
            child,
            _dir: dir,
        })
    }

    /// Settings with this server's CA, a client certificate and the NKEY
    /// user; streams and subjects unique to the test.
    fn settings(&self) -> NatsSettings {
        let id = uuid::Uuid::now_v7().simple().to_string();
        NatsSettings {
            url: self.url.clone(),
            stream: format!("T{id}_EVENTS"),
            dlq_stream: format!("T{id}_DLQ"),
            subject_prefix: format!("t{id}"),
            storage: NatsStorage::Memory,
            max_age_hours: 1,
            ack_wait_secs: 5,
            relay_lease_secs: 3,
            request_timeout_secs: 3,
            tls_ca_file: Some(self.pki.ca.clone()),
            tls_cert_file: Some(self.pki.client_cert.clone()),
            tls_key_file: Some(self.pki.client_key.clone()),
            nkey_seed: Some(Secret::new(self.nkey_seed.clone())),
            ..NatsSettings::default()
        }
    }
}

/// Records the ids of the events it handled.
struct Recorder(Mutex<Vec<String>>);

#[async_trait]
impl Consumer for Recorder {
    fn name(&self) -> &str {
        "secure-recorder"
    }
    fn event_types(&self) -> &[&'static str] {
        &[]
    }
    async fn handle(&self, envelope: &serde_json::Value) -> Result<(), ModuleError> {
        let id = envelope["event_id"].as_str().unwrap_or_default().to_string();
        self.0.lock().unwrap().push(id);
        Ok(())
    }
}

struct Fixture(Arc<Recorder>);

#[async_trait]
impl Module for Fixture {
    fn name(&self) -> &'static str {
        "fixture"
    }
    fn depends_on(&self) -> &'static [&'static str] {
        &["events"]
    }
    fn consumers(&self, _ctx: &AppContext) -> Vec<Arc<dyn Consumer>> {
        vec![self.0.clone() as Arc<dyn Consumer>]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_travel_over_tls_with_an_nkey_user() {
    let Some(nats) = SecureNats::start().await else {
        return;
    };
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    let registry = ModuleRegistry::from_modules(vec![
        Arc::new(EventsModule::default()),
        Arc::new(Fixture(recorder.clone())),
    ])
    .unwrap();
    let nats_settings = nats.settings();
    let Some(server) = TestServer::start(TestBackend::Postgres, registry, |s| {
        s.events.broker = Broker::Nats;
        s.events.poll_interval_ms = 10;
        s.events.nats = nats_settings.clone();
    })
    .await
    else {
        return;
    };
    let db = server.database.connect().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let envelope = EventContext::from_request(None, &atlas_http::RequestContext::detached()).envelope(
            "ItemCreated",
            EntityRef {
                entity_type: "item".into(),
                id: uuid::Uuid::now_v7().to_string(),
                collection_id: None,
            },
            serde_json::json!({ "n": n }),
        );
        let mut tx = db.begin().await.unwrap();
        atlas_events::append(&mut tx, &envelope).await.unwrap();
        tx.commit().await.unwrap();
        ids.push(envelope.event_id);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = recorder.0.lock().unwrap().clone();
        if seen == ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events consumed over TLS",
            seen.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The relay published them to the stream, read back over the same
    // secured connection.
    let log = NatsLog::connect(&nats_settings).await.unwrap();
    let mut stream = log.jetstream().get_stream(&nats_settings.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, ids.len() as u64);
    db.close().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_and_password_work_too() {
    let Some(nats) = SecureNats::start().await else {
        return;
    };
    let settings = NatsSettings {
        nkey_seed: None,
        user: Some("atlas".into()),
        password: Some(Secret::new(nats.password.clone())),
        ..nats.settings()
    };
    let log = NatsLog::connect(&settings).await.unwrap();
    log.jetstream()
        .publish(format!("{}.events.item.created", settings.subject_prefix), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
}

fn refusal(result: Result<NatsLog, NatsError>) -> NatsError {
    match result {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wrong_credentials_or_ca_name_the_setting() {
    let Some(nats) = SecureNats::start().await else {
        return;
    };

    let stranger = NatsSettings {
        nkey_seed: Some(Secret::new(nkeys::KeyPair::new_user().seed().unwrap())),
        ..nats.settings()
    };
    let e = refusal(NatsLog::connect(&stranger).await);
    assert!(
        matches!(
            e,
            NatsError::Credentials {
                setting: "events.nats.nkey_seed",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("`events.nats.nkey_seed`"), "{e}");

    let wrong_password = NatsSettings {
        nkey_seed: None,
        user: Some("atlas".into()),
        password: Some(Secret::new("not-the-password")),
        ..nats.settings()
    };
    let e = refusal(NatsLog::connect(&wrong_password).await);
    assert!(e.to_string().contains("events.nats.password"), "{e}");

    let anonymous = NatsSettings {
        nkey_seed: None,
        ..nats.settings()
    };
    let e = refusal(NatsLog::connect(&anonymous).await);
    assert!(matches!(e, NatsError::Credentials { .. }), "{e}");
    assert!(e.to_string().contains("none is configured"), "{e}");

    let wrong_ca = NatsSettings {
        tls_ca_file: Some(nats.pki.other_ca.clone()),
        ..nats.settings()
    };
    let e = refusal(NatsLog::connect(&wrong_ca).await);
    assert!(
        matches!(
            e,
            NatsError::Tls {
                setting: "events.nats.tls_ca_file",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("`events.nats.tls_ca_file`"), "{e}");
}
