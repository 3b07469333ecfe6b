//! Infinite-query helpers shared by the infinite suites: recorded page calls, gates per page
//! param, and pages that are their own param.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pystackquery::{
    InfiniteData, InfiniteQueryOptions, PageContext, PageDirection, QueryClient, QueryKey,
};

use super::Gate;

pub type Opts<Pg, P> = InfiniteQueryOptions<Pg, P, String>;

pub fn data<Pg, P>(pages: impl Into<Vec<Pg>>, params: impl Into<Vec<P>>) -> InfiniteData<Pg, P> {
    InfiniteData { pages: pages.into(), page_params: params.into() }
}

/// Every context a page function was called with, in order.
#[derive(Clone)]
pub struct Calls<P>(Arc<Mutex<Vec<PageContext<P>>>>);

impl<P: Clone> Calls<P> {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
    /// Records a call; returns how many there have been.
    pub fn record(&self, cx: &PageContext<P>) -> usize {
        let mut calls = self.0.lock().unwrap();
        calls.push(cx.clone());
        calls.len()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn params(&self) -> Vec<(P, PageDirection)> {
        self.0.lock().unwrap().iter().map(|cx| (cx.page_param.clone(), cx.direction)).collect()
    }
    pub fn first(&self) -> PageContext<P> {
        self.0.lock().unwrap()[0].clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Gates for chosen page params: a page whose param is held waits until its gate opens.
#[derive(Clone, Default)]
pub struct Holds(Arc<Mutex<HashMap<i32, Gate>>>);

impl Holds {
    pub fn hold(&self, param: i32) -> Gate {
        self.0.lock().unwrap().entry(param).or_default().clone()
    }
    pub fn gate(&self, param: i32) -> Option<Gate> {
        self.0.lock().unwrap().get(&param).cloned()
    }
}

/// Pages that are their own param (initial 1), forward +1 and backward -1, recorded; a page
/// whose param is held waits for its gate.
pub fn numbers(k: QueryKey, calls: &Calls<i32>, holds: &Holds) -> Opts<i32, i32> {
    let (calls, holds) = (calls.clone(), holds.clone());
    InfiniteQueryOptions::new(
        k,
        1,
        move |cx: PageContext<i32>| {
            calls.record(&cx);
            let gate = holds.gate(cx.page_param);
            async move {
                if let Some(gate) = gate {
                    gate.wait().await;
                }
                Ok(cx.page_param)
            }
        },
        |last, _, _, _| Some(last + 1),
    )
    .get_previous_page_param(|first, _, _, _| Some(first - 1))
}

pub fn cached(client: &QueryClient, k: QueryKey) -> Option<InfiniteData<i32, i32>> {
    client.get_query_data(k).unwrap()
}
