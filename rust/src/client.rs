//! The upstream HTTP client: pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) with
//! rustls, on the extension's tokio runtime. `send` reads whole responses;
//! `stream` tees SSE streams through the scanner and settles them itself.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::Notify;

use crate::ledger::Hold;
use crate::pricing::{Pricing, Usage};
use crate::scanner::Scanner;
use crate::usage::Kind;
use crate::{runtime, UpstreamConnectError, UpstreamError, UpstreamTimeout};

fn duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && secs > 0.0 {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

async fn maybe_timeout<F: std::future::Future>(d: Option<Duration>, f: F) -> Result<F::Output, ()> {
    match d {
        Some(d) => tokio::time::timeout(d, f).await.map_err(|_| ()),
        None => Ok(f.await),
    }
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Map an error that happened before the response headers.
fn map_send_error(e: reqwest::Error) -> PyErr {
    let msg = error_chain(&e);
    if e.is_timeout() {
        UpstreamTimeout::new_err(msg)
    } else if e.is_builder() {
        PyValueError::new_err(msg)
    } else {
        UpstreamConnectError::new_err(msg)
    }
}

fn headers_vec(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Concatenate byte chunks into one Python bytes object (one copy).
fn concat_to_py<'py>(py: Python<'py>, chunks: &[Bytes]) -> PyResult<Bound<'py, PyBytes>> {
    match chunks {
        [] => Ok(PyBytes::new(py, b"")),
        [one] => Ok(PyBytes::new(py, one)),
        many => {
            let len = many.iter().map(|c| c.len()).sum();
            PyBytes::new_with(py, len, |buf| {
                let mut pos = 0;
                for c in many {
                    buf[pos..pos + c.len()].copy_from_slice(c);
                    pos += c.len();
                }
                Ok(())
            })
        }
    }
}

/// A future's result that becomes one Python `bytes` (built with the GIL).
struct PyBytesOut(Vec<Bytes>);

impl<'py> IntoPyObject<'py> for PyBytesOut {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        concat_to_py(py, &self.0)
    }
}

/// An awaitable that is already complete (no event loop round trip).
#[pyclass(module = "tollway._core")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    fn take(&mut self, py: Python<'_>) -> PyErr {
        let v = self.value.take().unwrap_or_else(|| py.None());
        PyStopIteration::new_err((v,))
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Err(self.take(py))
    }
    fn send(&mut self, py: Python<'_>, _value: Py<PyAny>) -> PyResult<Py<PyAny>> {
        Err(self.take(py))
    }
    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(&mut self, typ: Bound<'_, PyAny>, val: Option<Bound<'_, PyAny>>, tb: Option<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let _ = tb;
        self.value = None;
        let exc = match val {
            Some(v) if !v.is_none() => v,
            _ => typ,
        };
        Err(PyErr::from_value(exc))
    }
    fn close(&mut self) {
        self.value = None;
    }
}

// ---------------------------------------------------------------------------
// Shared state between a stream's reader task and its Python object

#[derive(Default)]
struct BufState {
    chunks: VecDeque<Bytes>,
}

#[derive(Default)]
struct Shared {
    buf: Mutex<BufState>,
    /// Wakes the consumer (data, end or close).
    data_ready: Notify,
    /// Wakes the reader task on close.
    cancel: Notify,
    closed: AtomicBool,
    done: AtomicBool,
}

impl Shared {
    fn push(&self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.buf.lock().unwrap().chunks.push_back(b);
        self.data_ready.notify_one();
    }

    fn take(&self) -> Vec<Bytes> {
        let mut st = self.buf.lock().unwrap();
        st.chunks.drain(..).collect()
    }

    fn has_data(&self) -> bool {
        !self.buf.lock().unwrap().chunks.is_empty()
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.data_ready.notify_one();
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.cancel.notify_one();
            self.data_ready.notify_one();
            self.buf.lock().unwrap().chunks.clear();
        }
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Wait for data (Some) or the end (None).
    async fn next(&self) -> Option<Vec<Bytes>> {
        loop {
            if self.is_closed() {
                return None;
            }
            let chunks = self.take();
            if !chunks.is_empty() {
                return Some(chunks);
            }
            if self.is_done() {
                // The task may have pushed its last bytes just before finishing.
                let chunks = self.take();
                return if chunks.is_empty() { None } else { Some(chunks) };
            }
            self.data_ready.notified().await;
        }
    }

    /// Wait for the end, then everything left.
    async fn all(&self) -> Vec<Bytes> {
        loop {
            if self.is_closed() {
                return Vec::new();
            }
            if self.is_done() {
                return self.take();
            }
            self.data_ready.notified().await;
        }
    }
}

/// Owner handle of a stream: dropping it closes the stream.
struct StreamHandle(Arc<Shared>);

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

// ---------------------------------------------------------------------------
// Python classes

/// What a finished stream hands over, exactly once, through ``on_done``.
#[pyclass(module = "tollway._core", frozen, get_all)]
pub struct StreamOutcome {
    /// "ok", "client_closed", "upstream_error" or "timeout".
    status: &'static str,
    usage: Py<Usage>,
    cost_micros: i64,
    text: String,
    tool_calls_json: String,
    finish_reason: Option<String>,
    error_json: Option<String>,
    /// Bytes produced for the client (after stripping), whether or not it read them all.
    bytes_forwarded: u64,
    /// From the request being sent upstream to the stream settling.
    latency_ms: u64,
    /// From the request being sent upstream to the first body chunk (the headers when there was none).
    first_byte_ms: u64,
}

#[pymethods]
impl StreamOutcome {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "StreamOutcome(status={:?}, usage={}, cost_micros={}, finish_reason={:?}, bytes_forwarded={}, latency_ms={}, first_byte_ms={})",
            self.status,
            self.usage.borrow(py).__repr__(),
            self.cost_micros,
            self.finish_reason,
            self.bytes_forwarded,
            self.latency_ms,
            self.first_byte_ms
        )
    }
}

/// A whole (non-stream) upstream response.
#[pyclass(module = "tollway._core", frozen, get_all)]
pub struct UpstreamResponse {
    status: u16,
    headers: Py<PyList>,
    body: Py<PyBytes>,
    latency_ms: u64,
}

#[pymethods]
impl UpstreamResponse {
    fn __repr__(&self) -> String {
        format!("UpstreamResponse(status={}, latency_ms={})", self.status, self.latency_ms)
    }
}

struct SendResult {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<Bytes>,
    latency_ms: u64,
}

impl<'py> IntoPyObject<'py> for SendResult {
    type Target = UpstreamResponse;
    type Output = Bound<'py, UpstreamResponse>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        let headers = PyList::new(py, self.headers)?.unbind();
        let body = concat_to_py(py, &self.body)?.unbind();
        Bound::new(py, UpstreamResponse { status: self.status, headers, body, latency_ms: self.latency_ms })
    }
}

/// A streamed upstream response: forward its chunks, it settles itself.
///
/// Created by ``UpstreamClient.stream`` once the response headers arrived. When
/// ``status`` is 2xx, a tokio task reads the upstream to its end (independently of
/// how fast Python consumes), scans every byte, and when the upstream ends or
/// fails, or ``close()`` is called, or this object is dropped, it computes the
/// usage, prices it, settles ``hold`` and calls ``on_done(outcome)`` exactly once.
/// When ``status`` is not 2xx nothing is settled and ``on_done`` is never called.
#[pyclass(module = "tollway._core", frozen)]
pub struct UpstreamStream {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    headers: Py<PyList>,
    handle: StreamHandle,
}

struct StreamReady {
    status: u16,
    headers: Vec<(String, String)>,
    handle: StreamHandle,
}

impl<'py> IntoPyObject<'py> for StreamReady {
    type Target = UpstreamStream;
    type Output = Bound<'py, UpstreamStream>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        let StreamReady { status, headers, handle } = self;
        let headers = PyList::new(py, headers)?.unbind();
        Bound::new(py, UpstreamStream { status, headers, handle })
    }
}

fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(py, Ready { value: Some(value.unbind()) })?.into_any())
}

#[pymethods]
impl UpstreamStream {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Everything buffered so far (coalesced), waiting only when nothing is buffered; StopAsyncIteration at the end.
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let sh = &self.handle.0;
        if sh.is_closed() {
            return Ok(None);
        }
        let done = sh.is_done();
        let chunks = sh.take();
        if !chunks.is_empty() {
            return ready(py, concat_to_py(py, &chunks)?.into_any()).map(Some);
        }
        if done {
            return Ok(None);
        }
        let sh = sh.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match sh.next().await {
                Some(chunks) => Ok(PyBytesOut(chunks)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
        .map(Some)
    }

    /// The rest of the body in one piece (for non-2xx bodies).
    fn read_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sh = &self.handle.0;
        if sh.is_closed() {
            return ready(py, PyBytes::new(py, b"").into_any());
        }
        if sh.is_done() {
            let chunks = sh.take();
            return ready(py, concat_to_py(py, &chunks)?.into_any());
        }
        let sh = sh.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(PyBytesOut(sh.all().await)) })
    }

    /// The client went away: stop the upstream request now and settle for what was generated.
    fn close(&self) {
        self.handle.0.close();
    }

    /// True once the upstream body ended (or failed, or was closed) and the stream settled.
    #[getter]
    fn finished(&self) -> bool {
        self.handle.0.is_done()
    }

    /// True when bytes are buffered and ``__anext__`` would return at once.
    #[getter]
    fn buffered(&self) -> bool {
        self.handle.0.has_data()
    }

    fn __repr__(&self) -> String {
        format!("UpstreamStream(status={}, finished={})", self.status, self.finished())
    }
}

// ---------------------------------------------------------------------------
// The reader task

struct Settlement {
    scanner: Scanner,
    pricing: Pricing,
    hold: Option<Py<Hold>>,
    input_estimate: i64,
    on_done: Py<PyAny>,
}

async fn pump(
    shared: Arc<Shared>,
    mut resp: reqwest::Response,
    mut settle: Option<Settlement>,
    read_timeout: Option<Duration>,
    start: Instant,
    headers_at: Duration,
) {
    let mut status = "ok";
    let mut first_byte: Option<Duration> = None;
    let mut forwarded: u64 = 0;
    let mut out = Vec::new();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = shared.cancel.notified() => {
                status = "client_closed";
                break;
            }
            r = maybe_timeout(read_timeout, resp.chunk()) => match r {
                Err(()) => {
                    status = "timeout";
                    break;
                }
                Ok(Err(_)) => {
                    status = "upstream_error";
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            }
        };
        if first_byte.is_none() {
            first_byte = Some(start.elapsed());
        }
        let fwd = match settle.as_mut() {
            Some(s) if s.scanner.strips() => {
                out.clear();
                s.scanner.feed(&chunk, &mut out);
                Bytes::copy_from_slice(&out)
            }
            Some(s) => {
                s.scanner.feed(&chunk, &mut out);
                chunk
            }
            None => chunk,
        };
        forwarded += fwd.len() as u64;
        shared.push(fwd);
    }
    // Stop the upstream at once (an unfinished body closes the connection).
    drop(resp);
    if shared.is_closed() && status == "ok" {
        status = "client_closed";
    }
    let Some(mut s) = settle else {
        shared.finish();
        return;
    };
    out.clear();
    s.scanner.finish(&mut out);
    if !out.is_empty() && status != "client_closed" {
        forwarded += out.len() as u64;
        shared.push(Bytes::copy_from_slice(&out));
    }
    let usage = s.scanner.final_usage(s.input_estimate);
    let cost = s.pricing.cost_of(&usage);
    if let Some(h) = &s.hold {
        h.get().settle_now(cost);
    }
    let latency = start.elapsed();
    let first_byte_ms = ms(first_byte.unwrap_or(headers_at));
    let text = std::mem::take(&mut s.scanner.text);
    let tool_calls_json = s.scanner.tool_calls_json();
    let finish_reason = s.scanner.finish_reason.clone();
    let error_json = s.scanner.error_json.clone();
    let on_done = s.on_done;
    let hold = s.hold;
    let shared2 = shared.clone();
    let r = tokio::task::spawn_blocking(move || {
        Python::attach(|py| {
            let outcome = Py::new(py, usage).and_then(|usage| {
                Py::new(
                    py,
                    StreamOutcome {
                        status,
                        usage,
                        cost_micros: cost,
                        text,
                        tool_calls_json,
                        finish_reason,
                        error_json,
                        bytes_forwarded: forwarded,
                        latency_ms: ms(latency),
                        first_byte_ms,
                    },
                )
            });
            match outcome {
                Ok(o) => {
                    if let Err(e) = on_done.call1(py, (o,)) {
                        e.print(py);
                    }
                }
                Err(e) => e.print(py),
            }
            drop(on_done);
            drop(hold);
        });
        shared2.finish();
    })
    .await;
    if r.is_err() {
        shared.finish();
    }
}

// ---------------------------------------------------------------------------
// The client

/// Pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) client with rustls, on a tokio runtime owned by the extension.
#[pyclass(module = "tollway._core", frozen)]
pub struct UpstreamClient {
    client: reqwest::Client,
    first_byte_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl UpstreamClient {
    fn build_request(&self, method: &str, url: &str, headers: Vec<(String, String)>, body: &[u8]) -> PyResult<reqwest::Request> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| PyValueError::new_err(format!("invalid method {method:?}: {e}")))?;
        let url = reqwest::Url::parse(url).map_err(|e| PyValueError::new_err(format!("invalid url {url:?}: {e}")))?;
        let mut req = reqwest::Request::new(method, url);
        let map = req.headers_mut();
        map.reserve(headers.len());
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| PyValueError::new_err(format!("invalid header name {k:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_bytes(v.as_bytes())
                .map_err(|e| PyValueError::new_err(format!("invalid value for header {k:?}: {e}")))?;
            map.append(name, value);
        }
        if !body.is_empty() {
            *req.body_mut() = Some(reqwest::Body::from(body.to_vec()));
        }
        Ok(req)
    }
}

#[pymethods]
impl UpstreamClient {
    #[new]
    #[pyo3(signature = (*, connect_timeout=10.0, first_byte_timeout=600.0, read_timeout=300.0, pool_idle_timeout=90.0, pool_max_idle_per_host=1024))]
    fn py_new(
        connect_timeout: f64,
        first_byte_timeout: f64,
        read_timeout: f64,
        pool_idle_timeout: f64,
        pool_max_idle_per_host: usize,
    ) -> PyResult<Self> {
        crate::init_runtime();
        let _guard = runtime().enter();
        let mut b = reqwest::Client::builder()
            .pool_idle_timeout(duration(pool_idle_timeout))
            .pool_max_idle_per_host(pool_max_idle_per_host)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(d) = duration(connect_timeout) {
            b = b.connect_timeout(d);
        }
        let client = b.build().map_err(|e| PyValueError::new_err(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        Ok(UpstreamClient { client, first_byte_timeout: duration(first_byte_timeout), read_timeout: duration(read_timeout) })
    }

    /// Send and read the whole response. Raises UpstreamConnectError / UpstreamTimeout (also for a body stalled past read_timeout).
    fn send<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = self.build_request(method, url, headers, body)?;
        let client = self.client.clone();
        let fbt = self.first_byte_timeout;
        let rt = self.read_timeout;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let start = Instant::now();
            let mut resp = match maybe_timeout(fbt, client.execute(req)).await {
                Err(()) => return Err(UpstreamTimeout::new_err("no response headers within first_byte_timeout")),
                Ok(Err(e)) => return Err(map_send_error(e)),
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            let headers = headers_vec(resp.headers());
            let mut body = Vec::new();
            loop {
                match maybe_timeout(rt, resp.chunk()).await {
                    Err(()) => return Err(UpstreamTimeout::new_err("response body stalled past read_timeout")),
                    Ok(Err(e)) => return Err(UpstreamError::new_err(format!("error reading the response body: {}", error_chain(&e)))),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(c))) => body.push(c),
                }
            }
            Ok(SendResult { status, headers, body, latency_ms: ms(start.elapsed()) })
        })
    }

    /// Send and resolve once the response headers arrived.
    ///
    /// ``input_estimate`` is used for the input count when the upstream never
    /// reported usage (the outcome is then marked estimated). A gap longer than
    /// ``read_timeout`` between chunks ends the stream with status "timeout".
    #[pyo3(signature = (method, url, headers, body, *, kind, strip_usage_chunk, pricing, hold, input_estimate, on_done))]
    #[allow(clippy::too_many_arguments)]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: &[u8],
        kind: &str,
        strip_usage_chunk: bool,
        pricing: PyRef<'py, Pricing>,
        hold: Option<Py<Hold>>,
        input_estimate: i64,
        on_done: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = Kind::parse(kind)?;
        let req = self.build_request(method, url, headers, body)?;
        let client = self.client.clone();
        let fbt = self.first_byte_timeout;
        let rt = self.read_timeout;
        let pricing = *pricing;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let start = Instant::now();
            let resp = match maybe_timeout(fbt, client.execute(req)).await {
                Err(()) => return Err(UpstreamTimeout::new_err("no response headers within first_byte_timeout")),
                Ok(Err(e)) => return Err(map_send_error(e)),
                Ok(Ok(r)) => r,
            };
            let headers_at = start.elapsed();
            let status = resp.status().as_u16();
            let headers = headers_vec(resp.headers());
            let shared = Arc::new(Shared::default());
            let settle = if resp.status().is_success() {
                Some(Settlement { scanner: Scanner::new(kind, strip_usage_chunk), pricing, hold, input_estimate, on_done })
            } else {
                drop((hold, on_done));
                None
            };
            tokio::spawn(pump(shared.clone(), resp, settle, rt, start, headers_at));
            Ok(StreamReady { status, headers, handle: StreamHandle(shared) })
        })
    }
}
