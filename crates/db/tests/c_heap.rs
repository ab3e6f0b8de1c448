//! The SQLite write thread gives the C heap's free memory back to the OS
//! once writes stop (glibc alone returns only the top of a heap).
//!
//! One test in a binary of its own: it reads this process's resident
//! memory, which other tests running beside it would disturb. SQLite only:
//! on PostgreSQL nothing of the database lives in the server's C heap.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::time::{Duration, Instant};

use atlas_db::sqlx;
use atlas_db::Statement;
use atlas_testkit::{TestBackend, TestDatabase};

/// Anonymous resident memory of this process, in KiB.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const BLOCK: usize = 16 * 1024;
const BLOCKS: usize = 2048;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_thread_returns_free_c_heap_memory_after_writes() {
    let test_db = TestDatabase::new(TestBackend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    sqlx::query("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(db.writer())
        .await
        .unwrap();
    let note = |id: i64| {
        Statement::new("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .bind(id)
            .bind("note")
    };
    // Start the write thread and let it pass its first trim.
    db.write_batch(vec![note(1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Free pages in the middle of the C heap, as a burst of SQLite's work
    // leaves them: 32 MiB of blocks, all freed but every 64th, so none of
    // the freed memory is at the top where glibc would release it itself.
    let base = rss_anon_kib();
    let blocks: Vec<usize> = (0..BLOCKS)
        .map(|_| {
            // SAFETY: a plain allocation, filled so its pages are resident.
            unsafe {
                let p = libc::malloc(BLOCK);
                assert!(!p.is_null());
                std::ptr::write_bytes(p.cast::<u8>(), 0xa5, BLOCK);
                p as usize
            }
        })
        .collect();
    for (i, &p) in blocks.iter().enumerate() {
        if i % 64 != 63 {
            // SAFETY: allocated above with malloc, freed once.
            unsafe { libc::free(p as *mut libc::c_void) };
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rss_anon_kib();
    // Without a write nothing trims: the freed blocks are still resident.
    assert!(
        before.saturating_sub(base) > 24 * 1024,
        "{base} KiB before the blocks, {before} KiB after freeing them"
    );

    db.write_batch(vec![note(2)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = rss_anon_kib();
    while before.saturating_sub(now) < 24 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the freed blocks stayed resident after the write: {before} KiB, then {now} KiB"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = rss_anon_kib();
    }

    for (i, &p) in blocks.iter().enumerate() {
        if i % 64 == 63 {
            // SAFETY: the blocks kept above, freed once.
            unsafe { libc::free(p as *mut libc::c_void) };
        }
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
        .fetch_one(db.reader())
        .await
        .unwrap();
    assert_eq!(rows, 2, "both writes committed");
}
