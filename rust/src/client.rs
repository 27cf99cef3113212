//! The upstream HTTP client: pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) with
//! rustls, on the extension's tokio runtime. `send` reads whole responses;
//! `stream` tees SSE streams through the scanner and settles them itself.

use std::error::Error as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::hub::{Hub, HubInner, OpError, Outcome};
use crate::pricing::Pricing;
use crate::scanner::Scanner;
use crate::usage::Kind;
use crate::runtime;

pub(crate) fn duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && secs > 0.0 {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

pub(crate) async fn maybe_timeout<F: std::future::Future>(d: Option<Duration>, f: F) -> Result<F::Output, ()> {
    match d {
        Some(d) => tokio::time::timeout(d, f).await.map_err(|_| ()),
        None => Ok(f.await),
    }
}

pub(crate) fn error_chain(e: &reqwest::Error) -> String {
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
pub(crate) fn map_send_error(e: reqwest::Error) -> OpError {
    let msg = error_chain(&e);
    if e.is_timeout() {
        OpError::Timeout(msg)
    } else if e.is_builder() {
        OpError::Value(msg)
    } else {
        OpError::Connect(msg)
    }
}

pub(crate) fn headers_vec(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Concatenate byte chunks into one Python bytes object (one copy).
pub(crate) fn concat_to_py<'py>(py: Python<'py>, chunks: &[Bytes]) -> PyResult<Bound<'py, PyBytes>> {
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

/// An awaitable that is already complete (no event loop round trip).
#[pyclass(module = "tollway._core")]
pub struct Ready {
    pub(crate) value: Option<Py<PyAny>>,
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

pub(crate) use crate::stream::{pump, SendResult, Settlement, StreamOutcome, StreamReady, UpstreamResponse, UpstreamStream};
pub(crate) use crate::window::{Flow, Shared, StreamHandle, Waiter};

pub(crate) use crate::submit::{submit, CallSlot};

// ---------------------------------------------------------------------------
// The client

async fn do_send(client: reqwest::Client, req: reqwest::Request, fbt: Option<Duration>, rt: Option<Duration>) -> Result<SendResult, OpError> {
    let start = Instant::now();
    let mut resp = match maybe_timeout(fbt, client.execute(req)).await {
        Err(()) => return Err(OpError::Timeout("no response headers within first_byte_timeout".into())),
        Ok(Err(e)) => return Err(map_send_error(e)),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let headers = headers_vec(resp.headers());
    let mut body = Vec::new();
    loop {
        match maybe_timeout(rt, resp.chunk()).await {
            Err(()) => return Err(OpError::Timeout("response body stalled past read_timeout".into())),
            Ok(Err(e)) => return Err(OpError::Upstream(format!("error reading the response body: {}", error_chain(&e)))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(c))) => body.push(c),
        }
    }
    Ok(SendResult { status, headers, body, latency_ms: ms(start.elapsed()) })
}

struct StreamArgs {
    kind: Kind,
    strip_usage_chunk: bool,
    pricing: Pricing,
    hold_micros: i64,
    input_estimate: i64,
    on_done: Py<PyAny>,
    flow: Flow,
}

async fn do_stream(
    client: reqwest::Client,
    req: reqwest::Request,
    fbt: Option<Duration>,
    rt: Option<Duration>,
    a: StreamArgs,
) -> Result<StreamReady, OpError> {
    let start = Instant::now();
    let resp = match maybe_timeout(fbt, client.execute(req)).await {
        Err(()) => return Err(OpError::Timeout("no response headers within first_byte_timeout".into())),
        Ok(Err(e)) => return Err(map_send_error(e)),
        Ok(Ok(r)) => r,
    };
    let headers_at = start.elapsed();
    let status = resp.status().as_u16();
    let headers = headers_vec(resp.headers());
    let shared = Arc::new(Shared { flow: a.flow, ..Shared::default() });
    let settle = if resp.status().is_success() {
        Some(Settlement {
            scanner: Scanner::new(a.kind, a.strip_usage_chunk),
            pricing: a.pricing,
            hold_micros: a.hold_micros,
            input_estimate: a.input_estimate,
            on_done: a.on_done,
        })
    } else {
        drop(a.on_done);
        None
    };
    tokio::spawn(pump(shared.clone(), resp, settle, rt, start, headers_at));
    Ok(StreamReady { status, headers, handle: StreamHandle(shared) })
}

/// Pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) client with rustls, on a tokio runtime owned by the extension.
///
/// Results reach Python through the client's completion hub: the tokio threads
/// never take the GIL for them. The client serves the one asyncio loop it was
/// first used from.
#[pyclass(module = "tollway._core", frozen)]
pub struct UpstreamClient {
    client: reqwest::Client,
    first_byte_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    flow: Flow,
    hub: Py<Hub>,
}

impl Drop for UpstreamClient {
    fn drop(&mut self) {
        Python::attach(|py| self.hub.get().close(py));
    }
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

    /// Run `task` on the runtime; its result resolves the returned asyncio future
    /// through the hub. Cancelling the future aborts the task.
    fn start<'py, F>(&self, py: Python<'py>, task: impl FnOnce(u64, Arc<HubInner>) -> F) -> PyResult<Bound<'py, PyAny>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let hub = self.hub.bind(py);
        if hub.get().is_closed() {
            return Err(PyRuntimeError::new_err("this UpstreamClient is closed"));
        }
        let (id, fut) = Hub::begin(hub)?;
        let slot = submit(Box::pin(task(id, hub.get().inner.clone())));
        Hub::watch_cancel(hub, id, &fut, slot)?;
        Ok(fut)
    }
}

#[pymethods]
impl UpstreamClient {
    #[new]
    #[pyo3(signature = (*, connect_timeout=10.0, first_byte_timeout=600.0, read_timeout=300.0, pool_idle_timeout=90.0, pool_max_idle_per_host=1024, stream_window=262_144, client_stall_timeout=60.0))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        connect_timeout: f64,
        first_byte_timeout: f64,
        read_timeout: f64,
        pool_idle_timeout: f64,
        pool_max_idle_per_host: usize,
        stream_window: usize,
        client_stall_timeout: f64,
    ) -> PyResult<Self> {
        if stream_window == 0 {
            return Err(PyValueError::new_err("stream_window must be at least 1 byte"));
        }
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
        Ok(UpstreamClient {
            client,
            first_byte_timeout: duration(first_byte_timeout),
            read_timeout: duration(read_timeout),
            flow: Flow { window: stream_window, stall: duration(client_stall_timeout) },
            hub: Hub::new(py)?,
        })
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
        let (fbt, rt) = (self.first_byte_timeout, self.read_timeout);
        self.start(py, move |id, hub| async move {
            let r = do_send(client, req, fbt, rt).await;
            hub.complete(id, Outcome::Send(r));
        })
    }

    /// Send and resolve once the response headers arrived.
    ///
    /// ``input_estimate`` is used for the input count when the upstream never
    /// reported usage (the outcome is then marked estimated). A gap longer than
    /// ``read_timeout`` between chunks ends the stream with status "timeout".
    /// The upstream is read at most ``stream_window`` bytes ahead of the consumer;
    /// bytes left unread for ``client_stall_timeout`` end it with "client_stalled".
    #[pyo3(signature = (method, url, headers, body, *, kind, strip_usage_chunk, pricing, hold_micros, input_estimate, on_done))]
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
        hold_micros: i64,
        input_estimate: i64,
        on_done: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = Kind::parse(kind)?;
        let req = self.build_request(method, url, headers, body)?;
        let client = self.client.clone();
        let (fbt, rt) = (self.first_byte_timeout, self.read_timeout);
        let args = StreamArgs { kind, strip_usage_chunk, pricing: *pricing, hold_micros, input_estimate, on_done, flow: self.flow };
        self.start(py, move |id, hub| async move {
            let r = do_stream(client, req, fbt, rt, args).await;
            hub.complete(id, Outcome::Stream(r));
        })
    }

    /// Unregister from the event loop (at once, or when the last pending call
    /// resolves). Further ``send``/``stream`` raise RuntimeError; streams already
    /// returned keep working. Idempotent; dropping the client does the same.
    fn close(&self, py: Python<'_>) {
        self.hub.get().close(py);
    }

    /// True once ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.hub.get().is_closed()
    }

    /// Busy-wait, with the GIL released, up to `max_seconds` for a call of this
    /// client to finish; if one did, resolve the finished calls now (what the
    /// loop's reader does on its next wake-up) and return True.
    ///
    /// For a caller that knows the loop has nothing else to do and the answer is
    /// due within microseconds: polling saves the two thread wake-ups of the
    /// sleep-and-signal path. The loop runs nothing else meanwhile, so keep the
    /// bound short.
    fn spin_wait(slf: &Bound<'_, Self>, max_seconds: f64) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let inner = this.hub.get().inner.clone();
        let Some(limit) = duration(max_seconds) else {
            return Ok(false);
        };
        let deadline = Instant::now() + limit;
        let finished = py.detach(|| loop {
            if inner.has_items.load(Ordering::Acquire) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::hint::spin_loop();
        });
        if finished {
            this.hub.bind(py).call_method0(intern!(py, "_drain"))?;
        }
        Ok(finished)
    }

    /// The wake-up fd registered with the event loop (for tests).
    #[getter]
    fn _wakeup_fd(&self) -> i32 {
        self.hub.get().fd()
    }

    /// Number of calls whose future is not resolved yet (for tests).
    #[getter]
    fn _pending(&self) -> usize {
        self.hub.get().pending_count()
    }
}
