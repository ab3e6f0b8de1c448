//! Rules and webhooks over HTTP: every action end to end, load errors with
//! their line and column, hot reload of global rule files, versions and
//! isolation of collection rules, the chain depth limit and the self-trigger
//! guard, signed webhooks with retries and dead letters, and dry runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atlas_kernel::Settings;
use atlas_testkit::{both_backends, TestBackend};
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{spawn_with, App, Resp, User};
use crate::rbac::make_admin;

/// Settings for rule tests: global rules from `dir`, reloaded quickly,
/// quick retries, local webhook receivers allowed.
fn configure(dir: &Path) -> impl FnOnce(&mut Settings) + '_ {
    move |s: &mut Settings| {
        s.rules.dir = dir.to_path_buf();
        s.rules.reload_interval_ms = 100;
        s.rules.webhook_allow_networks = vec!["127.0.0.1".into()];
        s.rules.webhook_timeout_ms = 2000;
        s.events.poll_interval_ms = 20;
        s.events.max_deliver = 3;
        s.events.backoff_initial_ms = 50;
        s.events.backoff_max_ms = 200;
        s.jobs.poll_interval_ms = 50;
    }
}

/// Poll `f` until it returns `Some`, for up to 15 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the event log is fully handled by the `rules` and `webhooks`
/// consumers (their offsets reach the newest event) and stays so briefly.
async fn settle(app: &App) {
    let mut quiet = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let newest = app.count("SELECT COALESCE(MAX(sequence), 0) FROM outbox").await;
        let behind = app
            .count(&format!(
                "SELECT COUNT(*) FROM consumer_offsets WHERE consumer IN ('rules', 'webhooks') AND last_sequence < {newest}"
            ))
            .await;
        let known = app
            .count("SELECT COUNT(*) FROM consumer_offsets WHERE consumer IN ('rules', 'webhooks')")
            .await;
        quiet = if behind == 0 && known == 2 { quiet + 1 } else { 0 };
        if quiet >= 5 {
            return;
        }
        assert!(Instant::now() < deadline, "rules consumers did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send_yaml(app: &App, method: Method, path: &str, token: &str, yaml: &str) -> Resp {
    let r = app
        .server
        .client
        .request(method, app.server.url(path))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Resp { status, body, headers }
}

async fn get_item(app: &App, user: &User, id: &str) -> Value {
    let r = app.get(&format!("/api/v1/items/{id}"), &user.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn tags(item: &Value) -> Vec<String> {
    item["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

const GLOBAL_RULES: &str = r#"
- name: tag-rust
  on: [ItemCreated, ItemUpdated]
  when: 'event.data.title.lowerAscii().contains("rust") && !("rust" in event.data.tags)'
  do:
    - add_tags: [rust]
    - set_metadata: { classified_by: 'rule ${event.type}', first_seen_version: '${event.data.version}' }
- name: untag-draft
  on: [ItemCreated]
  when: '"draft" in event.data.tags'
  do:
    - remove_tags: [draft]
- name: enrich-links
  on: [ItemCreated]
  when: 'event.data.source_url != null'
  do:
    - enqueue_job: { type: APPLY_DERIVED_TAGS, payload: { item_id: '${event.entity.id}' } }
- name: intake
  on: [ItemCreated]
  when: 'event.data.title.startsWith("Intake")'
  do:
    - start_workflow: { type: ITEM_INTAKE, input: { item_id: '${event.entity.id}' } }
"#;

async fn every_action(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("global.yaml"), GLOBAL_RULES).unwrap();
    let Some(app) = spawn_with(backend, configure(dir.path())).await else {
        return;
    };
    let owner = app.register("owner@rules.org").await;
    let c = app.collection(&owner, "Rules").await;

    // add_tags + set_metadata (one change), remove_tags.
    let item = app
        .item(&owner, &c, json!({"title": "Learning Rust", "tags": ["draft", "book"]}))
        .await;
    let id = item["id"].as_str().unwrap().to_string();
    let tagged = eventually("the rules to change the item", || async {
        let i = get_item(&app, &owner, &id).await;
        (tags(&i).contains(&"rust".to_string()) && !tags(&i).contains(&"draft".to_string())).then_some(i)
    })
    .await;
    settle(&app).await;
    let item = get_item(&app, &owner, &id).await;
    assert_eq!(tags(&item), ["book", "rust"], "{item}");
    assert_eq!(item["metadata"]["classified_by"], "rule ItemCreated");
    assert_eq!(
        item["metadata"]["first_seen_version"], 1,
        "a whole template keeps the number's type"
    );
    assert!(tagged["version"].as_i64().unwrap() >= 2);
    // The rules' writes are ItemUpdated events caused by the ItemCreated.
    let outbox = app.outbox().await;
    let created = outbox
        .iter()
        .find(|e| e.event_type == "ItemCreated" && e.entity.id == id)
        .unwrap();
    let caused: Vec<_> = outbox
        .iter()
        .filter(|e| e.causation_id.as_deref() == Some(created.event_id.as_str()))
        .collect();
    assert_eq!(caused.len(), 2, "tag-rust and untag-draft each changed the item once");
    assert!(caused
        .iter()
        .all(|e| e.event_type == "ItemUpdated" && e.trace_id == created.trace_id));
    assert_eq!(caused[0].actor_user_id.as_deref(), Some(owner.id.as_str()));

    // enqueue_job: the job runs and its effect shows.
    let linked = app
        .item(
            &owner,
            &c,
            json!({"title": "A page", "source_url": "https://docs.example.org/guide",
                   "metadata": {"enrichment": {"site_name": "Docs Site"}}}),
        )
        .await;
    let linked_id = linked["id"].as_str().unwrap().to_string();
    let job = eventually("the rule's job", || async {
        let r = app.get("/api/v1/jobs?type=APPLY_DERIVED_TAGS", &owner.token).await;
        r.body["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(job["payload"]["item_id"], linked_id.as_str());
    eventually("the job's tags", || async {
        let i = get_item(&app, &owner, &linked_id).await;
        tags(&i).contains(&"docs site".to_string()).then_some(())
    })
    .await;

    // start_workflow: a workflow for the item, visible to its owner.
    let intake = app.item(&owner, &c, json!({"title": "Intake form"})).await;
    let intake_id = intake["id"].as_str().unwrap().to_string();
    let workflows = eventually("the rule's workflow", || async {
        let n = app
            .count(&format!(
                "SELECT COUNT(*) FROM workflows WHERE type = 'ITEM_INTAKE' AND input LIKE '%{intake_id}%'"
            ))
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(workflows, 1);
    settle(&app).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM workflows WHERE type = 'ITEM_INTAKE'")
            .await,
        1,
        "a redelivery or a later event does not start it again"
    );

    // A collection's own rule, written in YAML by its owner.
    let r = send_yaml(
        &app,
        Method::POST,
        &format!("/api/v1/collections/{c}/rules"),
        &owner.token,
        "name: mark-new\non: ItemCreated\ndo:\n  - add_tags: ['new-${event.data.version}']\n",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let fresh = app.item(&owner, &c, json!({"title": "Plain"})).await;
    let fresh_id = fresh["id"].as_str().unwrap().to_string();
    eventually("the collection rule", || async {
        tags(&get_item(&app, &owner, &fresh_id).await)
            .contains(&"new-1".to_string())
            .then_some(())
    })
    .await;
    app.stop().await;
}
both_backends!(each_action_end_to_end, every_action);

async fn load_errors_and_hot_reload(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.yaml");
    std::fs::write(
        &file,
        "- name: v1\n  on: [ItemCreated]\n  do:\n    - add_tags: [first]\n",
    )
    .unwrap();
    let Some(app) = spawn_with(backend, configure(dir.path())).await else {
        return;
    };
    let owner = app.register("reload@rules.org").await;
    let c = app.collection(&owner, "Reload").await;
    let tags_of_new_item = |title: &'static str| {
        let (app, owner, c) = (&app, &owner, &c);
        async move {
            let id = app.item(owner, c, json!({"title": title})).await["id"]
                .as_str()
                .unwrap()
                .to_string();
            settle(app).await;
            tags(&get_item(app, owner, &id).await)
        }
    };
    assert_eq!(tags_of_new_item("one").await, ["first"]);

    // A valid change applies without a restart.
    std::fs::write(
        &file,
        "- name: v2\n  on: [ItemCreated]\n  do:\n    - add_tags: [second]\n",
    )
    .unwrap();
    eventually("the changed file to apply", || async {
        (tags_of_new_item("two").await == ["second"]).then_some(())
    })
    .await;

    // A broken change keeps the rules in force.
    std::fs::write(
        &file,
        "- name: v3\n  on: [ItemCreated]\n  when: 'event.data.title =='\n  do:\n    - add_tags: [third]\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tags_of_new_item("three").await, ["second"]);

    // The same text through the API: the CEL error at the line of `when`.
    let r = send_yaml(
        &app,
        Method::POST,
        "/api/v1/rules/validate",
        &owner.token,
        &std::fs::read_to_string(&file).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["valid"], false);
    assert_eq!(r.body["errors"][0]["line"], 3, "{}", r.body);
    assert!(r.body["errors"][0]["message"].as_str().unwrap().starts_with("CEL:"));

    // Unknown fields and YAML syntax errors are placed too; a valid list is valid.
    let r = send_yaml(
        &app,
        Method::POST,
        "/api/v1/rules/validate",
        &owner.token,
        "- name: a\n  on: [ItemCreated]\n  do: [{add_tags: [x]}]\n- name: b\n  on: [ItemCreated]\n  whne: 'true'\n  do: [{add_tags: [x]}]\n",
    )
    .await;
    assert_eq!(
        (
            r.body["errors"][0]["line"].as_i64(),
            r.body["errors"][0]["column"].as_i64()
        ),
        (Some(6), Some(3)),
        "{}",
        r.body
    );
    let r = send_yaml(
        &app,
        Method::POST,
        "/api/v1/rules/validate",
        &owner.token,
        "name: [unclosed\n",
    )
    .await;
    assert_eq!(r.body["valid"], false, "{}", r.body);
    assert!(r.body["errors"][0]["line"].as_i64().unwrap() >= 1);
    let r = app
        .post(
            "/api/v1/rules/validate",
            &owner.token,
            json!([{"name": "ok", "on": "ItemCreated", "do": [{"add_tags": ["x"]}]}]),
        )
        .await;
    assert_eq!(r.body, json!({"valid": true, "errors": []}));

    // Fixing the file applies the fix; removing it removes its rules.
    std::fs::write(
        &file,
        "- name: v4\n  on: [ItemCreated]\n  when: 'event.data.title == \"four\"'\n  do:\n    - add_tags: [fourth]\n",
    )
    .unwrap();
    eventually("the fixed file to apply", || async {
        (tags_of_new_item("four").await == ["fourth"]).then_some(())
    })
    .await;
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tags_of_new_item("four").await.is_empty());
    app.stop().await;
}
both_backends!(load_errors_and_hot_reload_over_http, load_errors_and_hot_reload);

async fn collection_rules(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(app) = spawn_with(backend, configure(dir.path())).await else {
        return;
    };
    let owner = app.register("owner@versions.org").await;
    let co_owner = app.register("co@versions.org").await;
    let viewer = app.register("viewer@versions.org").await;
    let stranger = app.register("stranger@versions.org").await;
    let a = app.collection(&owner, "A").await;
    let b = app.collection(&stranger, "B").await;
    app.add_member(&owner, &a, &co_owner, "owner").await;
    app.add_member(&owner, &a, &viewer, "viewer").await;
    let base = format!("/api/v1/collections/{a}/rules");

    let rule = json!({"name": "tag-all", "on": ["ItemCreated"], "do": [{"add_tags": ["seen-by-a"]}]});
    let r = app.post(&base, &owner.token, rule.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["version"], 1);
    assert_eq!(
        app.post(&base, &co_owner.token, rule.clone())
            .await
            .error(409, "conflict")["code"],
        "conflict"
    );
    app.post(&base, &viewer.token, rule.clone())
        .await
        .error(403, "forbidden");
    app.get(&base, &viewer.token).await.error(403, "forbidden");
    app.get(&base, &stranger.token).await.error(404, "not_found");
    let bad = app
        .post(
            &base,
            &owner.token,
            json!({"name": "x", "on": ["ItemCreated"], "do": [{"enqueue_job": {"type": "NOOP"}}]}),
        )
        .await;
    bad.error(422, "validation_failed");
    assert!(
        bad.body["details"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("administrators"),
        "{}",
        bad.body
    );
    let listed = app.post(&base, &owner.token, json!([rule])).await;
    listed.error(422, "validation_failed");

    // A's rule sees A's events only.
    let in_a = app.item(&owner, &a, json!({"title": "in a"})).await;
    let in_b = app.item(&stranger, &b, json!({"title": "in b"})).await;
    settle(&app).await;
    assert_eq!(
        tags(&get_item(&app, &owner, in_a["id"].as_str().unwrap()).await),
        ["seen-by-a"]
    );
    assert!(tags(&get_item(&app, &stranger, in_b["id"].as_str().unwrap()).await).is_empty());

    // Update (by the other owner), then delete: three versions with authors.
    let r = send_yaml(
        &app,
        Method::PUT,
        &format!("{base}/{id}"),
        &co_owner.token,
        "name: tag-all\non: [ItemCreated]\nenabled: false\ndo:\n  - add_tags: [seen-by-a]\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["version"].as_i64(), r.body["definition"]["enabled"].as_bool()),
        (Some(2), Some(false))
    );
    let disabled = app.item(&owner, &a, json!({"title": "after disabling"})).await;
    settle(&app).await;
    assert!(tags(&get_item(&app, &owner, disabled["id"].as_str().unwrap()).await).is_empty());
    let r = send_yaml(
        &app,
        Method::PUT,
        &format!("{base}/{id}"),
        &owner.token,
        "name: tag-all\non: [ItemCreated]\nwhen: 'event.data.title =='\ndo: [{add_tags: [x]}]\n",
    )
    .await;
    r.error(422, "validation_failed");
    assert_eq!(r.body["details"]["errors"][0]["line"], 3, "{}", r.body);
    assert_eq!(app.delete(&format!("{base}/{id}"), &owner.token).await.status, 204);
    app.get(&format!("{base}/{id}"), &owner.token)
        .await
        .error(404, "not_found");
    let versions = app.get(&format!("{base}/{id}/versions"), &owner.token).await;
    assert_eq!(versions.status, 200, "{}", versions.body);
    let v: Vec<(i64, String, String)> = versions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["change"].as_str().unwrap().to_string(),
                v["author_user_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        v,
        [
            (1, "created".to_string(), owner.id.clone()),
            (2, "updated".to_string(), co_owner.id.clone()),
            (3, "deleted".to_string(), owner.id.clone()),
        ]
    );
    assert!(versions.body["items"][1]["source"]
        .as_str()
        .unwrap()
        .contains("enabled: false"));
    app.get(&format!("{base}/{id}/versions"), &viewer.token)
        .await
        .error(403, "forbidden");
    app.stop().await;
}
both_backends!(collection_rules_versions_and_isolation, collection_rules);

async fn chains(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    // A rule that changes the item on every ItemUpdated would loop without
    // the self-trigger guard; two rules that answer each other loop until
    // the depth limit.
    std::fs::write(
        dir.path().join("chain.yaml"),
        r#"
- name: stamp
  on: [ItemUpdated]
  when: 'event.data.title == "self"'
  do:
    - add_tags: [stamped]
    - set_metadata: { stamped_at_version: '${event.data.version}' }
- name: ping
  on: [ItemUpdated]
  when: 'event.data.title == "pingpong"'
  do:
    - set_metadata: { ping: '${event.data.version}' }
- name: pong
  on: [ItemUpdated]
  when: 'event.data.title == "pingpong"'
  do:
    - set_metadata: { pong: '${event.data.version}' }
"#,
    )
    .unwrap();
    let configure = configure(dir.path());
    let Some(app) = spawn_with(backend, |s| {
        configure(s);
        s.rules.max_chain_depth = 3;
    })
    .await
    else {
        return;
    };
    let owner = app.register("chain@rules.org").await;
    let c = app.collection(&owner, "Chains").await;

    let item = app.item(&owner, &c, json!({"title": "draft"})).await;
    let id = item["id"].as_str().unwrap().to_string();
    let r = app
        .patch(&format!("/api/v1/items/{id}"), &owner.token, json!({"title": "self"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    settle(&app).await;
    let item = get_item(&app, &owner, &id).await;
    assert_eq!(
        item["version"], 3,
        "the rule ran once and not on its own change: {item}"
    );
    assert_eq!(item["metadata"]["stamped_at_version"], 2);

    let other = app.item(&owner, &c, json!({"title": "start"})).await;
    let other_id = other["id"].as_str().unwrap().to_string();
    let r = app
        .patch(
            &format!("/api/v1/items/{other_id}"),
            &owner.token,
            json!({"title": "pingpong"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    settle(&app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(&app).await;
    // The user's update (v2) starts two chains (ping's and pong's change),
    // each answered by the other rule until an event of depth 4 > 3.
    let item = get_item(&app, &owner, &other_id).await;
    assert_eq!(item["version"], 2 + 2 * 4, "{item}");
    app.stop().await;
}
both_backends!(chain_depth_and_self_trigger, chains);

/// A webhook receiver: answers per path, records every request.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
    flaky_calls: Arc<Mutex<u32>>,
    /// `/down` answers 200 once this is set (the receiver came back).
    down_is_up: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
            let me = me.clone();
            async move {
                let path = uri.path().to_string();
                me.requests.lock().unwrap().push((path.clone(), headers, body));
                match path.as_str() {
                    "/ok" => StatusCode::NO_CONTENT,
                    "/bad" => StatusCode::BAD_REQUEST,
                    "/flaky" => {
                        let mut n = me.flaky_calls.lock().unwrap();
                        *n += 1;
                        if *n == 1 {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        }
                    }
                    "/down" if me.down_is_up.load(std::sync::atomic::Ordering::SeqCst) => StatusCode::OK,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    fn calls(&self, path: &str) -> Vec<(HeaderMap, String)> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

/// The Standard Webhooks check, written here independently of Atlas's code.
fn verify(secret_b64: &str, headers: &HeaderMap, body: &str) -> bool {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let key = STANDARD.decode(secret_b64).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", h("webhook-id"), h("webhook-timestamp"), body).as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let age = chrono::Utc::now().timestamp() - h("webhook-timestamp").parse::<i64>().unwrap_or(0);
    (0..300).contains(&age)
        && h("webhook-signature")
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn webhooks(backend: TestBackend) {
    let receiver = Receiver::default();
    let base = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_b64 = STANDARD.encode(b"a test secret of some length");
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("whsec_{secret_b64}\n")).unwrap();
    let hook = |name: &str, url: String| {
        format!(
            "- name: {name}\n  on: [ItemCreated]\n  when: 'event.data.title == \"hooked\"'\n  do:\n    - webhook: {{ url: '{url}', secret_file: '{}' }}\n",
            secret_file.display()
        )
    };
    let rules = [
        hook("ok", format!("{base}/ok")),
        hook("flaky", format!("{base}/flaky")),
        hook("bad", format!("{base}/bad")),
        hook("down", format!("{base}/down")),
        hook("private", "http://10.255.255.1/hook".into()),
    ]
    .concat();
    std::fs::write(dir.path().join("hooks.yaml"), rules).unwrap();
    let Some(app) = spawn_with(backend, configure(dir.path())).await else {
        return;
    };
    let owner = app.register("hooks@rules.org").await;
    let c = app.collection(&owner, "Hooks").await;
    let item = app.item(&owner, &c, json!({"title": "hooked"})).await;
    let item_id = item["id"].as_str().unwrap().to_string();

    // The event is dead-lettered for `webhooks` once `/down` used its
    // attempts: the first, then events.max_deliver (3) more.
    eventually("the webhook event to be dead-lettered", || async {
        (app.count("SELECT COUNT(*) FROM dead_letters WHERE consumer = 'webhooks'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let ok = receiver.calls("/ok");
    assert_eq!(ok.len(), 1, "delivered once, not again when the event was retried");
    let (headers, body) = &ok[0];
    assert!(verify(&secret_b64, headers, body), "signature verifies: {headers:?}");
    assert!(!verify(&STANDARD.encode(b"another secret"), headers, body));
    let envelope: Value = serde_json::from_str(body).unwrap();
    assert_eq!(envelope["type"], "ItemCreated");
    assert_eq!(envelope["entity"]["id"], item_id.as_str());
    assert_eq!(
        headers["webhook-id"].to_str().unwrap(),
        envelope["event_id"].as_str().unwrap()
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(receiver.calls("/flaky").len(), 2, "a 500 is retried");
    assert_eq!(receiver.calls("/bad").len(), 1, "a 400 is not retried");
    assert_eq!(receiver.calls("/down").len(), 4, "retried events.max_deliver times");
    let flaky = receiver.calls("/flaky");
    assert_eq!(
        flaky[0].0["webhook-id"], flaky[1].0["webhook-id"],
        "the same id on a retry"
    );

    // The delivery log, newest first, for the collection's owner.
    let log = app
        .get(
            &format!("/api/v1/webhooks/deliveries?collection_id={c}&limit=50"),
            &owner.token,
        )
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
    for d in log.body["items"].as_array().unwrap().iter().rev() {
        outcomes
            .entry(d["rule_name"].as_str().unwrap().to_string())
            .or_default()
            .push(d["outcome"].as_str().unwrap().to_string());
    }
    assert_eq!(outcomes["ok"], ["delivered"]);
    assert_eq!(outcomes["flaky"], ["retrying", "delivered"]);
    assert_eq!(outcomes["bad"], ["failed"]);
    assert_eq!(outcomes["down"], ["retrying", "retrying", "retrying", "dead"]);
    assert_eq!(
        outcomes["private"],
        ["refused"],
        "private addresses are refused by default"
    );
    let refused = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["rule_name"] == "private")
        .unwrap();
    assert!(refused["error"].as_str().unwrap().contains("private"), "{refused}");
    let dead = app
        .get(
            &format!("/api/v1/webhooks/deliveries?collection_id={c}&outcome=dead"),
            &owner.token,
        )
        .await;
    assert_eq!(dead.body["items"].as_array().unwrap().len(), 1);

    // The receiver is back: replaying the dead letter sends the webhook
    // again (and only the one that ended dead).
    receiver.down_is_up.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(atlas_events::dlq::request_replay(&app.db, None).await.unwrap(), 1);
    assert_eq!(
        down_after_replay(&app, &receiver, &c, &owner).await,
        DOWN_THEN_REPLAYED.map(|(n, o)| (n, o.to_string()))
    );
    assert_eq!(receiver.calls("/ok").len(), 1, "a delivered webhook is not sent again");
    assert_eq!(receiver.calls("/flaky").len(), 2);
    assert_eq!(receiver.calls("/bad").len(), 1);

    // Who may read the log.
    let stranger = app.register("stranger@hooks.org").await;
    app.get(
        &format!("/api/v1/webhooks/deliveries?collection_id={c}"),
        &stranger.token,
    )
    .await
    .error(404, "not_found");
    app.get("/api/v1/webhooks/deliveries", &owner.token)
        .await
        .error(403, "forbidden");
    let admin = make_admin(&app, "admin@hooks.org").await;
    let all = app.get("/api/v1/webhooks/deliveries?limit=2", &admin.token).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    assert!(all.body["next_cursor"].is_string());
    app.stop().await;
}
both_backends!(webhooks_signed_retried_and_dead_lettered, webhooks);

/// The `/down` webhook's log when the receiver came back before the replay:
/// three retries, the last delivery's attempt dead, the replay delivered.
const DOWN_THEN_REPLAYED: [(i64, &str); 5] = [
    (1, "retrying"),
    (2, "retrying"),
    (3, "retrying"),
    (4, "dead"),
    (5, "delivered"),
];

/// Once the `/down` webhook's dead letter was replayed: waits for its fifth
/// request, then lists its logged (attempt, outcome)s, oldest first.
async fn down_after_replay(app: &App, receiver: &Receiver, c: &str, owner: &User) -> Vec<(i64, String)> {
    eventually("the replayed webhook to be delivered", || async {
        (receiver.calls("/down").len() == 5).then_some(())
    })
    .await;
    let log = app
        .get(
            &format!("/api/v1/webhooks/deliveries?collection_id={c}&limit=50"),
            &owner.token,
        )
        .await;
    log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|d| d["rule_name"] == "down")
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap(),
                d["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// With NATS carrying the events, a failing webhook is tried as often as in
/// embedded mode (with the event's batch, then once per delivery of the
/// event alone), dead-lettered on the broker's last delivery, and sent
/// again when the dead letter is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_nats_are_dead_lettered_and_replayed() {
    let Some(nats) = atlas_testkit::TestNats::new().await else {
        return;
    };
    let receiver = Receiver::default();
    let base = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "a test secret").unwrap();
    std::fs::write(
        dir.path().join("hooks.yaml"),
        format!(
            "name: down\non: ItemCreated\ndo:\n  - webhook: {{ url: '{base}/down', secret_file: '{}' }}\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let configure = configure(dir.path());
    let Some(app) = spawn_with(TestBackend::Postgres, |s| {
        configure(s);
        nats.apply(s);
    })
    .await
    else {
        return;
    };
    let mut settings = Settings::default();
    nats.apply(&mut settings);
    let letters = atlas_events::dlq::DeadLetterStore::open(&app.db, &settings.events)
        .await
        .unwrap();
    let owner = app.register("hooks@nats.org").await;
    let c = app.collection(&owner, "Hooks").await;
    app.item(&owner, &c, json!({"title": "hooked"})).await;
    let dead = eventually("the webhook event to be dead-lettered", || async {
        let list = letters.list(Some("webhooks")).await.unwrap();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3, "events.max_deliver deliveries");
    assert_eq!(
        receiver.calls("/down").len(),
        4,
        "one attempt with the batch, then one per delivery"
    );

    receiver.down_is_up.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(letters.replay(None).await.unwrap(), 1);
    assert_eq!(
        down_after_replay(&app, &receiver, &c, &owner).await,
        DOWN_THEN_REPLAYED.map(|(n, o)| (n, o.to_string()))
    );
    assert!(letters.list(Some("webhooks")).await.unwrap().is_empty());
    app.stop().await;
}

async fn dry_run(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(app) = spawn_with(backend, configure(dir.path())).await else {
        return;
    };
    let owner = app.register("dry@rules.org").await;
    let c = app.collection(&owner, "Dry").await;
    let item = app.item(&owner, &c, json!({"title": "Rust and more"})).await;
    let id = item["id"].as_str().unwrap().to_string();
    settle(&app).await;
    let jobs_before = app.count("SELECT COUNT(*) FROM jobs").await;
    let events_before = app.count("SELECT COUNT(*) FROM outbox").await;
    let event = json!({"type": "ItemCreated", "event_id": "e-1",
        "entity": {"type": "item", "id": id, "collection_id": c},
        "data": {"title": "Rust and more", "version": 1, "tags": [], "source_url": "https://x.org"}});
    let r = app
        .post(
            "/api/v1/rules/test",
            &owner.token,
            json!({"event": event, "rules": GLOBAL_RULES}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["actions"],
        json!([
            {"rule": "enrich-links", "action": "enqueue_job",
             "args": {"type": "APPLY_DERIVED_TAGS", "payload": {"item_id": id}, "priority": 0, "max_attempts": null}},
            {"rule": "tag-rust", "action": "add_tags", "args": ["rust"]},
            {"rule": "tag-rust", "action": "set_metadata",
             "args": {"classified_by": "rule ItemCreated", "first_seen_version": 1}},
        ])
    );
    let r = app
        .post(
            "/api/v1/rules/test",
            &owner.token,
            json!({"event": event, "rules": [{"name": "hook", "on": "ItemCreated", "priority": 5,
                   "do": [{"webhook": {"url": "https://example.org/${event.entity.id}", "secret_env": "HOOK"}}]}]}),
        )
        .await;
    assert_eq!(
        r.body["actions"],
        json!([{"rule": "hook", "action": "webhook", "args": {"url": format!("https://example.org/{id}"), "secret_env": "HOOK"}}])
    );
    settle(&app).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM jobs").await,
        jobs_before,
        "no job was enqueued"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox").await,
        events_before,
        "nothing was written"
    );
    assert!(tags(&get_item(&app, &owner, &id).await).is_empty());
    let r = app
        .post("/api/v1/rules/test", &owner.token, json!({"event": {}, "rules": []}))
        .await;
    r.error(422, "validation_failed");
    let r = app
        .post(
            "/api/v1/rules/test",
            &owner.token,
            json!({"event": event, "rules": "- name: x\n  on: [Nope]\n  do: [{add_tags: [y]}]\n"}),
        )
        .await;
    r.error(422, "validation_failed");
    assert_eq!(r.body["details"]["errors"][0]["line"], 2, "{}", r.body);
    app.stop().await;
}
both_backends!(dry_run_changes_nothing, dry_run);
