//! One query's removal bookkeeping: its gc time, when it may be removed, and whether the
//! client's gc heap already holds an entry for it. Times are nanoseconds on the client clock.

use std::time::Duration;

/// The "no time" value: never removed, no heap entry, or no gc time of its own.
pub(crate) const NEVER: u64 = u64::MAX;

/// The gc time that means "never collect": 584 years and more saturate to it.
const FOREVER: u64 = NEVER - 1;

/// What the garbage collector should do with a query it was asked to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GcVerdict {
    /// Its removal was cancelled (it is observed or fetching, or was written again without a
    /// pending removal).
    Keep,
    /// Its removal was pushed back to this time.
    Later(u64),
    /// Its time has come.
    Remove,
}

/// Per-query gc state: 16 bytes, no allocation. The query's own gc time is a [`GcTime`], kept
/// apart (an idle query that never had options has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Removable {
    /// When this query may be removed; [`NEVER`] when it may not.
    gc_at: u64,
    /// The time of this query's entry in the gc heap; [`NEVER`] when it has none.
    gc_queued: u64,
}

/// A query's own gc time (saturated), or unset (the client default applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcTime(u64);

impl GcTime {
    pub(crate) const fn unset() -> Self {
        Self(NEVER)
    }

    /// The gc time, or `default` when unset.
    pub(crate) fn get(self, default: Duration) -> Duration {
        if self.0 == NEVER { default } else { Duration::from_nanos(self.0) }
    }

    pub(crate) fn is_set(self) -> bool {
        self.0 != NEVER
    }

    pub(crate) fn set(&mut self, gc_time: Duration) {
        // 584 years and more all mean "never"; NEVER itself is kept for "unset".
        self.0 = u64::try_from(gc_time.as_nanos()).unwrap_or(FOREVER).min(FOREVER);
    }
}

impl Removable {
    pub(crate) const fn new() -> Self {
        Self { gc_at: NEVER, gc_queued: NEVER }
    }

    /// The query became idle at `now`: it may be removed `gc_time` later (a time too large to
    /// represent means never). Returns the time to push onto the gc heap, when the heap holds
    /// no entry for it at or before that time.
    pub(crate) fn schedule(&mut self, now: u64, gc_time: Duration) -> Option<u64> {
        let at = u64::try_from(gc_time.as_nanos())
            .ok()
            .filter(|&d| d < FOREVER)
            .and_then(|d| now.checked_add(d));
        self.gc_at = at.unwrap_or(NEVER);
        if self.gc_at < self.gc_queued {
            self.gc_queued = self.gc_at;
            return Some(self.gc_at);
        }
        None
    }

    /// When the query is due for removal (client clock), if it is scheduled.
    pub(crate) fn due(&self) -> Option<u64> {
        (self.gc_at != NEVER).then_some(self.gc_at)
    }

    /// The time of the query's entry in the gc heap ([`NEVER`]: none).
    pub(crate) fn queued(&self) -> u64 {
        self.gc_queued
    }

    /// The query is in use again. Returns whether a removal was pending (the heap entry has
    /// gone stale and the sweeper should look).
    pub(crate) fn cancel(&mut self) -> bool {
        std::mem::replace(&mut self.gc_at, NEVER) != NEVER
    }

    /// The sweeper reached this query's heap entry at `now`; `idle` says whether it is
    /// neither observed nor fetching.
    pub(crate) fn check(&mut self, idle: bool, now: u64) -> GcVerdict {
        let at = self.gc_at;
        if !idle || at == NEVER {
            self.gc_queued = NEVER;
            GcVerdict::Keep
        } else if at > now {
            self.gc_queued = at;
            GcVerdict::Later(at)
        } else {
            self.gc_queued = NEVER;
            GcVerdict::Remove
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{GcTime, GcVerdict, NEVER, Removable};

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn an_idle_query_is_removed_gc_time_after_it_became_idle() {
        let mut r = Removable::new();
        assert_eq!(r.schedule(100, MIN), Some(100 + 60_000_000_000));
        assert_eq!(r.check(true, 101), GcVerdict::Later(100 + 60_000_000_000));
        assert_eq!(r.check(true, 100 + 60_000_000_000), GcVerdict::Remove);
    }

    #[test]
    fn a_second_schedule_pushes_no_new_heap_entry_unless_earlier() {
        let mut r = Removable::new();
        assert!(r.schedule(0, MIN).is_some());
        assert_eq!(r.schedule(10, MIN), None, "the heap entry at 60 s is re-queued when due");
        assert_eq!(
            r.schedule(20, Duration::from_secs(1)),
            Some(20 + 1_000_000_000),
            "an earlier time is pushed"
        );
    }

    #[test]
    fn cancel_keeps_the_query_and_reports_a_pending_removal_once() {
        let mut r = Removable::new();
        assert!(!r.cancel());
        r.schedule(0, MIN);
        assert!(r.cancel());
        assert!(!r.cancel());
        assert_eq!(r.check(true, u64::MAX - 1), GcVerdict::Keep);
        // The entry was consumed: the next schedule pushes again.
        assert!(r.schedule(5, MIN).is_some());
    }

    #[test]
    fn a_busy_query_is_kept() {
        let mut r = Removable::new();
        r.schedule(0, Duration::ZERO);
        assert_eq!(r.check(false, 10), GcVerdict::Keep);
    }

    #[test]
    fn gc_times_too_large_mean_never_and_unset_means_the_default() {
        let mut own = GcTime::unset();
        assert!(!own.is_set());
        assert_eq!(own.get(MIN), MIN);
        own.set(Duration::MAX);
        assert!(own.is_set());
        let mut r = Removable::new();
        assert_eq!(r.schedule(1, own.get(MIN)), None, "never: nothing to queue");
        assert_eq!(r.schedule(0, own.get(MIN)), None, "never, even on a clock that reads zero");
        assert!(!r.cancel(), "and no removal pending");
        assert_eq!(r.check(true, NEVER - 1), GcVerdict::Keep);
        own.set(Duration::ZERO);
        assert_eq!(r.schedule(7, own.get(MIN)), Some(7));
    }
}
