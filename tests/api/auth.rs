//! Registration, sign-in, token rotation, personal tokens, rate limits.

use atlas_auth::token::Claims;
use atlas_auth::JwtCodec;
use atlas_testkit::{both_backends, TestBackend};
use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_atlas, spawn_with, App};

async fn anon(app: &App, method: Method, path: &str, body: serde_json::Value) -> crate::helpers::Resp {
    app.call(method, path, None, Some(body)).await
}

async fn register_and_login(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let r = anon(
        &app,
        Method::POST,
        "/api/v1/auth/register",
        json!({"email": "  Ada@Example.ORG ", "password": "password-123", "display_name": "Ada"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.headers["location"], "/api/v1/auth/me");
    assert_eq!(r.body["user"]["email"], "ada@example.org");
    assert_eq!(r.body["user"]["display_name"], "Ada");
    assert_eq!(r.body["user"]["is_admin"], false);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    assert!(r.body["user"].get("password_hash").is_none());
    let token = r.body["access_token"].as_str().unwrap().to_string();

    let me = app.get("/api/v1/auth/me", &token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["email"], "ada@example.org");
    assert!(me.body["created_at"].is_string() && me.body["id"].is_string());

    // Duplicate, in another case.
    anon(
        &app,
        Method::POST,
        "/api/v1/auth/register",
        json!({"email": "ADA@example.org", "password": "password-456"}),
    )
    .await
    .error(409, "conflict");

    // Sign in; wrong password and unknown email get the same answer.
    let ok = anon(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        json!({"email": "ada@EXAMPLE.org", "password": "password-123"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body["refresh_token"].as_str().unwrap().starts_with("atlas_rt_"));
    let wrong = anon(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        json!({"email": "ada@example.org", "password": "password-124"}),
    )
    .await;
    let unknown = anon(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        json!({"email": "nobody@example.org", "password": "password-123"}),
    )
    .await;
    assert_eq!(wrong.error(401, "unauthorized"), unknown.error(401, "unauthorized"));
    app.stop().await;
}
both_backends!(registration_and_sign_in, register_and_login);

async fn registration_validation(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let cases = [
        (json!({"email": "not-an-email", "password": "password-123"}), "email"),
        (json!({"email": "a b@x.org", "password": "password-123"}), "email"),
        (json!({"email": "a@x.org", "password": "short"}), "password"),
        (json!({"email": "a@x.org", "password": "p".repeat(257)}), "password"),
        (
            json!({"email": "a@x.org", "password": "password-123", "display_name": "d".repeat(101)}),
            "display_name",
        ),
        (json!({"password": "password-123"}), "email"),
        (
            json!({"email": "a@x.org", "password": "password-123", "admin": true}),
            "admin",
        ),
    ];
    for (body, field) in cases {
        let r = anon(&app, Method::POST, "/api/v1/auth/register", body.clone()).await;
        assert_eq!(r.error(422, "validation_failed")["details"]["field"], field, "{body}");
    }
    // Nothing was created.
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    app.stop().await;
}
both_backends!(registration_is_validated, registration_validation);

fn server_secret(app: &App) -> Vec<u8> {
    std::fs::read_to_string(app.server.data_dir.path().join("server.secret"))
        .unwrap()
        .trim()
        .as_bytes()
        .to_vec()
}

async fn bad_tokens(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let user = app.register("tok@example.org").await;
    assert_eq!(app.get("/api/v1/auth/me", &user.token).await.status, 200);

    let codec = JwtCodec::hs256(&server_secret(&app), "atlas", "atlas-api", 900);
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, aud: &str, iss: &str| Claims {
        sub: user.id.clone(),
        iss: iss.into(),
        aud: aud.into(),
        iat: now - 1000,
        nbf: now - 1000,
        exp,
        jti: "t".into(),
        adm: true,
    };
    // A correctly forged token is accepted: the checks below are real.
    assert_eq!(
        app.get(
            "/api/v1/auth/me",
            &codec.sign(&claims(now + 60, "atlas-api", "atlas")).unwrap()
        )
        .await
        .status,
        200
    );

    let expired = codec.sign(&claims(now - 60, "atlas-api", "atlas")).unwrap();
    let wrong_aud = codec.sign(&claims(now + 60, "someone-else", "atlas")).unwrap();
    let wrong_iss = codec.sign(&claims(now + 60, "atlas-api", "evil")).unwrap();
    let other_key = JwtCodec::hs256(b"another-secret-another-secret-0000", "atlas", "atlas-api", 900)
        .sign(&claims(now + 60, "atlas-api", "atlas"))
        .unwrap();
    let mut tampered = user.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = user.token.split('.').nth(1).unwrap();
    let alg_none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), payload);
    let hs512 = {
        let header = b64.encode(r#"{"alg":"HS512","typ":"JWT"}"#);
        format!("{header}.{payload}.{}", user.token.split('.').nth(2).unwrap())
    };
    for (what, token) in [
        ("expired", expired),
        ("wrong audience", wrong_aud),
        ("wrong issuer", wrong_iss),
        ("other key", other_key),
        ("tampered signature", tampered),
        ("alg none", alg_none),
        ("other alg", hs512),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let r = app.get("/api/v1/auth/me", &token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        r.error(401, "unauthorized");
    }
    app.call(Method::GET, "/api/v1/auth/me", None, None)
        .await
        .error(401, "unauthorized");
    app.call_with(
        Method::GET,
        "/api/v1/auth/me",
        None,
        None,
        &[("authorization", "Basic YTpi")],
    )
    .await
    .error(401, "unauthorized");
    app.stop().await;
}
both_backends!(invalid_access_tokens_are_refused, bad_tokens);

async fn refresh_rotation(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let user = app.register("rot@example.org").await;
    let first = anon(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": user.refresh}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second_refresh = first.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, user.refresh);
    assert_eq!(
        app.get("/api/v1/auth/me", first.body["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );

    // Replaying the used token revokes the family: the newer token dies too.
    anon(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": user.refresh}),
    )
    .await
    .error(401, "unauthorized");
    anon(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": second_refresh}),
    )
    .await
    .error(401, "unauthorized");

    // Another sign-in is another family, unaffected.
    let login = anon(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        json!({"email": "rot@example.org", "password": "password-123"}),
    )
    .await;
    let fresh = login.body["refresh_token"].as_str().unwrap().to_string();
    let access = login.body["access_token"].as_str().unwrap().to_string();
    let r = anon(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": fresh}),
    )
    .await;
    assert_eq!(r.status, 200);
    let latest = r.body["refresh_token"].as_str().unwrap().to_string();

    // Logout revokes the family.
    let out = app
        .post("/api/v1/auth/logout", &access, json!({"refresh_token": latest}))
        .await;
    assert_eq!(out.status, 204);
    let ended = anon(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": latest}),
    )
    .await;
    ended.error(401, "unauthorized");
    assert!(
        ended.body["message"].as_str().unwrap().contains("sign-in has ended"),
        "a signed-out token is not called a reuse: {}",
        ended.body
    );
    anon(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        json!({"refresh_token": "atlas_rt_unknown"}),
    )
    .await
    .error(401, "unauthorized");
    app.stop().await;
}
both_backends!(refresh_tokens_rotate_and_reuse_revokes_the_family, refresh_rotation);

async fn personal_tokens(backend: TestBackend) {
    let Some(app) = spawn_atlas(backend).await else { return };
    let user = app.register("pat@example.org").await;
    let created = app
        .post(
            "/api/v1/auth/tokens",
            &user.token,
            json!({"name": "backup", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let pat = created.body["token"].as_str().unwrap().to_string();
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(pat.starts_with("atlas_pat_"));
    assert!(created.body["expires_at"].is_string());

    // Usable as a bearer token, stored only hashed, never listed.
    assert_eq!(app.get("/api/v1/auth/me", &pat).await.body["email"], "pat@example.org");
    let stored = app
        .count(&format!(
            "SELECT COUNT(*) FROM personal_tokens WHERE token_hash = '{}'",
            atlas_auth::hash_token(&pat)
        ))
        .await;
    assert_eq!(stored, 1);
    let leaked = app
        .count(&format!(
            "SELECT COUNT(*) FROM personal_tokens WHERE token_hash = '{pat}'"
        ))
        .await;
    assert_eq!(leaked, 0);
    let list = app.get("/api/v1/auth/tokens", &user.token).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert!(list.body["items"][0].get("token").is_none());
    assert_eq!(list.body["next_cursor"], serde_json::Value::Null);

    app.post("/api/v1/auth/tokens", &user.token, json!({"name": " "}))
        .await
        .error(422, "validation_failed");
    app.post(
        "/api/v1/auth/tokens",
        &user.token,
        json!({"name": "x", "expires_in_days": 0}),
    )
    .await
    .error(422, "validation_failed");

    // Someone else cannot revoke it.
    let other = app.register("other@example.org").await;
    app.delete(&format!("/api/v1/auth/tokens/{id}"), &other.token)
        .await
        .error(404, "not_found");

    assert_eq!(
        app.delete(&format!("/api/v1/auth/tokens/{id}"), &user.token)
            .await
            .status,
        204
    );
    app.get("/api/v1/auth/me", &pat).await.error(401, "unauthorized");
    app.get("/api/v1/auth/me", "atlas_pat_made-up")
        .await
        .error(401, "unauthorized");
    app.stop().await;
}
both_backends!(personal_access_tokens, personal_tokens);

async fn sign_in_rate_limits(backend: TestBackend) {
    let Some(app) = spawn_with(backend, |s| {
        s.auth.login_per_account_per_minute = 3;
        s.auth.login_per_ip_per_minute = 6;
    })
    .await
    else {
        return;
    };
    app.register("rl@example.org").await;
    let attempt = |email: &'static str| {
        let app = &app;
        async move {
            anon(
                app,
                Method::POST,
                "/api/v1/auth/login",
                json!({"email": email, "password": "wrong-password"}),
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(attempt("rl@example.org").await.status, 401);
    }
    let limited = attempt("rl@example.org").await;
    limited.error(429, "rate_limited");
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Per account: another account from the same address still gets an answer…
    assert_eq!(attempt("someone@example.org").await.status, 401);
    // …until the per-address limit (register + 5 logins so far) is reached.
    attempt("third@example.org").await.error(429, "rate_limited");
    app.stop().await;
}
both_backends!(sign_in_is_rate_limited_per_account_and_address, sign_in_rate_limits);
