//! The one retry loop of the engine, shared by queries and mutations: attempts, backoff, the
//! retry predicate, and panic capture.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::error::{QueryError, panic_message};
use crate::runtime::Runtime;

/// Computes the delay before retry number `attempt` (0 for the first retry).
pub type RetryDelayFn = Arc<dyn Fn(u32) -> Duration + Send + Sync>;

/// Decides whether the error of failed attempt `attempt` (0-based) is retried.
pub type RetryIfFn<E> = Arc<dyn Fn(u32, &E) -> bool + Send + Sync>;

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
pub(crate) struct Retryer<E> {
    pub(crate) retries: u32,
    pub(crate) delay: RetryDelayFn,
    pub(crate) retry_if: Option<RetryIfFn<E>>,
}

/// How a run of attempts ended.
pub(crate) struct Outcome<T, E> {
    pub(crate) result: Result<T, QueryError<E>>,
    /// Failed attempts (0 on success).
    pub(crate) failures: u32,
}

/// What the policy says after a failed attempt.
enum Next {
    Retry(Duration),
    Stop,
    /// The predicate or the delay function panicked: the message says which.
    Panicked(Arc<str>),
}

impl<E> Retryer<E> {
    /// Runs `attempt` until it succeeds, its error is not retried, or the retries are used up,
    /// sleeping on `runtime` between attempts. `on_retry(failures, &error)` runs before each
    /// sleep. A panic while creating or polling an attempt's future ends the run with
    /// [`QueryError::Panicked`] naming `what` ("query function", "mutation function"); so does
    /// a panic in the retry predicate or delay function, named as such.
    pub(crate) async fn run_as<T, Fut>(
        &self,
        runtime: &Runtime,
        what: &'static str,
        mut attempt: impl FnMut() -> Fut,
        mut on_retry: impl FnMut(u32, &Arc<E>),
    ) -> Outcome<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut failed: u32 = 0;
        loop {
            let error = match call_catching_panics(&mut attempt).await {
                Ok(Ok(data)) => return Outcome { result: Ok(data), failures: 0 },
                Ok(Err(error)) => Arc::new(error),
                Err(message) => {
                    let message = format!("{what} panicked: {message}").into();
                    return Outcome {
                        result: Err(QueryError::Panicked(message)),
                        failures: failed + 1,
                    };
                }
            };
            match self.next(failed, &error) {
                Next::Retry(delay) => {
                    failed += 1;
                    on_retry(failed, &error);
                    runtime.sleep(delay).await;
                }
                Next::Stop => {
                    return Outcome {
                        result: Err(QueryError::Failed(error)),
                        failures: failed + 1,
                    };
                }
                Next::Panicked(message) => {
                    return Outcome {
                        result: Err(QueryError::Panicked(message)),
                        failures: failed + 1,
                    };
                }
            }
        }
    }

    /// The decision after failed attempt `attempt` (0-based), with user code guarded.
    fn next(&self, attempt: u32, error: &E) -> Next {
        if attempt >= self.retries {
            return Next::Stop;
        }
        if let Some(retry_if) = &self.retry_if {
            match std::panic::catch_unwind(AssertUnwindSafe(|| retry_if(attempt, error))) {
                Ok(true) => {}
                Ok(false) => return Next::Stop,
                Err(payload) => {
                    return Next::Panicked(
                        format!("retry predicate panicked: {}", panic_message(&*payload)).into(),
                    );
                }
            }
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| (self.delay)(attempt))) {
            Ok(delay) => Next::Retry(delay),
            Err(payload) => {
                Next::Panicked(format!("retry delay panicked: {}", panic_message(&*payload)).into())
            }
        }
    }
}

/// Creates one attempt's future and awaits it, turning a panic in either step into a message.
async fn call_catching_panics<T, E, Fut>(
    attempt: &mut impl FnMut() -> Fut,
) -> Result<Result<T, E>, Arc<str>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let future = std::panic::catch_unwind(AssertUnwindSafe(attempt))
        .map_err(|payload| panic_message(&*payload))?;
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| panic_message(&*payload))
}

impl<E> fmt::Debug for Retryer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retryer").field("retries", &self.retries).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
