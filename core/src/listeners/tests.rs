use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{ListenerList, Listeners};

fn recorder() -> (Arc<Mutex<Vec<u32>>>, super::Callback<u32>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    (seen, Box::new(move |s: &u32, _| log.lock().unwrap().push(*s)))
}

#[test]
fn an_empty_list_holds_no_allocation_and_removing_the_last_listener_frees_it() {
    let mut list: Listeners<u32> = Listeners::new();
    assert!(list.is_empty() && list.snapshot().is_none());
    let id = list.add(Box::new(|_, _| {}));
    assert_eq!(list.len(), 1);
    assert_eq!(list.remove(id + 1000), 1, "an unknown id removes nothing");
    assert_eq!(list.remove(id), 0);
    assert!(list.is_empty() && list.snapshot().is_none());
}

#[test]
fn newest_wins_skips_a_late_older_state_but_events_are_all_delivered() {
    let list = ListenerList::new();
    let (seen, call) = recorder();
    list.add(call);
    list.notify(&2, 2);
    list.notify(&1, 1); // late: older than what this listener saw
    list.notify(&2, 2); // the same version again
    list.notify_every(&7);
    list.notify_every(&7);
    assert_eq!(*seen.lock().unwrap(), vec![2, 7, 7]);
}

#[test]
fn a_snapshot_keeps_the_listeners_of_its_moment() {
    let mut list: Listeners<u32> = Listeners::new();
    let (seen, call) = recorder();
    let id = list.add(call);
    let snapshot = list.snapshot().unwrap();
    list.remove(id);
    snapshot.notify_every(&5);
    assert_eq!(*seen.lock().unwrap(), vec![5]);
}

#[test]
fn a_panicking_listener_does_not_stop_the_others() {
    let list = ListenerList::new();
    list.add(Box::new(|_: &u32, _| panic!("listener bug")));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    list.add(Box::new(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    list.notify(&1, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn notify_one_reaches_only_that_listener() {
    let list = ListenerList::new();
    let (first, call) = recorder();
    let a = list.add(call);
    let (second, call) = recorder();
    list.add(call);
    list.notify_one(a, &9, 0);
    assert_eq!(*first.lock().unwrap(), vec![9]);
    assert!(second.lock().unwrap().is_empty());
}

#[test]
fn a_listener_may_remove_itself_while_being_notified() {
    let list = Arc::new(ListenerList::new());
    let id = Arc::new(AtomicUsize::new(usize::MAX));
    let (l, i) = (list.clone(), id.clone());
    let own = list.add(Box::new(move |_: &u32, _| {
        l.remove(i.load(Ordering::SeqCst) as u64);
    }));
    id.store(own as usize, Ordering::SeqCst);
    list.notify_every(&1);
    assert!(list.is_empty());
}

#[test]
fn a_state_sent_from_inside_the_listener_is_delivered_after_the_current_call() {
    let list = Arc::new(ListenerList::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (l, log) = (list.clone(), seen.clone());
    list.add(Box::new(move |s: &u32, v| {
        log.lock().unwrap().push(*s);
        if *s == 1 {
            // Re-entrant: a newer state, then an older one, while this call runs.
            l.notify(&3, 3);
            l.notify(&2, 2);
            assert_eq!(log.lock().unwrap().len(), 1, "no nested call while one runs");
        }
        let _ = v;
    }));
    list.notify(&1, 1);
    assert_eq!(*seen.lock().unwrap(), vec![1, 3], "the newest pending state comes next");
    list.notify(&2, 2);
    assert_eq!(*seen.lock().unwrap(), vec![1, 3], "an older state after it is dropped");
}

#[test]
fn listeners_driven_from_two_threads_never_overlap_and_end_with_the_newest_state() {
    for _ in 0..200 {
        let list = Arc::new(ListenerList::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(AtomicUsize::new(0));
        let (flag, log) = (inside.clone(), last.clone());
        list.add(Box::new(move |s: &usize, _| {
            assert_eq!(flag.fetch_add(1, Ordering::SeqCst), 0, "two calls at once");
            std::thread::yield_now();
            log.store(*s, Ordering::SeqCst);
            flag.fetch_sub(1, Ordering::SeqCst);
        }));
        let threads: Vec<_> = (1..=4usize)
            .map(|t| {
                let list = list.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let v = i * 4 + t;
                        list.notify(&v, v as u64);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(last.load(Ordering::SeqCst), 49 * 4 + 4, "the newest state is the last seen");
    }
}
