//! [`RedisBus`]: cross-process coherence over Redis pub/sub.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, select};
use pystackquery_core::Runtime;
use pystackquery_core::coherence::{CoherenceBus, CoherenceMessage, CoherenceSink};
use pystackquery_core::storage::StorageError;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Messages waiting to be published; past it new ones are dropped (and counted).
const OUTBOX_CAPACITY: usize = 4096;

/// A [`CoherenceBus`] on Redis pub/sub: messages are `PUBLISH`ed as JSON on one channel,
/// `{namespace}pystackquery:coherence`, and each client listens on a dedicated subscriber
/// connection that reconnects with backoff. After every (re)subscription the client is told
/// to mark its persisted keys stale, since messages may have been missed meanwhile.
///
/// Publishing never blocks the engine: messages go through a bounded queue to one publisher
/// task (in order), which sends them on a reconnecting connection; a message that cannot be
/// sent is dropped and counted ([`RedisBusStats`]).
///
/// # Examples
///
/// ```no_run
/// use pystackquery::prelude::*;
/// use pystackquery::{RedisBus, RedisStorage};
///
/// # async fn run() -> Result<(), pystackquery::storage::StorageError> {
/// let url = "redis://127.0.0.1:6379/";
/// let config = QueryClientConfig::default()
///     .storage(RedisStorage::connect(url).await?.with_namespace("app:"))
///     .bus(RedisBus::connect(url).await?.with_namespace("app:"));
/// # let _ = config;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    connection: ConnectionManager,
    channel: Arc<str>,
    shared: Arc<Shared>,
}

/// A message to publish: its channel and its JSON.
type Outgoing = (Arc<str>, String);

#[derive(Default)]
struct Shared {
    outbox: Mutex<Option<mpsc::Sender<Outgoing>>>,
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    subscriptions: AtomicU64,
}

/// What a [`RedisBus`] has done since it was connected (all its clients together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBusStats {
    /// Messages published.
    pub published: u64,
    /// Messages dropped: the outbox was full, or `PUBLISH` failed (Redis away).
    pub dropped: u64,
    /// Messages received (own ones included; clients ignore those).
    pub received: u64,
    /// Subscriptions made, first ones and reconnections alike.
    pub subscriptions: u64,
}

impl RedisBus {
    /// Connects to `url` (`redis://host:port/db`) for publishing; subscriber connections are
    /// made by each client that uses the bus. Call it inside the runtime the clients run on.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the URL is invalid or the server cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pystackquery::prelude::*;
    /// use pystackquery::{RedisBus, RedisStorage};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let url = "redis://127.0.0.1:6379/";
    ///     let config = QueryClientConfig::default()
    ///         .storage(RedisStorage::connect(url).await?)
    ///         .bus(RedisBus::connect(url).await?);
    ///     let client = QueryClient::with_config(config)?;
    ///     // An invalidation here marks `('todos',)` stale in every process on the bus.
    ///     client.invalidate_queries(key!("todos"), true).await;
    ///     Ok(())
    /// }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let client = redis::Client::open(url).map_err(StorageError::unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(StorageError::unavailable)?;
        Ok(Self {
            client,
            connection,
            channel: "pystackquery:coherence".into(),
            shared: Arc::default(),
        })
    }

    /// Puts `namespace` before the channel name (use the storage's namespace, so that
    /// separate applications on one Redis do not hear each other).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pystackquery::RedisBus;
    ///
    /// # async fn run() -> Result<(), pystackquery::storage::StorageError> {
    /// let bus = RedisBus::connect("redis://127.0.0.1:6379/").await?.with_namespace("billing:");
    /// assert_eq!(bus.channel(), "billing:pystackquery:coherence");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.channel = format!("{}pystackquery:coherence", namespace.into()).into();
        self
    }

    /// The channel messages are published on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pystackquery::RedisBus;
    ///
    /// # async fn run() -> Result<(), pystackquery::storage::StorageError> {
    /// let bus = RedisBus::connect("redis://127.0.0.1:6379/").await?;
    /// assert_eq!(bus.channel(), "pystackquery:coherence"); // e.g. `redis-cli SUBSCRIBE` to watch it
    /// # Ok(()) }
    /// ```
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// What the bus has done so far.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pystackquery::prelude::*;
    /// use pystackquery::{RedisBus, RedisStorage};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "redis://127.0.0.1:6379/";
    /// let bus = RedisBus::connect(url).await?;
    /// let client = QueryClient::with_config(
    ///     QueryClientConfig::default().storage(RedisStorage::connect(url).await?).bus(bus.clone()),
    /// )?;
    /// client.invalidate_queries(key!("todos"), false).await;
    /// let stats = bus.stats();
    /// println!("published {}, dropped {}, received {}", stats.published, stats.dropped, stats.received);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> RedisBusStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.shared;
        RedisBusStats {
            published: get(&s.published),
            dropped: get(&s.dropped),
            received: get(&s.received),
            subscriptions: get(&s.subscriptions),
        }
    }

    /// Starts the publisher task on `runtime` unless it runs already.
    fn start_publisher(&self, runtime: &Runtime) {
        let mut outbox = self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.is_some() {
            return;
        }
        let (sender, mut receiver) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
        *outbox = Some(sender);
        let (mut connection, shared) = (self.connection.clone(), self.shared.clone());
        runtime.spawn(async move {
            while let Some((channel, payload)) = receiver.next().await {
                let sent: redis::RedisResult<usize> = connection.publish(&*channel, payload).await;
                match sent {
                    Ok(_) => shared.published.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        tracing::warn!("coherence message lost: PUBLISH failed: {error}");
                        shared.dropped.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
}

impl CoherenceBus for RedisBus {
    fn publish(&self, message: &CoherenceMessage) {
        let mut outbox = self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let queued = outbox.as_mut().is_some_and(|sender| {
            sender.try_send((self.channel.clone(), message.to_json())).is_ok()
        });
        if !queued {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %message.key, "coherence message dropped: the outbox is full");
        }
    }

    fn subscribe(&self, sink: CoherenceSink, runtime: &Runtime) {
        self.start_publisher(runtime);
        let listen = listen(
            self.client.clone(),
            self.channel.clone(),
            sink,
            runtime.clone(),
            self.shared.clone(),
        );
        runtime.spawn(listen);
    }
}

/// One client's subscription: subscribe, deliver, and on any loss subscribe again with
/// backoff (50 ms doubling to 1 s), telling the client after each subscription. Ends when the
/// client is gone.
async fn listen(
    client: redis::Client,
    channel: Arc<str>,
    sink: CoherenceSink,
    runtime: Runtime,
    shared: Arc<Shared>,
) {
    const FIRST_DELAY: Duration = Duration::from_millis(50);
    let mut delay = FIRST_DELAY;
    loop {
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&*channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let (connect, timeout) = (pin!(connect), pin!(runtime.sleep(Duration::from_secs(2))));
        let connected = match select(select(connect, timeout), pin!(sink.closed())).await {
            Either::Left((Either::Left((connected, _)), _)) => connected.map_err(|e| e.to_string()),
            Either::Left((Either::Right(_), _)) => Err("timed out".to_string()),
            Either::Right(_) => return,
        };
        match connected {
            Ok(pubsub) => {
                delay = FIRST_DELAY;
                shared.subscriptions.fetch_add(1, Ordering::Relaxed);
                sink.reconnected();
                let mut stream = pubsub.into_on_message();
                loop {
                    match select(stream.next(), pin!(sink.closed())).await {
                        Either::Left((Some(message), _)) => {
                            shared.received.fetch_add(1, Ordering::Relaxed);
                            let text = String::from_utf8_lossy(message.get_payload_bytes());
                            if let Err(error) = sink.deliver_json(&text) {
                                tracing::warn!("coherence message ignored: {error}");
                            }
                        }
                        Either::Left((None, _)) => break,
                        Either::Right(_) => return,
                    }
                }
                tracing::warn!("coherence subscription lost; subscribing again");
            }
            Err(error) => tracing::debug!("coherence subscription failed: {error}"),
        }
        if let Either::Right(_) = select(pin!(runtime.sleep(delay)), pin!(sink.closed())).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("channel", &self.channel)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
