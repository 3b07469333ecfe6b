//! What storage-first revalidation costs: the time a revalidation of a persisted key takes
//! with and without it, on `MemoryStorage` and on a SQLite file, printed (not asserted: the
//! figures depend on the machine and the build). The read finds this process's own record,
//! which is not newer than memory, so every revalidation still calls the function: the
//! difference is the read alone.
//!
//! Needs features `sqlite` and `tokio` (default features).
#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "sqlite", feature = "tokio"))]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::ScratchDir;
use pystackquery::storage::{MemoryStorage, StorageBackend};
use pystackquery::{QueryClientConfig, QueryFilter, QueryOptions, SqliteStorage, key};

const ROUNDS: u32 = 2000;

/// Mean time of one awaited revalidation of one persisted key.
async fn per_revalidation(
    h: &common::Harness,
    store: Arc<dyn StorageBackend>,
    on: bool,
) -> Duration {
    let config = QueryClientConfig::default().storage(store).storage_first(on);
    let client = h.client_with(config);
    let options = QueryOptions::<u32, String>::new(key!("cost"), || async { Ok(7) }).persist();
    client.fetch_query(&options).await.unwrap();
    client.flush_storage().await;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        client.refetch_queries(QueryFilter::exact(key!("cost"))).await;
    }
    client.flush_storage().await;
    let took = started.elapsed() / ROUNDS;
    assert_eq!(client.storage_stats().adopted, 0);
    took
}

#[test]
fn storage_first_cost_per_revalidation() {
    common::run_tokio_current("storage_first_cost", |h| async move {
        let dir = ScratchDir::new("storage-first");
        for (name, store) in [
            ("memory", Arc::new(MemoryStorage::new()) as Arc<dyn StorageBackend>),
            ("sqlite", Arc::new(SqliteStorage::open(dir.path().join("l2.db")).unwrap())),
        ] {
            // Interleaved runs, the best of each: the least disturbed by the write worker and
            // the machine.
            let (mut off, mut on) = (Duration::MAX, Duration::MAX);
            for _ in 0..5 {
                off = off.min(per_revalidation(&h, store.clone(), false).await);
                on = on.min(per_revalidation(&h, store.clone(), true).await);
            }
            eprintln!(
                "storage-first on {name}: {off:?} per revalidation without, {on:?} with \
                 ({:?} added; best of 5 runs of {ROUNDS}, {} build)",
                on.saturating_sub(off),
                if cfg!(debug_assertions) { "debug" } else { "release" }
            );
        }
    });
}
