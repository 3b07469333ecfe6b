use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{QueryCache, Stamp, Stored};
use crate::key::QueryKey;

/// A stored query whose busyness a test sets.
struct Fake {
    key: QueryKey,
    busy: AtomicBool,
    detached: AtomicBool,
}

thread_local! {
    /// How many times the store asked a query of this test's thread whether it is idle.
    static IDLE_CHECKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn idle_checks() -> usize {
    IDLE_CHECKS.with(std::cell::Cell::get)
}

impl Stored for Fake {
    fn key(&self) -> &QueryKey {
        &self.key
    }
    fn type_name(&self) -> &'static str {
        "Fake"
    }
    fn is_idle(&self) -> bool {
        IDLE_CHECKS.with(|c| c.set(c.get() + 1));
        !self.busy.load(Ordering::SeqCst) && !self.detached.load(Ordering::SeqCst)
    }
    fn try_detach(&self, force: bool) -> bool {
        if !force && self.busy.load(Ordering::SeqCst) {
            return false;
        }
        self.detached.store(true, Ordering::SeqCst);
        true
    }
}

fn key(i: i64) -> QueryKey {
    QueryKey::from(("k", i))
}

fn fake(key: &QueryKey) -> Arc<Fake> {
    Arc::new(Fake {
        key: key.clone(),
        busy: AtomicBool::new(false),
        detached: AtomicBool::new(false),
    })
}

struct Clock(u64);
impl Clock {
    fn tick(&mut self) -> Stamp {
        self.0 += 1;
        Stamp::new(self.0)
    }
}

fn insert(cache: &QueryCache<Fake>, clock: &mut Clock, i: i64) -> Vec<QueryKey> {
    let k = key(i);
    let (_, evicted) = cache.get_or_insert_with(&k, clock.tick(), || fake(&k));
    evicted.iter().map(|e| e.key().clone()).collect()
}

#[test]
fn the_least_recently_used_idle_query_is_the_victim_across_shards() {
    let cache = QueryCache::new(3);
    let mut clock = Clock(0);
    for i in 0..3 {
        assert!(insert(&cache, &mut clock, i).is_empty());
    }
    // Use 0 again: 1 becomes the oldest.
    assert!(cache.get(&key(0), clock.tick()).is_some());
    assert_eq!(insert(&cache, &mut clock, 3), vec![key(1)]);
    assert_eq!(cache.keys_lru_first(), vec![key(2), key(0), key(3)]);
    assert_eq!(cache.len(), 3);
}

#[test]
fn busy_queries_are_never_evicted_and_the_cache_may_grow_past_capacity_for_them() {
    let cache = QueryCache::new(2);
    let mut clock = Clock(0);
    insert(&cache, &mut clock, 0);
    insert(&cache, &mut clock, 1);
    for i in 0..2 {
        cache.lookup(&key(i)).unwrap().busy.store(true, Ordering::SeqCst);
    }
    assert!(insert(&cache, &mut clock, 2).is_empty(), "no idle victim: nothing evicted");
    assert_eq!(cache.len(), 3);
    cache.lookup(&key(1)).unwrap().busy.store(false, Ordering::SeqCst);
    // Busy queries passed over by an eviction count as used then (being busy is use): 2,
    // untouched since its insert, is now older than 1, which was busy until just now.
    assert_eq!(insert(&cache, &mut clock, 3), vec![key(2), key(1)], "back under capacity");
    assert_eq!(cache.len(), 2);
}

#[test]
fn the_query_just_inserted_is_never_its_own_victim() {
    let cache = QueryCache::new(1);
    let mut clock = Clock(0);
    insert(&cache, &mut clock, 0);
    assert_eq!(insert(&cache, &mut clock, 1), vec![key(0)]);
    assert!(cache.lookup(&key(1)).is_some());
}

#[test]
fn peek_with_touches_only_on_an_answer() {
    let cache = QueryCache::new(10);
    let mut clock = Clock(0);
    insert(&cache, &mut clock, 0);
    insert(&cache, &mut clock, 1);
    assert_eq!(cache.peek_with(&key(0), clock.tick(), |_| None::<()>, |_| true), None);
    assert_eq!(cache.keys_lru_first(), vec![key(0), key(1)], "no answer: order unchanged");
    let answer = cache.peek_with(&key(0), clock.tick(), |q| Some(q.key().clone()), |_| false);
    assert_eq!(answer, Some(key(0)));
    assert_eq!(cache.keys_lru_first(), vec![key(1), key(0)]);
}

#[test]
fn peek_with_counts_the_answers_it_is_told_are_hits() {
    let cache = QueryCache::new(100);
    let mut clock = Clock(0);
    for i in 0..40 {
        insert(&cache, &mut clock, i); // over every shard
    }
    let _ = cache.peek_with(&key(1000), clock.tick(), |_| Some(()), |_| true); // not cached
    let _ = cache.peek_with(&key(0), clock.tick(), |_| None::<()>, |_| true); // no answer
    let _ = cache.peek_with(&key(0), clock.tick(), |_| Some(()), |_| false); // not a hit
    assert_eq!(cache.hits(), 0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..40_000 {
                    let _ = cache.peek_with(
                        &key(i % 40),
                        Stamp::new(u64::try_from(start.elapsed().as_nanos()).unwrap()),
                        |_| Some(()),
                        |_| true,
                    );
                }
            });
        }
    });
    assert_eq!(cache.hits(), 4 * 40_000, "concurrent hits on every shard, none lost");
}

#[test]
fn prefix_removal_finds_exactly_the_matching_keys_and_detaches_them() {
    let cache = QueryCache::new(100);
    let mut clock = Clock(0);
    for (a, b) in [("user", 1), ("user", 2), ("users", 1), ("post", 1)] {
        let k = QueryKey::from((a, b));
        cache.get_or_insert_with(&k, clock.tick(), || fake(&k));
    }
    let user = QueryKey::from(("user",));
    assert_eq!(cache.find_matching(Some(&user)).len(), 2);
    let removed = cache.remove_matching(Some(&user));
    assert_eq!(removed.len(), 2);
    assert!(removed.iter().all(|q| q.detached.load(Ordering::SeqCst)));
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.find_matching(None).len(), 2);
}

#[test]
fn remove_if_idle_refuses_a_busy_or_replaced_query() {
    let cache = QueryCache::new(10);
    let mut clock = Clock(0);
    let k = key(0);
    let (first, _) = cache.get_or_insert_with(&k, clock.tick(), || fake(&k));
    first.busy.store(true, Ordering::SeqCst);
    assert!(!cache.remove_if_idle(&k, &first));
    first.busy.store(false, Ordering::SeqCst);
    let other = fake(&k);
    assert!(!cache.remove_if_idle(&k, &other), "not the query the store holds");
    assert!(cache.remove_if_idle(&k, &first));
    assert!(cache.lookup(&k).is_none());
    // The freed slot is reused.
    insert(&cache, &mut clock, 5);
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_tail_of_busy_queries_is_walked_once_not_on_every_eviction() {
    // One shard's worth is enough to see it: every key lands in some shard, and the busy ones
    // are the oldest everywhere.
    let cache = QueryCache::new(1_000);
    let mut clock = Clock(0);
    for i in 0..900 {
        insert(&cache, &mut clock, i);
        cache.lookup(&key(i)).unwrap().busy.store(true, Ordering::SeqCst);
    }
    for i in 900..1_000 {
        insert(&cache, &mut clock, i);
    }
    // The first eviction passes over the 900 busy queries once...
    assert_eq!(insert(&cache, &mut clock, 1_000), vec![key(900)]);
    let before = idle_checks();
    // ...and the next 50 evictions do not walk them again.
    for i in 1_001..1_051 {
        assert_eq!(insert(&cache, &mut clock, i), vec![key(i - 100)]);
    }
    let per_eviction = (idle_checks() - before) / 50;
    assert!(per_eviction < 100, "{per_eviction} idle checks per eviction");
    for i in 0..900 {
        assert!(cache.lookup(&key(i)).is_some(), "busy query {i} was evicted");
    }
}
