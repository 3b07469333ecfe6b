//! Attaching an observer to its query and detaching it: the subscriber count, re-attaching
//! after a removal, polling, and the state updates the query sends.

use std::fmt;
use std::sync::{Arc, Weak};

use futures::future::{AbortHandle, Abortable};

use crate::error::QueryError;
use crate::events::CacheEvent;
use crate::query::{self, Effects, QueryCell};
use crate::state::{QueryState, QueryStatus, RawState};

use super::{Attachment, Shared};

impl<T, E, S> Shared<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    pub(super) fn attach(self: &Arc<Self>) {
        let ctx = &self.ctx;
        let key = self.options.key().clone();
        let enabled = self.options.inner.enabled;
        let epoch = {
            let mut inner = self.lock();
            inner.epoch += 1;
            inner.cell_version = 0;
            inner.epoch
        };
        let (cell, listener, raw, version) = loop {
            let cell = match query::cell::<T>(ctx, &key) {
                Ok(cell) => cell,
                Err(mismatch) => {
                    let state = Arc::new(QueryState {
                        status: QueryStatus::Error,
                        error: Some(QueryError::TypeMismatch(mismatch)),
                        ..QueryState::default()
                    });
                    let old = {
                        let mut inner = self.lock();
                        inner.attaching = false;
                        std::mem::replace(&mut inner.result, state)
                    };
                    drop(old);
                    return;
                }
            };
            let weak: Weak<Self> = Arc::downgrade(self);
            let mut effects = Effects::none();
            let mut g = cell.lock();
            if g.detached {
                continue;
            }
            g.observers += 1;
            if enabled {
                g.active += 1;
            }
            QueryCell::cancel_gc(&mut g, &mut effects);
            let listener = QueryCell::add_listener(
                &mut g,
                Box::new(move |raw: &RawState<T>, version| {
                    if let Some(shared) = weak.upgrade() {
                        shared.on_update(raw, version, epoch);
                    }
                }),
            );
            QueryCell::set_fetcher(&mut g, self.options.inner.clone(), &mut effects);
            if g.hydrated || ctx.l2.is_none() || self.options.inner.codec.is_none() {
                QueryCell::seed_initial(&mut g, ctx, &self.options.inner, &mut effects);
            }
            let stale_time = self.options.inner.stale_time.unwrap_or(ctx.config.stale_time);
            let wants_fetch = enabled
                && !g.paused
                && (g.state.data.is_none()
                    || QueryCell::is_stale(&g, ctx.runtime.now(), stale_time));
            let hydration = cell.begin_hydration(&mut g, ctx, &self.options.inner);
            match hydration {
                // Fetch once the stored record is in, and only if it is not fresh; the read
                // itself is driven by that task (or by whoever else awaits it).
                Some(read) if wants_fetch => {
                    effects.spawns.push(cell.fetch_after_hydration(read, ctx, &self.options.inner))
                }
                Some(read) => effects.spawns.push(Box::pin(read)),
                None if wants_fetch => {
                    let _ = cell.join_or_begin(&mut g, ctx, &self.options.inner, &mut effects);
                }
                None => {}
            }
            let (raw, version) = (g.state.clone(), g.version);
            drop(g);
            // The observer is announced before the states its attachment causes.
            ctx.emit(&CacheEvent::ObserverAdded(key.clone()));
            effects.run(ctx, &key);
            break (cell, listener, raw, version);
        };
        let interval = match self.options.inner.refetch_interval {
            Some(every) if enabled && !every.is_zero() => Some(self.start_interval(every)),
            _ => None,
        };
        let state = Arc::new(self.compute(Some(&raw)));
        let attachment = Attachment { cell, listener, interval, enabled };
        let (old, orphan) = {
            let mut inner = self.lock();
            inner.attaching = false;
            // States that arrived while attaching may be newer than the one read here.
            let old = (version >= inner.cell_version).then(|| {
                inner.cell_version = version;
                inner.version += 1;
                std::mem::replace(&mut inner.result, state)
            });
            if inner.subscribers == 0 {
                // Every subscription ended while this one attached: undo it.
                (old, Some(attachment))
            } else {
                inner.attached = Some(attachment);
                (old, None)
            }
        };
        drop(old);
        if let Some(attachment) = orphan {
            self.detach(attachment);
        }
    }

    /// Polls every `every` while attached. Ticks missed while a fetch ran long are skipped,
    /// not replayed; a period too long to represent never fires.
    fn start_interval(self: &Arc<Self>, every: std::time::Duration) -> AbortHandle {
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
                let Some(cell) = shared.lock().attached.as_ref().map(|a| a.cell.clone()) else {
                    return;
                };
                let paused = cell.lock().paused;
                if !paused {
                    let slot = cell.fetch_with(&shared.ctx, &shared.options.inner);
                    drop(shared);
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

    fn on_update(self: &Arc<Self>, raw: &RawState<T>, version: u64, epoch: u64) {
        let cell = {
            let inner = self.lock();
            if epoch != inner.epoch || version <= inner.cell_version {
                return;
            }
            inner.attached.as_ref().map(|a| a.cell.clone())
        };
        if let Some(cell) = cell
            && cell.lock().detached
        {
            // The query was removed (remove_queries, clear): move to a new one for the key.
            self.reattach();
            return;
        }
        let state = Arc::new(self.compute(Some(raw)));
        let (old, seq) = {
            let mut inner = self.lock();
            if epoch != inner.epoch || version <= inner.cell_version {
                return;
            }
            inner.cell_version = version;
            inner.version += 1;
            (std::mem::replace(&mut inner.result, state.clone()), inner.version)
        };
        drop(old);
        self.listeners.notify(&state, seq);
    }

    /// Leaves a removed query and attaches to the key's current one.
    fn reattach(self: &Arc<Self>) {
        let old = {
            let mut inner = self.lock();
            if inner.attaching {
                return;
            }
            let Some(old) = inner.attached.take() else { return };
            inner.attaching = true;
            old
        };
        self.detach(old);
        self.attach();
        let (state, version) = {
            let inner = self.lock();
            (inner.result.clone(), inner.version)
        };
        self.listeners.notify(&state, version);
    }

    pub(super) fn unsubscribe(&self, id: u64) {
        self.listeners.remove(id);
        let attachment = {
            let mut inner = self.lock();
            inner.subscribers = inner.subscribers.saturating_sub(1);
            if inner.subscribers > 0 {
                return;
            }
            inner.attached.take()
        };
        if let Some(attachment) = attachment {
            self.detach(attachment);
        }
    }

    fn detach(&self, attachment: Attachment<T>) {
        if let Some(interval) = attachment.interval {
            interval.abort();
        }
        let ctx = &self.ctx;
        let cell = attachment.cell;
        let mut effects = Effects::none();
        let abandoned = {
            let mut g = cell.lock();
            g.observers = g.observers.saturating_sub(1);
            if attachment.enabled {
                g.active = g.active.saturating_sub(1);
            }
            QueryCell::remove_listener(&mut g, attachment.listener);
            cell.maybe_schedule_gc(&mut g, ctx, &mut effects);
            g.in_flight.clone().filter(|_| g.observers == 0)
        };
        effects.run(ctx, cell.key());
        if let Some(slot) = abandoned {
            slot.cancel_if_abandoned();
        }
        ctx.emit(&CacheEvent::ObserverRemoved(cell.key().clone()));
    }
}
