//! One key's state machine: state, generation fencing, the in-flight fetch shared by every
//! caller, retries, panics, and when the query may be garbage-collected (see `gc`).
//!
//! Locking: each query has one mutex; it is never held while user code runs (query functions,
//! callbacks, listeners) or while the runtime is asked to spawn. Work decided under the lock is
//! collected in [`Effects`] and carried out after the lock is released, and values the lock
//! replaces (data, errors, options) are dropped only then, so a user `Drop` may call back into
//! the client. The data type's `Clone` does run under the query lock (the hit path copies data
//! without a second lookup): it must not call back into the client, and a panic in it is
//! contained. Where a query lock sits in the lock order: ARCHITECTURE.md.

mod cell;
mod dehydrate;
mod effects;
mod erased;
mod extra;
mod fetch;
mod hydrate;
mod lookup;
mod optimistic;
mod removal;
mod run;
mod shared;

pub(crate) use cell::{CellInner, QueryCell, QuickAnswer};
pub(crate) use effects::Effects;
pub(crate) use fetch::{FetchSlot, clone_data};
pub(crate) use hydrate::HydrationStep;
pub(crate) use lookup::{cell, existing};
