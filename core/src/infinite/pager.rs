//! The page loop of an infinite query (the fetch behaviour its options carry): one page after
//! the last or before the first, or every cached page again from the first stored param.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::{InfiniteData, PageContext, PageDirection};
use crate::cancel::QueryContext;
use crate::error::panic_message;
use crate::options::{Attempt, Behavior, FetchTag};
use crate::runtime::BoxFuture;
use crate::sync::Mutex;

pub(super) type PageFn<Pg, P, E> =
    Arc<dyn Fn(PageContext<P>) -> BoxFuture<Result<Pg, E>> + Send + Sync>;
pub(super) type ParamFn<Pg, P> = Arc<dyn Fn(&Pg, &[Pg], &P, &[P]) -> Option<P> + Send + Sync>;

/// What an infinite query fetches pages with: the user's functions and the paging options.
pub(super) struct Pager<Pg, P, E> {
    pub(super) initial: P,
    pub(super) page_fn: PageFn<Pg, P, E>,
    pub(super) next: ParamFn<Pg, P>,
    pub(super) previous: Option<ParamFn<Pg, P>>,
    /// The most pages kept (0: unlimited).
    pub(super) max_pages: usize,
    /// Pages a first fetch or a refetch fetches; `None`: as many as are cached (at least one).
    pub(super) pages: Option<usize>,
}

impl<Pg, P: Clone, E> Clone for Pager<Pg, P, E> {
    fn clone(&self) -> Self {
        Self {
            initial: self.initial.clone(),
            page_fn: self.page_fn.clone(),
            next: self.next.clone(),
            previous: self.previous.clone(),
            max_pages: self.max_pages,
            pages: self.pages,
        }
    }
}

/// How far a refetch of every page got before an attempt failed: a retry resumes there.
type Progress<Pg, P> = Arc<Mutex<Option<(InfiniteData<Pg, P>, usize)>>>;

impl<Pg, P, E> Pager<Pg, P, E>
where
    Pg: Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// The fetch behaviour for fetches tagged `tag`: it gets the data the query held when the
    /// fetch began, and makes the attempt function its retries share.
    pub(super) fn behavior(self: &Arc<Self>, tag: FetchTag) -> Behavior<InfiniteData<Pg, P>, E> {
        let pager = self.clone();
        Arc::new(move |snapshot| {
            let (pager, snapshot) = (pager.clone(), Arc::new(snapshot));
            let progress: Progress<Pg, P> = Arc::new(Mutex::new(None));
            let attempt: Attempt<InfiniteData<Pg, P>, E> = Box::new(move |cx| {
                let run = pager.clone().run(tag, snapshot.clone(), progress.clone(), cx);
                Box::pin(run)
            });
            attempt
        })
    }

    /// One attempt. With data, a page fetch fetches one page (none when the param function
    /// says there is no such page: the data comes back unchanged); anything else fetches
    /// every page.
    async fn run(
        self: Arc<Self>,
        tag: FetchTag,
        snapshot: Arc<Option<InfiniteData<Pg, P>>>,
        progress: Progress<Pg, P>,
        cx: QueryContext,
    ) -> Result<InfiniteData<Pg, P>, E> {
        let old = snapshot.as_ref().as_ref().filter(|data| !data.pages.is_empty());
        let direction = match tag {
            FetchTag::NextPage => PageDirection::Forward,
            FetchTag::PreviousPage => PageDirection::Backward,
            FetchTag::Refetch => return self.all_pages(old, &progress, &cx).await,
        };
        let Some(old) = old else {
            return self.all_pages(None, &progress, &cx).await;
        };
        let Some(param) = raise(self.param(old, direction)) else {
            return Ok(old.clone());
        };
        let page = self.fetch_page(&cx, param.clone(), direction).await?;
        let mut data = old.clone();
        data.add(page, param, direction, self.max_pages);
        Ok(data)
    }

    /// Fetches as many pages as `old` has (or the `pages` option says), in order, from its
    /// first stored param (the initial param without data), each next param computed from
    /// the pages fetched so far; stops early when there is no next page. A retry resumes at
    /// the page that failed.
    async fn all_pages(
        &self,
        old: Option<&InfiniteData<Pg, P>>,
        progress: &Progress<Pg, P>,
        cx: &QueryContext,
    ) -> Result<InfiniteData<Pg, P>, E> {
        let wanted = self.pages.unwrap_or_else(|| old.map_or(0, |data| data.pages.len()));
        let resumed = progress.lock().take();
        let (mut result, mut fetched) = resumed.unwrap_or_else(|| (InfiniteData::default(), 0));
        loop {
            let param = if fetched == 0 {
                let first = old.and_then(|data| data.page_params.first());
                first.unwrap_or(&self.initial).clone()
            } else {
                match raise(self.param(&result, PageDirection::Forward)) {
                    Some(param) => param,
                    None => break,
                }
            };
            match self.fetch_page(cx, param.clone(), PageDirection::Forward).await {
                Ok(page) => result.add(page, param, PageDirection::Forward, self.max_pages),
                Err(error) => {
                    *progress.lock() = Some((result, fetched));
                    return Err(error);
                }
            }
            fetched += 1;
            if fetched >= wanted {
                break;
            }
        }
        Ok(result)
    }

    async fn fetch_page(
        &self,
        cx: &QueryContext,
        page_param: P,
        direction: PageDirection,
    ) -> Result<Pg, E> {
        if cx.signal.is_cancelled() {
            // Cancelled between two pages: go no further. Cancelling woke the fetch task,
            // which drops this attempt at its next poll.
            std::future::pending::<()>().await;
        }
        let page_cx = PageContext {
            key: cx.key.clone(),
            page_param,
            direction,
            signal: cx.signal.clone(),
            meta: cx.meta.clone(),
        };
        (self.page_fn)(page_cx).await
    }

    /// The param of the page after the last one (forward) or before the first one
    /// (backward); `None` when there is none, or no pages, or backward paging is not set up.
    /// A panic in the user's function is caught and returned as its message.
    pub(super) fn param(
        &self,
        data: &InfiniteData<Pg, P>,
        direction: PageDirection,
    ) -> Result<Option<P>, Arc<str>> {
        let (f, name, page, param) = match direction {
            PageDirection::Forward => (
                Some(&self.next),
                "get_next_page_param",
                data.pages.last(),
                data.page_params.last(),
            ),
            PageDirection::Backward => (
                self.previous.as_ref(),
                "get_previous_page_param",
                data.pages.first(),
                data.page_params.first(),
            ),
        };
        let (Some(f), Some(page), Some(param)) = (f, page, param) else {
            return Ok(None);
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            f(page, &data.pages, param, &data.page_params)
        }))
        .map_err(|payload| format!("{name} panicked: {}", panic_message(&*payload)).into())
    }
}

/// Inside a fetch, a param function's panic fails the fetch: it unwinds again, with its
/// message, to the retryer, which reports it as [`QueryError::Panicked`](crate::QueryError)
/// (never retried).
fn raise<P>(param: Result<Option<P>, Arc<str>>) -> Option<P> {
    param.unwrap_or_else(|message| std::panic::resume_unwind(Box::new(message.to_string())))
}
