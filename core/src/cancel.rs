//! Cancellation: the signal a query function may watch ([`CancelSignal`]) and the context it
//! receives ([`QueryContext`]).
//!
//! A fetch is cancelled by [`QueryClient::cancel_queries`](crate::QueryClient::cancel_queries),
//! by removing or resetting its query, by a refetch that supersedes it, or when its client is
//! dropped. Cancelling sets the signal and drops the fetch's future at its next poll, so a
//! function that ignores the signal is stopped all the same; one that watches it can stop
//! cleanly sooner (close a connection, abort a request).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use event_listener::Event;
use futures::task::AtomicWaker;

use crate::key::QueryKey;
use crate::meta::Meta;

/// A runtime-agnostic cancellation signal: cheap to clone, checked with
/// [`is_cancelled`](Self::is_cancelled), awaited with [`cancelled`](Self::cancelled).
///
/// # Examples
///
/// ```
/// use pystackquery_core::QueryOptions;
///
/// let options = QueryOptions::with_context(("report",), |cx| async move {
///     for chunk in 0..3 {
///         if cx.signal.is_cancelled() {
///             return Err("cancelled".to_string());
///         }
///         let _ = chunk; // fetch one chunk here
///     }
///     Ok(format!("report for {}", cx.key))
/// });
/// # drop(options);
/// ```
#[derive(Clone)]
pub struct CancelSignal {
    inner: Arc<SignalInner>,
}

struct SignalInner {
    cancelled: AtomicBool,
    /// The fetch task, woken so that it drops the fetch's future.
    task: AtomicWaker,
    /// User futures from [`CancelSignal::cancelled`]; allocates only if someone listens.
    event: Event,
}

impl CancelSignal {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(SignalInner {
                cancelled: AtomicBool::new(false),
                task: AtomicWaker::new(),
                event: Event::new(),
            }),
        }
    }

    /// Whether the fetch has been cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // A long job checks the signal between its steps.
    /// let options = QueryOptions::with_context(key!("report"), |cx| async move {
    ///     let mut rows = 0;
    ///     for _ in 0..1_000 {
    ///         if cx.signal.is_cancelled() {
    ///             return Err("cancelled".to_string());
    ///         }
    ///         rows += 1;
    ///     }
    ///     Ok(rows)
    /// });
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 1_000);
    /// # }
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once the fetch is cancelled (never, if it completes first).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryError, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::with_context(key!("stream"), |cx| async move {
    ///     cx.signal.cancelled().await; // e.g. `select!` it against the work, to clean up first
    ///     Err::<u32, _>("closed".to_string())
    /// });
    /// let fetch = test.runtime().spawn_with_handle({
    ///     let (client, options) = (client.clone(), options.clone());
    ///     async move { client.fetch_query(&options).await }
    /// });
    /// test.run_until_idle();
    /// assert_eq!(test.block_on(client.cancel_queries(key!("stream"))), 1);
    /// assert!(matches!(test.block_on(fetch), Err(QueryError::Cancelled)));
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }

    /// Cancels; returns whether this call did (false when already cancelled).
    pub(crate) fn cancel(&self) -> bool {
        if self.inner.cancelled.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.inner.task.wake();
        self.inner.event.notify(usize::MAX);
        true
    }
}

impl fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelSignal").field("cancelled", &self.is_cancelled()).finish()
    }
}

/// What a query function built with
/// [`QueryOptions::with_context`](crate::QueryOptions::with_context) receives: the key being
/// fetched and the fetch's cancellation signal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct QueryContext {
    /// The key being fetched.
    pub key: QueryKey,
    /// Set when the fetch is cancelled.
    pub signal: CancelSignal,
    /// The query's [`Meta`]: its options' own, else that of the defaults registered for a
    /// prefix of its key; empty when neither set any.
    pub meta: Meta,
}

impl QueryContext {
    pub(crate) fn new(key: QueryKey, signal: CancelSignal, meta: Meta) -> Self {
        Self { key, signal, meta }
    }
}

pin_project_lite::pin_project! {
    /// Runs `inner` until it completes or `signal` is cancelled, whichever comes first; on
    /// cancellation `inner` is dropped at once. Registers no listener: the signal wakes the
    /// task directly.
    pub(crate) struct UntilCancelled<F> {
        #[pin]
        inner: F,
        signal: CancelSignal,
    }
}

impl<F> UntilCancelled<F> {
    pub(crate) fn new(inner: F, signal: CancelSignal) -> Self {
        Self { inner, signal }
    }
}

impl<F: Future<Output = ()>> Future for UntilCancelled<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.is_cancelled() {
            return Poll::Ready(());
        }
        this.signal.inner.task.register(cx.waker());
        if this.signal.is_cancelled() {
            return Poll::Ready(());
        }
        this.inner.poll(cx)
    }
}
