//! Write transactions under concurrency: on SQLite they commit in groups;
//! each writer's outcome must still be its own.

use std::time::Duration;

use atlas_db::sqlx::{self, Row};
use atlas_db::{Database, Param, Statement};
use atlas_testkit::{both_backends, TestBackend, TestDatabase};

async fn setup(backend: TestBackend) -> Option<(TestDatabase, Database)> {
    let test_db = TestDatabase::new(backend).await?;
    let db = test_db.connect().await;
    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(db.writer())
        .await
        .unwrap();
    Some((test_db, db))
}

async fn count(db: &Database) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM notes")
        .fetch_one(db.reader())
        .await
        .unwrap()
        .get(0)
}

async fn concurrent_writers_keep_their_own_outcome(backend: TestBackend) {
    let Some((_guard, db)) = setup(backend).await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await?;
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                .bind(i)
                .bind("first")
                .execute(&mut *tx)
                .await?;
            // Every fifth writer fails after its first statement (a duplicate key).
            if i % 5 == 0 {
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                    .bind(i)
                    .bind("again")
                    .execute(&mut *tx)
                    .await?;
            }
            // Every seventh gives up without committing.
            if i % 7 == 0 {
                return Ok::<bool, sqlx::Error>(false);
            }
            tx.commit().await?;
            Ok(true)
        }));
    }
    let mut committed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Ok(true) = t.await.unwrap() {
            committed.push(i as i64);
        }
    }
    let expected: Vec<i64> = (0..200).filter(|i| i % 5 != 0 && i % 7 != 0).collect();
    assert_eq!(committed, expected);
    let rows: Vec<i64> = sqlx::query("SELECT id FROM notes ORDER BY id")
        .fetch_all(db.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, expected, "exactly the committed writers' rows exist");
    db.close().await;
}
both_backends!(concurrent_writers, concurrent_writers_keep_their_own_outcome);

async fn an_abandoned_writer_releases_the_write_lock(backend: TestBackend) {
    let Some((_guard, db)) = setup(backend).await else {
        return;
    };
    {
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'gone')")
            .execute(&mut *tx)
            .await
            .unwrap();
        // Dropped without commit.
    }
    // The next writer is not blocked and the dropped write is gone.
    let mut tx = tokio::time::timeout(Duration::from_secs(5), db.begin())
        .await
        .expect("not blocked")
        .unwrap();
    sqlx::query("INSERT INTO notes (id, body) VALUES (2, 'kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
    // A cancelled writer (its future dropped mid-transaction) is undone too.
    let db2 = db.clone();
    let task = tokio::spawn(async move {
        let mut tx = db2.begin().await.unwrap();
        sqlx::query("INSERT INTO notes (id, body) VALUES (3, 'cancelled')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    task.abort();
    let _ = task.await;
    let mut tx = tokio::time::timeout(Duration::from_secs(5), db.begin())
        .await
        .expect("not blocked")
        .unwrap();
    sqlx::query("INSERT INTO notes (id, body) VALUES (4, 'after')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i64> = sqlx::query("SELECT id FROM notes ORDER BY id")
        .fetch_all(db.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [2, 4]);
    // Other users of the write pool get their turn between groups.
    sqlx::query("INSERT INTO notes (id, body) VALUES (5, 'direct')")
        .execute(db.writer())
        .await
        .unwrap();
    assert_eq!(count(&db).await, 3);
    db.close().await;
}
both_backends!(abandoned_writers, an_abandoned_writer_releases_the_write_lock);

/// Writers abandoned at random points (clients hanging up mid-request) never
/// break the writers around them, and never the write path itself.
async fn cancelled_writers_do_not_disturb_others(backend: TestBackend) {
    let Some((_guard, db)) = setup(backend).await else {
        return;
    };
    for round in 0..30i64 {
        let mut tasks = Vec::new();
        for i in 0..64i64 {
            let db = db.clone();
            let id = round * 1000 + i;
            let write = async move {
                let mut tx = db.begin().await?;
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'x')")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            };
            // Half the writers are cut off somewhere between their first
            // statement and the end of their group's commit.
            let cut = (i % 2 == 0).then(|| Duration::from_micros((i as u64 * 7919 + round as u64 * 104_729) % 4000));
            tasks.push(tokio::spawn(async move {
                match cut {
                    Some(limit) => match tokio::time::timeout(limit, write).await {
                        Ok(result) => (id, false, result),
                        Err(_) => (id, true, Ok(())),
                    },
                    None => (id, false, write.await),
                }
            }));
        }
        for t in tasks {
            let (id, cut, result) = t.await.unwrap();
            if cut {
                continue;
            }
            assert!(result.is_ok(), "writer {id} failed: {result:?}");
            let found = sqlx::query("SELECT 1 FROM notes WHERE id = $1")
                .bind(id)
                .fetch_optional(db.reader())
                .await
                .unwrap();
            assert!(found.is_some(), "committed writer {id} lost its row");
        }
    }
    // Still healthy.
    let mut tx = tokio::time::timeout(Duration::from_secs(5), db.begin())
        .await
        .expect("not blocked")
        .unwrap();
    sqlx::query("INSERT INTO notes (id, body) VALUES (-1, 'end')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.close().await;
}
both_backends!(cancelled_writers, cancelled_writers_do_not_disturb_others);

/// Writers cancelled at any point (a client that disconnects mid-request)
/// must not leave a pooled connection inside a transaction: a later plain
/// write on that connection would otherwise never commit.
async fn cancelled_writers_leave_no_open_transaction(backend: TestBackend) {
    let Some((test_db, db)) = setup(backend).await else {
        return;
    };
    for round in 0..400u64 {
        let db2 = db.clone();
        let attempt = async move {
            let mut tx = db2.begin().await?;
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'cancelled')")
                .bind(100_000 + round as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        // Cut the writer off somewhere between BEGIN and COMMIT.
        let _ = tokio::time::timeout(Duration::from_micros(round % 40 * 25), attempt).await;
    }
    // A plain write on every pooled connection at once (all held together,
    // so each runs on a different one) must be visible to a connection from
    // outside the pool right away.
    let mut held = Vec::new();
    while let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_millis(300), db.writer().acquire()).await {
        held.push(conn);
    }
    assert!(!held.is_empty());
    for (i, conn) in held.iter_mut().enumerate() {
        sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'plain')")
            .bind(i as i64)
            .execute(&mut **conn)
            .await
            .unwrap();
    }
    let mut outside = <sqlx::AnyConnection as sqlx::Connection>::connect(&test_db.url)
        .await
        .unwrap();
    let plain: i64 = sqlx::query("SELECT COUNT(*) FROM notes WHERE body = 'plain'")
        .fetch_one(&mut outside)
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        plain,
        held.len() as i64,
        "a pooled connection was left inside a transaction"
    );
    drop(held);
}
both_backends!(
    cancelled_writers_and_the_pool,
    cancelled_writers_leave_no_open_transaction
);

/// Background work keeps its own connections on PostgreSQL: with every
/// connection of the main pool held (requests queued on a lock, say), a
/// query through `background()` still runs at once.
#[tokio::test]
async fn background_work_is_not_starved_by_a_full_main_pool() {
    let Some(test_db) = atlas_testkit::TestDatabase::new(atlas_testkit::TestBackend::Postgres).await else {
        return;
    };
    let db = Database::connect(&atlas_db::DatabaseSettings {
        url: test_db.url.clone(),
        max_connections: 2,
        busy_timeout: std::time::Duration::from_secs(5),
        background_connections: 1,
    })
    .await
    .unwrap();
    let held = [
        db.writer().acquire().await.unwrap(),
        db.writer().acquire().await.unwrap(),
    ];
    let starved = tokio::time::timeout(std::time::Duration::from_millis(300), db.writer().acquire()).await;
    assert!(starved.is_err(), "the main pool is exhausted");
    let background = db.background();
    let one: i64 = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        atlas_db::sqlx::query_scalar("SELECT 1").fetch_one(background.writer()),
    )
    .await
    .expect("the background pool answers while the main pool is full")
    .unwrap();
    assert_eq!(one, 1);
    drop(held);
    db.close().await;
}

/// Two processes' worth of writers on one SQLite file (a CLI command next to
/// a running server): each reads, then writes, in a transaction. They wait
/// for each other instead of failing with "database is locked". (SQLite
/// only: on PostgreSQL such read-then-insert races are the application's to
/// avoid, as everywhere else.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_two_sqlite_databases_wait_for_each_other() {
    let Some((test_db, first)) = setup(TestBackend::Sqlite).await else {
        return;
    };
    let second = test_db.connect().await;
    let mut tasks = Vec::new();
    for (n, db) in [first.clone(), second.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..50i64 {
                let mut tx = db.begin().await?;
                let next: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM notes")
                    .fetch_one(&mut *tx)
                    .await?
                    .get(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                    .bind(next)
                    .bind(format!("writer {n}, note {i}"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("no writer fails");
    }
    assert_eq!(count(&first).await, 100);
    second.close().await;
}

fn note(id: i64, body: &str) -> Statement {
    Statement::new("INSERT INTO notes (id, body) VALUES ($1, $2)")
        .bind(id)
        .bind(body)
}

/// Batches (on SQLite, a direct connection's groups) and transactions (sqlx
/// groups) interleave, beside autocommit writes through the writer pool:
/// each batch is all or nothing, and nothing fails for a lock.
async fn batches_and_transactions_interleave(backend: TestBackend) {
    let Some((_guard, db)) = setup(backend).await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..120i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let mut batch = vec![note(i, "batch"), note(1000 + i, "batch, second row")];
                // Every sixth writer's batch fails at its last statement.
                if i % 6 == 0 {
                    batch.push(note(i, "again"));
                }
                match db.write_batch(batch).await {
                    Ok(()) => Ok(true),
                    Err(e) if i % 6 == 0 => {
                        assert!(!e.is_foreign_key_violation(), "{e}");
                        Ok(false)
                    }
                    Err(e) => Err(e.to_string()),
                }
            } else {
                let mut tx = db.begin().await.map_err(|e| e.to_string())?;
                note(i, "transaction")
                    .execute(&mut tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                Ok(true)
            }
        }));
    }
    // Autocommit writes through the writer pool, as consumers write their offsets.
    let autocommit = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..40i64 {
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                    .bind(5000 + i)
                    .bind("autocommit")
                    .execute(db.writer())
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        })
    };
    let mut committed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap().expect("only the duplicate batches fail") {
            committed.push(i as i64);
        }
    }
    autocommit.await.unwrap().expect("autocommit writes do not fail");
    let expected: Vec<i64> = (0..120).filter(|i| i % 6 != 0).collect();
    assert_eq!(committed, expected);
    let mut rows: Vec<i64> = expected.clone();
    rows.extend(expected.iter().filter(|i| *i % 2 == 0).map(|i| 1000 + i));
    rows.extend(5000..5040);
    rows.sort();
    let stored: Vec<i64> = sqlx::query("SELECT id FROM notes ORDER BY id")
        .fetch_all(db.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, rows, "exactly the committed writers' rows exist");
    // Short reads see them too (on SQLite through the direct connections).
    let bodies = db
        .read_rows(
            "SELECT body FROM notes WHERE id >= $1 AND id < $2 ORDER BY id",
            &[Param::Int(1000), Param::Int(1005)],
            |row| row.text(0),
        )
        .await
        .unwrap();
    assert_eq!(
        bodies,
        ["batch, second row", "batch, second row"],
        "1002 and 1004 (writer 0's batch failed)"
    );
    db.close().await;
}
both_backends!(batches_interleave, batches_and_transactions_interleave);

/// A batch refused by a foreign key or a unique key writes nothing and says
/// which, on both backends (on SQLite the direct connection enforces foreign
/// keys too).
async fn a_batch_refused_by_a_foreign_key_writes_nothing(backend: TestBackend) {
    let Some((_guard, db)) = setup(backend).await else {
        return;
    };
    sqlx::query("CREATE TABLE replies (id BIGINT PRIMARY KEY, note_id BIGINT NOT NULL REFERENCES notes (id))")
        .execute(db.writer())
        .await
        .unwrap();
    let err = db
        .write_batch(vec![
            note(1, "parent"),
            Statement::new("INSERT INTO replies (id, note_id) VALUES ($1, $2)")
                .bind(1i64)
                .bind(99i64),
        ])
        .await
        .expect_err("no note 99");
    assert!(err.is_foreign_key_violation(), "{err:?}");
    assert_eq!(count(&db).await, 0, "the batch's first row went with it");
    db.write_batch(vec![
        note(1, "parent"),
        Statement::new("INSERT INTO replies (id, note_id) VALUES ($1, $2)")
            .bind(1i64)
            .bind(1i64),
    ])
    .await
    .expect("a valid batch commits after a failed one");
    assert_eq!(count(&db).await, 1);
    // A key that is already there is told apart from a foreign key.
    let err = db
        .write_batch(vec![note(2, "new"), note(1, "taken")])
        .await
        .expect_err("note 1 exists");
    assert!(err.is_unique_violation(), "{err:?}");
    assert!(!err.is_foreign_key_violation(), "{err:?}");
    assert_eq!(count(&db).await, 1, "note 2 went with the failed batch");
    db.close().await;
}
both_backends!(batch_foreign_key, a_batch_refused_by_a_foreign_key_writes_nothing);

/// The database file of a SQLite test database.
fn sqlite_file(test_db: &TestDatabase) -> std::path::PathBuf {
    test_db
        .url
        .strip_prefix("sqlite://")
        .map(std::path::PathBuf::from)
        .expect("a SQLite URL names its file")
}

/// Under sustained writes the WAL is copied back into the database file by
/// the checkpoint task, not by the writers' commits (their own checkpoints
/// are only a backstop far away): the rows reach the main file while the
/// writes go on. (SQLite only: PostgreSQL has no such file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_task_copies_the_wal_back() {
    let Some((test_db, db)) = setup(TestBackend::Sqlite).await else {
        return;
    };
    let file = sqlite_file(&test_db);
    let body = "x".repeat(1000);
    for i in 0..2000i64 {
        db.write_batch(vec![note(i, &body)]).await.expect("write");
    }
    // 2,000 rows of 1 KB: about 500 pages, written 2,000 times over in the
    // WAL. Without a checkpoint the main file would still be the empty
    // schema's few pages.
    let mut size = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        size = std::fs::metadata(&file).expect("database file").len();
        if size > 1_500_000 {
            break;
        }
    }
    assert!(size > 1_500_000, "the rows reached the database file ({size} bytes)");
    assert_eq!(count(&db).await, 2000);
    db.close().await;
}

/// Writes that never pause still let the WAL start again from its
/// beginning: the checkpoint task asks the write thread to finish what it
/// could not copy, so the WAL file stays below the writers' backstop
/// (10,000 pages, 41.2 MB with frame headers) instead of growing to it.
/// (SQLite only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_again_under_writes_that_never_pause() {
    let Some((test_db, db)) = setup(TestBackend::Sqlite).await else {
        return;
    };
    let wal = std::path::PathBuf::from(format!("{}-wal", sqlite_file(&test_db).display()));
    // Eight writers at once, so that the write thread always has a group
    // waiting, each rewriting a row of its own about a page long: every
    // update appends a frame, 40,000 in all, four times the backstop.
    let body = "x".repeat(3500);
    for w in 0..8i64 {
        db.write_batch(vec![note(w, &body)]).await.expect("insert");
    }
    let writers: Vec<_> = (0..8i64)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..5000i64 {
                    let body = format!("{i:>3500}");
                    db.write_batch(vec![Statement::new("UPDATE notes SET body = $1 WHERE id = $2")
                        .bind(body)
                        .bind(w)])
                        .await
                        .expect("update");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }
    assert_eq!(count(&db).await, 8);
    let size = std::fs::metadata(&wal).expect("WAL file").len();
    assert!(
        size < 30_000_000,
        "the WAL started again long before the backstop: {size} bytes"
    );
    db.close().await;
}

/// A named local lock is one lock for every clone of a handle, its
/// background handle included, and another lock under another name or for
/// another database.
#[tokio::test]
async fn local_locks_are_shared_by_the_handles_of_one_database() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let Some(test_db) = TestDatabase::new(backend).await else {
            continue;
        };
        let settings = atlas_db::DatabaseSettings {
            url: test_db.url.clone(),
            max_connections: 2,
            busy_timeout: std::time::Duration::from_secs(5),
            background_connections: 1,
        };
        let db = Database::connect(&settings).await.unwrap();
        let other = Database::connect(&settings).await.unwrap();
        let lock = db.local_lock("chain");
        let held = lock.lock().await;
        for handle in [db.clone(), db.background()] {
            assert!(
                handle.local_lock("chain").try_lock().is_err(),
                "{backend:?}: a clone sees the lock held"
            );
        }
        assert!(db.local_lock("other").try_lock().is_ok(), "{backend:?}: another name");
        assert!(
            other.local_lock("chain").try_lock().is_ok(),
            "{backend:?}: another handle"
        );
        drop(held);
        assert!(
            db.background().local_lock("chain").try_lock().is_ok(),
            "{backend:?}: released"
        );
        db.close().await;
        other.close().await;
    }
}
