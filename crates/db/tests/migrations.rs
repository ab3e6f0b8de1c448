//! Migrations and the pool against real SQLite and PostgreSQL databases.

use std::time::Duration;

use atlas_db::sqlx::{self, Row};
use atlas_db::{migrations_from_dir, Database, DatabaseSettings, Migration, MigrationError, Migrator};
use atlas_testkit::{both_backends, TestBackend, TestDatabase};
use include_dir::{include_dir, Dir};

static FIXTURES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/migrations");

async fn connect(backend: TestBackend) -> Option<(TestDatabase, Database)> {
    let test_db = TestDatabase::new(backend).await?;
    let db = test_db.connect().await;
    Some((test_db, db))
}

fn fixtures() -> Vec<Migration> {
    migrations_from_dir("widgets", &FIXTURES).expect("fixture migrations")
}

async fn plan_up_and_idempotence(backend: TestBackend) {
    let Some((_guard, db)) = connect(backend).await else {
        return;
    };
    let all = fixtures();
    let migrator = Migrator::new(&db);
    let plan = migrator.plan(&all).await.unwrap();
    assert_eq!(
        plan.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["widgets", "gadgets"]
    );
    let applied = migrator.up(&all).await.unwrap();
    assert_eq!(applied.len(), 2);
    assert!(migrator.plan(&all).await.unwrap().is_empty());
    assert!(
        migrator.up(&all).await.unwrap().is_empty(),
        "a second up applies nothing"
    );
    let rows = sqlx::query("SELECT module, version, name, checksum FROM _migrations ORDER BY version")
        .fetch_all(db.reader())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<String, _>(0), "widgets");
    assert_eq!(rows[0].get::<i64, _>(1), 20260101000000);
    assert_eq!(rows[0].get::<String, _>(3), all[0].checksum(db.backend()));

    // The shared SQL subset works: $n parameters, 0/1 flags, big integers.
    sqlx::query("INSERT INTO widgets (id, size, shiny) VALUES ($1, $2, $3)")
        .bind("w1")
        .bind(5_000_000_000i64)
        .bind(1i64)
        .execute(db.writer())
        .await
        .unwrap();
    let row = sqlx::query("SELECT size, shiny FROM widgets WHERE id = $1")
        .bind("w1")
        .fetch_one(db.reader())
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 5_000_000_000);
    assert_eq!(row.get::<i64, _>(1), 1);
    db.close().await;
}
both_backends!(plan_up_and_idempotence_is, plan_up_and_idempotence);

async fn changed_applied_migration_is_refused(backend: TestBackend) {
    let Some((_guard, db)) = connect(backend).await else {
        return;
    };
    let mut all = fixtures();
    Migrator::new(&db).up(&all).await.unwrap();
    all[0].sqlite.push_str("\n-- edited");
    all[0].postgres.push_str("\n-- edited");
    let err = Migrator::new(&db).plan(&all).await.unwrap_err();
    assert!(
        matches!(err, MigrationError::ChecksumMismatch { ref name, .. } if name == "widgets"),
        "{err}"
    );
    assert!(Migrator::new(&db).up(&all).await.is_err());
    db.close().await;
}
both_backends!(changed_applied_migration, changed_applied_migration_is_refused);

async fn failing_migration_rolls_back(backend: TestBackend) {
    let Some((_guard, db)) = connect(backend).await else {
        return;
    };
    let broken = Migration {
        module: "broken".into(),
        version: 1,
        name: "half".into(),
        sqlite: "CREATE TABLE half_done (id TEXT); THIS IS NOT SQL;".into(),
        postgres: "CREATE TABLE half_done (id TEXT); THIS IS NOT SQL;".into(),
    };
    let err = Migrator::new(&db).up(std::slice::from_ref(&broken)).await.unwrap_err();
    assert!(err.to_string().contains("broken"), "{err}");
    // Nothing of it remains, and it is still pending.
    assert!(sqlx::query("SELECT 1 FROM half_done")
        .fetch_all(db.reader())
        .await
        .is_err());
    assert_eq!(Migrator::new(&db).plan(&[broken]).await.unwrap().len(), 1);
    db.close().await;
}
both_backends!(failing_migration, failing_migration_rolls_back);

#[tokio::test]
async fn sqlite_pragmas_are_set() {
    let Some((_guard, db)) = connect(TestBackend::Sqlite).await else {
        return;
    };
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(db.writer())
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(fk, 1);
    db.close().await;
}

#[test]
fn a_migration_without_its_other_dialect_is_an_error() {
    static ONE_SIDED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/one_sided");
    let err = migrations_from_dir("x", &ONE_SIDED).unwrap_err();
    assert!(
        matches!(
            err,
            MigrationError::MissingDialect {
                missing: "postgres",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_url_names_the_key() {
    let err = Database::connect(&DatabaseSettings {
        url: "mysql://x".into(),
        max_connections: 1,
        busy_timeout: Duration::from_secs(1),
        background_connections: 0,
    })
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("database.url"), "{err}");
}
