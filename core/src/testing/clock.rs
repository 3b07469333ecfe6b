//! The manual clock's side of [`TestRuntime`](super::TestRuntime): the timer and its sleeps,
//! which complete only when the test moves the clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use super::Shared;
use crate::runtime::{BoxFuture, Timer};

pub(super) struct TestTimer {
    pub(super) shared: Arc<Shared>,
}

impl Timer for TestTimer {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        Box::pin(Sleep { shared: self.shared.clone(), deadline, id: None })
    }

    fn now(&self) -> Instant {
        self.shared.now()
    }

    fn system_now(&self) -> SystemTime {
        self.shared.base_system + self.shared.lock().elapsed
    }
}

/// How far the manual clock can move: far enough for any test, near enough that `Instant` and
/// `SystemTime` arithmetic on it never overflows.
pub(super) const MAX_ELAPSED: Duration = Duration::from_secs(10_000 * 365 * 24 * 3600);

struct Sleep {
    shared: Arc<Shared>,
    deadline: Instant,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        if shared.base + state.elapsed >= self.deadline {
            if let Some(id) = self.id.take() {
                state.timers.remove(&(self.deadline, id));
            }
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = state.next_timer;
                state.next_timer += 1;
                self.id = Some(id);
                id
            }
        };
        state.timers.insert((self.deadline, id), cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.shared.lock().timers.remove(&(self.deadline, id));
        }
    }
}
