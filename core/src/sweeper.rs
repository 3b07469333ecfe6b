//! The gc sweeper: one task per client, however many queries wait for removal. It sleeps
//! until the earliest entry of the client's gc queue, removes the queries whose time has come,
//! and exits when the queue is empty (the next schedule starts it again), so an idle client
//! holds no task and no timer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::ctx::Ctx;
use crate::gc::heap::Pop;
use crate::gc::removable::GcVerdict;
use crate::key::QueryKey;
use crate::runtime::Runtime;
use crate::stats::Stat;

/// Queues `key` for a look at `at` (client clock), starting the sweeper if needed. When stale
/// entries (of queries removed, evicted or re-created since) outnumber the live ones, drops
/// them first, so the queue stays bounded by the idle queries, not by churn.
pub(crate) fn schedule(ctx: &Arc<Ctx>, key: QueryKey, at: u64) {
    let mut start = ctx.gc.push(key, at);
    if ctx.gc.len() > 2 * ctx.cache.len() + 64 {
        let live: Vec<_> = ctx
            .gc
            .drain()
            .into_iter()
            .filter(|(at, key)| ctx.cache.lookup(key).is_some_and(|q| q.gc_queued() == *at))
            .collect();
        start |= ctx.gc.refill(live);
    }
    if start {
        ctx.runtime.spawn(sweep(Arc::downgrade(ctx), ctx.runtime.clone()));
    }
}

/// The sweeper: removes queries whose time has come, sleeps until the next one.
async fn sweep(ctx: Weak<Ctx>, runtime: Runtime) {
    loop {
        let (listener, deadline) = {
            let Some(ctx) = ctx.upgrade() else {
                return;
            };
            let listener = ctx.gc.listen();
            let Some(next) = sweep_due(&ctx) else {
                return;
            };
            (listener, ctx.base.checked_add(Duration::from_nanos(next)))
        };
        match deadline {
            Some(deadline) => {
                let sleep = runtime.sleep_until(deadline);
                let _ = futures::future::select(sleep, listener).await;
            }
            None => listener.await,
        }
    }
}

/// Handles every due entry (and, after a cancellation, every stale one at the front).
/// Returns the time of the next entry, or `None` when the queue is empty and the sweeper stops.
fn sweep_due(ctx: &Arc<Ctx>) -> Option<u64> {
    let now = ctx.clock();
    let mut validating = ctx.gc.take_revalidate();
    loop {
        let (at, key) = match ctx.gc.pop(now, validating) {
            Pop::Entry(at, key) => (at, key),
            Pop::Sleep(next) => return Some(next),
            Pop::Empty => return None,
        };
        let verdict = ctx.cache.lookup(&key).map(|entry| (entry.gc_check(now), entry));
        match verdict {
            None | Some((GcVerdict::Keep, _)) => {}
            Some((GcVerdict::Later(then), _)) => {
                if then == at {
                    validating = false; // a current entry: the ones behind it are later
                }
                ctx.gc.requeue(key, then);
            }
            Some((GcVerdict::Remove, entry)) => {
                if ctx.cache.remove_if_idle(&key, &entry) {
                    ctx.stats.add(Stat::GcRemoval);
                    tracing::debug!(%key, "garbage-collected unobserved query");
                    ctx.emit_removed(&key);
                }
            }
        }
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use std::time::Duration;

    use crate::testing::TestRuntime;
    use crate::{QueryClient, QueryClientConfig, QueryKey};

    #[test]
    fn the_gc_queue_stays_bounded_by_the_live_queries_under_churn() {
        let test = TestRuntime::new();
        let config = QueryClientConfig::default().gc_time(Duration::from_secs(3600));
        let client = QueryClient::with_runtime(test.runtime(), config);
        let mut largest = 0;
        for i in 0..10_000_i64 {
            let key = QueryKey::from(("churn", i % 50));
            client.set_query_data(key.clone(), i).unwrap_or_default();
            if i % 3 == 0 {
                client.remove_queries(key);
            }
            largest = largest.max(client.ctx.gc.len());
        }
        assert!(largest <= 2 * 50 + 64 + 1, "the gc queue grew to {largest} entries");
        // What is left is still collected on time.
        test.advance(Duration::from_secs(3601));
        assert_eq!(client.len(), 0);
    }
}
