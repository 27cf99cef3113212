//! `tollway._core`: the hot path of the Tollway gateway.
//!
//! * [`pricing`]: exact integer pricing and the `Usage` record.
//! * [`usage`]: usage extraction from whole (non-stream) response bodies.
//! * [`format`]: the `WireFormat` trait (usage and stream events of one format),
//!   implemented by [`openai`] (chat completions), [`anthropic`] (messages) and
//!   [`responses`] (OpenAI Responses).
//! * [`scanner`]: the incremental SSE scanner that tees streams.
//! * [`sse`]: a plain SSE decoder for streams the gateway rewrites (translated formats).
//! * [`jsoncheck`]: nesting depth and NUL escapes of a request body, before it is parsed.
//! * [`ledger`]: per-key spend counters with lock-free reservations.
//! * [`client`]: the upstream HTTP client on a tokio runtime owned by the extension.
//! * [`hub`]: how results reach the asyncio loop without the runtime threads taking the GIL.

use std::sync::OnceLock;

use pyo3::prelude::*;

pub mod anthropic;
pub mod client;
pub mod stream;
pub mod submit;
pub mod window;
pub mod format;
pub mod guard;
pub mod hub;
pub mod jsoncheck;
pub mod ledger;
pub mod openai;
pub mod pricing;
pub mod ratelimit;
pub mod responses;
pub mod scanner;
pub mod sse;
pub mod usage;

pyo3::create_exception!(
    tollway._core,
    UpstreamError,
    pyo3::exceptions::PyException,
    "Any failure to get a response from the upstream (base class)."
);
pyo3::create_exception!(
    tollway._core,
    UpstreamConnectError,
    UpstreamError,
    "The upstream could not be reached (DNS, refused, TLS, reset before headers)."
);
pyo3::create_exception!(
    tollway._core,
    UpstreamTimeout,
    UpstreamError,
    "Connect timeout or no response headers within ``first_byte_timeout``."
);

static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// The extension's tokio runtime, created on first use (never at import: a
/// server that imports the module and then forks workers, as granian does, must
/// not leave each worker a runtime whose threads stayed in the parent).
///
/// One thread by default (``TOLLWAY_CORE_THREADS`` sets another count):
/// through the gateway on 2 cores, 1 was faster than 2. With one thread it is a
/// current-thread runtime driven by its own thread (see
/// [`submit::single_thread_runtime`]). Its threads never take the GIL for
/// results (see [`hub`]).
pub fn runtime() -> &'static tokio::runtime::Handle {
    RUNTIME.get_or_init(|| {
        let threads = std::env::var("TOLLWAY_CORE_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1usize);
        if threads <= 1 {
            return submit::single_thread_runtime();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tollway-core")
            .enable_all()
            .build()
            .expect("cannot build the tokio runtime");
        Box::leak(Box::new(rt)).handle().clone()
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("UpstreamError", py.get_type::<UpstreamError>())?;
    m.add("UpstreamConnectError", py.get_type::<UpstreamConnectError>())?;
    m.add("UpstreamTimeout", py.get_type::<UpstreamTimeout>())?;
    m.add_class::<pricing::Pricing>()?;
    m.add_class::<pricing::Usage>()?;
    m.add_function(wrap_pyfunction!(pricing::settled_cost, m)?)?;
    m.add_function(wrap_pyfunction!(usage::extract_usage, m)?)?;
    m.add_function(wrap_pyfunction!(jsoncheck::json_scan, m)?)?;
    m.add_class::<scanner::StreamScanner>()?;
    m.add_class::<sse::SseDecoder>()?;
    m.add_class::<ledger::Hold>()?;
    m.add_class::<ledger::Ledger>()?;
    m.add_class::<ratelimit::RateLimiter>()?;
    m.add_class::<ratelimit::RatePermit>()?;
    m.add_class::<client::StreamOutcome>()?;
    m.add_class::<client::UpstreamResponse>()?;
    m.add_class::<client::UpstreamStream>()?;
    m.add_class::<client::UpstreamClient>()?;
    m.add_class::<guard::ConnectionGuard>()?;
    m.add_function(wrap_pyfunction!(guard::unsettled_connections, m)?)?;
    Ok(())
}
