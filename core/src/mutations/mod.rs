//! Below the mutation layer: the mutation cache (runs listed by id, scope queues) and the untyped
//! view of a run ([`MutationInfo`], [`MutationFilter`], [`MutationStatus`]), so that the
//! client context and the event hub can hold them.

pub(crate) mod cache;
pub(crate) mod info;
