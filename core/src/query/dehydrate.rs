//! A query's side of dehydration: its state as a record (cloned under the lock, encoded
//! after), and restoring a hydrated record (decoded with no lock held, applied newer-wins by
//! `apply_record`, the rule of the L2 path).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::cell::QueryCell;
use super::effects::Effects;
use crate::ctx::Ctx;
use crate::dehydrate::{HydrateOutcome, Snapshot};
use crate::error::panic_message;
use crate::key::QueryKey;
use crate::seeds::Seed;
use crate::storage::record::{Codec, Record};

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// The current state as a record, if the key is persisted. The state is cloned under the
    /// lock (the data type's `Clone`, as on the hit path); `Serialize` and `Display` run after
    /// it is released. Panics in either are contained.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let (codec, state) = {
            let g = self.lock();
            let Some(codec) = g.codec() else {
                return Snapshot::NotPersisted;
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| g.state.clone())) {
                Ok(state) => (codec, state),
                Err(payload) => {
                    let message = panic_message(&*payload);
                    return Snapshot::Failed(format!("the data type's Clone panicked: {message}"));
                }
            }
        };
        let encoded = std::panic::catch_unwind(AssertUnwindSafe(move || {
            let encoded = (codec().encode_value)(&state);
            drop(state);
            encoded
        }));
        match encoded {
            Ok(Ok(record)) => Snapshot::Record(record),
            Ok(Err(error)) => Snapshot::Failed(error.to_string()),
            Err(payload) => {
                Snapshot::Failed(format!("encoding panicked: {}", panic_message(&*payload)))
            }
        }
    }

    /// Restores the key's pending seed now, if the key is persisted (its data type is
    /// known); otherwise leaves it pending for the key's first persisting use.
    pub(crate) fn claim_seed(self: &Arc<Self>, ctx: &Arc<Ctx>) -> HydrateOutcome {
        let (codec, seed) = {
            let g = self.lock();
            let Some(codec) = g.codec() else {
                return HydrateOutcome::Deferred;
            };
            match ctx.seeds.take(&self.key) {
                Some(seed) => (codec, seed),
                // Taken meanwhile by the key's hydration step, which restores it.
                None => return HydrateOutcome::Deferred,
            }
        };
        self.restore_seed(ctx, codec(), seed)
    }

    /// Decodes a seed with no lock held, then restores it unless memory is newer.
    pub(crate) fn restore_seed(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        codec: Codec<T>,
        seed: Seed,
    ) -> HydrateOutcome {
        let Some(record) = decode_seed(&self.key, codec, seed) else {
            return HydrateOutcome::Undecodable;
        };
        let mut effects = Effects::none();
        let applied = {
            let mut g = self.lock();
            let applied = !g.detached && Self::apply_record(&mut g, ctx, record, &mut effects);
            if applied {
                // Newer than anything the key had: L2 gets it too (if configured).
                self.persist(&g, ctx, &mut effects);
                self.maybe_schedule_gc(&mut g, ctx, &mut effects);
            }
            applied
        };
        effects.run(ctx, &self.key);
        if applied {
            tracing::debug!(key = %self.key, "hydrated from a dehydrated state");
            HydrateOutcome::Applied
        } else {
            HydrateOutcome::Skipped
        }
    }
}

/// The seed's record as `T`'s, or `None` (logged) if it does not decode; a panicking
/// `Deserialize` is contained.
pub(crate) fn decode_seed<T>(key: &QueryKey, codec: Codec<T>, seed: Seed) -> Option<Record<T>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| (codec.decode_value)(seed.state))) {
        Ok(Ok(record)) => Some(record),
        Ok(Err(error)) => {
            tracing::warn!(%key, "hydrated record dropped: {error}");
            None
        }
        Err(payload) => {
            let message = panic_message(&*payload);
            tracing::error!(%key, "hydrated record dropped: decoding it panicked: {message}");
            None
        }
    }
}
