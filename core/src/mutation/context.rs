//! [`MutationContext`]: what a mutation's callbacks receive (the client, the mutation key and
//! meta, the value `on_mutate` returned), and the optimistic writes of one run.

use std::fmt;
use std::sync::Arc;

use crate::ctx::Ctx;
use crate::error::TypeMismatch;
use crate::handle::QueryClient;
use crate::key::QueryKey;
use crate::meta::Meta;
use crate::query::{self, Effects, QueryCell, clone_data};
use crate::sync::Mutex;

/// What a mutation's callbacks receive besides the data, error and input: the client, the
/// mutation's key and meta, and what `on_mutate` returned, typed as `C`.
///
/// `on_mutate` itself receives a `MutationContext<()>`. Its optimistic writes
/// ([`set_optimistic`](Self::set_optimistic), [`update_optimistic`](Self::update_optimistic))
/// are shown to every reader and observer at once but are not written to L2 until the mutation
/// succeeds, and [`rollback`](Self::rollback) (typically in `on_error`) restores what they
/// replaced, so no callback needs the previous value as its context.
///
/// Cloning is cheap (reference counts, and a clone of `C`).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key};
/// use pystackquery_core::testing::TestRuntime;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
///
/// let rename = MutationOptions::new(|_name: String| async { Err::<(), _>("server said no".to_string()) })
///     .on_mutate(|name: &String, cx| {
///         cx.set_optimistic(key!("user", 1), name.clone()).unwrap();
///     })
///     .on_error(|_error, _name, cx| cx.rollback());
/// let result = test.block_on(client.mutate(&rename, "Grace".to_string()));
/// assert!(result.is_err());
/// assert_eq!(client.get_query_data::<String>(key!("user", 1)).unwrap().as_deref(), Some("Ada"));
/// # }
/// ```
#[non_exhaustive]
pub struct MutationContext<C = ()> {
    /// The client the mutation runs on.
    pub client: QueryClient,
    /// The options' mutation key, if any.
    pub mutation_key: Option<QueryKey>,
    /// The options' meta (empty when none was set).
    pub meta: Meta,
    /// What `on_mutate` returned: `None` before it ran, when the options have none, or when it
    /// panicked.
    pub on_mutate_result: Option<C>,
    pub(crate) writes: Arc<Writes>,
}

impl<C: Clone> Clone for MutationContext<C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            mutation_key: self.mutation_key.clone(),
            meta: self.meta.clone(),
            on_mutate_result: self.on_mutate_result.clone(),
            writes: self.writes.clone(),
        }
    }
}

impl<C> fmt::Debug for MutationContext<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationContext")
            .field("mutation_key", &self.mutation_key)
            .field("meta", &self.meta)
            .field("on_mutate_result", &self.on_mutate_result.is_some())
            .finish_non_exhaustive()
    }
}

impl<C> MutationContext<C> {
    pub(crate) fn with_result<C2>(&self, result: Option<C2>) -> MutationContext<C2> {
        MutationContext {
            client: self.client.clone(),
            mutation_key: self.mutation_key.clone(),
            meta: self.meta.clone(),
            on_mutate_result: result,
            writes: self.writes.clone(),
        }
    }

    fn ctx(&self) -> &Arc<Ctx> {
        &self.client.ctx
    }

    /// Writes `data` to `key` optimistically: readers and observers see it at once, as after
    /// [`set_query_data`](QueryClient::set_query_data), but it is not persisted to L2 until the
    /// mutation succeeds (if it fails, L2 keeps the confirmed data). What it replaced is kept
    /// for [`rollback`](Self::rollback).
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`; nothing is written.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("profile", "name"), "Ada".to_string()).unwrap();
    /// let rename = MutationOptions::with_context(|_name: String, cx| async move {
    ///     // Readers already see the new name while the request runs.
    ///     let shown = cx.client.get_query_data::<String>(key!("profile", "name")).unwrap();
    ///     Ok::<_, String>(shown)
    /// })
    /// .on_mutate(|name: &String, cx| cx.set_optimistic(key!("profile", "name"), name.clone()).unwrap());
    /// let shown = test.block_on(client.mutate(&rename, "Grace".to_string())).unwrap();
    /// assert_eq!(shown.as_deref(), Some("Grace"));
    /// # }
    /// ```
    pub fn set_optimistic<T>(&self, key: impl Into<QueryKey>, data: T) -> Result<(), TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let mut data = Some(data);
        self.update_optimistic(key, move |_: Option<&T>| data.take())
    }

    /// Writes `update(current)` to `key` optimistically (see
    /// [`set_optimistic`](Self::set_optimistic)); `None` leaves the key as it is. `update` runs
    /// with no lock held, again if the data changed meanwhile.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`; nothing is written.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("likes"), 10u32).unwrap();
    /// let like = MutationOptions::new(|_post: u32| async { Err::<(), _>("offline".to_string()) })
    ///     .retry(0)
    ///     .on_mutate(|_post: &u32, cx| {
    ///         cx.update_optimistic(key!("likes"), |n: Option<&u32>| n.map(|n| n + 1)).unwrap();
    ///     })
    ///     .on_error(|_error, _post, cx| cx.rollback());
    /// assert!(test.block_on(client.mutate(&like, 7)).is_err());
    /// assert_eq!(client.get_query_data::<u32>(key!("likes")).unwrap(), Some(10)); // rolled back
    /// # }
    /// ```
    pub fn update_optimistic<T>(
        &self,
        key: impl Into<QueryKey>,
        mut update: impl FnMut(Option<&T>) -> Option<T>,
    ) -> Result<(), TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        let ctx = self.ctx();
        loop {
            let cell = query::cell::<T>(ctx, &key)?;
            let (current, version) = {
                let g = cell.lock();
                (g.state.data.as_ref().map(clone_data), g.version)
            };
            let current = match current {
                Some(Ok(data)) => Some(data),
                Some(Err(error)) => {
                    tracing::error!(%key, "optimistic write skipped: {error}");
                    return Ok(());
                }
                None => None,
            };
            let Some(new) = update(current.as_ref()) else {
                return Ok(());
            };
            let mut effects = Effects::none();
            {
                let mut g = cell.lock();
                if g.detached || g.version != version {
                    continue;
                }
                cell.write_optimistic(ctx, &mut g, new, &mut effects);
            }
            effects.run(ctx, &key);
            self.writes.push(Box::new(Write {
                key: key.clone(),
                cell,
                previous: Mutex::new(Some(current)),
            }));
            return Ok(());
        }
    }

    /// Restores what this run's optimistic writes replaced, newest first, as confirmed data
    /// (persisted again); a key that had no data is emptied in memory (its L2 record, which
    /// the optimistic write never touched, stays). Only the first call restores.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{MutationOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("a"), 1u32).unwrap();
    /// let swap = MutationOptions::new(|_: ()| async { Err::<(), _>("conflict".to_string()) })
    ///     .retry(0)
    ///     .on_mutate(|_: &(), cx| {
    ///         cx.set_optimistic(key!("a"), 2u32).unwrap();
    ///         cx.set_optimistic(key!("b"), 3u32).unwrap(); // "b" had no data
    ///     })
    ///     .on_error(|_error, _input, cx| cx.rollback());
    /// assert!(test.block_on(client.mutate(&swap, ())).is_err());
    /// assert_eq!(client.get_query_data::<u32>(key!("a")).unwrap(), Some(1));
    /// assert_eq!(client.get_query_data::<u32>(key!("b")).unwrap(), None);
    /// # }
    /// ```
    pub fn rollback(&self) {
        for write in self.writes.take_for_rollback().into_iter().rev() {
            write.restore(self.ctx());
        }
    }
}

/// One run's optimistic writes.
#[derive(Default)]
pub(crate) struct Writes {
    list: Mutex<Vec<Box<dyn Written>>>,
    rolled_back: Mutex<bool>,
}

impl Writes {
    fn push(&self, write: Box<dyn Written>) {
        self.list.lock().push(write);
    }

    fn take_for_rollback(&self) -> Vec<Box<dyn Written>> {
        let mut done = self.rolled_back.lock();
        if std::mem::replace(&mut *done, true) {
            return Vec::new();
        }
        drop(done);
        // The writes stay listed: the run still releases their pending count when it settles.
        let list = self.list.lock();
        list.iter().map(|w| w.for_rollback()).collect()
    }

    /// The run succeeded: its writes are confirmed.
    pub(crate) fn confirm(&self, ctx: &Arc<Ctx>) {
        let writes = std::mem::take(&mut *self.list.lock());
        for write in writes {
            write.confirm(ctx);
        }
    }

    /// The run failed or was dropped: its writes stay unconfirmed.
    pub(crate) fn release(&self) {
        let writes = std::mem::take(&mut *self.list.lock());
        for write in writes {
            write.release();
        }
    }
}

trait Written: Send + Sync {
    /// A handle that restores the replaced data (taken once, for `rollback`).
    fn for_rollback(&self) -> Box<dyn Written>;
    fn restore(&self, ctx: &Arc<Ctx>);
    fn confirm(&self, ctx: &Arc<Ctx>);
    fn release(&self);
}

struct Write<T> {
    key: QueryKey,
    cell: Arc<QueryCell<T>>,
    /// What the write replaced (`Some(None)`: no data); taken by the rollback.
    previous: Mutex<Option<Option<T>>>,
}

impl<T: Clone + Send + Sync + 'static> Written for Write<T> {
    fn for_rollback(&self) -> Box<dyn Written> {
        Box::new(Write {
            key: self.key.clone(),
            cell: self.cell.clone(),
            previous: Mutex::new(self.previous.lock().take()),
        })
    }

    fn restore(&self, ctx: &Arc<Ctx>) {
        let Some(previous) = self.previous.lock().take() else { return };
        let Ok(cell) = query::cell::<T>(ctx, &self.key) else { return };
        let mut effects = Effects::none();
        {
            let mut g = cell.lock();
            match previous {
                Some(data) => cell.set_data(ctx, &mut g, data, &mut effects),
                None => cell.clear_data(ctx, &mut g, &mut effects),
            }
        }
        effects.run(ctx, &self.key);
    }

    fn confirm(&self, ctx: &Arc<Ctx>) {
        self.cell.confirm_optimistic(ctx);
    }

    fn release(&self) {
        self.cell.release_optimistic();
    }
}
