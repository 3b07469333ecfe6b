//! Operations on every query under a key prefix: invalidate, remove, reset, clear; and pausing
//! and resuming one key's background fetching.

use super::QueryClient;
use crate::key::QueryKey;
use crate::storage::L2Op;

impl QueryClient {
    /// Marks every query under `prefix` stale (its `data_updated_at` becomes the Unix epoch).
    /// With `refetch`, observed queries fetch again at once, under a new generation, so a
    /// fetch that was already in flight cannot land its older result; the call waits for
    /// those refetches. Returns the number of queries invalidated.
    ///
    /// The empty key `()` matches every query.
    pub async fn invalidate_queries(&self, prefix: impl Into<QueryKey>, refetch: bool) -> usize {
        let prefix = prefix.into();
        let entries = self.ctx.cache.find_matching(Some(&prefix));
        let mut waits = Vec::new();
        for entry in &entries {
            if let Some(wait) = entry.clone().invalidate(&self.ctx, refetch) {
                waits.push(wait);
            }
        }
        futures::future::join_all(waits).await;
        entries.len()
    }

    /// Removes every query under `prefix` from memory, observed or not, and deletes the L2
    /// records of the persisted ones (in the background). Fetches in flight for them finish
    /// without writing anywhere. Returns the number removed.
    pub fn remove_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let removed = self.ctx.cache.remove_matching(Some(&prefix));
        for entry in &removed {
            if let Some(l2) = &self.ctx.l2
                && entry.persisted()
            {
                l2.enqueue(entry.key().clone(), L2Op::Delete);
            }
            self.ctx.emit_removed(entry.key());
        }
        removed.len()
    }

    /// Returns every query under `prefix` to its initial state (idle, no data), and deletes
    /// the L2 records of the persisted ones. Returns the number reset.
    pub fn reset_queries(&self, prefix: impl Into<QueryKey>) -> usize {
        let prefix = prefix.into();
        let entries = self.ctx.cache.find_matching(Some(&prefix));
        for entry in &entries {
            entry.clone().reset(&self.ctx);
        }
        entries.len()
    }

    /// Removes every query from memory. L2 records are kept, as on eviction, so keys can
    /// hydrate again; `remove_queries(())` deletes them too.
    pub fn clear(&self) {
        for entry in self.ctx.cache.remove_matching(None) {
            self.ctx.emit_removed(entry.key());
        }
    }

    /// Pauses background fetching (stale refetches, polling) for `key`; its fetch status shows
    /// [`crate::FetchStatus::Paused`]. Returns whether the key is cached.
    pub fn pause(&self, key: impl Into<QueryKey>) -> bool {
        let key = key.into();
        match self.ctx.cache.get(&key, self.ctx.stamp()) {
            Some(entry) => {
                entry.pause(&self.ctx);
                true
            }
            None => false,
        }
    }

    /// Resumes background fetching for `key`; with `refetch`, fetches at once. Returns whether
    /// the key is cached.
    pub fn resume(&self, key: impl Into<QueryKey>, refetch: bool) -> bool {
        let key = key.into();
        match self.ctx.cache.get(&key, self.ctx.stamp()) {
            Some(entry) => {
                entry.resume(&self.ctx, refetch);
                true
            }
            None => false,
        }
    }
}
