//! The RBAC matrix: every endpoint × every kind of caller → expected status.
//! Nothing is readable by a non-member (404, existence not revealed), no
//! write succeeds for a viewer (403), admins get no special collection access.

use atlas_db::sqlx;
use atlas_testkit::{both_backends, TestBackend};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_atlas, App, User};

const CALLERS: [&str; 6] = ["anonymous", "non-member", "viewer", "editor", "owner", "admin"];

struct Cast {
    owner: User,
    editor: User,
    viewer: User,
    outsider: User,
    admin: User,
    target: User,
    invitee: User,
}

struct Fixture {
    collection: String,
    item: String,
}

async fn fixture(app: &App, cast: &Cast) -> Fixture {
    let collection = app.collection(&cast.owner, "Matrix").await;
    app.add_member(&cast.owner, &collection, &cast.editor, "editor").await;
    app.add_member(&cast.owner, &collection, &cast.viewer, "viewer").await;
    app.add_member(&cast.owner, &collection, &cast.target, "viewer").await;
    let item = app
        .item(
            &cast.owner,
            &collection,
            json!({"title": "secret plans", "tags": ["x"]}),
        )
        .await;
    Fixture {
        collection,
        item: item["id"].as_str().unwrap().to_string(),
    }
}

async fn rbac_matrix(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let cast = Cast {
        owner: app.register("owner@m.org").await,
        editor: app.register("editor@m.org").await,
        viewer: app.register("viewer@m.org").await,
        outsider: app.register("outsider@m.org").await,
        admin: make_admin(&app, "admin@m.org").await,
        target: app.register("target@m.org").await,
        invitee: app.register("invitee@m.org").await,
    };
    type Row = (&'static str, Method, &'static str, Option<Value>, [u16; 6]);
    let rows: Vec<Row> = vec![
        (
            "read collection",
            Method::GET,
            "/api/v1/collections/{c}",
            None,
            [401, 404, 200, 200, 200, 404],
        ),
        (
            "update collection",
            Method::PATCH,
            "/api/v1/collections/{c}",
            Some(json!({"name": "renamed"})),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            "list members",
            Method::GET,
            "/api/v1/collections/{c}/members",
            None,
            [401, 404, 200, 200, 200, 404],
        ),
        (
            "add member",
            Method::POST,
            "/api/v1/collections/{c}/members",
            Some(json!({"email": "invitee@m.org", "role": "viewer"})),
            [401, 404, 403, 403, 201, 404],
        ),
        (
            "change role",
            Method::PATCH,
            "/api/v1/collections/{c}/members/{t}",
            Some(json!({"role": "editor"})),
            [401, 404, 403, 403, 200, 404],
        ),
        (
            "remove member",
            Method::DELETE,
            "/api/v1/collections/{c}/members/{t}",
            None,
            [401, 404, 403, 403, 204, 404],
        ),
        (
            "create item",
            Method::POST,
            "/api/v1/collections/{c}/items",
            Some(json!({"title": "new"})),
            [401, 404, 403, 201, 201, 404],
        ),
        (
            "list items",
            Method::GET,
            "/api/v1/collections/{c}/items",
            None,
            [401, 404, 200, 200, 200, 404],
        ),
        (
            "list tags",
            Method::GET,
            "/api/v1/collections/{c}/tags",
            None,
            [401, 404, 200, 200, 200, 404],
        ),
        (
            "read item",
            Method::GET,
            "/api/v1/items/{i}",
            None,
            [401, 404, 200, 200, 200, 404],
        ),
        (
            "update item",
            Method::PATCH,
            "/api/v1/items/{i}",
            Some(json!({"title": "changed"})),
            [401, 404, 403, 200, 200, 404],
        ),
        (
            "delete item",
            Method::DELETE,
            "/api/v1/items/{i}",
            None,
            [401, 404, 403, 204, 204, 404],
        ),
        (
            "delete collection",
            Method::DELETE,
            "/api/v1/collections/{c}",
            None,
            [401, 404, 403, 403, 204, 404],
        ),
    ];
    let mut failures = Vec::new();
    for (name, method, template, body, expected) in &rows {
        for (k, caller) in CALLERS.iter().enumerate() {
            // A fresh collection per cell, so each write starts from the same state.
            let f = fixture(&app, &cast).await;
            let path = template
                .replace("{c}", &f.collection)
                .replace("{i}", &f.item)
                .replace("{t}", &cast.target.id);
            let token = match *caller {
                "anonymous" => None,
                "non-member" => Some(cast.outsider.token.as_str()),
                "viewer" => Some(cast.viewer.token.as_str()),
                "editor" => Some(cast.editor.token.as_str()),
                "owner" => Some(cast.owner.token.as_str()),
                _ => Some(cast.admin.token.as_str()),
            };
            let r = app.call(method.clone(), &path, token, body.clone()).await;
            if r.status != expected[k] {
                failures.push(format!(
                    "{name} as {caller}: expected {}, got {} {}",
                    expected[k], r.status, r.body
                ));
            }
            if r.status == 404 {
                // A 404 must not leak what it hides.
                assert!(!r.body.to_string().contains("secret plans"));
            }
        }
    }
    assert!(failures.is_empty(), "RBAC mismatches:\n{}", failures.join("\n"));

    // Caller-scoped endpoints.
    app.call(Method::POST, "/api/v1/collections", None, Some(json!({"name": "x"})))
        .await
        .error(401, "unauthorized");
    app.call(Method::GET, "/api/v1/collections", None, None)
        .await
        .error(401, "unauthorized");
    for u in [&cast.outsider, &cast.viewer, &cast.admin] {
        assert_eq!(
            app.post("/api/v1/collections", &u.token, json!({"name": "mine"}))
                .await
                .status,
            201
        );
        let listed = app.get("/api/v1/collections", &u.token).await;
        assert!(listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "Matrix" || u.id != cast.outsider.id));
    }
    // The outsider's and admin's listings hold only their own collections.
    for u in [&cast.outsider, &cast.admin] {
        let listed = app.get("/api/v1/collections", &u.token).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{}", listed.body);
    }
    assert!(cast.invitee.id != cast.target.id);
    app.stop().await;
}
both_backends!(rbac_matrix_over_http, rbac_matrix);

/// Register, flip `is_admin` in the database (what `atlas user create
/// --admin` does), and sign in again so the token carries it.
pub(crate) async fn make_admin(app: &App, email: &str) -> User {
    let mut user = app.register(email).await;
    sqlx::query("UPDATE users SET is_admin = 1 WHERE id = $1")
        .bind(&user.id)
        .execute(app.db.writer())
        .await
        .unwrap();
    let login = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": "password-123"})),
        )
        .await;
    assert_eq!(login.body["user"]["is_admin"], true);
    user.token = login.body["access_token"].as_str().unwrap().to_string();
    user
}
