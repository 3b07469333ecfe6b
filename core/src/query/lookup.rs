//! Finding a key's typed query in the store: created when missing (with the Added and eviction
//! events), or only if cached; a query of another data type is a [`TypeMismatch`].

use std::sync::Arc;

use super::cell::QueryCell;
use crate::ctx::{Ctx, Entry};
use crate::error::TypeMismatch;
use crate::events::CacheEvent;
use crate::key::QueryKey;
use crate::stats::Stat;

/// The key's typed query, created when missing.
pub(crate) fn cell<T>(ctx: &Ctx, key: &QueryKey) -> Result<Arc<QueryCell<T>>, TypeMismatch>
where
    T: Clone + Send + Sync + 'static,
{
    let mut created = false;
    let (entry, evicted) = ctx.cache.get_or_insert_with(key, ctx.stamp(), || {
        created = true;
        Arc::new(QueryCell::<T>::new(key.clone()))
    });
    if created {
        ctx.emit(&CacheEvent::Added(key.clone()));
    }
    for e in &evicted {
        ctx.stats.add(Stat::Eviction);
        tracing::debug!(key = %e.key(), "evicted least recently used query");
        ctx.emit_removed(e.key());
    }
    downcast::<T>(key, entry)
}

/// The key's typed query, if cached.
pub(crate) fn existing<T>(
    ctx: &Ctx,
    key: &QueryKey,
) -> Result<Option<Arc<QueryCell<T>>>, TypeMismatch>
where
    T: Clone + Send + Sync + 'static,
{
    let entry = ctx.cache.get(key, ctx.stamp());
    entry.map(|entry| downcast::<T>(key, entry)).transpose()
}

fn downcast<T>(key: &QueryKey, entry: Entry) -> Result<Arc<QueryCell<T>>, TypeMismatch>
where
    T: Clone + Send + Sync + 'static,
{
    let cached = entry.type_name();
    entry.into_any().downcast::<QueryCell<T>>().map_err(|_| TypeMismatch {
        key: key.clone(),
        requested: std::any::type_name::<T>(),
        cached,
    })
}
