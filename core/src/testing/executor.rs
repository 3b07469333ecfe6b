//! The executor behind [`TestRuntime`](super::TestRuntime): spawned tasks (woken onto the
//! ready queue, run in FIFO order), the waker of the future `block_on` drives, and the
//! spawner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::task::{ArcWake, waker_ref};

use super::Shared;
use crate::runtime::{BoxFuture, Spawner};

pub(super) struct Task {
    id: u64,
    future: Mutex<Option<BoxFuture>>,
    queued: AtomicBool,
    shared: Weak<Shared>,
}

impl Task {
    pub(super) fn run(self: Arc<Self>) {
        self.queued.store(false, Ordering::SeqCst);
        let mut slot = self.future.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(mut future) = slot.take() else {
            return;
        };
        let waker = waker_ref(&self);
        let mut cx = Context::from_waker(&waker);
        match future.as_mut().poll(&mut cx) {
            Poll::Pending => *slot = Some(future),
            Poll::Ready(()) => {
                // The future's lock first: its `Drop` may drop the last runtime handle, whose
                // shutdown locks every task's future, this one's included.
                drop(slot);
                drop(future);
                if let Some(shared) = self.shared.upgrade() {
                    shared.live_tasks.fetch_sub(1, Ordering::SeqCst);
                    let own = shared.lock().tasks.remove(&self.id);
                    drop(own);
                }
            }
        }
    }

    /// Drops the task's future, if it has not finished (the runtime is shutting down).
    pub(super) fn shut_down(&self) {
        let future = self.future.lock().unwrap_or_else(|p| p.into_inner()).take();
        if future.is_some()
            && let Some(shared) = self.shared.upgrade()
        {
            shared.live_tasks.fetch_sub(1, Ordering::SeqCst);
        }
        drop(future);
    }
}

impl ArcWake for Task {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if arc_self.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(shared) = arc_self.shared.upgrade() {
            shared.lock().ready.push_back(arc_self.clone());
            shared.wakeup.notify_all();
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let pending = self.future.get_mut().map(|f| f.is_some()).unwrap_or(false);
        if pending && let Some(shared) = self.shared.upgrade() {
            shared.live_tasks.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

pub(super) struct MainWaker {
    pub(super) shared: Weak<Shared>,
}

impl std::task::Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().main_woken = true;
            shared.wakeup.notify_all();
        }
    }
}

pub(super) struct TestSpawner {
    pub(super) shared: Arc<Shared>,
}

impl Spawner for TestSpawner {
    fn spawn(&self, future: BoxFuture) {
        let mut state = self.shared.lock();
        if state.shut_down {
            // As a real executor after shutdown: the task never runs.
            drop(state);
            drop(future);
            return;
        }
        self.shared.live_tasks.fetch_add(1, Ordering::SeqCst);
        let id = state.next_task;
        state.next_task += 1;
        let task = Arc::new(Task {
            id,
            future: Mutex::new(Some(future)),
            queued: AtomicBool::new(true),
            shared: Arc::downgrade(&self.shared),
        });
        state.tasks.insert(id, task.clone());
        state.ready.push_back(task);
        drop(state);
        self.shared.wakeup.notify_all();
    }
}
