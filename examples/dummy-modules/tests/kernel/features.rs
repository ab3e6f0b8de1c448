//! A module whose cargo feature is off contributes no routes, tables or
//! consumers. CI runs this file with and without `--no-default-features`.

use atlas_db::sqlx;
use atlas_kernel::ModuleRegistry;
use atlas_testkit::{both_backends, TestBackend, TestServer};

async fn feature_gating(backend: TestBackend) {
    let beta_on = cfg!(feature = "beta");
    let registry = ModuleRegistry::discover().unwrap();
    let names = registry.names();
    assert!(names.contains(&"alpha"));
    assert_eq!(names.contains(&"beta"), beta_on, "modules: {names:?}");

    let Some(server) = TestServer::start(backend, registry, |_| {}).await else {
        return;
    };

    // Routes.
    let ping = server.client.get(server.url("/api/v1/beta/ping")).send().await.unwrap();
    assert_eq!(ping.status(), if beta_on { 200 } else { 404 });
    let doc: serde_json::Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["paths"].get("/api/v1/beta/ping").is_some(), beta_on);
    assert!(doc["paths"].get("/api/v1/alpha/echo").is_some());

    // Tables.
    let db = server.database.connect().await;
    assert!(sqlx::query("SELECT COUNT(*) FROM alpha_notes")
        .fetch_one(db.reader())
        .await
        .is_ok());
    assert_eq!(
        sqlx::query("SELECT COUNT(*) FROM beta_things")
            .fetch_one(db.reader())
            .await
            .is_ok(),
        beta_on
    );
    db.close().await;
    server.stop().await.unwrap();

    // Consumers.
    let db2 = atlas_testkit::TestDatabase::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let atlas = atlas_kernel::Atlas::build(
        atlas_testkit::test_settings(&db2, dir.path()),
        ModuleRegistry::discover().unwrap(),
    )
    .await
    .unwrap();
    let consumers: Vec<String> = atlas.consumers().iter().map(|c| c.name().to_string()).collect();
    assert!(consumers.contains(&"alpha-consumer".to_string()));
    assert_eq!(consumers.contains(&"beta-consumer".to_string()), beta_on);
}
both_backends!(module_feature_gating, feature_gating);
