//! [`QueryStream`]: an observer's states as a `Stream`, latest value wins, ending with the
//! client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;
use futures::Stream;
use futures::task::AtomicWaker;

use crate::ctx::Ctx;
use crate::listeners::Subscription;
use crate::state::QueryState;
use crate::sync::Mutex;

pub(super) struct StreamSlot<S, E> {
    pub(super) latest: Mutex<Option<QueryState<S, E>>>,
    pub(super) waker: AtomicWaker,
}

/// The states of a [`QueryObserver`](super::QueryObserver) as a `Stream` (see
/// [`QueryObserver::stream`](super::QueryObserver::stream)).
///
/// It ends (yields `None`) once the client is gone, that is once every
/// [`QueryClient`](crate::QueryClient) clone has been dropped: a state that arrived before is
/// yielded first, then `None`, and `None` ever after. Until then it never ends, even while
/// nothing changes. Dropping it unsubscribes.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use futures::StreamExt;
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let options = QueryOptions::new(key!("clock"), || async { Ok::<_, String>(12) });
/// let mut states = client.watch(&options).stream();
/// test.block_on(async {
///     assert_eq!(states.next().await.unwrap().data, None, "the current state first");
///     assert_eq!(states.next().await.unwrap().data, Some(12), "then each change");
///     drop(client);
///     assert!(states.next().await.is_none(), "the client is gone");
/// });
/// # }
/// ```
pub struct QueryStream<S, E> {
    slot: Arc<StreamSlot<S, E>>,
    ctx: Arc<Ctx>,
    /// Waits for the client to close (created on the first poll that finds nothing new).
    closing: Option<EventListener>,
    ended: bool,
    _subscription: Subscription,
}

impl<S, E> QueryStream<S, E> {
    pub(super) fn new(
        slot: Arc<StreamSlot<S, E>>,
        ctx: Arc<Ctx>,
        subscription: Subscription,
    ) -> Self {
        Self { slot, ctx, closing: None, ended: false, _subscription: subscription }
    }
}

impl<S, E> Stream for QueryStream<S, E> {
    type Item = QueryState<S, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        this.slot.waker.register(cx.waker());
        loop {
            // Read before the closed flag: a state left before the client closed comes first.
            if let Some(state) = this.slot.latest.lock().take() {
                return Poll::Ready(Some(state));
            }
            if this.ctx.is_closed() {
                this.ended = true;
                this.closing = None;
                return Poll::Ready(None);
            }
            let ctx = &this.ctx;
            match &mut this.closing {
                // Listening first, then looking at the flag again (the loop), misses no close.
                None => this.closing = Some(ctx.on_close()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.closing = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl<S, E> fmt::Debug for QueryStream<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryStream").field("ended", &self.ended).finish_non_exhaustive()
    }
}
