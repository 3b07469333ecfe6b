//! Attaching an observer to its query and detaching it: the subscriber count, moving to
//! another query (a new key, a removed query), and the state updates the query sends.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::error::TypeMismatch;
use crate::events::CacheEvent;
use crate::options::{OptionsInner, QueryOptions};
use crate::query::{self, CellInner, Effects, QueryCell};
use crate::state::{QueryState, RawState};

use super::compute::Computed;
use super::{Attachment, Shared, poll};

/// An attachment made or brought up to date, with what to publish.
pub(super) struct Step<T> {
    pub(super) attachment: Attachment<T>,
    /// The query's state to compute the result from; `None` when the result cannot look
    /// different.
    pub(super) raw: Option<RawState<T>>,
    pub(super) version: u64,
    /// Publish even if this version of the query's state was published already (the options
    /// changed).
    pub(super) again: bool,
}

/// How one round of [`Shared::settle`] ended.
enum Round<T, S, E> {
    /// Attached (or not, on a type mismatch); the state to tell the listeners, if new.
    Done(Option<(Arc<QueryState<S, E>>, u64)>),
    /// The options changed, or the query was removed, meanwhile: again, from this attachment.
    Again(Option<Attachment<T>>),
}

type Published<S, E> = Option<(Arc<QueryState<S, E>>, u64)>;

impl<T, E, S> Shared<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// Brings the attachment in line with the current options, then publishes the resulting
    /// state to the listeners. The caller has set `attaching`, and passes the attachment it
    /// took out of `attached`, if any: kept and reconfigured if it is of the options' key
    /// (and its query was not removed), else detached and replaced. Options that change
    /// meanwhile make it start over; a last unsubscription meanwhile makes it detach.
    pub(super) fn settle(self: &Arc<Self>, mut current: Option<Attachment<T>>) {
        loop {
            let (options, seq, epoch) = {
                let inner = self.lock();
                (inner.options.clone(), inner.options_seq, inner.epoch)
            };
            // Kept if it is of the options' key and its states are still this observer's (a
            // `set_options` to another key and back moved the epoch on).
            let same = current.as_ref().is_some_and(|a| {
                a.epoch == epoch && a.cell.key() == options.key() && !a.cell.lock().detached
            });
            let step = match current.take() {
                Some(attachment) if same => Ok(self.reconfigure(attachment, &options)),
                old => {
                    if let Some(old) = old {
                        self.detach(old);
                    }
                    self.connect(&options)
                }
            };
            drop(options);
            let round = match step {
                Ok(step) => self.publish(step, seq),
                Err(mismatch) => self.publish_mismatch(mismatch, seq),
            };
            match round {
                Round::Again(attachment) => current = attachment,
                Round::Done(published) => {
                    if let Some((state, version)) = published {
                        self.listeners.notify(&state, version);
                    }
                    return;
                }
            }
        }
    }

    /// Ends a round of `settle` with `step`: stores the attachment (or detaches it when every
    /// subscription ended meanwhile) and publishes its state if it is new.
    fn publish(self: &Arc<Self>, step: Step<T>, seq: u64) -> Round<T, S, E> {
        let Step { attachment, raw, version, again } = step;
        let newer = |seen: u64| if again { version + 1 >= seen } else { version + 1 > seen };
        let wanted = raw.is_some() && newer(self.lock().seen);
        let computed =
            raw.filter(|_| wanted).map(|raw| self.compute(Some(&raw), Some(&attachment.cell)));
        let detached = attachment.cell.lock().detached;
        let mut inner = self.lock();
        if inner.options_seq != seq || inner.recheck || detached {
            inner.recheck = false;
            drop(inner);
            drop(computed);
            return Round::Again(Some(attachment));
        }
        inner.attaching = false;
        let (replaced, unused) = match computed {
            Some(computed) if newer(inner.seen) => {
                inner.seen = version + 1;
                (Some(inner.commit(computed)), None)
            }
            other => (None, other),
        };
        let published: Published<S, E> =
            replaced.is_some().then(|| (inner.result.clone(), inner.version));
        let orphan = if inner.subscribers == 0 {
            Some(attachment)
        } else {
            inner.attached = Some(attachment);
            None
        };
        drop(inner);
        drop((replaced, unused));
        match orphan {
            // Every subscription ended while this one attached: undo it.
            Some(orphan) => {
                self.detach(orphan);
                Round::Done(None)
            }
            None => Round::Done(published),
        }
    }

    fn publish_mismatch(&self, mismatch: TypeMismatch, seq: u64) -> Round<T, S, E> {
        let computed = Computed::mismatch(mismatch);
        let mut inner = self.lock();
        if inner.options_seq != seq {
            drop(inner);
            drop(computed);
            return Round::Again(None);
        }
        inner.attaching = false;
        inner.recheck = false;
        let replaced = inner.commit(computed);
        let published = (inner.result.clone(), inner.version);
        drop(inner);
        drop(replaced);
        Round::Done(Some(published))
    }

    /// Attaches to the query of `options`' key: counts as its observer (and active one when
    /// enabled), listens to it, and fetches if enabled and stale; starts polling.
    fn connect(self: &Arc<Self>, options: &QueryOptions<T, E>) -> Result<Step<T>, TypeMismatch> {
        let ctx = &self.ctx;
        let key = options.key();
        let o = &options.inner;
        let epoch = {
            let mut inner = self.lock();
            inner.epoch += 1;
            inner.seen = 0;
            inner.epoch
        };
        let (cell, listener, raw, version) = loop {
            let cell = query::cell::<T>(ctx, key)?;
            let (weak, from): (Weak<Self>, _) = (Arc::downgrade(self), Arc::downgrade(&cell));
            let mut effects = Effects::none();
            let mut initial = cell.initial_for(o);
            let mut g = cell.lock();
            if g.detached {
                continue;
            }
            let x = g.x();
            x.observers += 1;
            if o.enabled {
                x.active += 1;
            }
            QueryCell::cancel_gc(&mut g, &mut effects);
            let listener = QueryCell::add_listener(
                &mut g,
                Box::new(move |raw: &RawState<T>, version| {
                    if let (Some(shared), Some(cell)) = (weak.upgrade(), from.upgrade()) {
                        shared.on_update(raw, version, epoch, &cell);
                    }
                }),
            );
            QueryCell::set_fetcher(&mut g, o.clone(), &mut effects);
            if !cell.hydration_due(&g, ctx, o.codec) {
                QueryCell::seed_initial(&mut g, ctx, o, &mut initial, &mut effects);
            }
            self.fetch_if_stale(&cell, &mut g, o, &mut effects);
            // A panicking `Clone` costs the listeners this state only (they get the next).
            let (raw, version) = (cell.copy_state(&g).ok(), g.version);
            drop(g);
            // The observer is announced before the states its attachment causes.
            ctx.emit(&CacheEvent::ObserverAdded(key.clone()));
            effects.run(ctx, key);
            break (cell, listener, raw, version);
        };
        let every = poll::period(ctx, o);
        let interval = every.map(|every| self.start_interval(every));
        let attachment = Attachment { cell, listener, epoch, interval, every, enabled: o.enabled };
        Ok(Step { attachment, raw, version, again: false })
    }

    /// Fetches if the options are enabled and the data is missing or stale, once the key's
    /// stored record is in if it is being read (the read is started here if it is due).
    pub(super) fn fetch_if_stale(
        &self,
        cell: &Arc<QueryCell<T>>,
        g: &mut CellInner<T>,
        o: &Arc<OptionsInner<T, E>>,
        effects: &mut Effects<T>,
    ) {
        let ctx = &self.ctx;
        let stale_time = ctx.stale_time(&o.key, o.stale_time);
        let wants_fetch = o.enabled
            && !g.paused
            && (g.state.data.is_none() || QueryCell::is_stale(g, ctx.now_nanos(), stale_time));
        match cell.begin_hydration(g, ctx, o) {
            // Fetch once the stored record is in, and only if it is not fresh; the read
            // itself is driven by that task (or by whoever else awaits it).
            Some(read) if wants_fetch => {
                effects.spawns.push(cell.fetch_after_hydration(read, ctx, o))
            }
            Some(read) => effects.spawns.push(Box::pin(read)),
            None if wants_fetch => {
                let _ = cell.join_or_begin(g, ctx, o, effects);
            }
            None => {}
        }
    }

    fn on_update(
        self: &Arc<Self>,
        raw: &RawState<T>,
        version: u64,
        epoch: u64,
        cell: &Arc<QueryCell<T>>,
    ) {
        let before = {
            let inner = self.lock();
            if epoch != inner.epoch || version < inner.seen {
                return;
            }
            inner.before()
        };
        if cell.lock().detached {
            // The query was removed (remove_queries, clear): move to a new one for the key.
            drop(before);
            self.left(epoch);
            return;
        }
        let computed = self.compute_from(&before, Some(raw), Some(cell));
        drop(before);
        let (replaced, state, seq) = {
            let mut inner = self.lock();
            if epoch != inner.epoch || version < inner.seen {
                drop(inner);
                drop(computed);
                return;
            }
            inner.seen = version + 1;
            let replaced = inner.commit(computed);
            (replaced, inner.result.clone(), inner.version)
        };
        drop(replaced);
        self.listeners.notify(&state, seq);
    }

    /// The query of attachment `epoch` was removed: attach to the key's current one, or, if an
    /// attachment is under way, have it look again.
    fn left(self: &Arc<Self>, epoch: u64) {
        let old = {
            let mut inner = self.lock();
            if epoch != inner.epoch {
                return;
            }
            if inner.attaching {
                inner.recheck = true;
                return;
            }
            let Some(old) = inner.attached.take() else { return };
            inner.attaching = true;
            old
        };
        self.settle(Some(old));
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

    pub(super) fn detach(&self, attachment: Attachment<T>) {
        if let Some(interval) = attachment.interval {
            interval.abort();
        }
        let ctx = &self.ctx;
        let cell = attachment.cell;
        let mut effects = Effects::none();
        let abandoned = {
            let mut g = cell.lock();
            if let Some(x) = g.x_opt() {
                x.observers = x.observers.saturating_sub(1);
                if attachment.enabled {
                    x.active = x.active.saturating_sub(1);
                }
            }
            QueryCell::remove_listener(&mut g, attachment.listener);
            cell.maybe_schedule_gc(&mut g, ctx, &mut effects);
            g.in_flight().cloned().filter(|_| g.observers() == 0)
        };
        effects.run(ctx, cell.key());
        if let Some(slot) = abandoned {
            slot.cancel_if_abandoned();
        }
        ctx.emit(&CacheEvent::ObserverRemoved(cell.key().clone()));
    }
}
