//! Graceful shutdown lets in-flight requests finish.

use std::time::{Duration, Instant};

use atlas_kernel::ModuleRegistry;
use atlas_testkit::{TestBackend, TestServer};

#[tokio::test]
async fn in_flight_requests_finish_before_the_server_stops() {
    let mut s = TestServer::start(TestBackend::Sqlite, ModuleRegistry::discover().unwrap(), |_| {})
        .await
        .unwrap();
    let client = s.client.clone();
    let url = s.url("/api/v1/alpha/slow?ms=700");
    let slow = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let base = s.base_url.clone();
    s.begin_shutdown();
    let response = slow.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    s.wait().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // New connections are refused once stopped.
    assert!(reqwest::get(format!("{base}/health")).await.is_err());
}

#[tokio::test]
async fn requests_that_outlive_the_grace_period_are_cut() {
    let mut s = TestServer::start(TestBackend::Sqlite, ModuleRegistry::discover().unwrap(), |st| {
        st.server.shutdown_grace_secs = 1;
    })
    .await
    .unwrap();
    let client = s.client.clone();
    let url = s.url("/api/v1/alpha/slow?ms=20000");
    let slow = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    s.begin_shutdown();
    s.wait().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped after {:?}",
        started.elapsed()
    );
    slow.abort();
}
