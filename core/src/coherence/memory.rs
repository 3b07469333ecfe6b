//! [`MemoryBus`]: a coherence bus between the clients of one process.

use std::fmt;
use std::sync::Arc;

use super::bus::CoherenceBus;
use super::message::CoherenceMessage;
use super::sink::CoherenceSink;
use crate::runtime::Runtime;
use crate::sync::Mutex;

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
