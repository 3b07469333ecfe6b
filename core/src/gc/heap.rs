//! The client's gc queue: a min-heap of `(due time, key)` and the sweeper's running flag.
//!
//! A query that becomes idle pushes `(gc_at, key)` unless its bookkeeping says an entry at or
//! before that time is already queued. Cancelling only clears the query's `gc_at`; its entry goes
//! stale and is dropped when the sweeper reaches it. A query written again after it was queued
//! keeps its old entry, which the sweeper re-queues at the new time when it comes due. So the
//! heap holds about one entry per queued query, and scheduling costs a push, not a task and a
//! timer per query.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use event_listener::{Event, EventListener};

use crate::key::QueryKey;
use crate::sync::Mutex;

pub(crate) struct GcQueue {
    inner: Mutex<GcInner>,
    /// Wakes the sweeper: an earlier deadline, a cancellation to look at, or the client gone.
    wake: Event,
}

#[derive(Default)]
struct GcInner {
    heap: BinaryHeap<Reverse<(u64, QueryKey)>>,
    running: bool,
    /// Set by a cancellation: the earliest entries may be stale, so look before sleeping.
    revalidate: bool,
}

/// What [`GcQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pop {
    /// This entry is due (or must be looked at after a cancellation).
    Entry(u64, QueryKey),
    /// The earliest entry is due at this time.
    Sleep(u64),
    /// The heap is empty; the sweeper has been marked stopped.
    Empty,
}

impl GcQueue {
    pub(crate) fn new() -> Self {
        Self { inner: Mutex::new(GcInner::default()), wake: Event::new() }
    }

    /// Queues `key` for a look at `at`. Returns whether the caller must start the sweeper
    /// (it was not running); otherwise wakes it when `at` is earlier than what it sleeps for.
    #[must_use]
    pub(crate) fn push(&self, key: QueryKey, at: u64) -> bool {
        let (start, earlier) = {
            let mut q = self.inner.lock();
            let earlier = q.heap.peek().is_some_and(|Reverse((first, _))| at < *first);
            q.heap.push(Reverse((at, key)));
            (!std::mem::replace(&mut q.running, true), earlier)
        };
        if !start && earlier {
            self.wake.notify(1);
        }
        start
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().heap.len()
    }

    /// Takes every entry out (to filter them without holding this lock).
    pub(crate) fn drain(&self) -> Vec<(u64, QueryKey)> {
        let heap = std::mem::take(&mut self.inner.lock().heap);
        heap.into_iter().map(|Reverse(entry)| entry).collect()
    }

    /// Puts entries back after [`drain`](Self::drain). Returns whether the caller must start
    /// the sweeper (a sweeper that found the heap empty meanwhile has stopped).
    #[must_use]
    pub(crate) fn refill(&self, entries: Vec<(u64, QueryKey)>) -> bool {
        let mut q = self.inner.lock();
        q.heap.extend(entries.into_iter().map(Reverse));
        !q.heap.is_empty() && !std::mem::replace(&mut q.running, true)
    }

    /// Puts an entry back (the sweeper re-queuing a query whose removal moved later).
    pub(crate) fn requeue(&self, key: QueryKey, at: u64) {
        self.inner.lock().heap.push(Reverse((at, key)));
    }

    /// A queued query no longer wants removal: let the sweeper drop its entry, so that no
    /// timer stays armed for it.
    pub(crate) fn cancelled(&self) {
        self.inner.lock().revalidate = true;
        self.wake.notify(1);
    }

    /// The client is going away: let the sweeper see it and exit.
    pub(crate) fn close(&self) {
        self.wake.notify(usize::MAX);
    }

    /// A listener for the next wake-up.
    pub(crate) fn listen(&self) -> EventListener {
        self.wake.listen()
    }

    /// Takes the pending "look after a cancellation" request.
    pub(crate) fn take_revalidate(&self) -> bool {
        std::mem::take(&mut self.inner.lock().revalidate)
    }

    /// The next entry due at `now` (every front entry while `validating`).
    pub(crate) fn pop(&self, now: u64, validating: bool) -> Pop {
        let mut q = self.inner.lock();
        let Some(Reverse((first, _))) = q.heap.peek() else {
            q.running = false;
            return Pop::Empty;
        };
        if *first > now && !validating {
            return Pop::Sleep(*first);
        }
        match q.heap.pop() {
            Some(Reverse((at, key))) => Pop::Entry(at, key),
            None => Pop::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{GcQueue, Pop};
    use crate::key::QueryKey;

    fn key(i: i64) -> QueryKey {
        QueryKey::from(("k", i))
    }

    #[test]
    fn entries_come_out_in_due_order_and_only_when_due() {
        let q = GcQueue::new();
        assert!(q.push(key(3), 30), "the first push starts the sweeper");
        assert!(!q.push(key(1), 10));
        assert!(!q.push(key(2), 20));
        assert_eq!(q.pop(5, false), Pop::Sleep(10));
        assert_eq!(q.pop(25, false), Pop::Entry(10, key(1)));
        assert_eq!(q.pop(25, false), Pop::Entry(20, key(2)));
        assert_eq!(q.pop(25, false), Pop::Sleep(30));
        assert_eq!(q.pop(25, true), Pop::Entry(30, key(3)), "validating looks at future entries");
        assert_eq!(q.pop(25, false), Pop::Empty);
        assert!(q.push(key(4), 40), "an empty heap stopped the sweeper; the next push restarts it");
    }

    #[test]
    fn a_cancellation_is_taken_once() {
        let q = GcQueue::new();
        assert!(!q.take_revalidate());
        q.cancelled();
        assert!(q.take_revalidate());
        assert!(!q.take_revalidate());
    }
}
