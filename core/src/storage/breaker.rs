//! The circuit breaker of the L2 tier: after enough consecutive failures it stops calling a
//! failing store for a cooldown, then lets one probe through; the probe's outcome closes or
//! re-opens it. Pure state over instants the caller supplies, so it is tested without a clock.
//!
//! Durations too large to add to an instant never overflow:
//!
//! - A cooldown that cannot be added to the current instant (such as `Duration::MAX`) keeps
//!   the breaker open for the rest of the process: no probe is ever let through, and only a
//!   call that was already under way when it opened can close it, by succeeding.
//! - A probe counts as lost once twice the storage timeout has passed since it started; when
//!   that instant cannot be represented, the probe is never presumed lost, and its slot is
//!   freed only when its call ends or is abandoned ([`Breaker::probe_abandoned`]).

use std::time::{Duration, Instant};

/// Stops calling a failing store for a while, then lets one probe through.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    state: State,
    probe_started: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Every call goes through.
    Closed,
    /// No call goes through before this instant; after it, one probe at a time.
    OpenUntil(Instant),
    /// The cooldown could not be represented: no call goes through, ever.
    OpenForGood,
}

impl Breaker {
    /// A closed breaker.
    pub(crate) const fn new() -> Self {
        Self { failures: 0, state: State::Closed, probe_started: None }
    }

    /// Whether the breaker is open (a call it lets through is a probe).
    pub(crate) fn is_open(&self) -> bool {
        self.state != State::Closed
    }

    /// Whether a call may go to the store at `now`: always while closed; during the cooldown
    /// never; after it, one probe at a time (a probe whose caller vanished counts as lost once
    /// it has had twice `timeout` to finish).
    pub(crate) fn allow(&mut self, now: Instant, timeout: Duration) -> bool {
        let until = match self.state {
            State::Closed => return true,
            State::OpenForGood => return false,
            State::OpenUntil(until) => until,
        };
        if now < until {
            return false;
        }
        if let Some(started) = self.probe_started {
            // `None`: the probe can never count as lost by the clock.
            let lost_at = started.checked_add(timeout.saturating_mul(2));
            if lost_at.is_none_or(|lost_at| now < lost_at) {
                return false;
            }
        }
        self.probe_started = Some(now);
        true
    }

    /// The probe let through at `started` was abandoned before it finished (its caller went
    /// away): the next call may probe at once.
    pub(crate) fn probe_abandoned(&mut self, started: Instant) {
        if self.probe_started == Some(started) {
            self.probe_started = None;
        }
    }

    /// A call succeeded: the breaker closes.
    pub(crate) fn success(&mut self) {
        self.failures = 0;
        self.state = State::Closed;
        self.probe_started = None;
    }

    /// Records a failure at `now`; returns whether the breaker just opened. A failed probe
    /// re-opens it for another `cooldown`. A `cooldown` that cannot be added to `now` keeps
    /// it open for good (see the module docs).
    pub(crate) fn failure(&mut self, now: Instant, threshold: u32, cooldown: Duration) -> bool {
        self.failures = self.failures.saturating_add(1);
        let probing = self.is_open();
        if probing || self.failures >= threshold.max(1) {
            self.state = now.checked_add(cooldown).map_or(State::OpenForGood, State::OpenUntil);
            self.probe_started = None;
            return !probing;
        }
        false
    }

    /// Whether the breaker is open with no end (an unrepresentable cooldown).
    pub(crate) fn is_open_for_good(&self) -> bool {
        self.state == State::OpenForGood
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Breaker;

    const TIMEOUT: Duration = Duration::from_secs(1);
    const COOLDOWN: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new();
        assert!(!b.failure(t0, 3, COOLDOWN));
        b.success();
        assert!(!b.failure(t0, 3, COOLDOWN));
        assert!(!b.failure(t0, 3, COOLDOWN));
        assert!(b.allow(t0, TIMEOUT), "two failures in a row: still closed");
        assert!(b.failure(t0, 3, COOLDOWN), "the third opens it");
        assert!(!b.allow(t0 + COOLDOWN - Duration::from_millis(1), TIMEOUT));
    }

    #[test]
    fn after_the_cooldown_one_probe_at_a_time_and_its_success_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new();
        assert!(b.failure(t0, 1, COOLDOWN));
        let t1 = t0 + COOLDOWN;
        assert!(b.allow(t1, TIMEOUT), "the probe");
        assert!(!b.allow(t1, TIMEOUT), "a second call while the probe runs");
        assert!(b.allow(t1 + TIMEOUT * 2, TIMEOUT), "a probe lost for twice the timeout");
        b.success();
        assert!(b.allow(t1, TIMEOUT) && b.allow(t1, TIMEOUT), "closed: every call goes through");
    }

    #[test]
    fn a_failed_probe_reopens_for_a_new_cooldown_without_counting_as_newly_opened() {
        let t0 = Instant::now();
        let mut b = Breaker::new();
        b.failure(t0, 1, COOLDOWN);
        let t1 = t0 + COOLDOWN;
        assert!(b.allow(t1, TIMEOUT));
        assert!(!b.failure(t1, 1, COOLDOWN));
        assert!(!b.allow(t1 + COOLDOWN - Duration::from_millis(1), TIMEOUT));
        assert!(b.allow(t1 + COOLDOWN, TIMEOUT));
    }

    #[test]
    fn a_huge_timeout_never_overflows_while_a_probe_runs() {
        for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 4)] {
            let t0 = Instant::now();
            let mut b = Breaker::new();
            b.failure(t0, 1, COOLDOWN);
            let t1 = t0 + COOLDOWN;
            assert!(b.allow(t1, timeout), "the probe");
            assert!(!b.allow(t1, timeout), "the probe is running");
            assert!(!b.allow(t1 + Duration::from_secs(86_400 * 365), timeout), "still running");
            b.success();
            assert!(b.allow(t1, timeout));
        }
    }

    #[test]
    fn an_unrepresentable_cooldown_keeps_the_breaker_open_for_good() {
        let t0 = Instant::now();
        let mut b = Breaker::new();
        assert!(b.failure(t0, 1, Duration::MAX), "it opens");
        assert!(!b.allow(t0, TIMEOUT));
        assert!(!b.allow(t0 + Duration::from_secs(86_400 * 365 * 100), TIMEOUT), "no probe, ever");
        assert!(!b.failure(t0, 1, Duration::MAX), "already open");
        b.success(); // a call that was already under way succeeded
        assert!(b.allow(t0, TIMEOUT), "closed again");
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new();
        b.failure(t0, 1, COOLDOWN);
        let t1 = t0 + COOLDOWN;
        assert!(b.allow(t1, Duration::MAX) && b.is_open(), "the probe");
        b.probe_abandoned(t0); // not the probe's start: nothing changes
        assert!(!b.allow(t1, Duration::MAX));
        b.probe_abandoned(t1);
        assert!(b.allow(t1, Duration::MAX), "a new probe");
    }

    #[test]
    fn a_threshold_of_zero_acts_as_one() {
        let mut b = Breaker::new();
        assert!(b.failure(Instant::now(), 0, COOLDOWN));
    }
}
