//! Admission control for writes: a [`WriteGate`] that mutating requests pass
//! through before their handler runs.
//!
//! Background work in the same process (event consumers, a relay) reports
//! how far behind it is with [`WriteGate::report`]. While the largest
//! reported backlog is above the limit, new writes wait for it to come back
//! down, and after `max_wait` they are refused with `503 unavailable` and a
//! `Retry-After`. So when clients write faster than the background work can
//! follow, writes slow down to the rate it sustains instead of the backlog
//! growing for as long as the overload lasts. Reads are never held.
//!
//! A gate with a limit of 0 admits everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::ApiError;

/// Shared between the reporters (background tasks) and the middleware.
#[derive(Debug)]
pub struct WriteGate {
    max_backlog: u64,
    max_wait: Duration,
    backlogs: Mutex<HashMap<String, u64>>,
    /// The largest reported backlog.
    largest: watch::Sender<u64>,
}

/// Why a write was not admitted.
#[derive(Debug, thiserror::Error)]
#[error("background work is {backlog} events behind (limit {limit}); retry after {retry_after_secs} s")]
pub struct Overloaded {
    pub backlog: u64,
    pub limit: u64,
    pub retry_after_secs: u64,
}

impl From<Overloaded> for ApiError {
    fn from(e: Overloaded) -> Self {
        ApiError::Overloaded {
            message: e.to_string(),
            retry_after_secs: e.retry_after_secs,
        }
    }
}

impl WriteGate {
    /// A gate that holds writes while any backlog exceeds `max_backlog`
    /// (0: never), for at most `max_wait` each.
    pub fn new(max_backlog: u64, max_wait: Duration) -> Self {
        WriteGate {
            max_backlog,
            max_wait,
            backlogs: Mutex::new(HashMap::new()),
            largest: watch::Sender::new(0),
        }
    }

    /// A gate that admits everything.
    pub fn open() -> Self {
        WriteGate::new(0, Duration::ZERO)
    }

    pub fn max_backlog(&self) -> u64 {
        self.max_backlog
    }

    /// Record that `source` (a consumer, the relay) is `backlog` events
    /// behind.
    pub fn report(&self, source: &str, backlog: u64) {
        self.update(|backlogs| match backlogs.get_mut(source) {
            Some(b) => *b = backlog,
            None => {
                backlogs.insert(source.to_string(), backlog);
            }
        });
    }

    /// Forget `source` (it stopped).
    pub fn withdraw(&self, source: &str) {
        self.update(|backlogs| {
            backlogs.remove(source);
        });
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<String, u64>)) {
        let largest = {
            let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut backlogs);
            backlogs.values().copied().max().unwrap_or(0)
        };
        self.largest.send_if_modified(|current| {
            let changed = *current != largest;
            *current = largest;
            changed
        });
    }

    /// The largest backlog reported.
    pub fn backlog(&self) -> u64 {
        *self.largest.borrow()
    }

    fn admits(&self, backlog: u64) -> bool {
        self.max_backlog == 0 || backlog <= self.max_backlog
    }

    /// Wait until writes are admitted, or refuse after `max_wait`.
    ///
    /// An admitted write counts as one more event behind for every source
    /// until their next report: reports come once per batch, and without
    /// this every write arriving in between would pass on a stale figure.
    pub async fn admit(&self) -> Result<(), Overloaded> {
        self.wait_for_room().await?;
        if self.max_backlog > 0 {
            self.update(|backlogs| backlogs.values_mut().for_each(|b| *b = b.saturating_add(1)));
        }
        Ok(())
    }

    async fn wait_for_room(&self) -> Result<(), Overloaded> {
        if self.admits(self.backlog()) {
            return Ok(());
        }
        metrics::counter!("atlas_http_writes_held_total").increment(1);
        let mut rx = self.largest.subscribe();
        let waited = tokio::time::timeout(self.max_wait, rx.wait_for(|b| self.admits(*b))).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            // The sender lives as long as `self`, so only the timeout is
            // reachable; either way the write is not admitted.
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("atlas_http_writes_refused_total").increment(1);
                Err(Overloaded {
                    backlog: self.backlog(),
                    limit: self.max_backlog,
                    retry_after_secs: self.max_wait.as_secs().max(1),
                })
            }
        }
    }
}

/// Middleware: mutating requests (anything but GET, HEAD, OPTIONS) pass the
/// gate first.
pub async fn admit_writes(State(gate): State<Arc<WriteGate>>, request: Request, next: Next) -> Response {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if gate.max_backlog > 0 && !reads.contains(request.method()) {
        if let Err(overloaded) = gate.admit().await {
            return ApiError::from(overloaded).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_wait_while_the_largest_backlog_is_over_the_limit() {
        let gate = Arc::new(WriteGate::new(100, Duration::from_secs(5)));
        gate.report("audit", 50);
        gate.admit().await.unwrap();

        gate.report("audit", 90);
        gate.report("search", 10);
        for _ in 0..10 {
            gate.admit().await.unwrap();
        }
        assert_eq!(gate.backlog(), 100, "each admitted write counts until the next report");
        gate.report("audit", 500);
        assert_eq!(gate.backlog(), 500);
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "held while audit is 500 behind");
        gate.report("audit", 80);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_write_held_too_long_is_refused_with_a_retry_hint() {
        let gate = WriteGate::new(10, Duration::from_millis(30));
        gate.report("relay", 11);
        let refused = gate.admit().await.unwrap_err();
        assert_eq!((refused.backlog, refused.limit, refused.retry_after_secs), (11, 10, 1));
        gate.withdraw("relay");
        assert_eq!(gate.backlog(), 0);
        gate.admit().await.unwrap();
    }

    #[tokio::test]
    async fn a_zero_limit_admits_everything() {
        let gate = WriteGate::open();
        gate.report("audit", u64::MAX);
        gate.admit().await.unwrap();
    }
}
