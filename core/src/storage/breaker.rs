//! The circuit breaker of the L2 tier: after enough consecutive failures it stops calling a
//! failing store for a cooldown, then lets one probe through; the probe's outcome closes or
//! re-opens it. Pure state over instants the caller supplies, so it is tested without a clock.

use std::time::{Duration, Instant};

/// Stops calling a failing store for a while, then lets one probe through.
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probe_started: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub(crate) const fn new() -> Self {
        Self { failures: 0, open_until: None, probe_started: None }
    }

    /// Whether a call may go to the store at `now`: always while closed; during the cooldown
    /// never; after it, one probe at a time (a probe whose caller vanished counts as lost once
    /// it has had twice `timeout` to finish).
    pub(crate) fn allow(&mut self, now: Instant, timeout: Duration) -> bool {
        let Some(until) = self.open_until else {
            return true;
        };
        if now < until {
            return false;
        }
        if let Some(started) = self.probe_started
            && now < started + timeout * 2
        {
            return false;
        }
        self.probe_started = Some(now);
        true
    }

    /// A call succeeded: the breaker closes.
    pub(crate) fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.probe_started = None;
    }

    /// Records a failure at `now`; returns whether the breaker just opened. A failed probe
    /// re-opens it for another `cooldown`.
    pub(crate) fn failure(&mut self, now: Instant, threshold: u32, cooldown: Duration) -> bool {
        self.failures = self.failures.saturating_add(1);
        let probing = self.open_until.is_some();
        if probing || self.failures >= threshold.max(1) {
            self.open_until = now.checked_add(cooldown).or(Some(now));
            self.probe_started = None;
            return !probing;
        }
        false
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
    fn a_threshold_of_zero_acts_as_one() {
        let mut b = Breaker::new();
        assert!(b.failure(Instant::now(), 0, COOLDOWN));
    }
}
