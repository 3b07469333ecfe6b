//! Changing an observer's options while it is subscribed (TanStack's `observer.setOptions`).

use std::fmt;
use std::sync::Arc;

use crate::options::QueryOptions;
use crate::query::{Effects, QueryCell};

use super::attach::Step;
use super::{Attachment, QueryObserver, Shared, poll};

impl<T, E, S> QueryObserver<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// Switches this observer to `options`, keeping its listeners, subscriptions, streams and
    /// `select` (TanStack's `observer.setOptions`).
    ///
    /// While subscribed:
    /// - **Another key**: the observer leaves the old query (which, unobserved, starts its
    ///   garbage-collection clock, as on an unsubscription) and attaches to the new one,
    ///   fetching if enabled and stale; listeners get the new query's states from then on,
    ///   none of the old one's. With a
    ///   [`placeholder_data_fn`](QueryOptions::placeholder_data_fn) (or
    ///   [`keep_previous_data`](QueryOptions::keep_previous_data)) the old key's data stays
    ///   on show, as a placeholder, until the new key has data.
    /// - **The same key**: enabling fetches if the data is missing or stale; disabling stops
    ///   polling and the observer no longer counts as active (invalidation and reset do not
    ///   refetch for it); a changed refetch interval restarts polling with the new period. A
    ///   new stale time applies to the next decisions (enabling, the next attachment); on its
    ///   own it fetches nothing, as in TanStack Query. Invalidation and resumption refetch
    ///   with the new options.
    ///
    /// Without a subscription the options are only stored, for the next one. Safe to call
    /// from a listener and concurrently with subscribing and unsubscribing: the last options
    /// set win, and the observer ends up attached to their key if it has subscribers. On an
    /// observer whose client has been dropped the options are stored and nothing else
    /// happens.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::{Arc, Mutex};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let user = |id: u32| {
    ///     QueryOptions::new(key!("user", id), move || async move { Ok::<_, String>(format!("user {id}")) })
    /// };
    /// let observer = client.watch(&user(1));
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _subscription = observer.subscribe(move |state| log.lock().unwrap().push(state.data.clone()));
    /// test.run_until_idle();
    ///
    /// observer.set_options(user(2));
    /// test.run_until_idle();
    /// assert_eq!(seen.lock().unwrap().last().unwrap().as_deref(), Some("user 2"));
    /// assert_eq!(client.observer_count(key!("user", 1)), 0, "left");
    /// assert_eq!(client.observer_count(key!("user", 2)), 1);
    ///
    /// // Same key, disabled: no longer active, no polling.
    /// observer.set_options(user(2).enabled(false));
    /// assert_eq!(client.observer_count(key!("user", 2)), 1, "still observed");
    /// # }
    /// ```
    pub fn set_options(&self, options: QueryOptions<T, E>) {
        let shared = &self.shared;
        let (replaced, current) = {
            let mut inner = shared.lock();
            if inner.options.key() != options.key() {
                // The old query's states are not this observer's any more.
                inner.epoch += 1;
            }
            let replaced = std::mem::replace(&mut inner.options, options);
            inner.options_seq += 1;
            // An attachment under way sees the new sequence number and starts over.
            let settle = inner.subscribers > 0 && !inner.attaching && !shared.ctx.is_closed();
            inner.attaching |= settle;
            (replaced, settle.then(|| inner.attached.take()))
        };
        drop(replaced);
        if let Some(current) = current {
            shared.settle(current);
        }
    }
}

impl<T, E, S> Shared<T, E, S>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// Applies new options of the same key to an attachment: the active count, the query's
    /// fetcher, a fetch when enabling stale data, and polling.
    pub(super) fn reconfigure(
        self: &Arc<Self>,
        mut attachment: Attachment<T>,
        options: &QueryOptions<T, E>,
    ) -> Step<T> {
        let ctx = &self.ctx;
        let o = &options.inner;
        let enabling = o.enabled && !attachment.enabled;
        // A result with real data looks the same under any options of its key (`select` stays);
        // one without may now show another placeholder.
        let recompute = {
            let inner = self.lock();
            inner.result.data.is_none() || inner.result.is_placeholder
        };
        let mut effects = Effects::none();
        let (raw, version) = {
            let cell = &attachment.cell;
            let mut g = cell.lock();
            match (attachment.enabled, o.enabled) {
                (false, true) => g.x().active += 1,
                (true, false) => {
                    if let Some(x) = g.x_opt() {
                        x.active = x.active.saturating_sub(1);
                    }
                }
                _ => {}
            }
            let had_codec = g.codec().is_some();
            QueryCell::set_fetcher(&mut g, o.clone(), &mut effects);
            if enabling {
                self.fetch_if_stale(cell, &mut g, o, &mut effects);
            } else if !had_codec
                && g.codec().is_some()
                && let Some(step) = cell.begin_hydration(&mut g, ctx, o)
            {
                // Newly persisted: its hydration (a pending seed, an L2 read) runs as it
                // does when an observer attaches.
                effects.spawns.push(Box::pin(step));
            }
            (recompute.then(|| cell.copy_state(&g).ok()).flatten(), g.version)
        };
        attachment.enabled = o.enabled;
        effects.run(ctx, attachment.cell.key());
        let every = poll::period(ctx, o);
        if every != attachment.every {
            if let Some(old) = attachment.interval.take() {
                old.abort();
            }
            attachment.interval = every.map(|every| self.start_interval(every));
            attachment.every = every;
        }
        Step { attachment, raw, version, again: true }
    }
}
