//! The outbox events this process's consumer tasks read last, decoded once
//! and shared between them.
//!
//! Every consumer task follows the same log, usually a poll interval or less
//! apart, so most of what one step reads another step read just before.
//! Reading an event is cheap; decoding its JSON is not, and was done once
//! per consumer. A task now takes what [`RecentEvents`] holds after its
//! offset and reads from the outbox only what comes after that.
//!
//! What it holds is one run of consecutive reads: every event with a
//! sequence in `(low, high]`. That a read returning events up to `s` saw
//! every event at or below `s` is the log's own invariant (sequences become
//! visible in order, see [`append`](crate::append)), the one consumer
//! offsets rely on too.
//!
//! Events every task has passed are let go at once: a busy log keeps at
//! most `capacity` events decoded, and an idle one none.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::Delivered;

/// A bounded run of decoded outbox events, shared by the consumer tasks.
pub(crate) struct RecentEvents {
    run: Mutex<Run>,
    capacity: usize,
}

#[derive(Default)]
struct Run {
    /// Every event with `low < sequence <= high` is in `events`, in order.
    low: i64,
    high: i64,
    events: VecDeque<Arc<Delivered>>,
    /// How far each task has come: the offset it last asked to read after
    /// (`i64::MIN` until it asks).
    passed: Vec<i64>,
}

impl RecentEvents {
    /// Holds at most `capacity` events (the oldest go first), for `tasks`
    /// tasks numbered from 0.
    pub(crate) fn new(capacity: usize, tasks: usize) -> Self {
        RecentEvents {
            run: Mutex::new(Run {
                passed: vec![i64::MIN; tasks],
                ..Run::default()
            }),
            capacity: capacity.max(1),
        }
    }

    /// Task `task` is done with every event up to `offset`. The events
    /// that every task is done with are let go.
    pub(crate) fn passed(&self, task: usize, offset: i64) {
        let mut run = self.lock();
        if let Some(p) = run.passed.get_mut(task) {
            *p = (*p).max(offset);
        }
        let everyone = run.passed.iter().copied().min().unwrap_or(i64::MIN);
        let done = run.events.partition_point(|e| e.sequence() <= everyone);
        if done > 0 {
            run.low = run.events[done - 1].sequence();
            run.events.drain(..done);
        }
    }

    /// Up to `limit` events following `after`, as far as the run reaches:
    /// empty when it does not hold the event right after `after`.
    pub(crate) fn after(&self, after: i64, limit: usize) -> Vec<Arc<Delivered>> {
        let run = self.lock();
        if after < run.low || after >= run.high {
            return Vec::new();
        }
        // Sequences may skip numbers (a rolled-back write on PostgreSQL), so
        // the start is found by search, not by subtraction.
        let start = run.events.partition_point(|e| e.sequence() <= after);
        run.events.iter().skip(start).take(limit).cloned().collect()
    }

    /// Record what a read of the outbox returned: `events`, in order, are
    /// all the events after `after` up to the last of them.
    pub(crate) fn extend(&self, after: i64, events: &[Arc<Delivered>]) {
        let Some(last) = events.last().map(|e| e.sequence()) else {
            return;
        };
        let mut run = self.lock();
        if last <= run.high {
            // Nothing new to this run (a consumer far behind the others).
            return;
        }
        if after < run.low || after > run.high {
            // Not adjacent to the run: the newer events replace it.
            run.low = after;
            run.high = after;
            run.events.clear();
        }
        let high = run.high;
        run.events
            .extend(events.iter().filter(|e| e.sequence() > high).cloned());
        run.high = last;
        while run.events.len() > self.capacity {
            if let Some(oldest) = run.events.pop_front() {
                run.low = oldest.sequence();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Run> {
        // The run is consistent between statements; a panic elsewhere while
        // holding the lock leaves nothing half-done worth refusing.
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(sequences: &[i64]) -> Vec<Arc<Delivered>> {
        sequences
            .iter()
            .map(|s| {
                let text = format!(
                    r#"{{"event_id":"e{s}","type":"ItemCreated","trace_id":"","request_id":"","occurred_at":"","data":{{}}}}"#
                );
                Arc::new(Delivered::decode(text.as_bytes(), Some(*s)).unwrap())
            })
            .collect()
    }

    fn sequences(events: &[Arc<Delivered>]) -> Vec<i64> {
        events.iter().map(|e| e.sequence()).collect()
    }

    #[test]
    fn a_run_serves_reads_inside_it_and_nothing_outside() {
        let recent = RecentEvents::new(100, 1);
        assert!(recent.after(0, 10).is_empty());
        recent.extend(0, &events(&[1, 2, 3, 5, 6]));
        assert_eq!(sequences(&recent.after(0, 10)), [1, 2, 3, 5, 6]);
        assert_eq!(sequences(&recent.after(3, 10)), [5, 6]);
        assert_eq!(sequences(&recent.after(4, 10)), [5, 6], "a gap in sequences is no hole");
        assert_eq!(sequences(&recent.after(1, 2)), [2, 3]);
        assert!(recent.after(6, 10).is_empty(), "nothing is known after the run");
        assert!(recent.after(-1, 10).is_empty(), "nothing is known before it");
    }

    #[test]
    fn adjacent_reads_extend_the_run_and_distant_ones_replace_it() {
        let recent = RecentEvents::new(100, 1);
        recent.extend(0, &events(&[1, 2]));
        recent.extend(2, &events(&[3, 4]));
        assert_eq!(sequences(&recent.after(0, 10)), [1, 2, 3, 4]);
        // An overlapping read adds only what is new.
        recent.extend(3, &events(&[4, 5]));
        assert_eq!(sequences(&recent.after(0, 10)), [1, 2, 3, 4, 5]);
        // A read of older events changes nothing.
        recent.extend(0, &events(&[1]));
        assert_eq!(sequences(&recent.after(0, 10)), [1, 2, 3, 4, 5]);
        // A read past a hole in what is known starts a new run.
        recent.extend(9, &events(&[10, 11]));
        assert!(recent.after(5, 10).is_empty());
        assert_eq!(sequences(&recent.after(9, 10)), [10, 11]);
    }

    #[test]
    fn the_oldest_events_go_first() {
        let recent = RecentEvents::new(3, 1);
        recent.extend(0, &events(&[1, 2, 3, 4, 5]));
        assert!(recent.after(0, 10).is_empty());
        assert!(recent.after(1, 10).is_empty());
        assert_eq!(sequences(&recent.after(2, 10)), [3, 4, 5]);
    }

    #[test]
    fn events_every_task_passed_are_let_go() {
        let recent = RecentEvents::new(100, 2);
        recent.extend(0, &events(&[1, 2, 3, 4]));
        recent.passed(0, 3);
        assert_eq!(
            sequences(&recent.after(0, 10)),
            [1, 2, 3, 4],
            "task 1 has not asked yet"
        );
        recent.passed(1, 2);
        assert!(recent.after(0, 10).is_empty(), "both passed 2");
        assert_eq!(
            sequences(&recent.after(2, 10)),
            [3, 4],
            "what task 1 has still to read stays"
        );
        recent.passed(1, 4);
        assert_eq!(sequences(&recent.after(3, 10)), [4], "task 0 has still to read 4");
        recent.passed(0, 4);
        assert!(recent.after(3, 10).is_empty());
        // Both are done with everything: nothing is held, and the next read
        // that follows on starts the run again.
        recent.extend(4, &events(&[5]));
        assert_eq!(sequences(&recent.after(4, 10)), [5]);
    }
}
