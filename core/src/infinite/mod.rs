//! Infinite queries (TanStack's `useInfiniteQuery` / `InfiniteQueryObserver`): one query whose
//! data is a list of pages, fetched one page at a time forward or backward, and refetched as a
//! whole.
//!
//! An infinite query is an ordinary query of [`InfiniteData`] whose options fetch pages
//! instead of calling one function: every client operation works on it through
//! [`InfiniteQueryOptions::query_options`] (fetch, invalidate, set data, observe, persist). The
//! page-wise operations are [`QueryClient::fetch_next_page`](crate::QueryClient::fetch_next_page),
//! [`QueryClient::fetch_previous_page`](crate::QueryClient::fetch_previous_page), their
//! `has_*_page` companions, and [`InfiniteQueryObserver`].
//!
//! How a fetch pages:
//! - **Next or previous page**, when the query has at least one page: one page, with the param
//!   the param function computes from the current data; when it returns `None`, nothing is
//!   fetched and the data comes back unchanged.
//! - **Every other fetch** (the first one, a refetch, an invalidation, polling, and a page fetch
//!   of a query without pages): as many pages as are cached (one at first, or the number set
//!   with [`pages`](InfiniteQueryOptions::pages)), in order, starting from the first *stored*
//!   param (the initial param without data), each next param computed from the pages fetched
//!   so far; it stops early when there is no next page, and stores all pages at once at the end.
//! - [`max_pages`](InfiniteQueryOptions::max_pages) drops pages from the other end.
//!
//! Concurrent fetches of the next page share one call; a next-page fetch while another fetch
//! is in flight (a previous page, a refetch) replaces it, as TanStack's default `cancelRefetch`
//! does; a refetch joins whatever fetch is in flight. A failed or cancelled page fetch keeps
//! the pages the query had. A failed attempt of a refetch of every page is retried from the page
//! that failed; a page fetch is retried with the same param.

use serde::{Deserialize, Serialize};

use crate::cancel::CancelSignal;
use crate::key::QueryKey;
use crate::meta::Meta;

mod client;
mod observer;
mod options;
mod pager;

pub use observer::InfiniteQueryObserver;
pub use options::InfiniteQueryOptions;

/// The data of an infinite query: its pages, and the param each was fetched with (always as
/// many as pages). Serialized as TanStack's, `{"pages": [...], "pageParams": [...]}`, so a
/// persisted record holds both.
///
/// # Examples
///
/// ```
/// use pystackquery_core::InfiniteData;
///
/// let data = InfiniteData { pages: vec!["a", "b"], page_params: vec![0, 1] };
/// let json = serde_json::to_value(&data).unwrap();
/// assert_eq!(json, serde_json::json!({ "pages": ["a", "b"], "pageParams": [0, 1] }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfiniteData<Pg, P> {
    /// The pages, first to last.
    pub pages: Vec<Pg>,
    /// The param of each page, in the same order.
    pub page_params: Vec<P>,
}

impl<Pg, P> Default for InfiniteData<Pg, P> {
    fn default() -> Self {
        Self { pages: Vec::new(), page_params: Vec::new() }
    }
}

impl<Pg, P> InfiniteData<Pg, P> {
    /// Adds a page at the end (forward) or the start (backward); beyond `max_pages` (0:
    /// unlimited) the page at the other end goes.
    fn add(&mut self, page: Pg, param: P, direction: PageDirection, max_pages: usize) {
        let over = max_pages > 0 && self.pages.len() >= max_pages;
        match direction {
            PageDirection::Forward => {
                if over {
                    self.pages.remove(0);
                    self.page_params.remove(0);
                }
                self.pages.push(page);
                self.page_params.push(param);
            }
            PageDirection::Backward => {
                if over {
                    self.pages.pop();
                    self.page_params.pop();
                }
                self.pages.insert(0, page);
                self.page_params.insert(0, param);
            }
        }
    }
}

/// Which way a page is fetched: after the last page, or before the first.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{InfiniteQueryOptions, PageDirection, QueryClient, QueryClientConfig, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let log = InfiniteQueryOptions::new(key!("log"), 0i32, |cx| async move {
///     let arrow = if cx.direction == PageDirection::Backward { "up" } else { "down" };
///     Ok::<_, String>(format!("{arrow} {}", cx.page_param))
/// }, |_, _, p, _| Some(p + 1))
/// .get_previous_page_param(|_, _, p, _| Some(p - 1));
/// test.block_on(client.fetch_infinite_query(&log)).unwrap();
/// let data = test.block_on(client.fetch_previous_page(&log)).unwrap();
/// assert_eq!(data.pages, ["up -1", "down 0"]);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageDirection {
    /// The next page (and every page of a first fetch or a refetch).
    Forward,
    /// The previous page.
    Backward,
}

/// What an infinite query's page function receives: the key, the page's param and direction,
/// the fetch's cancellation signal, and the query's meta.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{InfiniteQueryOptions, QueryClient, QueryClientConfig, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let search = InfiniteQueryOptions::new(key!("search", "rust"), 1u32, |cx| async move {
///     // The key says what to fetch; the param, which page.
///     let term = cx.key.parts()[1].as_str().unwrap_or_default().to_string();
///     Ok::<_, String>(format!("{term}, page {}", cx.page_param))
/// }, |_, _, p, _| Some(p + 1));
/// assert_eq!(test.block_on(client.fetch_infinite_query(&search)).unwrap().pages, ["rust, page 1"]);
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PageContext<P> {
    /// The key being fetched.
    pub key: QueryKey,
    /// The param of the page to fetch.
    pub page_param: P,
    /// Whether the page goes after the last one or before the first.
    pub direction: PageDirection,
    /// Set when the fetch is cancelled (see [`QueryContext`](crate::QueryContext)).
    pub signal: CancelSignal,
    /// The query's [`Meta`] (see [`QueryContext::meta`](crate::QueryContext::meta)).
    pub meta: Meta,
}
