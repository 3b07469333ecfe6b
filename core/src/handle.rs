//! The [`QueryClient`] handle: the public type, defined below the layers that hand a client to
//! user code (mutation callbacks), with its methods in `client/`.

use std::sync::Arc;

use crate::ctx::Ctx;

/// Fetches, caches, deduplicates and revalidates data by key.
///
/// A client is cheap to clone (an `Arc`); clones share one cache. It holds no runtime type
/// parameter: spawning and time come from the [`Runtime`](crate::Runtime) it was built with.
///
/// Dropping the last clone frees the cache: fetches still in flight hold the client only
/// weakly, and are cancelled (their waiters get [`QueryError::Cancelled`](crate::QueryError)),
/// even one whose function never finishes; queued L2 writes are carried out by the write task,
/// which holds the storage, not the client. A live observer subscription keeps the cache (not
/// the client) until it ends, but the client counts as closed: its observers' streams end
/// (see [`QueryStream`](crate::QueryStream)), their polling stops, and they start no new work
/// (a new subscription gets the observer's last state once and attaches to nothing).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let options = QueryOptions::new(("greeting",), || async { Ok::<_, std::io::Error>("hello") });
///
/// let data = test.block_on(client.fetch_query(&options)).unwrap();
/// assert_eq!(data, "hello");
/// assert_eq!(client.get_query_data::<&str>(("greeting",)).unwrap(), Some("hello"));
/// # }
/// ```
#[derive(Clone)]
pub struct QueryClient {
    pub(crate) ctx: Arc<Ctx>,
    /// Shared by the clones of this client only (observers hold `ctx`, not this): its `Drop`
    /// tells the context that the last handle has gone.
    pub(crate) _handle: Arc<ClientHandle>,
}

/// The client's own token: dropped with the last [`QueryClient`] clone, it closes the context.
pub(crate) struct ClientHandle {
    pub(crate) ctx: Arc<Ctx>,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.ctx.close();
    }
}
