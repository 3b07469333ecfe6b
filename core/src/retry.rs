//! Retry policy: how many attempts, how long between them, which errors are worth retrying.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Computes the delay before retry number `attempt` (0 for the first retry).
pub type RetryDelayFn = Arc<dyn Fn(u32) -> Duration + Send + Sync>;

/// The longest delay [`default_retry_delay`] returns.
pub const MAX_DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The default backoff: one second, doubling per attempt, capped at thirty seconds.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pystackquery_core::default_retry_delay;
///
/// assert_eq!(default_retry_delay(0), Duration::from_secs(1));
/// assert_eq!(default_retry_delay(2), Duration::from_secs(4));
/// assert_eq!(default_retry_delay(10), Duration::from_secs(30));
/// ```
pub fn default_retry_delay(attempt: u32) -> Duration {
    let secs = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_DEFAULT_RETRY_DELAY)
}

/// A resolved retry policy: the number of retries after the first attempt, the delay function,
/// and an optional predicate deciding whether an error is retried.
pub(crate) struct RetryPolicy<E> {
    pub(crate) retries: u32,
    pub(crate) delay: RetryDelayFn,
    pub(crate) retry_if: Option<RetryIfFn<E>>,
}

/// Decides whether the error of failed attempt `attempt` (0-based) is retried.
pub type RetryIfFn<E> = Arc<dyn Fn(u32, &E) -> bool + Send + Sync>;

impl<E> RetryPolicy<E> {
    /// The delay before the next attempt, or `None` when `error` ends the fetch.
    pub(crate) fn next_delay(&self, attempt: u32, error: &E) -> Option<Duration> {
        if attempt >= self.retries {
            return None;
        }
        if let Some(retry_if) = &self.retry_if
            && !retry_if(attempt, error)
        {
            return None;
        }
        Some((self.delay)(attempt))
    }
}

impl<E> fmt::Debug for RetryPolicy<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy").field("retries", &self.retries).finish_non_exhaustive()
    }
}
