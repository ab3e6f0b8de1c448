//! The `atlas` binary: serve and shut down, migrate, config, openapi, users.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atlas_testkit::{both_backends, TestBackend, TestDatabase};

fn atlas(dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atlas"));
    cmd.current_dir(dir);
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn stdout_of(mut cmd: Command) -> String {
    let out = cmd.output().expect("run atlas");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let v = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.arg("--version");
        c
    });
    assert_eq!(v.trim(), format!("atlas {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn rules_check_places_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        "- name: tag-rust\n  on: [ItemCreated]\n  when: 'event.data.title.lowerAscii().contains(\"rust\")'\n  do:\n    - add_tags: [rust]\n    - enqueue_job: {type: ENRICH_URL, payload: {item_id: '${event.entity.id}'}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "- name: a\n  on: [ItemCreated]\n  when: 'event.data.title =='\n  do: [{add_tags: [x]}]\n- name: b\n  on: [ItemCreated]\n  whne: 'true'\n  do: [{enqueue_job: {type: NOPE}}]\n",
    )
    .unwrap();
    let ok = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args(["rules", "check", "good.yaml"]);
        c
    });
    assert_eq!(ok.trim(), "1 file(s): valid");
    let out = atlas(dir.path(), &[])
        .args(["rules", "check", "good.yaml", "bad.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("bad.yaml:3:9: CEL:"), "{stdout}");
    assert!(lines[1].starts_with("bad.yaml:7:3: unknown field `whne`"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 problem(s) in 1 of 2 file(s)"));
    // A collection's rules may not start administrators' jobs.
    std::fs::write(
        dir.path().join("admin.yaml"),
        "name: n\non: ItemCreated\ndo: [{enqueue_job: {type: NOOP}}]\n",
    )
    .unwrap();
    stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args(["rules", "check", "admin.yaml"]);
        c
    });
    let out = atlas(dir.path(), &[])
        .args(["rules", "check", "--collection", "admin.yaml"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("admin.yaml:3:6: the job type `NOOP` is for administrators"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

async fn migrate_plan_and_up(backend: TestBackend) {
    let Some(db) = TestDatabase::new(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("ATLAS_DATABASE__URL", db.url.as_str())];
    let run = |sub: &str| {
        let mut c = atlas(dir.path(), &env);
        c.args(["migrate", sub]);
        stdout_of(c)
    };
    let plan = run("plan");
    for module in ["events", "identity", "collections", "items"] {
        assert!(
            plan.lines().any(|l| l.starts_with("pending") && l.contains(module)),
            "{plan}"
        );
    }
    let up = run("up");
    assert_eq!(
        up.lines().filter(|l| l.starts_with("applied")).count(),
        plan.lines().count(),
        "{up}"
    );
    assert!(run("plan").starts_with("up to date"));
    assert!(run("up").starts_with("up to date"), "up is idempotent");
}
both_backends!(migrate_commands, migrate_plan_and_up);

#[test]
fn migrate_generate_creates_both_dialects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules/widgets")).unwrap();
    std::fs::write(dir.path().join("modules/widgets/Cargo.toml"), "").unwrap();
    let out = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args(["migrate", "generate", "widgets", "add_colour"]);
        c
    });
    for dialect in ["sqlite", "postgres"] {
        let files: Vec<_> = std::fs::read_dir(dir.path().join(format!("modules/widgets/migrations/{dialect}")))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().to_string_lossy().to_string();
        assert!(
            name.ends_with("_add_colour.sql") && name.len() == "20261123000000_add_colour.sql".len(),
            "{name}"
        );
        assert!(out.contains(&name));
    }
    let bad = atlas(dir.path(), &[])
        .args(["migrate", "generate", "nope", "x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no module `nope`"));
}

#[test]
fn config_show_redacts_and_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-s3cret-s3cret-s3cret-s3cret-!";
    let out = stdout_of({
        let mut c = atlas(
            dir.path(),
            &[
                ("ATLAS_AUTH__JWT_SECRET", secret),
                ("ATLAS_SERVER__BIND", "127.0.0.1:9123"),
            ],
        );
        c.args(["config", "show"]);
        c
    });
    assert!(out.contains("bind = \"127.0.0.1:9123\""), "{out}");
    assert!(!out.contains(secret));
    assert!(out.contains("jwt_secret = \"[redacted]\""));

    let bad = atlas(dir.path(), &[("ATLAS_SERVER__BIND", "nowhere")])
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`server.bind`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let prod = atlas(dir.path(), &[("ATLAS_PROFILE", "production")])
        .arg("serve")
        .output()
        .unwrap();
    assert!(!prod.status.success());
    assert!(String::from_utf8_lossy(&prod.stderr).contains("`auth.jwt_secret`"));
}

#[test]
fn openapi_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.arg("openapi");
        c
    });
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/auth/register",
        "/api/v1/collections/{id}/items",
        "/api/v1/items/{id}",
        "/api/v1/collections/{id}/members/{user_id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every reference resolves, so generated clients compile.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {r}");
    }
    // Every operation documents its error responses with the error schema.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let errors: Vec<_> = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(code, _)| code.starts_with('4'))
                .collect();
            assert!(!errors.is_empty(), "{method} {path} documents no error response");
            for (code, resp) in errors {
                assert_eq!(
                    resp["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {code}"
                );
            }
        }
    }
    assert!(!dir.path().join("atlas-data").exists(), "openapi leaves no data behind");
}

fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn user_create_and_reset_password() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATLAS_AUTH__ARGON2_MEMORY_KIB", "256"),
        ("ATLAS_AUTH__ARGON2_ITERATIONS", "1"),
    ];
    let with_stdin = |args: &[&str], input: &str| {
        let mut child = atlas(dir.path(), &env)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = with_stdin(&["user", "create", "Root@Example.org", "--admin"], "first-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<root@example.org> (admin)"));
    let again = with_stdin(&["user", "create", "root@example.org"], "first-password\n");
    assert!(!again.status.success());
    let short = with_stdin(&["user", "create", "x@example.org"], "short\n");
    assert!(String::from_utf8_lossy(&short.stderr).contains("password must be 8 to 256 characters"));
    let reset = with_stdin(&["user", "reset-password", "root@example.org"], "second-password\n");
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));

    // The server sees the admin with the new password.
    let (mut child, base) = serve(dir.path(), &env);
    let client = reqwest::Client::new();
    let login = |pw: &'static str| {
        client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&serde_json::json!({"email": "root@example.org", "password": pw}))
            .send()
    };
    assert_eq!(login("first-password").await.unwrap().status(), 401);
    let ok: serde_json::Value = login("second-password").await.unwrap().json().await.unwrap();
    assert_eq!(ok["user"]["is_admin"], true);
    stop(&mut child);
}

/// Start `atlas serve` on a free port; returns once `/ready` is 200.
/// A running `atlas serve`, killed if the test ends (or fails) before
/// [`stop`] stopped it, so a failing test leaves no server behind.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> (Served, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let child = atlas(dir, env)
        .args(["serve", "--bind", &bind])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Served(child);
    let base = format!("http://{bind}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http_status(&format!("{base}/ready")) {
            if r == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "atlas serve did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, base)
}

fn stop(Served(child): &mut Served) -> Duration {
    let started = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGINT: {status}");
    started.elapsed()
}

#[test]
fn serve_refuses_an_unmigrated_database_when_auto_migrate_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = atlas(dir.path(), &[("ATLAS_DATABASE__AUTO_MIGRATE", "false")])
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("migration(s) pending"), "{stderr}");
    assert!(stderr.contains("run `atlas migrate up`"), "{stderr}");
    let migrated = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args(["migrate", "up"]);
        c
    });
    assert!(migrated.contains("applied"), "{migrated}");
    let (mut server, base) = serve(dir.path(), &[("ATLAS_DATABASE__AUTO_MIGRATE", "false")]);
    assert_eq!(http_status(&format!("{base}/ready")).unwrap(), 200);
    stop(&mut server);
}

#[test]
fn serve_starts_embedded_and_stops_on_sigint_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(dir.path(), &[]);
    assert!(
        dir.path().join("atlas-data/atlas.db").exists(),
        "embedded mode creates ./atlas-data"
    );
    for path in ["/health", "/ready", "/metrics", "/openapi.json", "/docs/"] {
        assert_eq!(http_status(&format!("{base}{path}")).unwrap(), 200, "{path}");
    }
    let took = stop(&mut child);
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
}

/// The status of a blocking GET over plain HTTP/1.1 (enough for probes from
/// synchronous tests).
fn http_status(url: &str) -> std::io::Result<u16> {
    use std::io::Read;
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))
}

#[tokio::test]
async fn audit_verify_export_and_verify_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ATLAS_AUTH__ARGON2_MEMORY_KIB", "256"),
        ("ATLAS_AUTH__ARGON2_ITERATIONS", "1"),
    ];
    let (mut child, base) = serve(dir.path(), &env);
    let client = reqwest::Client::new();
    for email in ["a@audit.org", "b@audit.org"] {
        let r = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&serde_json::json!({"email": email, "password": "password-123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let key: serde_json::Value = client
        .get(format!("{base}/api/v1/audit/public-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = |args: &[&str]| atlas(dir.path(), &env).args(args).output().unwrap();
    // Wait for the sink, through the CLI itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(&["audit", "verify", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true, "{report}");
        if report["checked"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the audit sink did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(&mut child);

    let verify = run(&["audit", "verify"]);
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("audit chain OK: 2 rows verified"));
    let printed = String::from_utf8(run(&["audit", "public-key"]).stdout).unwrap();
    let public_key = key["public_key"].as_str().unwrap();
    assert!(printed.contains(public_key), "{printed}");

    let bundle = dir.path().join("bundle.ndjson");
    let export = run(&[
        "audit",
        "export",
        "--from",
        "2000-01-01T00:00:00Z",
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let check = |key: &str| run(&["audit", "verify-bundle", bundle.to_str().unwrap(), "--public-key", key]);
    let ok = check(public_key);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("bundle OK: 2 rows"));

    // Another key, then one changed byte: both refused with a non-zero exit.
    // RFC 8032 test vector 1: a valid key that signed nothing here.
    let other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let refused = check(other);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("not trusted"));
    let text = std::fs::read_to_string(&bundle).unwrap();
    std::fs::write(&bundle, text.replacen("b@audit.org", "c@audit.org", 1)).unwrap();
    let tampered = check(public_key);
    assert!(!tampered.status.success());
    assert!(
        String::from_utf8_lossy(&tampered.stdout).contains("hash mismatch"),
        "{}",
        String::from_utf8_lossy(&tampered.stdout)
    );
}

async fn jobs_commands(backend: TestBackend) {
    let Some(db) = TestDatabase::new(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("ATLAS_DATABASE__URL", db.url.as_str())];
    let run = |args: &[&str]| {
        let mut c = atlas(dir.path(), &env);
        c.args(args);
        c.output().expect("run atlas")
    };
    assert!(run(&["migrate", "up"]).status.success());
    let list = run(&["jobs", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "no jobs");
    let conn = db.connect().await;
    atlas_db::sqlx::query(
        "INSERT INTO jobs (id, type, status, payload, attempts, max_attempts, run_at, last_error, created_at, updated_at)
         VALUES ('j1', 'NOOP', 'dead', '{}', 3, 3, '2026-01-01T00:00:00.000000Z', 'boom', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
    )
    .execute(conn.writer())
    .await
    .unwrap();
    let list = String::from_utf8(run(&["jobs", "list", "--status", "dead"]).stdout).unwrap();
    assert!(
        list.contains("j1") && list.contains("dead") && list.contains("error: boom"),
        "{list}"
    );
    let show = String::from_utf8(run(&["jobs", "show", "j1"]).stdout).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&show).unwrap()["status"],
        "dead"
    );
    assert!(run(&["jobs", "retry", "j1"]).status.success());
    let again = run(&["jobs", "retry", "j1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("only dead jobs"));
    let cancel = String::from_utf8(run(&["jobs", "cancel", "j1"]).stdout).unwrap();
    assert!(cancel.contains("cancelled"), "{cancel}");
    conn.close().await;
}
both_backends!(jobs_cli, jobs_commands);

/// GET `url` with `token`: the JSON answer.
async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST `body` to `url`, with `token` when given: the JSON answer.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut request = client.post(url).json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Environment for an `atlas serve` process of a small cluster: PostgreSQL,
/// this test's NATS streams, cheap hashing, no rate limit; `extra` appended.
fn cluster_env<'a>(
    database: &'a TestDatabase,
    nats: &'a atlas_testkit::TestNats,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("ATLAS_DATABASE__URL", database.url.as_str()),
        ("ATLAS_EVENTS__BROKER", "nats"),
        ("ATLAS_EVENTS__NATS__URL", nats.url.as_str()),
        ("ATLAS_EVENTS__NATS__STREAM", nats.stream.as_str()),
        ("ATLAS_EVENTS__NATS__DLQ_STREAM", nats.dlq_stream.as_str()),
        ("ATLAS_EVENTS__NATS__SUBJECT_PREFIX", nats.subject_prefix.as_str()),
        ("ATLAS_EVENTS__NATS__STORAGE", "memory"),
        ("ATLAS_AUTH__JWT_SECRET", "cluster-test-secret-cluster-test-secret"),
        ("ATLAS_AUTH__ARGON2_MEMORY_KIB", "256"),
        ("ATLAS_AUTH__ARGON2_ITERATIONS", "1"),
        ("ATLAS_SERVER__RATE_LIMIT_PER_SECOND", "0"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Register `email` on the server at `base` and create a collection;
/// returns the access token and the collection's items URL.
async fn sign_up_with_collection(client: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let registered = post_json(
        client,
        &format!("{base}/api/v1/auth/register"),
        None,
        serde_json::json!({"email": email, "password": "password-123"}),
    )
    .await;
    let token = registered["access_token"].as_str().unwrap().to_string();
    let collection = post_json(
        client,
        &format!("{base}/api/v1/collections"),
        Some(&token),
        serde_json::json!({"name": "Cluster"}),
    )
    .await;
    let items = format!("{base}/api/v1/collections/{}/items", collection["id"].as_str().unwrap());
    (token, items)
}

/// Two worker processes share the `audit` consumer over NATS JetStream while
/// 2,000 items are written through an api process: the chain stays single
/// and `atlas audit verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nats_workers_keep_one_audit_chain() {
    use base64::Engine as _;
    let Some(nats) = atlas_testkit::TestNats::new().await else {
        return;
    };
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let seed: [u8; 32] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(seed);
    let env = cluster_env(
        &database,
        &nats,
        &[
            ("ATLAS_AUDIT__SIGNING_KEY", key.as_str()),
            ("ATLAS_AUDIT__CHECKPOINT_EVERY_ROWS", "100"),
        ],
    );
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |dir: &std::path::Path, role: &str| {
        let mut env = env.clone();
        env.push(("ATLAS_SERVER__ROLE", role));
        serve(dir, &env)
    };
    let (mut api, base) = start(dirs[0].path(), "api");
    let (mut worker_a, metrics_a) = start(dirs[1].path(), "worker");
    let (mut worker_b, metrics_b) = start(dirs[2].path(), "worker");

    let client = reqwest::Client::new();
    let (token, url) = sign_up_with_collection(&client, &base, "chain@audit.org").await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                for i in 0..250 {
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"title": format!("w{w} item {i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let db = database.connect().await;
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::Row::get(&sqlx::query(sql).fetch_one(db.reader()).await.unwrap(), 0);
            n
        }
    };
    let events = count("SELECT COUNT(*) FROM outbox").await;
    assert!(events >= 2002, "{events}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while count("SELECT COUNT(*) FROM audit_events").await < events {
        assert!(Instant::now() < deadline, "the audit sink did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events").await,
        events,
        "one row per event"
    );

    // Both workers appended part of the chain.
    let appended = |base: String| async move {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("atlas_audit_rows_appended_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (a, b) = (appended(metrics_a).await, appended(metrics_b).await);
    assert_eq!(a + b, events as f64, "worker a {a}, worker b {b}");
    assert!(a > 0.0 && b > 0.0, "both workers took part: a {a}, b {b}");

    for child in [&mut api, &mut worker_a, &mut worker_b] {
        stop(child);
    }
    let verify = atlas(dirs[1].path(), &env)
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert!(verify.status.success(), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checked"], events, "{report}");
    db.close().await;
}

/// Realtime across api processes in nats mode: a stream opened on one api
/// process receives, within a second, the event of a write made through
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_reaches_a_stream_on_another_api_process_in_nats_mode() {
    use futures::StreamExt;
    let Some(nats) = atlas_testkit::TestNats::new().await else {
        return;
    };
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let env = cluster_env(&database, &nats, &[("ATLAS_SERVER__ROLE", "api")]);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut writer_api, a) = serve(dirs[0].path(), &env);
    let (mut stream_api, b) = serve(dirs[1].path(), &env);
    let client = reqwest::Client::new();
    let (token, items_url) = sign_up_with_collection(&client, &a, "live@realtime.org").await;
    let mut body = open_event_stream(&client, &b, &token).await.bytes_stream();
    let written = Instant::now();
    let item = post_json(
        &client,
        &items_url,
        Some(&token),
        serde_json::json!({"title": "seen elsewhere"}),
    )
    .await;
    let item_id = item["id"].as_str().unwrap().to_string();
    let mut text = String::new();
    let arrived = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("ItemCreated") && text.contains(&item_id) {
                return written.elapsed();
            }
        }
        panic!("the stream ended: {text}");
    })
    .await
    .unwrap_or_else(|_| panic!("no ItemCreated on the other api process: {text}"));
    assert!(arrived < Duration::from_secs(1), "arrived after {arrived:?}");
    for child in [&mut writer_api, &mut stream_api] {
        stop(child);
    }
}

/// Search in cluster mode: two api processes, each with its own index and
/// durable JetStream consumer, converge to the same results for writes made
/// through one of them; a third api process started later bootstraps by
/// rebuilding from the database and then follows the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_processes_on_nats_converge_to_the_same_search_results() {
    let Some(nats) = atlas_testkit::TestNats::new().await else {
        return;
    };
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let api_env = cluster_env(&database, &nats, &[("ATLAS_SERVER__ROLE", "api")]);
    let worker_env = cluster_env(&database, &nats, &[("ATLAS_SERVER__ROLE", "worker")]);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut worker, _) = serve(dirs[0].path(), &worker_env);
    let (mut api_a, a) = serve(dirs[1].path(), &api_env);
    let (mut api_b, b) = serve(dirs[2].path(), &api_env);
    let client = reqwest::Client::new();
    let (token, items_url) = sign_up_with_collection(&client, &a, "search@cluster.org").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let item = post_json(&client, &items_url, Some(&token), serde_json::json!({"title": format!("heron {i}"), "body": if i % 2 == 0 { "even heron" } else { "odd heron" }})).await;
        ids.push(item["id"].as_str().unwrap().to_string());
    }
    let patched = client
        .patch(format!("{a}/api/v1/items/{}", ids[0]))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "egret 0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let deleted = client
        .delete(format!("{a}/api/v1/items/{}", ids[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    // What every node must come to answer.
    let results = |base: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let mut out = Vec::new();
            for q in ["heron&limit=100&sort=title", "egret", "even&limit=100&sort=title"] {
                let page = get_json(&client, &format!("{base}/api/v1/search/items?q={q}"), &token).await;
                let ids: Vec<String> = page["items"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|h| h["item"]["id"].as_str().unwrap_or("").to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ids);
            }
            out
        }
    };
    let expected_heron: Vec<String> = {
        // "egret 0" keeps "heron" in its body.
        let mut v: Vec<(String, String)> = (2..30).map(|i| (format!("heron {i}"), ids[i].clone())).collect();
        v.push(("egret 0".into(), ids[0].clone()));
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    };
    let converged = |r: &Vec<Vec<String>>| r[0] == expected_heron && r[1] == vec![ids[0].clone()] && r[2].len() == 15;
    let (mut api_c, c) = serve(dirs[3].path(), &api_env);
    let deadline = Instant::now() + Duration::from_secs(30);
    for base in [&a, &b, &c] {
        loop {
            let r = results(base.clone()).await;
            if converged(&r) {
                break;
            }
            assert!(Instant::now() < deadline, "{base} never converged: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The late node follows the stream after its bootstrap.
    let item = post_json(
        &client,
        &items_url,
        Some(&token),
        serde_json::json!({"title": "ibis late"}),
    )
    .await;
    let late = item["id"].as_str().unwrap().to_string();
    for base in [&a, &b, &c] {
        loop {
            let r = get_json(&client, &format!("{base}/api/v1/items/{late}"), &token).await;
            if r["index_status"] == "indexed" {
                break;
            }
            assert!(Instant::now() < deadline, "{base} never indexed the late item");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A change no event announced, then `REINDEX_ITEM`: the worker runs the
    // job, and its `JobSucceeded` event has every node re-read the item.
    let db = database.connect().await;
    sqlx::query("UPDATE items SET title = 'stork late' WHERE id = $1")
        .bind(&late)
        .execute(db.writer())
        .await
        .unwrap();
    let job = post_json(
        &client,
        &format!("{a}/api/v1/jobs"),
        Some(&token),
        serde_json::json!({"type": "REINDEX_ITEM", "payload": {"item_id": late}}),
    )
    .await;
    assert_eq!(job["type"], "REINDEX_ITEM", "{job}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for base in [&a, &b, &c] {
        loop {
            if search_ids(&client, base, &token, "stork").await == [late.clone()] {
                break;
            }
            assert!(Instant::now() < deadline, "{base} never reindexed the item");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(search_ids(&client, base, &token, "ibis").await.is_empty());
    }
    db.close().await;
    for child in [&mut api_a, &mut api_b, &mut api_c, &mut worker] {
        stop(child);
    }
}

/// `atlas search reindex` rebuilds the embedded index from the database.
#[test]
fn search_reindex_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout_of({
        let mut cmd = atlas(dir.path(), &[]);
        cmd.args(["migrate", "up"]);
        cmd
    });
    assert!(!out.is_empty());
    let out = stdout_of({
        let mut cmd = atlas(dir.path(), &[]);
        cmd.args(["search", "reindex"]);
        cmd
    });
    assert!(out.contains("indexed 0 items"), "{out}");
    assert!(dir.path().join("atlas-data/search/CURRENT").exists());
    let mut cmd = atlas(dir.path(), &[]);
    cmd.args([
        "search",
        "reindex",
        "--collection",
        "0190aaaa-0000-7000-8000-000000000000",
    ]);
    let out = stdout_of(cmd);
    assert!(out.contains("re-indexed 0 items"), "{out}");
}

const CHEAP_HASHING: [(&str, &str); 3] = [
    ("ATLAS_AUTH__ARGON2_MEMORY_KIB", "256"),
    ("ATLAS_AUTH__ARGON2_ITERATIONS", "1"),
    ("ATLAS_SERVER__RATE_LIMIT_PER_SECOND", "0"),
];

/// The ids of the items a search for `q` finds.
async fn search_ids(client: &reqwest::Client, base: &str, token: &str, q: &str) -> Vec<String> {
    let page = get_json(client, &format!("{base}/api/v1/search/items?q={q}"), token).await;
    page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| h["item"]["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `atlas backup` of a running embedded server, `atlas restore` into a fresh
/// directory: the audit chain verifies there and every item is readable and
/// searchable with the same login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_round_trip_keeps_items_search_and_audit() {
    let source = tempfile::tempdir().unwrap();
    let (mut server, base) = serve(source.path(), &CHEAP_HASHING);
    let client = reqwest::Client::new();
    let (token, items_url) = sign_up_with_collection(&client, &base, "owner@backup.org").await;
    let words = [
        "aardvark", "bison", "caracal", "dingo", "echidna", "fossa", "gharial", "hyrax",
    ];
    let mut ids = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let item = post_json(
            &client,
            &items_url,
            Some(&token),
            serde_json::json!({"title": format!("{word} notes"), "body": format!("field notes number {i}")}),
        )
        .await;
        ids.push(item["id"].as_str().unwrap().to_string());
    }
    // Backed up while the server runs; the audit sink and indexer may still
    // be behind, which the restore must not care about.
    let archive = source.path().join("atlas-backup.tar.gz");
    let out = stdout_of({
        let mut c = atlas(source.path(), &CHEAP_HASHING);
        c.args(["backup", "--out", archive.to_str().unwrap()]);
        c
    });
    assert!(out.contains("backup written to"), "{out}");
    assert!(out.contains("audit-signing.key"), "{out}");
    stop(&mut server);

    let target = tempfile::tempdir().unwrap();
    let restore = |force: bool| {
        let mut c = atlas(target.path(), &CHEAP_HASHING);
        c.args(["restore", archive.to_str().unwrap()]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let first = restore(false);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let printed = String::from_utf8_lossy(&first.stdout);
    assert!(
        printed.contains(&format!("search index rebuilt: {} items indexed", ids.len())),
        "{printed}"
    );
    let again = restore(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    assert!(restore(true).status.success());

    let verify = atlas(target.path(), &CHEAP_HASHING)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("audit chain OK"));

    let (mut restored, base) = serve(target.path(), &CHEAP_HASHING);
    let login = post_json(
        &client,
        &format!("{base}/api/v1/auth/login"),
        None,
        serde_json::json!({"email": "owner@backup.org", "password": "password-123"}),
    )
    .await;
    let token = login["access_token"]
        .as_str()
        .expect("the user logs in on the restored node");
    for (id, word) in ids.iter().zip(words) {
        let item = get_json(&client, &format!("{base}/api/v1/items/{id}"), token).await;
        assert_eq!(item["title"], format!("{word} notes"));
        assert_eq!(
            search_ids(&client, &base, token, word).await,
            vec![id.clone()],
            "{word}"
        );
    }
    stop(&mut restored);
}

/// Search `q` until exactly `want` items are found (the indexer commits
/// within a second); the page last seen.
async fn wait_for_hits(client: &reqwest::Client, base: &str, token: &str, q: &str, want: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = get_json(client, &format!("{base}/api/v1/search/items?q={q}"), token).await;
        if page["items"].as_array().map(Vec::len) == Some(want) {
            return page;
        }
        assert!(Instant::now() < deadline, "{q}: want {want} hits, got {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node whose database is put back to an older copy while its data
/// directory keeps the index (a database restored under an api process):
/// the index is ahead of the event log, so the node rebuilds it instead of
/// serving items the database lost and skipping the next events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_ahead_of_a_restored_database_is_rebuilt() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base) = serve(dir.path(), &CHEAP_HASHING);
    let client = reqwest::Client::new();
    let (token, items_url) = sign_up_with_collection(&client, &base, "owner@restore.org").await;
    let items_path = items_url.strip_prefix(&base).unwrap().to_string();
    let add = |base: &str, title: &'static str| {
        let (client, url, token) = (client.clone(), format!("{base}{items_path}"), token.clone());
        async move {
            let item = post_json(&client, &url, Some(&token), serde_json::json!({ "title": title })).await;
            item["id"].as_str().unwrap().to_string()
        }
    };
    let kept = add(&base, "aardvark notes").await;
    wait_for_hits(&client, &base, &token, "aardvark", 1).await;
    let db_path = dir.path().join("atlas-data/atlas.db");
    let copy = dir.path().join("older.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .unwrap();
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    for title in ["bison notes", "caracal notes", "dingo notes"] {
        add(&base, title).await;
    }
    wait_for_hits(&client, &base, &token, "notes", 4).await;
    stop(&mut server);

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("atlas-data/atlas.db{suffix}")));
    }
    std::fs::rename(&copy, &db_path).unwrap();
    let (mut server, base) = serve(dir.path(), &CHEAP_HASHING);
    let page = wait_for_hits(&client, &base, &token, "notes", 1).await;
    assert_eq!(page["items"][0]["item"]["id"], kept.as_str());
    assert_eq!(page["total_estimate"], 1, "no document of a lost item: {page}");
    // Events after the restore are indexed although their sequences are
    // ones the old index had already passed.
    let later = add(&base, "echidna notes").await;
    let page = wait_for_hits(&client, &base, &token, "echidna", 1).await;
    assert_eq!(page["items"][0]["item"]["id"], later.as_str());
    stop(&mut server);
}

/// `atlas init` for an embedded deployment, with flags and by answering its
/// questions: the config passes `config show` and serves; a second init is
/// refused without `--force`.
#[test]
fn init_embedded_writes_a_config_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args(["init", "--non-interactive", "--bind", "127.0.0.1:9999"]);
        c
    });
    assert!(out.contains("embedded mode, profile local"), "{out}");
    for file in ["secrets/jwt.secret", "secrets/audit-signing.key"] {
        let path = dir.path().join(file);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600,
                "{file}"
            );
        }
        assert!(std::fs::read_to_string(&path).unwrap().len() >= 64, "{file}");
    }
    let shown = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args(["config", "show"]);
        c
    });
    assert!(shown.contains("bind = \"127.0.0.1:9999\""), "{shown}");
    let secret = std::fs::read_to_string(dir.path().join("secrets/jwt.secret")).unwrap();
    assert!(!shown.contains(secret.trim()), "the secret is redacted");

    let again = atlas(dir.path(), &[])
        .args(["init", "--non-interactive"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists; pass --force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets/jwt.secret")).unwrap(),
        secret
    );

    // Interactive, over a pipe: mode, profile, bind, data dir.
    let mut child = atlas(dir.path(), &[])
        .args(["init", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"embedded\n\n127.0.0.1:9998\nmy-data\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data directory [atlas-data]"));
    assert_ne!(
        std::fs::read_to_string(dir.path().join("secrets/jwt.secret")).unwrap(),
        secret
    );

    let (mut server, base) = serve(dir.path(), &[]);
    assert_eq!(http_status(&format!("{base}/ready")).unwrap(), 200);
    stop(&mut server);
    assert!(dir.path().join("my-data/atlas.db").exists());
    assert!(
        !dir.path().join("my-data/audit-signing.key").exists(),
        "the configured key is used, none generated"
    );
}

/// `atlas init --mode cluster`: production profile on PostgreSQL and NATS;
/// after `migrate up` an api process serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_cluster_writes_a_production_config_that_serves() {
    let Some(database) = TestDatabase::new(TestBackend::Postgres).await else {
        return;
    };
    let Some(nats) = atlas_testkit::TestNats::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = stdout_of({
        let mut c = atlas(dir.path(), &[]);
        c.args([
            "init",
            "--non-interactive",
            "--mode",
            "cluster",
            "--database-url",
            &database.url,
            "--nats-url",
            &nats.url,
        ]);
        c
    });
    assert!(out.contains("cluster mode, profile production"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets/database.url"))
            .unwrap()
            .trim(),
        database.url
    );
    let env = [
        ("ATLAS_EVENTS__NATS__STREAM", nats.stream.as_str()),
        ("ATLAS_EVENTS__NATS__DLQ_STREAM", nats.dlq_stream.as_str()),
        ("ATLAS_EVENTS__NATS__SUBJECT_PREFIX", nats.subject_prefix.as_str()),
        ("ATLAS_EVENTS__NATS__STORAGE", "memory"),
    ];
    let shown = stdout_of({
        let mut c = atlas(dir.path(), &env);
        c.args(["config", "show"]);
        c
    });
    assert!(shown.contains("profile = \"production\""), "{shown}");
    assert!(
        shown.contains("broker = \"nats\"") || shown.contains("\"broker\":\"nats\""),
        "{shown}"
    );
    let migrated = stdout_of({
        let mut c = atlas(dir.path(), &env);
        c.args(["migrate", "up"]);
        c
    });
    assert!(migrated.contains("applied"), "{migrated}");
    let (mut server, base) = serve(dir.path(), &env);
    assert_eq!(http_status(&format!("{base}/ready")).unwrap(), 200);
    stop(&mut server);
}

/// Spans an OTLP receiver of the test was sent (over HTTP as JSON, or over
/// gRPC): every span of every export request, flattened, in OTLP's JSON form.
#[derive(Clone, Default)]
struct SpanSink(std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>);

impl SpanSink {
    /// Keep the spans of one export request (`ExportTraceServiceRequest` as JSON).
    fn receive(&self, request: &serde_json::Value) {
        let mut spans = self.0.lock().unwrap();
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }

    /// Receive OTLP/HTTP (JSON); returns the traces endpoint.
    async fn start(&self) -> String {
        let sink = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    sink.receive(&body);
                    axum::Json(serde_json::json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Receive OTLP/gRPC (a collector's `TraceService`); returns the endpoint.
    async fn start_grpc(&self) -> String {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap()
        });
        url
    }

    fn spans(&self) -> Vec<serde_json::Value> {
        self.0.lock().unwrap().clone()
    }
}

fn attribute<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for SpanSink {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        self.receive(&serde_json::to_value(request.into_inner()).unwrap());
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Create an item as part of trace `trace`, under span `parent`.
async fn post_in_trace(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    trace: &str,
    parent: &str,
    title: &str,
) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(token)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(&serde_json::json!({"title": title}))
        .send()
        .await
        .unwrap()
}

/// A realtime stream, open (the server's hub reads no event while nobody
/// listens).
async fn open_event_stream(client: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    let stream = client
        .get(format!("{base}/api/v1/events/stream?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream
}

/// `telemetry.otlp_protocol = "grpc"`: an embedded server sends its spans to
/// a gRPC collector, and the request, its outbox write and the audit sink's
/// handling of the event arrive as one trace, each the child of the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_grpc() {
    let sink = SpanSink::default();
    let endpoint = sink.start_grpc().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = CHEAP_HASHING.to_vec();
    env.extend([
        ("ATLAS_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("ATLAS_TELEMETRY__OTLP_PROTOCOL", "grpc"),
    ]);
    let (mut server, base) = serve(dir.path(), &env);
    let client = reqwest::Client::new();
    let (token, url) = sign_up_with_collection(&client, &base, "grpc@otlp.org").await;
    // Written while nobody listens: the realtime hub passes it over.
    let unheard = "11111111111111111111111111111111";
    let created = post_in_trace(&client, &url, &token, unheard, "2222222222222222", "Nobody listens").await;
    assert_eq!(created.status(), 201);
    // The hub looks every poll interval (50 ms): let it see nobody.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listener = open_event_stream(&client, &base, &token).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let created = post_in_trace(&client, &url, &token, trace, "b7ad6b7169203331", "Sent over gRPC").await;
    assert_eq!(created.status(), 201);
    // The audit sink takes the event within a poll interval or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&mut server);
    drop(listener);
    let spans: Vec<serde_json::Value> = sink
        .spans()
        .into_iter()
        .filter(|s| s["traceId"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(trace)))
        .collect();
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    let one = |pred: &dyn Fn(&serde_json::Value) -> bool| -> &serde_json::Value {
        let found: Vec<&serde_json::Value> = spans.iter().filter(|s| pred(s)).collect();
        assert_eq!(found.len(), 1, "{names:?}");
        found[0]
    };
    // Names and kinds of OpenTelemetry's HTTP, database and messaging conventions.
    let request = one(&|s| s["name"] == "POST /api/v1/collections/{id}/items");
    assert_eq!(request["parentSpanId"], "b7ad6b7169203331");
    assert_eq!(request["kind"], 2, "a server span (SPAN_KIND_SERVER)");
    assert_eq!(attribute(request, "http.route"), Some("/api/v1/collections/{id}/items"));
    let status = request["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "http.response.status_code");
    assert_eq!(
        status.unwrap()["value"]["intValue"],
        "201",
        "an integer (OTLP JSON writes int64 as a string)"
    );
    let write = one(&|s| s["name"] == "INSERT outbox");
    assert_eq!(write["kind"], 3, "a client span (SPAN_KIND_CLIENT)");
    assert_eq!(attribute(write, "db.system.name"), Some("sqlite"));
    assert_eq!(write["parentSpanId"], request["spanId"]);
    let audit = one(&|s| s["name"] == "process ItemCreated" && attribute(s, "consumer") == Some("audit"));
    assert_eq!(attribute(audit, "event_type"), Some("ItemCreated"));
    assert_eq!(
        audit["parentSpanId"], write["spanId"],
        "embedded: the consumer reads the outbox row"
    );
    let realtime = one(&|s| s["name"] == "process ItemCreated" && attribute(s, "consumer") == Some("realtime"));
    assert_eq!(realtime["parentSpanId"], write["spanId"], "the realtime hub's fan-out");
    let consumers: Vec<String> = sink
        .spans()
        .iter()
        .filter(|s| s["traceId"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(unheard)))
        .filter_map(|s| attribute(s, "consumer").map(str::to_string))
        .collect();
    assert!(
        consumers.iter().any(|c| c == "audit"),
        "the event nobody listened to was handled: {consumers:?}"
    );
    assert!(
        !consumers.iter().any(|c| c == "realtime"),
        "no fan-out without a listener: {consumers:?}"
    );
}

/// With traces exported over OTLP, in nats mode, one trace holds the
/// request, the consumers of its event (audit, rules …), the job a rule
/// enqueued, and the consumers of the job's own write, each span the child
/// of the one that caused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_request_consumers_and_job_over_otlp() {
    let Some(nats) = atlas_testkit::TestNats::new().await else {
        return;
    };
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let sink = SpanSink::default();
    let endpoint = sink.start().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("derive.yaml"),
        "name: derive\non: ItemCreated\ndo:\n  - enqueue_job: {type: APPLY_DERIVED_TAGS, payload: {item_id: '${event.entity.id}'}}\n",
    )
    .unwrap();
    let rules_dir = rules.display().to_string();
    let env = cluster_env(
        &database,
        &nats,
        &[
            ("ATLAS_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("ATLAS_TELEMETRY__OTLP_PROTOCOL", "http/json"),
            ("ATLAS_RULES__DIR", rules_dir.as_str()),
            ("ATLAS_JOBS__POLL_INTERVAL_MS", "50"),
        ],
    );
    let (mut server, base) = serve(dir.path(), &env);
    let client = reqwest::Client::new();
    let (token, url) = sign_up_with_collection(&client, &base, "trace@otlp.org").await;
    let listener = open_event_stream(&client, &base, &token).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let item: serde_json::Value = client
        .post(&url)
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"title": "Traced", "metadata": {"enrichment": {"site_name": "Trace Site"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item_url = format!("{base}/api/v1/items/{}", item["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = get_json(&client, &item_url, &token).await;
        if now["tags"].as_array().unwrap().iter().any(|t| t == "trace site") {
            break;
        }
        assert!(Instant::now() < deadline, "the rule's job did not tag the item: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the consumers of the job's ItemUpdated run, then stop: the
    // exporter flushes on the way out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(&mut server);
    drop(listener);
    let spans: Vec<serde_json::Value> = sink
        .spans()
        .into_iter()
        .filter(|s| s["traceId"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(trace)))
        .collect();
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{} {}", s["name"], attribute(s, "consumer").unwrap_or_default()))
        .collect();
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| -> Vec<&serde_json::Value> {
        spans.iter().filter(|s| pred(s)).collect()
    };
    let requests = find(&|s| s["name"] == "POST /api/v1/collections/{id}/items");
    assert_eq!(requests.len(), 1, "{names:?}");
    let request = requests[0];
    assert_eq!(
        request["parentSpanId"].as_str().map(str::to_ascii_lowercase).as_deref(),
        Some("00f067aa0ba902b7")
    );
    let consumed = |consumer: &str, event_type: &str| -> Vec<&serde_json::Value> {
        find(&|s| {
            s["name"] == format!("process {event_type}").as_str()
                && attribute(s, "consumer") == Some(consumer)
                && attribute(s, "event_type") == Some(event_type)
        })
    };
    let by_id = |id: &serde_json::Value| spans.iter().find(|s| s["spanId"] == *id);
    // A consumer's span → the relay's publish → the outbox write → `cause`.
    let written_under = |consumer_span: &serde_json::Value, cause: &serde_json::Value| {
        let publish = by_id(&consumer_span["parentSpanId"]).expect("the consumer's parent span was exported");
        assert!(
            publish["name"].as_str().is_some_and(|n| n.starts_with("publish ")),
            "{publish}"
        );
        assert_eq!(publish["kind"], 4, "a producer span");
        let write = by_id(&publish["parentSpanId"]).expect("the publish's parent span was exported");
        assert_eq!(write["name"], "INSERT outbox", "{write}");
        assert_eq!(attribute(write, "db.system.name"), Some("postgresql"));
        assert_eq!(write["parentSpanId"], cause["spanId"], "{write}");
    };
    for consumer in ["audit", "rules", "webhooks"] {
        let c = consumed(consumer, "ItemCreated");
        assert_eq!(c.len(), 1, "{consumer}: {names:?}");
        written_under(c[0], request);
    }
    // The search indexer follows the stream too, but may index an item from
    // a rebuild of its index rather than from the event (a session that
    // starts over rebuilds), and then the event has no indexer span (one run
    // under CI load had none): when there is one, it sits in the same place.
    for c in consumed("search", "ItemCreated") {
        written_under(c, request);
    }
    // The realtime hub reads the outbox itself, in nats mode too: its span
    // sits under the write, beside the publish.
    let realtime = consumed("realtime", "ItemCreated");
    assert_eq!(realtime.len(), 1, "{names:?}");
    let write = by_id(&realtime[0]["parentSpanId"]).expect("the hub's parent span was exported");
    assert_eq!(write["name"], "INSERT outbox", "{write}");
    assert_eq!(write["parentSpanId"], request["spanId"]);
    let rules = consumed("rules", "ItemCreated")[0];
    assert_eq!(attribute(rules, "messaging.operation.type"), Some("process"));
    assert_eq!(rules["kind"], 5, "a consumer span (SPAN_KIND_CONSUMER)");
    let jobs = find(&|s| s["name"] == "job" && attribute(s, "job_type") == Some("APPLY_DERIVED_TAGS"));
    assert_eq!(jobs.len(), 1, "{names:?}");
    assert_eq!(
        jobs[0]["parentSpanId"], rules["spanId"],
        "the job run is a child of the rule that enqueued it"
    );
    let after_job = consumed("audit", "ItemUpdated");
    assert_eq!(after_job.len(), 1, "{names:?}");
    // The job's own write, published and consumed, under the job's span.
    written_under(after_job[0], jobs[0]);
}
