//! Realtime streams: only the caller's collections, live within a second,
//! membership changes applied at once, resume without gaps.

use std::time::Duration;

use atlas_testkit::{both_backends, TestBackend};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_with, App, User};

/// A minimal Server-Sent Events reader.
struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

struct Message {
    id: i64,
    event: String,
    data: Value,
}

impl Sse {
    async fn connect(app: &App, user: &User, last_event_id: Option<i64>) -> Sse {
        // EventSource-style: the token in the query string.
        let mut req = app.server.client.get(
            app.server
                .url(&format!("/api/v1/events/stream?access_token={}", user.token)),
        );
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Sse {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event, or `None` if none arrives within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Some(Message {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn expect(&mut self, event: &str) -> Message {
        let m = self
            .next(Duration::from_secs(1))
            .await
            .unwrap_or_else(|| panic!("no {event} within 1 s"));
        assert_eq!(m.event, event, "{}", m.data);
        m
    }
}

async fn realtime(backend: TestBackend) {
    let Some(app) = spawn_with(backend, |s| s.events.poll_interval_ms = 20).await else {
        return;
    };
    let a = app.register("a@rt.org").await;
    let b = app.register("b@rt.org").await;
    let ca = app.collection(&a, "A's").await;
    let cb = app.collection(&b, "B's").await;

    // Let the process's outbox tailer pass the setup events: a live stream
    // starts with what commits after it connects.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut stream = Sse::connect(&app, &a, None).await;
    app.item(&b, &cb, json!({"title": "b-private"})).await;
    let mine = app.item(&a, &ca, json!({"title": "a-1"})).await;
    let m = stream.expect("ItemCreated").await;
    assert_eq!(m.data["entity"]["id"], mine["id"], "B's private item was skipped");
    assert_eq!(m.data["sequence"], m.id);
    assert_eq!(m.data["data"]["title"], "a-1");

    // Added to B's collection: A sees it from then on.
    app.add_member(&b, &cb, &a, "viewer").await;
    assert_eq!(
        stream.expect("MembershipAdded").await.data["data"]["user_id"],
        a.id.as_str()
    );
    let shared = app.item(&b, &cb, json!({"title": "b-shared"})).await;
    assert_eq!(stream.expect("ItemCreated").await.data["entity"]["id"], shared["id"]);

    // Removed: A learns it, then sees nothing more of that collection.
    let r = app
        .delete(&format!("/api/v1/collections/{cb}/members/{}", a.id), &b.token)
        .await;
    assert_eq!(r.status, 204);
    stream.expect("MembershipRemoved").await;
    app.item(&b, &cb, json!({"title": "b-after"})).await;
    let next = app.item(&a, &ca, json!({"title": "a-2"})).await;
    let m = stream.expect("ItemCreated").await;
    assert_eq!(m.data["entity"]["id"], next["id"]);
    let last_seen = m.id;

    // Resume: disconnect, miss three events, reconnect with Last-Event-ID.
    drop(stream);
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(app.item(&a, &ca, json!({"title": format!("missed-{i}")})).await["id"].clone());
    }
    app.item(&b, &cb, json!({"title": "b-while-away"})).await;
    let mut resumed = Sse::connect(&app, &a, Some(last_seen)).await;
    for id in &missed {
        assert_eq!(
            &resumed.expect("ItemCreated").await.data["entity"]["id"],
            id,
            "no gap, in order"
        );
    }
    let live = app.item(&a, &ca, json!({"title": "live"})).await;
    assert_eq!(resumed.expect("ItemCreated").await.data["entity"]["id"], live["id"]);
    assert!(resumed.next(Duration::from_millis(300)).await.is_none(), "nothing else");

    // The same feed over a WebSocket, with the bearer header.
    let url = app
        .server
        .url(&format!("/api/v1/events/ws?since={last_seen}"))
        .replace("http://", "ws://");
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", a.token).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(1), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let envelope: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(envelope["entity"]["id"], missed[0]);

    // No token, or a bad one.
    let r = app.call(Method::GET, "/api/v1/events/stream", None, None).await;
    r.error(401, "unauthorized");
    let r = app
        .call(Method::GET, "/api/v1/events/stream?access_token=nope", None, None)
        .await;
    r.error(401, "unauthorized");
    app.stop().await;
}
both_backends!(realtime_streams_deliver_only_visible_events, realtime);
