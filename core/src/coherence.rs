//! Cross-process coherence (opt-in): the [`CoherenceBus`] seam, its messages, and the inbox
//! that takes received messages to the client without blocking the bus.
//!
//! A client configured with [`QueryClientConfig::bus`](crate::QueryClientConfig::bus) tells
//! the other processes on the bus about what it does to its persisted keys, and applies what
//! they tell it:
//!
//! - `invalidate`: the key is marked stale (and refetched if it is active, as a local
//!   invalidation does);
//! - `remove`: the key leaves memory (the sender has deleted its L2 record);
//! - `reset`: the key returns to its initial state (the sender has deleted its record);
//! - `set`: newer data is in L2 (a fetch or `set_query_data`): the receiver reads the record
//!   and restores it if it is newer than memory.
//!
//! Only persisted keys take part, and `set` needs storage shared by the processes. Messages
//! are sent after the L2 write or delete they announce has been carried out (a write that
//! failed is announced as `invalidate`, so receivers mark the key stale rather than keep
//! older data silently). When the bus reports a (re)connection, or the inbox overflows,
//! every persisted key is marked stale: a message may have been missed.
//!
//! The message is JSON, so any process (Python included) can publish and listen:
//!
//! ```text
//! {"v":1,"origin":"4f2a-1","op":"set","key":"('user', 42)","parts":["user",42],
//!  "data_updated_at":1764066000.25}
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use event_listener::Event;
use serde::{Deserialize, Serialize};

use crate::key::QueryKey;
use crate::runtime::Runtime;
use crate::sync::Mutex;

/// What a coherence message tells the other processes.
///
/// # Examples
///
/// ```
/// use pystackquery_core::coherence::CoherenceOp;
///
/// assert_eq!(serde_json::to_string(&CoherenceOp::Invalidate).unwrap(), r#""invalidate""#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoherenceOp {
    /// The key was invalidated: mark it stale (refetch it if active).
    Invalidate,
    /// The key was removed, and its L2 record deleted: drop it from memory.
    Remove,
    /// The key was reset, and its L2 record deleted: back to the initial state.
    Reset,
    /// Newer data was written to L2: read it and adopt it if newer than memory.
    Set,
}

/// One message on the bus (see the [module documentation](self) for its JSON form).
///
/// # Examples
///
/// ```
/// use pystackquery_core::coherence::{CoherenceMessage, CoherenceOp};
/// use pystackquery_core::key;
///
/// let message = CoherenceMessage {
///     v: 1,
///     origin: "worker-3".to_string(),
///     op: CoherenceOp::Reset,
///     key: key!("user", 42).storage_string().to_string(),
///     parts: Some(key!("user", 42)),
///     data_updated_at: None,
/// };
/// assert_eq!(
///     message.to_json(),
///     r#"{"v":1,"origin":"worker-3","op":"reset","key":"('user', 42)","parts":["user",42],"data_updated_at":null}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoherenceMessage {
    /// Format version: 1.
    #[serde(default = "version")]
    pub v: u32,
    /// The sending client's id; a client ignores its own messages.
    pub origin: String,
    /// What happened.
    pub op: CoherenceOp,
    /// The key's storage string ([`QueryKey::storage_string`], Python's `str(key)`).
    pub key: String,
    /// The key's parts as a JSON array (optional: a receiver without it looks the key up by
    /// its storage string among the cached keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<QueryKey>,
    /// For `set`: the data's `data_updated_at`, in Unix seconds.
    #[serde(default)]
    pub data_updated_at: Option<f64>,
}

fn version() -> u32 {
    1
}

impl CoherenceMessage {
    /// The message as one line of JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::coherence::{CoherenceMessage, CoherenceOp};
    ///
    /// let text = r#"{"v":1,"origin":"py-1","op":"invalidate","key":"('todos',)"}"#;
    /// let message = CoherenceMessage::from_json(text).unwrap();
    /// assert_eq!(message.op, CoherenceOp::Invalidate);
    /// assert_eq!(CoherenceMessage::from_json(&message.to_json()).unwrap(), message);
    /// ```
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a message.
    ///
    /// # Errors
    ///
    /// When `text` is not a message.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::coherence::CoherenceMessage;
    ///
    /// // A message published by a Python process.
    /// let message = CoherenceMessage::from_json(r#"{"origin":"py-1","op":"set","key":"('n',)","data_updated_at":1700000000.0}"#).unwrap();
    /// assert_eq!(message.v, 1); // the version defaults to 1
    /// assert!(CoherenceMessage::from_json("PING").is_err());
    /// ```
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// `data_updated_at` as a time, if present and representable.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use pystackquery_core::coherence::CoherenceMessage;
    ///
    /// let message = CoherenceMessage::from_json(r#"{"origin":"a","op":"set","key":"('n',)","data_updated_at":1700000000.5}"#).unwrap();
    /// assert_eq!(message.updated_at(), Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1700000000.5)));
    /// ```
    pub fn updated_at(&self) -> Option<SystemTime> {
        let secs = self.data_updated_at.filter(|s| s.is_finite() && *s >= 0.0)?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
    }
}

/// Carries coherence messages between processes: a pub/sub channel (Redis in the facade's
/// `RedisBus`), or [`MemoryBus`] between clients of one process.
///
/// A bus may be shared by several clients; each calls [`subscribe`](Self::subscribe) once.
/// Both methods are called from engine tasks and must not block: queue and return.
///
/// # Examples
///
/// A bus over any transport: `publish` sends the JSON form, and whatever receives messages
/// hands them to the sinks. Here the "transport" is a list of the subscribed sinks.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::{Arc, Mutex};
/// use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
/// use pystackquery_core::runtime::Runtime;
/// use pystackquery_core::storage::MemoryStorage;
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
///
/// #[derive(Default)]
/// struct LoopBus {
///     sinks: Mutex<Vec<CoherenceSink>>,
/// }
///
/// impl CoherenceBus for LoopBus {
///     fn publish(&self, message: &CoherenceMessage) {
///         let wire = message.to_json(); // what would go over the network
///         let mut sinks = self.sinks.lock().unwrap();
///         sinks.retain(|sink| !sink.is_closed());
///         for sink in sinks.iter() {
///             let _ = sink.deliver_json(&wire); // the sender's own sink ignores it
///         }
///     }
///     fn subscribe(&self, sink: CoherenceSink, _runtime: &Runtime) {
///         self.sinks.lock().unwrap().push(sink);
///     }
/// }
///
/// let test = TestRuntime::new();
/// let (storage, bus) = (Arc::new(MemoryStorage::new()), Arc::new(LoopBus::default()));
/// let config = || QueryClientConfig::default().storage(storage.clone()).bus(bus.clone());
/// let a = QueryClient::with_runtime(test.runtime(), config());
/// let b = QueryClient::with_runtime(test.runtime(), config());
/// let n = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
/// test.block_on(a.fetch_query(&n)).unwrap();
/// test.block_on(b.fetch_query(&n)).unwrap();
/// test.block_on(a.invalidate_queries(key!("n"), false));
/// test.run_until_idle();
/// assert!(b.find(key!("n")).unwrap().is_invalidated); // heard over the bus
/// # }
/// ```
pub trait CoherenceBus: Send + Sync + 'static {
    /// Sends `message` to every subscriber (the sender's own subscription included: clients
    /// ignore their own messages by origin). Fire and forget; a message that cannot be sent
    /// is lost (receivers recover at their next reconnection).
    fn publish(&self, message: &CoherenceMessage);

    /// Starts delivering received messages to `sink` (spawning on `runtime` if it needs a
    /// task), until [`CoherenceSink::is_closed`]. Call [`CoherenceSink::reconnected`] after
    /// every reconnection of the subscription, once it is listening again.
    fn subscribe(&self, sink: CoherenceSink, runtime: &Runtime);
}

impl<B: CoherenceBus + ?Sized> CoherenceBus for Arc<B> {
    fn publish(&self, message: &CoherenceMessage) {
        (**self).publish(message);
    }

    fn subscribe(&self, sink: CoherenceSink, runtime: &Runtime) {
        (**self).subscribe(sink, runtime);
    }
}

/// Most received messages waiting for the client; past it the queue is emptied and every
/// persisted key marked stale instead.
pub(crate) const INBOX_CAPACITY: usize = 4096;

/// Where a bus delivers a client's received messages. Delivering never blocks and never runs
/// engine code: the message is queued and the client's coherence task applies it.
#[derive(Clone)]
pub struct CoherenceSink(pub(crate) Arc<Inbox>);

impl CoherenceSink {
    /// Queues a received message (ignored if it is the client's own).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
    /// # use pystackquery_core::runtime::Runtime;
    /// # #[derive(Default)]
    /// # struct Capture(Mutex<Option<CoherenceSink>>);
    /// # impl CoherenceBus for Capture {
    /// #     fn publish(&self, _: &CoherenceMessage) {}
    /// #     fn subscribe(&self, sink: CoherenceSink, _: &Runtime) { *self.0.lock().unwrap() = Some(sink); }
    /// # }
    /// use pystackquery_core::coherence::CoherenceOp;
    /// use pystackquery_core::storage::MemoryStorage;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// // `Capture` is a bus that keeps the sink it is given (see `CoherenceBus`).
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(Capture::default());
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(MemoryStorage::new()).bus(bus.clone()));
    /// let n = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
    /// test.block_on(client.fetch_query(&n)).unwrap();
    /// let sink = bus.0.lock().unwrap().clone().unwrap();
    /// sink.deliver(CoherenceMessage {
    ///     v: 1, origin: "elsewhere".into(), op: CoherenceOp::Invalidate,
    ///     key: key!("n").storage_string().into(), parts: Some(key!("n")), data_updated_at: None,
    /// });
    /// test.run_until_idle();
    /// assert!(client.find(key!("n")).unwrap().is_invalidated);
    /// # }
    /// ```
    pub fn deliver(&self, message: CoherenceMessage) {
        if message.origin != *self.0.origin {
            self.0.push(Inbound::Message(message));
        }
    }

    /// Parses and queues a received JSON message.
    ///
    /// # Errors
    ///
    /// When `text` is not a message (nothing is queued).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
    /// # use pystackquery_core::runtime::Runtime;
    /// # #[derive(Default)]
    /// # struct Capture(Mutex<Option<CoherenceSink>>);
    /// # impl CoherenceBus for Capture {
    /// #     fn publish(&self, _: &CoherenceMessage) {}
    /// #     fn subscribe(&self, sink: CoherenceSink, _: &Runtime) { *self.0.lock().unwrap() = Some(sink); }
    /// # }
    /// use pystackquery_core::storage::MemoryStorage;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(Capture::default()); // keeps the sink it is given (see `CoherenceBus`)
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(MemoryStorage::new()).bus(bus.clone()));
    /// test.block_on(client.fetch_query(&QueryOptions::new(key!("todos"), || async { Ok::<u32, String>(1) }).persist())).unwrap();
    /// let sink = bus.0.lock().unwrap().clone().unwrap();
    /// // As received from the network, e.g. published by a Python process.
    /// sink.deliver_json(r#"{"v":1,"origin":"py-7","op":"remove","key":"('todos',)"}"#).unwrap();
    /// assert!(sink.deliver_json("not a message").is_err());
    /// test.run_until_idle();
    /// assert!(client.find(key!("todos")).is_none());
    /// # }
    /// ```
    pub fn deliver_json(&self, text: &str) -> Result<(), serde_json::Error> {
        self.deliver(CoherenceMessage::from_json(text)?);
        Ok(())
    }

    /// The subscription was (re)established: messages may have been missed, so every
    /// persisted key is marked stale.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
    /// # use pystackquery_core::runtime::Runtime;
    /// # #[derive(Default)]
    /// # struct Capture(Mutex<Option<CoherenceSink>>);
    /// # impl CoherenceBus for Capture {
    /// #     fn publish(&self, _: &CoherenceMessage) {}
    /// #     fn subscribe(&self, sink: CoherenceSink, _: &Runtime) { *self.0.lock().unwrap() = Some(sink); }
    /// # }
    /// use pystackquery_core::storage::MemoryStorage;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(Capture::default()); // keeps the sink it is given (see `CoherenceBus`)
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(MemoryStorage::new()).bus(bus.clone()));
    /// test.block_on(client.fetch_query(&QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist())).unwrap();
    /// // The bus's subscription dropped and is back: messages may have been missed.
    /// bus.0.lock().unwrap().as_ref().unwrap().reconnected();
    /// test.run_until_idle();
    /// assert!(client.find(key!("n")).unwrap().is_invalidated);
    /// # }
    /// ```
    pub fn reconnected(&self) {
        self.0.push(Inbound::Resync);
    }

    /// Whether the client is gone: stop delivering.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
    /// # use pystackquery_core::runtime::Runtime;
    /// # #[derive(Default)]
    /// # struct Capture(Mutex<Option<CoherenceSink>>);
    /// # impl CoherenceBus for Capture {
    /// #     fn publish(&self, _: &CoherenceMessage) {}
    /// #     fn subscribe(&self, sink: CoherenceSink, _: &Runtime) { *self.0.lock().unwrap() = Some(sink); }
    /// # }
    /// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(Capture::default()); // keeps the sink it is given (see `CoherenceBus`)
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().bus(bus.clone()));
    /// let sink = bus.0.lock().unwrap().clone().unwrap();
    /// assert!(!sink.is_closed());
    /// drop(client);
    /// assert!(sink.is_closed()); // a bus drops such sinks
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.0.queue.lock().closed
    }

    /// Waits until the client is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
    /// # use pystackquery_core::runtime::Runtime;
    /// # #[derive(Default)]
    /// # struct Capture(Mutex<Option<CoherenceSink>>);
    /// # impl CoherenceBus for Capture {
    /// #     fn publish(&self, _: &CoherenceMessage) {}
    /// #     fn subscribe(&self, sink: CoherenceSink, _: &Runtime) { *self.0.lock().unwrap() = Some(sink); }
    /// # }
    /// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(Capture::default()); // keeps the sink it is given (see `CoherenceBus`)
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().bus(bus.clone()));
    /// let sink = bus.0.lock().unwrap().clone().unwrap();
    /// // A bus's receiving task ends with its client.
    /// let receiver = test.runtime().spawn_with_handle(async move { sink.closed().await; "stopped" });
    /// drop(client);
    /// assert_eq!(test.block_on(receiver), "stopped");
    /// # }
    /// ```
    pub async fn closed(&self) {
        loop {
            let listener = self.0.closing.listen();
            if self.is_closed() {
                return;
            }
            listener.await;
        }
    }

    /// The client's origin id (its messages carry it).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
    /// # use pystackquery_core::runtime::Runtime;
    /// # #[derive(Default)]
    /// # struct Capture(Mutex<Option<CoherenceSink>>);
    /// # impl CoherenceBus for Capture {
    /// #     fn publish(&self, _: &CoherenceMessage) {}
    /// #     fn subscribe(&self, sink: CoherenceSink, _: &Runtime) { *self.0.lock().unwrap() = Some(sink); }
    /// # }
    /// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(Capture::default()); // keeps the sink it is given (see `CoherenceBus`)
    /// let _client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().bus(bus.clone()));
    /// let sink = bus.0.lock().unwrap().clone().unwrap();
    /// assert!(!sink.origin().is_empty()); // unique per client; its own messages carry it
    /// # }
    /// ```
    pub fn origin(&self) -> &str {
        &self.0.origin
    }
}

impl fmt::Debug for CoherenceSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoherenceSink").field("origin", &self.0.origin).finish_non_exhaustive()
    }
}

/// What the coherence task takes from the inbox.
#[derive(Debug)]
pub(crate) enum Inbound {
    Message(CoherenceMessage),
    /// Mark every persisted key stale.
    Resync,
}

/// A client's received messages. Its lock is a leaf.
pub(crate) struct Inbox {
    origin: Arc<str>,
    queue: Mutex<Queue>,
    arrived: Event,
    closing: Event,
}

struct Queue {
    messages: VecDeque<CoherenceMessage>,
    resync: bool,
    closed: bool,
}

impl Inbox {
    pub(crate) fn new(origin: Arc<str>) -> Self {
        Self {
            origin,
            queue: Mutex::new(Queue { messages: VecDeque::new(), resync: false, closed: false }),
            arrived: Event::new(),
            closing: Event::new(),
        }
    }

    fn push(&self, inbound: Inbound) {
        {
            let mut q = self.queue.lock();
            if q.closed {
                return;
            }
            match inbound {
                Inbound::Resync => q.resync = true,
                Inbound::Message(_) if q.messages.len() >= INBOX_CAPACITY => {
                    // The client is not keeping up: whatever is queued is covered by marking
                    // every persisted key stale.
                    q.messages.clear();
                    q.resync = true;
                    tracing::warn!(
                        "coherence inbox full; every persisted key will be marked stale"
                    );
                }
                Inbound::Message(message) => q.messages.push_back(message),
            }
        }
        self.arrived.notify(1);
    }

    /// The next thing to apply; `None` once closed.
    pub(crate) async fn next(&self) -> Option<Inbound> {
        loop {
            let listener = self.arrived.listen();
            {
                let mut q = self.queue.lock();
                if q.closed {
                    return None;
                }
                if std::mem::take(&mut q.resync) {
                    return Some(Inbound::Resync);
                }
                if let Some(message) = q.messages.pop_front() {
                    return Some(Inbound::Message(message));
                }
            }
            listener.await;
        }
    }

    /// The client is gone: drop what is queued, end the task and the bus's delivery.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut q = self.queue.lock();
            q.closed = true;
            std::mem::take(&mut q.messages)
        };
        drop(dropped);
        self.arrived.notify(usize::MAX);
        self.closing.notify(usize::MAX);
    }
}

/// A new origin id, unique among this process's clients and unlikely to repeat across
/// processes: the process id, the clock, and a counter.
pub(crate) fn new_origin() -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!("{:x}-{:x}-{n}", std::process::id(), nanos).into()
}

/// What an L2 op announces once it has been carried out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announce {
    pub(crate) op: CoherenceOp,
    pub(crate) at: Option<SystemTime>,
}

/// A client's sending side: the bus and its origin.
#[derive(Clone)]
pub(crate) struct Publisher {
    bus: Arc<dyn CoherenceBus>,
    origin: Arc<str>,
}

impl Publisher {
    pub(crate) fn new(bus: Arc<dyn CoherenceBus>, origin: Arc<str>) -> Self {
        Self { bus, origin }
    }

    /// Sends `op` about `key`; a panicking bus is contained (logged).
    pub(crate) fn publish(&self, key: &QueryKey, announce: Announce) {
        let data_updated_at = announce
            .at
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let message = CoherenceMessage {
            v: 1,
            origin: self.origin.to_string(),
            op: announce.op,
            key: key.storage_string().to_owned(),
            parts: Some(key.clone()),
            data_updated_at,
        };
        if catch_unwind(AssertUnwindSafe(|| self.bus.publish(&message))).is_err() {
            tracing::error!(%key, "the coherence bus panicked in publish; message lost");
        }
    }
}

/// A bus between the clients of one process: what one publishes, every other one receives
/// at once. For tests, and for several clients sharing one storage in a process.
///
/// [`disconnect`](Self::disconnect) and [`reconnect`](Self::reconnect) simulate an outage:
/// messages published meanwhile are lost, and reconnecting tells every client so.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<MemoryBusInner>>,
}

#[derive(Default)]
struct MemoryBusInner {
    sinks: Vec<CoherenceSink>,
    down: bool,
    published: u64,
}

impl MemoryBus {
    /// An empty bus.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pystackquery_core::QueryClientConfig;
    /// use pystackquery_core::coherence::MemoryBus;
    ///
    /// let bus = Arc::new(MemoryBus::new()); // one bus, shared by the clients of a process
    /// let _a = QueryClientConfig::default().bus(bus.clone());
    /// let _b = QueryClientConfig::default().bus(bus.clone());
    /// assert_eq!(bus.published(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, messages are lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::Arc;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    /// use pystackquery_core::coherence::MemoryBus;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let test = TestRuntime::new();
    /// let (storage, bus) = (Arc::new(MemoryStorage::new()), Arc::new(MemoryBus::new()));
    /// let config = || QueryClientConfig::default().storage(storage.clone()).bus(bus.clone());
    /// let (a, b) = (QueryClient::with_runtime(test.runtime(), config()), QueryClient::with_runtime(test.runtime(), config()));
    /// let n = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
    /// test.block_on(a.fetch_query(&n)).unwrap();
    /// test.block_on(b.fetch_query(&n)).unwrap();
    /// test.run_until_idle();
    /// bus.disconnect(); // an outage: `a`'s invalidation never reaches `b`
    /// test.block_on(a.invalidate_queries(key!("n"), false));
    /// test.run_until_idle();
    /// assert!(!b.find(key!("n")).unwrap().is_invalidated);
    /// bus.reconnect(); // `b` hears it reconnected: it marks its persisted keys stale
    /// test.run_until_idle();
    /// assert!(b.find(key!("n")).unwrap().is_invalidated);
    /// # }
    /// ```
    pub fn disconnect(&self) {
        self.inner.lock().down = true;
    }

    /// Messages flow again, and every subscriber is told it reconnected.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::coherence::MemoryBus;
    ///
    /// let bus = MemoryBus::new();
    /// bus.disconnect();
    /// bus.reconnect(); // subscribers are told, and mark their persisted keys stale
    /// ```
    pub fn reconnect(&self) {
        let sinks = {
            let mut inner = self.inner.lock();
            inner.down = false;
            inner.sinks.clone()
        };
        for sink in sinks {
            sink.reconnected();
        }
    }

    /// Messages published so far (lost ones included).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::Arc;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    /// use pystackquery_core::coherence::MemoryBus;
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let test = TestRuntime::new();
    /// let bus = Arc::new(MemoryBus::new());
    /// let config = QueryClientConfig::default().storage(MemoryStorage::new()).bus(bus.clone());
    /// let client = QueryClient::with_runtime(test.runtime(), config);
    /// let n = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
    /// test.block_on(client.fetch_query(&n)).unwrap();
    /// test.run_until_idle();
    /// let after_fetch = bus.published();
    /// test.block_on(client.invalidate_queries(key!("n"), false));
    /// test.run_until_idle();
    /// assert_eq!(bus.published(), after_fetch + 1); // the invalidation was announced
    /// # }
    /// ```
    pub fn published(&self) -> u64 {
        self.inner.lock().published
    }
}

impl CoherenceBus for MemoryBus {
    fn publish(&self, message: &CoherenceMessage) {
        let sinks = {
            let mut inner = self.inner.lock();
            inner.published += 1;
            inner.sinks.retain(|sink| !sink.is_closed());
            if inner.down {
                return;
            }
            inner.sinks.clone()
        };
        for sink in sinks {
            sink.deliver(message.clone());
        }
    }

    fn subscribe(&self, sink: CoherenceSink, _runtime: &Runtime) {
        self.inner.lock().sinks.push(sink);
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("MemoryBus")
            .field("subscribers", &inner.sinks.len())
            .field("down", &inner.down)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_json_round_trips_and_parts_are_optional() {
        let text = r#"{"origin":"py-1","op":"set","key":"('user', 42)","data_updated_at":1.5}"#;
        let message = CoherenceMessage::from_json(text).unwrap();
        assert_eq!((message.v, message.op, message.parts.clone()), (1, CoherenceOp::Set, None));
        assert_eq!(
            message.updated_at(),
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(1500))
        );
        let back = CoherenceMessage::from_json(&message.to_json()).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn the_inbox_ignores_own_messages_and_overflows_into_a_resync() {
        let inbox = Arc::new(Inbox::new("me".into()));
        let sink = CoherenceSink(inbox.clone());
        let message = |origin: &str| CoherenceMessage {
            v: 1,
            origin: origin.into(),
            op: CoherenceOp::Invalidate,
            key: "('a',)".into(),
            parts: None,
            data_updated_at: None,
        };
        sink.deliver(message("me"));
        sink.deliver(message("other"));
        let next = futures::executor::block_on(inbox.next());
        assert!(matches!(next, Some(Inbound::Message(m)) if m.origin == "other"));
        for _ in 0..=INBOX_CAPACITY {
            sink.deliver(message("other"));
        }
        assert!(matches!(futures::executor::block_on(inbox.next()), Some(Inbound::Resync)));
        inbox.close();
        assert!(sink.is_closed());
        assert!(futures::executor::block_on(inbox.next()).is_none());
    }
}
