//! Garbage collection of unobserved queries, as data: each query's removal bookkeeping
//! ([`removable`], TanStack's `Removable`) and the client's queue of due times ([`heap`]).
//! The task that acts on them is `sweeper`, one layer up, because it needs the client context.

pub(crate) mod heap;
pub(crate) mod removable;
