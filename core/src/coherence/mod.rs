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

mod bus;
mod memory;
mod message;
mod publish;
mod sink;

pub use bus::CoherenceBus;
pub use memory::MemoryBus;
pub use message::{CoherenceMessage, CoherenceOp};
pub(crate) use publish::{Announce, Publisher, new_origin};
pub use sink::CoherenceSink;
pub(crate) use sink::{Inbound, Inbox};
