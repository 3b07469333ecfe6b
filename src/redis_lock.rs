//! Fetch locks on Redis for [`RedisStorage`](crate::RedisStorage): the cross-process single
//! flight of [`QueryClientConfig::single_flight`](crate::QueryClientConfig::single_flight).
//!
//! A lock is `SET lock:<key> <token> NX PX <ttl>` beside the record (under the storage's
//! namespace, if any); it is released with a script that deletes it only while it still
//! holds the caller's token, so a holder whose lock expired never frees its successor's.

use std::time::Duration;

use pystackquery_core::storage::{LockOutcome, StorageError};
use redis::aio::ConnectionManager;

/// Deletes the lock only if it holds the caller's token (`GET` and `DEL` in one step).
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                      return redis.call('DEL', KEYS[1]) else return 0 end";

/// The name of the lock of the record stored under `record_key` (before namespacing).
pub(crate) fn lock_key(record_key: &str) -> String {
    format!("lock:{record_key}")
}

/// `SET key token NX PX ttl`: [`LockOutcome::Acquired`] when the key was free.
pub(crate) async fn try_lock(
    mut connection: ConnectionManager,
    key: String,
    token: String,
    ttl: Duration,
) -> Result<LockOutcome, StorageError> {
    // PX takes whole milliseconds; zero would be rejected.
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(millis)
        .query_async(&mut connection)
        .await
        .map_err(super::redis::storage_error)?;
    Ok(if set.is_some() { LockOutcome::Acquired } else { LockOutcome::Held })
}

/// Deletes `key` if it holds `token`.
pub(crate) async fn unlock(
    mut connection: ConnectionManager,
    key: String,
    token: String,
) -> Result<(), StorageError> {
    let _deleted: i64 = redis::cmd("EVAL")
        .arg(UNLOCK)
        .arg(1)
        .arg(key)
        .arg(token)
        .query_async(&mut connection)
        .await
        .map_err(super::redis::storage_error)?;
    Ok(())
}
