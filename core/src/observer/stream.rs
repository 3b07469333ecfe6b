//! [`QueryStream`]: an observer's states as a `Stream`, latest value wins.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use futures::task::AtomicWaker;

use crate::listeners::Subscription;
use crate::state::QueryState;
use crate::sync::Mutex;

pub(super) struct StreamSlot<S, E> {
    pub(super) latest: Mutex<Option<QueryState<S, E>>>,
    pub(super) waker: AtomicWaker,
}

/// The states of a [`QueryObserver`](super::QueryObserver) as a `Stream` (see
/// [`QueryObserver::stream`](super::QueryObserver::stream)).
pub struct QueryStream<S, E> {
    pub(super) slot: Arc<StreamSlot<S, E>>,
    pub(super) _subscription: Subscription,
}

impl<S, E> Stream for QueryStream<S, E> {
    type Item = QueryState<S, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.slot.waker.register(cx.waker());
        match self.slot.latest.lock().take() {
            Some(state) => Poll::Ready(Some(state)),
            None => Poll::Pending,
        }
    }
}

impl<S, E> fmt::Debug for QueryStream<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryStream").finish_non_exhaustive()
    }
}
