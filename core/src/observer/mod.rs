//! [`QueryObserver`]: a reactive view of one query, with listeners, a stream of states,
//! per-observer `select`, placeholder data, polling, and options that may change while it is
//! subscribed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::AbortHandle;
use futures::task::AtomicWaker;

use crate::ctx::Ctx;
use crate::error::QueryError;
use crate::listeners::{ListenerList, Subscription};
use crate::options::QueryOptions;
use crate::query::{self, QueryCell};
use crate::state::{QueryState, QueryStatus};
use crate::sync::{Mutex, MutexGuard};

mod attach;
mod compute;
mod options;
mod poll;
mod stream;

use compute::Shown;
pub use stream::QueryStream;
use stream::StreamSlot;

type SelectFn<T, S> = Arc<dyn Fn(&T) -> S + Send + Sync>;

/// Watches one query: listeners get its state at once and on every change.
///
/// Created by [`QueryClient::watch`](crate::QueryClient::watch). The first subscription attaches the observer to the
/// query (fetching if it is enabled and stale, starting the refetch interval); the last one
/// ending detaches it, which stops polling and starts the query's garbage-collection clock.
/// Many observers of one key share one query and one fetch.
/// [`set_options`](Self::set_options) moves a subscribed observer to another key, or changes
/// its options, keeping its listeners.
///
/// Listeners run with no internal lock held, so they may call back into the client or the
/// observer (subscribe, unsubscribe, `set_options`, `set_query_data`, `invalidate_queries`,
/// `fetch_query`). A panicking listener is logged and the others still run. Each listener
/// sees states in order: one delivered late is skipped rather than shown after a newer one.
///
/// `select` is memoised: it runs when the query's data changes (a fetch, a write), not when
/// only the rest of the state does (a fetch starting or ending with the same data, an
/// invalidation); no `PartialEq` is needed, the observer knows which data it selected from.
/// A panic in `select` is not propagated: the state reports it as a
/// [`QueryError::Panicked`] with status `Error`, and `data` keeps the last value `select`
/// returned (if any), rather than dropping it.
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
    select: SelectFn<T, S>,
    inner: Mutex<Inner<T, S, E>>,
    listeners: ListenerList<Arc<QueryState<S, E>>>,
}

/// Attach and detach are decided under this lock, together with the subscriber count, so a
/// subscription racing the last unsubscription (or a `set_options`) is never left on a
/// detached observer. Whoever sets `attaching` brings the attachment in line with `options`
/// (`Shared::settle`), and starts over if they change meanwhile.
struct Inner<T, S, E> {
    /// Shared so that replaced options (user closures) are dropped outside this lock.
    options: QueryOptions<T, E>,
    /// Advanced by every `set_options`: an attachment made with older options is redone.
    options_seq: u64,
    attached: Option<Attachment<T>>,
    attaching: bool,
    /// A state of a removed query arrived while attaching: the attacher looks again.
    recheck: bool,
    subscribers: usize,
    /// Which attachment is current: states from an earlier one (a removed query, the key
    /// before `set_options`) are ignored.
    epoch: u64,
    /// `version + 1` of the newest state published from the attached query (0: none yet;
    /// versions are per query).
    seen: u64,
    /// This observer's own sequence of delivered states: it keeps rising across re-attaching
    /// to a new query, so listeners (newest-wins) never mistake a new state for an old one.
    version: u64,
    /// Shared so that it is cloned (user `Clone`) and dropped outside this lock.
    result: Arc<QueryState<S, E>>,
    /// What `result` was computed from (for memoised `select` and placeholders).
    shown: Shown,
    /// The query whose data this observer showed last: a placeholder function's argument.
    previous: Option<Arc<QueryCell<T>>>,
}

struct Attachment<T> {
    cell: Arc<QueryCell<T>>,
    listener: u64,
    /// The epoch its listener delivers under: only an attachment of the current epoch is
    /// kept by `set_options`.
    epoch: u64,
    interval: Option<AbortHandle>,
    /// The period `interval` polls at.
    every: Option<Duration>,
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
            select,
            inner: Mutex::new(Inner {
                options,
                options_seq: 0,
                attached: None,
                attaching: false,
                recheck: false,
                subscribers: 0,
                epoch: 0,
                seen: 0,
                version: 0,
                result: Arc::new(QueryState::default()),
                shown: Shown::default(),
                previous: None,
            }),
            listeners: ListenerList::new(),
        });
        let initial = shared.current_unattached();
        let replaced = shared.lock().commit(initial);
        drop(replaced);
        Self { shared }
    }

    /// An observer of the same query whose listeners get `select(&data)` instead of the data.
    /// The cache keeps the raw data. `select` runs only when the data changes (see
    /// [`QueryObserver`]); a panic in it is reported as a [`QueryError::Panicked`] in the
    /// state, not propagated, and the state keeps the last value it returned. Call it before
    /// subscribing; [`set_options`](Self::set_options) keeps it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let user = QueryOptions::new(key!("user", 1), || async { Ok::<_, String>(("Ada".to_string(), 36u32)) });
    /// let name = client.watch(&user).select(|(name, _age): &(String, u32)| name.clone());
    /// let _subscription = name.subscribe(|_| {});
    /// test.run_until_idle();
    /// assert_eq!(name.result().data.as_deref(), Some("Ada"));
    /// // The cache keeps the whole value.
    /// assert_eq!(client.get_query_data::<(String, u32)>(key!("user", 1)).unwrap().unwrap().1, 36);
    /// # }
    /// ```
    pub fn select<S2>(
        self,
        select: impl Fn(&T) -> S2 + Send + Sync + 'static,
    ) -> QueryObserver<T, E, S2>
    where
        S2: Clone + Send + Sync + 'static,
    {
        let options = self.shared.lock().options.clone();
        QueryObserver::with_select(self.shared.ctx.clone(), options, Arc::new(select))
    }

    /// Calls `listener` at once with the current state, then on every change, until the
    /// returned subscription is dropped (or [`Subscription::unsubscribe`] is called).
    ///
    /// On an observer whose client has been dropped, the listener gets the last state once and
    /// nothing is attached or fetched.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, QueryStatus, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("todos"), || async { Ok::<_, String>(3u32) });
    /// let observer = client.watch(&options);
    /// let statuses = Arc::new(Mutex::new(Vec::new()));
    /// let log = statuses.clone();
    /// let subscription = observer.subscribe(move |state| log.lock().unwrap().push(state.status));
    /// test.run_until_idle();
    /// assert_eq!(*statuses.lock().unwrap(), [QueryStatus::Pending, QueryStatus::Success]);
    /// subscription.unsubscribe(); // or drop it
    /// assert_eq!(observer.subscriber_count(), 0);
    /// # }
    /// ```
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
            self.shared.settle(None);
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
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("n"), 1u32).unwrap();
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(2u32) });
    /// let observer = client.watch(&options);
    /// assert_eq!(observer.result().data, Some(1)); // readable without subscribing
    /// # }
    /// ```
    pub fn result(&self) -> QueryState<S, E> {
        let current = {
            let inner = self.shared.lock();
            (inner.attached.is_some() || self.shared.ctx.is_closed()).then(|| inner.result.clone())
        };
        match current {
            Some(result) => (*result).clone(),
            None => Arc::unwrap_or_clone(self.shared.current_unattached().state),
        }
    }

    /// Number of active subscriptions.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) }).enabled(false);
    /// let observer = client.watch(&options);
    /// let first = observer.subscribe(|_| {});
    /// let _second = observer.subscribe(|_| {});
    /// assert_eq!(observer.subscriber_count(), 2);
    /// drop(first);
    /// assert_eq!(observer.subscriber_count(), 1);
    /// # }
    /// ```
    pub fn subscriber_count(&self) -> usize {
        self.shared.listeners.len()
    }

    /// Fetches now, whether or not the data is stale (joining a fetch already in flight), and
    /// returns the resulting state. Works when the query is disabled.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// // Disabled: nothing fetches until asked (e.g. a "load" button).
    /// let options = QueryOptions::new(key!("report"), || async { Ok::<_, String>("ready") }).enabled(false);
    /// let observer = client.watch(&options);
    /// let _subscription = observer.subscribe(|_| {});
    /// test.run_until_idle();
    /// assert!(observer.result().is_idle());
    /// let state = test.block_on(observer.refetch());
    /// assert_eq!(state.data, Some("ready"));
    /// # }
    /// ```
    pub async fn refetch(&self) -> QueryState<S, E> {
        let ctx = &self.shared.ctx;
        let options = self.shared.lock().options.clone();
        let cell = match query::cell::<T>(ctx, options.key()) {
            Ok(cell) => cell,
            Err(mismatch) => {
                return QueryState {
                    error: Some(QueryError::TypeMismatch(mismatch)),
                    status: QueryStatus::Error,
                    ..QueryState::default()
                };
            }
        };
        let slot = cell.fetch_with(ctx, &options.inner);
        drop(options);
        let _ = slot.wait().await;
        self.result()
    }

    /// A stream of states with latest-value semantics: it yields the current state first,
    /// then the newest state whenever it is polled after a change. A slow consumer skips
    /// intermediate states; memory does not grow with the number it missed. Dropping the
    /// stream unsubscribes. It ends once the client is dropped (see [`QueryStream`]).
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
    /// let options = QueryOptions::new(key!("price"), || async { Ok::<_, String>(10u32) });
    /// let mut prices = client.watch(&options).stream();
    /// test.block_on(async {
    ///     assert!(prices.next().await.unwrap().is_pending()); // the current state first
    ///     assert_eq!(prices.next().await.unwrap().data, Some(10));
    ///     client.set_query_data(key!("price"), 11u32).unwrap();
    ///     assert_eq!(prices.next().await.unwrap().data, Some(11));
    /// });
    /// # }
    /// ```
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

impl<T, E, S> Shared<T, E, S> {
    fn lock(&self) -> MutexGuard<'_, Inner<T, S, E>> {
        self.inner.lock()
    }
}

impl<T, E, S> fmt::Debug for QueryObserver<T, E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.shared.lock().options.inner.key.clone();
        f.debug_struct("QueryObserver")
            .field("key", &key)
            .field("subscribers", &self.shared.listeners.len())
            .finish_non_exhaustive()
    }
}
