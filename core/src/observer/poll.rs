//! Polling: the refetch interval of an attached, enabled observer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{AbortHandle, Abortable};

use crate::ctx::Ctx;
use crate::options::OptionsInner;

use super::Shared;

/// The period to poll at with `options` (their own interval, else the defaults registered for a
/// prefix of the key): none when disabled, without an interval, or with an interval of zero
/// (never, as a falsy interval in TanStack Query).
pub(super) fn period<T, E>(ctx: &Ctx, options: &OptionsInner<T, E>) -> Option<Duration> {
    ctx.refetch_interval(&options.key, options.refetch_interval)
        .filter(|every| options.enabled && !every.is_zero())
}

impl<T, E, S> Shared<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// Polls every `every` while attached, with the observer's current options. Ticks missed
    /// while a fetch ran long are skipped, not replayed; a period too long to represent never
    /// fires. The task ends when aborted (detach, or `set_options` changing the period), when
    /// the observer is gone, or once the client is.
    pub(super) fn start_interval(self: &Arc<Self>, every: Duration) -> AbortHandle {
        let (handle, registration) = AbortHandle::new_pair();
        let weak = Arc::downgrade(self);
        let runtime = self.ctx.runtime.clone();
        let task = async move {
            let Some(mut next) = runtime.now().checked_add(every) else { return };
            loop {
                runtime.sleep_until(next).await;
                let Some(shared) = weak.upgrade() else { return };
                if shared.ctx.is_closed() {
                    return;
                }
                let target = {
                    let inner = shared.lock();
                    inner.attached.as_ref().map(|a| (a.cell.clone(), inner.options.inner.clone()))
                };
                // No tick between two attachments (a `set_options` under way), nor with
                // options of another key or disabled ones (about to be aborted), nor while
                // paused.
                let target = target.filter(|(cell, options)| {
                    options.key == cell.key && options.enabled && !cell.lock().paused
                });
                if let Some((cell, options)) = target {
                    let slot = cell.fetch_with(&shared.ctx, &options);
                    drop((shared, options, cell));
                    let _ = slot.wait().await;
                }
                let now = runtime.now();
                let Some(mut upcoming) = next.checked_add(every) else { return };
                if upcoming <= now {
                    let Some(later) = now.checked_add(every) else { return };
                    upcoming = later;
                }
                next = upcoming;
            }
        };
        self.ctx.runtime.spawn(async move {
            let _ = Abortable::new(task, registration).await;
        });
        handle
    }
}
