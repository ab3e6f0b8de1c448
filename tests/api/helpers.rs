//! `spawn_atlas`: the production application on an ephemeral port with a
//! fresh database, plus request helpers.

use atlas_db::sqlx::{self, Row};
use atlas_db::Database;
use atlas_events::Envelope;
use atlas_kernel::{ModuleRegistry, Settings};
use atlas_testkit::{TestBackend, TestServer};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

pub struct App {
    pub server: TestServer,
    pub db: Database,
}

/// A response: status, JSON body (or `Null`), headers.
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Resp {
    /// Asserts the spec's error shape and the code, returning the body.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert!(
            self.body["message"].is_string() && self.body["details"].is_object(),
            "{}",
            self.body
        );
        &self.body
    }
}

pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

pub async fn spawn_atlas(backend: TestBackend) -> Option<App> {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: TestBackend, configure: impl FnOnce(&mut Settings)) -> Option<App> {
    let server = TestServer::start(backend, ModuleRegistry::discover().expect("modules"), configure).await?;
    let db = server.database.connect().await;
    Some(App { server, db })
}

impl App {
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.server.client.request(method, self.server.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn register(&self, email: &str) -> User {
        let r = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"email": email, "password": "password-123"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        User {
            id: r.body["user"]["id"].as_str().unwrap().into(),
            email: r.body["user"]["email"].as_str().unwrap().into(),
            token: r.body["access_token"].as_str().unwrap().into(),
            refresh: r.body["refresh_token"].as_str().unwrap().into(),
        }
    }

    /// Create a collection owned by `owner`; returns its id.
    pub async fn collection(&self, owner: &User, name: &str) -> String {
        let r = self
            .post("/api/v1/collections", &owner.token, json!({"name": name}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    pub async fn add_member(&self, owner: &User, collection: &str, user: &User, role: &str) {
        let r = self
            .post(
                &format!("/api/v1/collections/{collection}/members"),
                &owner.token,
                json!({"email": user.email, "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }

    pub async fn item(&self, user: &User, collection: &str, body: Value) -> Value {
        let r = self
            .post(&format!("/api/v1/collections/{collection}/items"), &user.token, body)
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    /// Every envelope in the outbox, in order.
    pub async fn outbox(&self) -> Vec<Envelope> {
        let rows = sqlx::query("SELECT sequence, envelope FROM outbox ORDER BY sequence")
            .fetch_all(self.db.reader())
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let mut e: Envelope = serde_json::from_str(&r.get::<String, _>(1)).unwrap();
                e.sequence = Some(r.get(0));
                e
            })
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(self.db.reader())
            .await
            .unwrap()
            .get::<i64, _>(0)
    }

    pub async fn stop(self) {
        self.db.close().await;
        self.server.stop().await.unwrap();
    }
}
