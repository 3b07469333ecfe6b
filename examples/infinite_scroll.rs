//! Infinite scroll: a feed read a page at a time from a local, slightly slow API, with an
//! infinite query. Shows the first page, scrolling to the end (two scroll events at once make
//! one request), a window of at most three pages opened in the middle of the feed and moved
//! both ways, and a refetch of every cached page after an invalidation.
//!
//! Run with `cargo run --example infinite_scroll`.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pystackquery::prelude::*;
use pystackquery::{InfiniteData, PageContext};

/// Where the example writes its lines: stdout when run, a buffer in its test.
pub(crate) type Out = Arc<Mutex<dyn Write + Send>>;

macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let mut w = $out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(w, $($arg)*);
    }};
}

/// Posts in the feed, and posts per page.
pub(crate) const POSTS: u32 = 23;
pub(crate) const PAGE_SIZE: u32 = 5;

/// One page of the feed: the posts from offset `offset`, and the cursors around it, as a REST
/// API with offset cursors would return them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Page {
    pub(crate) offset: u32,
    pub(crate) posts: Vec<String>,
    pub(crate) next_offset: Option<u32>,
    pub(crate) previous_offset: Option<u32>,
}

/// The local API: 20 ms per request, counted.
#[derive(Debug)]
pub(crate) struct FeedApi {
    runtime: Runtime,
    pub(crate) requests: AtomicUsize,
}

impl FeedApi {
    pub(crate) fn new(runtime: Runtime) -> Arc<Self> {
        Arc::new(Self { runtime, requests: AtomicUsize::new(0) })
    }

    /// `GET /posts?offset=N&limit=PAGE_SIZE`.
    pub(crate) async fn page(&self, offset: u32) -> Result<Page, String> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.runtime.sleep(Duration::from_millis(20)).await;
        if offset >= POSTS {
            return Err(format!("offset {offset} is past the end of the feed"));
        }
        let end = (offset + PAGE_SIZE).min(POSTS);
        Ok(Page {
            offset,
            posts: (offset + 1..=end).map(|n| format!("#{n}")).collect(),
            next_offset: (end < POSTS).then_some(end),
            previous_offset: offset.checked_sub(PAGE_SIZE),
        })
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The feed under `key`, starting at `offset`; it pages backward too.
fn feed(api: &Arc<FeedApi>, key: QueryKey, offset: u32) -> InfiniteQueryOptions<Page, u32, String> {
    let api = api.clone();
    InfiniteQueryOptions::new(
        key,
        offset,
        move |cx: PageContext<u32>| {
            let api = api.clone();
            async move { api.page(cx.page_param).await }
        },
        |last: &Page, _pages, _last_offset, _offsets| last.next_offset,
    )
    .get_previous_page_param(|first: &Page, _pages, _first_offset, _offsets| first.previous_offset)
}

fn show(out: &Out, data: &InfiniteData<Page, u32>) {
    for page in &data.pages {
        say!(out, "     offset {:>2}: {}", page.offset, page.posts.join(" "));
    }
}

/// Runs the walkthrough on `client`; the API sleeps on `client`'s runtime.
pub(crate) async fn run(client: &QueryClient, out: &Out) -> Result<(), QueryError<String>> {
    let api = FeedApi::new(client.runtime().clone());
    let posts = feed(&api, key!("feed"), 0);

    say!(out, "1. The first page:");
    let data = client.fetch_infinite_query(&posts).await?;
    show(out, &data);
    say!(out, "   has_next_page = {}", client.has_next_page(&posts));

    say!(out, "2. Two scroll events at once share one request:");
    let before = api.requests();
    let (a, b) = futures::join!(client.fetch_next_page(&posts), client.fetch_next_page(&posts));
    let (a, b) = (a?, b?);
    say!(out, "   both see offsets {:?}; {} request", a.page_params, api.requests() - before);
    debug_assert_eq!(a, b);

    say!(out, "3. Scroll to the end:");
    while client.has_next_page(&posts) {
        let data = client.fetch_next_page(&posts).await?;
        let last = data.pages.last().map_or(0, |p| p.offset);
        say!(out, "   fetched offset {last:>2}, now {} pages", data.pages.len());
    }
    let data = client
        .get_query_data::<InfiniteData<Page, u32>>(key!("feed"))
        .ok()
        .flatten()
        .unwrap_or_default();
    show(out, &data);
    let total: usize = data.pages.iter().map(|p| p.posts.len()).sum();
    say!(
        out,
        "   {} pages, {total} posts, has_next_page = {}, {} requests so far",
        data.pages.len(),
        client.has_next_page(&posts),
        api.requests()
    );

    say!(out, "4. A window of at most 3 pages, opened at offset 10 (a link into the feed):");
    let window = feed(&api, key!("feed", "window"), 10).max_pages(3);
    let data = client.fetch_infinite_query(&window).await?;
    say!(out, "   open:     offsets {:?}", data.page_params);
    for _ in 0..2 {
        let data = client.fetch_next_page(&window).await?;
        say!(out, "   next:     offsets {:?}", data.page_params);
    }
    while client.has_previous_page(&window) {
        let data = client.fetch_previous_page(&window).await?;
        say!(out, "   previous: offsets {:?}", data.page_params);
    }
    say!(out, "   has_previous_page = {}", client.has_previous_page(&window));

    say!(out, "5. Invalidate the feed: every cached page is refetched, from its first offset:");
    let before = api.requests();
    let n = client.invalidate_queries(key!("feed"), RefetchType::All).await;
    let data = client
        .get_query_data::<InfiniteData<Page, u32>>(key!("feed"))
        .ok()
        .flatten()
        .unwrap_or_default();
    say!(
        out,
        "   {n} queries invalidated; {} requests; the feed has offsets {:?}",
        api.requests() - before,
        data.page_params
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = QueryClient::new()?;
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    run(&client, &out).await?;
    Ok(())
}
