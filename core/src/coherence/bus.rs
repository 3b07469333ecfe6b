//! The [`CoherenceBus`] seam: what carries coherence messages between processes.

use std::sync::Arc;

use super::message::CoherenceMessage;
use super::sink::CoherenceSink;
use crate::runtime::Runtime;

/// Carries coherence messages between processes: a pub/sub channel (Redis in the facade's
/// `RedisBus`), or [`MemoryBus`](super::MemoryBus) between clients of one process.
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
