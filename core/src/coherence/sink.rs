//! A client's receiving side: the [`CoherenceSink`] a bus delivers to, and the `Inbox` behind
//! it (a bounded queue of received messages, taken by the client's coherence task).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use event_listener::Event;

use super::message::CoherenceMessage;
use crate::sync::Mutex;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coherence::CoherenceOp;

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
