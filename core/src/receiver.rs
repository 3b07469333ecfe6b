//! The coherence task: one per client with a bus. It takes what the bus delivered to the
//! client's inbox (`coherence::Inbox`) and applies it to memory, one message at a time, with
//! no lock held between them; a panic while applying one is contained (logged) and the next
//! one is applied. It holds the client weakly and ends when the client closes.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use crate::coherence::{CoherenceMessage, CoherenceOp, Inbound};
use crate::ctx::{Ctx, Entry};

/// Starts the client's coherence task, if it has a bus.
pub(crate) fn start(ctx: &Arc<Ctx>) {
    let Some(inbox) = ctx.inbox.clone() else {
        return;
    };
    let weak = Arc::downgrade(ctx);
    ctx.runtime.spawn(async move {
        while let Some(inbound) = inbox.next().await {
            let Some(ctx) = weak.upgrade() else {
                return;
            };
            let applied = AssertUnwindSafe(apply(&ctx, inbound)).catch_unwind().await;
            if let Err(payload) = applied {
                let message = crate::error::panic_message(&*payload);
                tracing::error!("applying a coherence message panicked: {message}");
            }
        }
    });
}

async fn apply(ctx: &Arc<Ctx>, inbound: Inbound) {
    let message = match inbound {
        Inbound::Message(message) => message,
        Inbound::Resync => {
            // Messages may have been missed: no persisted key may be served as fresh.
            let entries = ctx.cache.find_matching(None);
            tracing::debug!("coherence bus reconnected; marking persisted keys stale");
            for entry in entries.into_iter().filter(|e| e.persisted()) {
                entry.invalidate_remote(ctx, false);
            }
            return;
        }
    };
    let Some(entry) = find(ctx, &message) else {
        if message.op == CoherenceOp::Remove
            && let Some(key) = &message.parts
        {
            ctx.seeds.remove_matching(Some((key, true)));
        }
        return;
    };
    if !entry.persisted() {
        return;
    }
    match message.op {
        CoherenceOp::Invalidate => entry.invalidate_remote(ctx, true),
        CoherenceOp::Remove => {
            if ctx.cache.remove_entry(entry.key(), &entry) {
                ctx.emit_removed(entry.key());
                entry.removed();
            }
        }
        CoherenceOp::Reset => entry.reset_remote(ctx),
        CoherenceOp::Set => {
            let read = message.updated_at().and_then(|at| entry.adopt_remote(ctx, at));
            if let Some(read) = read {
                read.await;
            }
        }
    }
}

/// The cached query the message names: by its parts when given (checked against the storage
/// string), else by the storage string among the cached keys.
fn find(ctx: &Ctx, message: &CoherenceMessage) -> Option<Entry> {
    match &message.parts {
        Some(key) if key.storage_string() == message.key => ctx.cache.lookup(key),
        _ => ctx
            .cache
            .find_matching(None)
            .into_iter()
            .find(|entry| entry.key().storage_string() == message.key),
    }
}
