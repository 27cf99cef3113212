//! `tollway._core`: the hot path of the Tollway gateway.
//!
//! * [`pricing`]: exact integer pricing and the `Usage` record.
//! * [`usage`]: usage extraction from whole (non-stream) response bodies.
//! * [`scanner`]: the incremental SSE scanner that tees streams.
//! * [`ledger`]: per-key spend counters with lock-free reservations.
//! * [`client`]: the upstream HTTP client on a tokio runtime owned by the extension.

use std::sync::OnceLock;

use pyo3::prelude::*;

pub mod client;
pub mod ledger;
pub mod pricing;
pub mod scanner;
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

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The extension's tokio runtime (2 worker threads), created on first use and
/// shared with pyo3-async-runtimes.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tollway-core")
            .enable_all()
            .build()
            .expect("cannot build the tokio runtime");
        rt
    })
}

/// Hand the runtime to pyo3-async-runtimes. Called when the first client is made,
/// never at import: a server that imports the module and then forks workers
/// (granian does) must not leave each worker a runtime whose threads stayed in the parent.
pub fn init_runtime() {
    let rt = runtime();
    // Ignore the error: it only means pyo3-async-runtimes was already given it.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(rt);
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("UpstreamError", py.get_type::<UpstreamError>())?;
    m.add("UpstreamConnectError", py.get_type::<UpstreamConnectError>())?;
    m.add("UpstreamTimeout", py.get_type::<UpstreamTimeout>())?;
    m.add_class::<pricing::Pricing>()?;
    m.add_class::<pricing::Usage>()?;
    m.add_function(wrap_pyfunction!(usage::extract_usage, m)?)?;
    m.add_class::<scanner::StreamScanner>()?;
    m.add_class::<ledger::Hold>()?;
    m.add_class::<ledger::Ledger>()?;
    m.add_class::<client::StreamOutcome>()?;
    m.add_class::<client::UpstreamResponse>()?;
    m.add_class::<client::UpstreamStream>()?;
    m.add_class::<client::UpstreamClient>()?;
    Ok(())
}
