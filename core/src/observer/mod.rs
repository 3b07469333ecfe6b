//! [`QueryObserver`]: a reactive view of one query, with listeners, a stream of states,
//! per-observer `select`, placeholder data and polling.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::AbortHandle;
use futures::task::AtomicWaker;

use crate::ctx::Ctx;
use crate::error::{QueryError, panic_message};
use crate::listeners::{ListenerList, Subscription};
use crate::options::QueryOptions;
use crate::query::{self, QueryCell};
use crate::state::{QueryState, QueryStatus, RawState};
use crate::sync::{Mutex, MutexGuard};

mod attach;
mod stream;

pub use stream::QueryStream;
use stream::StreamSlot;

type SelectFn<T, S> = Arc<dyn Fn(&T) -> S + Send + Sync>;

/// Watches one query: listeners get its state at once and on every change.
///
/// Created by [`QueryClient::watch`](crate::QueryClient::watch). The first subscription attaches the observer to the
/// query (fetching if it is enabled and stale, starting the refetch interval); the last one
/// ending detaches it, which stops polling and starts the query's garbage-collection clock.
/// Many observers of one key share one query and one fetch.
///
/// Listeners run with no internal lock held, so they may call back into the client or the
/// observer (subscribe, unsubscribe, `set_query_data`, `invalidate_queries`, `fetch_query`).
/// A panicking listener is logged and the others still run. Each listener sees states in
/// order: one delivered late is skipped rather than shown after a newer one.
///
/// Once every handle of the client is dropped the observer starts no new work: it keeps its
/// last state, its polling stops, and its streams end (see [`QueryStream`]).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::{Arc, Mutex};
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let options = QueryOptions::new(key!("todos"), || async { Ok::<_, String>(vec!["write docs"]) });
/// let observer = client.watch(&options).select(|todos: &Vec<&str>| todos.len());
///
/// let counts = Arc::new(Mutex::new(Vec::new()));
/// let log = counts.clone();
/// let subscription = observer.subscribe(move |state| log.lock().unwrap().push(state.data));
/// test.run_until_idle();
/// assert_eq!(*counts.lock().unwrap(), vec![None, Some(1)]);
/// drop(subscription);
/// # }
/// ```
pub struct QueryObserver<T, E, S = T> {
    shared: Arc<Shared<T, E, S>>,
}

struct Shared<T, E, S> {
    ctx: Arc<Ctx>,
    options: QueryOptions<T, E>,
    select: SelectFn<T, S>,
    inner: Mutex<Inner<T, S, E>>,
    listeners: ListenerList<Arc<QueryState<S, E>>>,
}

/// Attach and detach are decided under this lock, together with the subscriber count, so a
/// subscription racing the last unsubscription is never left on a detached observer.
struct Inner<T, S, E> {
    attached: Option<Attachment<T>>,
    attaching: bool,
    subscribers: usize,
    /// Which attachment is current: states from an earlier one (a removed query) are ignored.
    epoch: u64,
    /// The newest state version seen from the attached query (versions are per query).
    cell_version: u64,
    /// This observer's own sequence of delivered states: it keeps rising across re-attaching
    /// to a new query, so listeners (newest-wins) never mistake a new state for an old one.
    version: u64,
    /// Shared so that it is cloned (user `Clone`) and dropped outside this lock.
    result: Arc<QueryState<S, E>>,
}

struct Attachment<T> {
    cell: Arc<QueryCell<T>>,
    listener: u64,
    interval: Option<AbortHandle>,
    /// Whether it counts toward the query's active observers.
    enabled: bool,
}

impl<T, E> QueryObserver<T, E, T>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    pub(crate) fn new(ctx: Arc<Ctx>, options: QueryOptions<T, E>) -> Self {
        Self::with_select(ctx, options, Arc::new(T::clone))
    }
}

impl<T, E, S> QueryObserver<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    fn with_select(ctx: Arc<Ctx>, options: QueryOptions<T, E>, select: SelectFn<T, S>) -> Self {
        let shared = Arc::new(Shared {
            ctx,
            options,
            select,
            inner: Mutex::new(Inner {
                attached: None,
                attaching: false,
                subscribers: 0,
                epoch: 0,
                cell_version: 0,
                version: 0,
                result: Arc::new(QueryState::default()),
            }),
            listeners: ListenerList::new(),
        });
        let initial = Arc::new(shared.current_unattached());
        let old = std::mem::replace(&mut shared.lock().result, initial);
        drop(old);
        Self { shared }
    }

    /// An observer of the same query whose listeners get `select(&data)` instead of the data.
    /// The cache keeps the raw data. A panic in `select` is reported as a
    /// [`QueryError::Panicked`] in the state, not propagated. Call it before subscribing.
    pub fn select<S2>(
        self,
        select: impl Fn(&T) -> S2 + Send + Sync + 'static,
    ) -> QueryObserver<T, E, S2>
    where
        S2: Clone + Send + Sync + 'static,
    {
        QueryObserver::with_select(
            self.shared.ctx.clone(),
            self.shared.options.clone(),
            Arc::new(select),
        )
    }

    /// Calls `listener` at once with the current state, then on every change, until the
    /// returned subscription is dropped (or [`Subscription::unsubscribe`] is called).
    ///
    /// On an observer whose client has been dropped, the listener gets the last state once and
    /// nothing is attached or fetched.
    pub fn subscribe(
        &self,
        listener: impl Fn(&QueryState<S, E>) + Send + Sync + 'static,
    ) -> Subscription {
        let needs_attach = {
            let mut inner = self.shared.lock();
            inner.subscribers += 1;
            let needs =
                inner.attached.is_none() && !inner.attaching && !self.shared.ctx.is_closed();
            inner.attaching |= needs;
            needs
        };
        if needs_attach {
            Shared::attach(&self.shared);
        }
        let id = self
            .shared
            .listeners
            .add(Box::new(move |state: &Arc<QueryState<S, E>>, _| listener(state)));
        let (state, version) = {
            let inner = self.shared.lock();
            (inner.result.clone(), inner.version)
        };
        self.shared.listeners.notify_one(id, &state, version);
        // The subscription keeps the observer alive: dropping the observer handle while a
        // subscription is active must not silence it.
        let shared = self.shared.clone();
        Subscription::new(move || shared.unsubscribe(id))
    }

    /// The current state (with `select` and placeholder applied).
    pub fn result(&self) -> QueryState<S, E> {
        let attached = {
            let inner = self.shared.lock();
            (inner.attached.is_some() || self.shared.ctx.is_closed()).then(|| inner.result.clone())
        };
        match attached {
            Some(result) => (*result).clone(),
            None => self.shared.current_unattached(),
        }
    }

    /// Number of active subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.shared.listeners.len()
    }

    /// Fetches now, whether or not the data is stale (joining a fetch already in flight), and
    /// returns the resulting state. Works when the query is disabled.
    pub async fn refetch(&self) -> QueryState<S, E> {
        let ctx = &self.shared.ctx;
        let cell = match query::cell::<T>(ctx, self.shared.options.key()) {
            Ok(cell) => cell,
            Err(mismatch) => {
                return QueryState {
                    error: Some(QueryError::TypeMismatch(mismatch)),
                    status: QueryStatus::Error,
                    ..QueryState::default()
                };
            }
        };
        let slot = cell.fetch_with(ctx, &self.shared.options.inner);
        let _ = slot.wait().await;
        self.result()
    }

    /// A stream of states with latest-value semantics: it yields the current state first,
    /// then the newest state whenever it is polled after a change. A slow consumer skips
    /// intermediate states; memory does not grow with the number it missed. Dropping the
    /// stream unsubscribes. It ends once the client is dropped (see [`QueryStream`]).
    pub fn stream(&self) -> QueryStream<S, E> {
        let slot = Arc::new(StreamSlot { latest: Mutex::new(None), waker: AtomicWaker::new() });
        let writer = slot.clone();
        let subscription = self.subscribe(move |state| {
            *writer.latest.lock() = Some(state.clone());
            writer.waker.wake();
        });
        QueryStream::new(slot, self.shared.ctx.clone(), subscription)
    }
}

impl<T, E, S> Shared<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    fn lock(&self) -> MutexGuard<'_, Inner<T, S, E>> {
        self.inner.lock()
    }

    /// Applies placeholder data and `select` to a raw state. Runs user code: call it with no
    /// lock held.
    fn compute(&self, raw: Option<&RawState<T>>) -> QueryState<S, E> {
        // Built field by field straight into the observer's type: this runs once per observer
        // per state change, and moving whole states around costs more than the fields.
        let key = self.options.key();
        let mut out: QueryState<S, E> = QueryState::default();
        let mut data = None;
        if let Some(raw) = raw {
            out.status = raw.status;
            out.fetch_status = raw.fetch_status;
            out.error = raw.error.as_ref().map(|e| e.typed(key));
            out.data_updated_at = raw.data_updated_at;
            out.error_updated_at = raw.error_updated_at;
            out.fetch_failure_count = raw.fetch_failure_count;
            out.fetch_failure_reason = raw.fetch_failure_reason.as_ref().map(|e| e.typed(key));
            out.is_invalidated = raw.is_invalidated;
            out.data_update_count = raw.data_update_count;
            out.error_update_count = raw.error_update_count;
            data = raw.data.as_ref();
        }
        let placeholder = match (data, &self.options.inner.placeholder_data) {
            (None, Some(placeholder))
                if matches!(out.status, QueryStatus::Idle | QueryStatus::Pending) =>
            {
                out.is_placeholder = true;
                Some(placeholder)
            }
            _ => None,
        };
        if let Some(data) = data.or(placeholder) {
            match std::panic::catch_unwind(AssertUnwindSafe(|| (self.select)(data))) {
                Ok(selected) => out.data = Some(selected),
                Err(payload) => {
                    let message =
                        format!("select transform panicked: {}", panic_message(&*payload));
                    tracing::error!(%key, "{message}");
                    out.status = QueryStatus::Error;
                    out.error = Some(QueryError::Panicked(message.into()));
                    out.is_placeholder = false;
                }
            }
        }
        out
    }

    fn current_unattached(&self) -> QueryState<S, E> {
        match query::existing::<T>(&self.ctx, self.options.key()) {
            Ok(Some(cell)) => {
                let raw = cell.lock().state.clone();
                self.compute(Some(&raw))
            }
            Ok(None) => self.compute(None),
            Err(mismatch) => QueryState {
                status: QueryStatus::Error,
                error: Some(QueryError::TypeMismatch(mismatch)),
                ..QueryState::default()
            },
        }
    }
}

impl<T, E, S> fmt::Debug for QueryObserver<T, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryObserver")
            .field("key", &self.shared.options.inner.key)
            .field("subscribers", &self.shared.listeners.len())
            .finish_non_exhaustive()
    }
}
