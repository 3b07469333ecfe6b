//! The test harness: one suite, written once, run on every runtime.
//!
//! `runtime_suite!(a, b, c)` turns each `async fn a(h: Harness)` of the including file into one
//! `#[test]` per enabled runtime: tokio current-thread and multi-thread (feature `tokio`), smol
//! (feature `smol`), async-std (feature `async-std`), and always the manual test runtime
//! (virtual time), so every suite runs under any combination of features. Helpers wait for
//! conditions instead of sleeping "to let things settle": on the manual runtime their sleeps
//! are virtual and cost nothing.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod pages;
pub mod servers;
pub mod storage;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use event_listener::Event;
use pystackquery::testing::TestRuntime;
use pystackquery::{QueryClient, QueryClientConfig, Runtime};

/// What a test receives: the runtime, plus the manual clock when it runs on one.
#[derive(Clone, Debug)]
pub struct Harness {
    pub runtime: Runtime,
    pub manual: Option<TestRuntime>,
    pub name: &'static str,
}

impl Harness {
    /// A client on this runtime with `config`.
    pub fn client_with(&self, config: QueryClientConfig) -> QueryClient {
        QueryClient::with_runtime(self.runtime.clone(), config)
    }

    /// A client on this runtime with default configuration.
    pub fn client(&self) -> QueryClient {
        self.client_with(QueryClientConfig::default())
    }

    /// Sleeps on the runtime's clock (virtual on the manual runtime).
    pub async fn sleep(&self, duration: Duration) {
        self.runtime.sleep(duration).await;
    }

    /// Waits until `condition` holds, checking every millisecond; fails the test after 10 s.
    pub async fn eventually(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = self.runtime.now() + Duration::from_secs(10);
        while !condition() {
            assert!(self.runtime.now() < deadline, "timed out waiting for: {what}");
            self.sleep(Duration::from_millis(1)).await;
        }
    }

    /// Gives background tasks a chance to run: a few short sleeps.
    pub async fn yield_a_little(&self) {
        for _ in 0..5 {
            self.sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Counts calls.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A gate a query function waits at until the test opens it.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<GateInner>);

#[derive(Debug, Default)]
pub struct GateInner {
    open: AtomicBool,
    event: Event,
}

impl Gate {
    /// A gate that is open from the start.
    pub fn opened() -> Self {
        let gate = Self::default();
        gate.open();
        gate
    }

    pub fn open(&self) {
        self.0.open.store(true, Ordering::SeqCst);
        self.0.event.notify(usize::MAX);
    }
    pub async fn wait(&self) {
        loop {
            if self.0.open.load(Ordering::SeqCst) {
                return;
            }
            let listener = self.0.event.listen();
            if self.0.open.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }
}

#[cfg(feature = "tokio")]
pub fn run_tokio_current<Fut: Future<Output = ()>>(
    name: &'static str,
    test: impl FnOnce(Harness) -> Fut,
) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let runtime =
        pystackquery::TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
    rt.block_on(test(Harness { runtime, manual: None, name }));
}

#[cfg(feature = "tokio")]
pub fn run_tokio_multi<Fut: Future<Output = ()>>(
    name: &'static str,
    test: impl FnOnce(Harness) -> Fut,
) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime =
        pystackquery::TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
    rt.block_on(test(Harness { runtime, manual: None, name }));
}

#[cfg(feature = "smol")]
pub fn run_smol<Fut: Future<Output = ()>>(name: &'static str, test: impl FnOnce(Harness) -> Fut) {
    let runtime = pystackquery::SmolRuntime::global().into_runtime();
    smol::block_on(test(Harness { runtime, manual: None, name }));
}

#[cfg(feature = "async-std")]
pub fn run_async_std<Fut: Future<Output = ()>>(
    name: &'static str,
    test: impl FnOnce(Harness) -> Fut,
) {
    let runtime = pystackquery::AsyncStdRuntime.into_runtime();
    async_std::task::block_on(test(Harness { runtime, manual: None, name }));
}

pub fn run_manual<Fut: Future<Output = ()>>(name: &'static str, test: impl FnOnce(Harness) -> Fut) {
    let manual = TestRuntime::new();
    let runtime = manual.runtime();
    manual.block_on(test(Harness { runtime, manual: Some(manual.clone()), name }));
}

/// One `#[test]` per enabled runtime for each named `async fn(Harness)`: the `cfg`s are
/// evaluated in the including test crate, i.e. against the features `cargo test` was given.
#[macro_export]
macro_rules! runtime_suite {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "tokio")]
        mod tokio_current_thread { $( #[test] fn $name() { $crate::common::run_tokio_current(stringify!($name), super::$name) } )* }
        #[cfg(feature = "tokio")]
        mod tokio_multi_thread { $( #[test] fn $name() { $crate::common::run_tokio_multi(stringify!($name), super::$name) } )* }
        #[cfg(feature = "smol")]
        mod smol_runtime { $( #[test] fn $name() { $crate::common::run_smol(stringify!($name), super::$name) } )* }
        #[cfg(feature = "async-std")]
        mod async_std_runtime { $( #[test] fn $name() { $crate::common::run_async_std(stringify!($name), super::$name) } )* }
        mod manual_runtime { $( #[test] fn $name() { $crate::common::run_manual(stringify!($name), super::$name) } )* }
    };
}
