//! The upstream HTTP client: pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) with
//! rustls, on the extension's tokio runtime. `send` reads whole responses;
//! `stream` tees SSE streams through the scanner and settles them itself.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionAbortedError, PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::Notify;

use crate::hub::{bytes_value, empty_bytes, new_waiter, stop_async_iteration, Hub, HubInner, OpError, Outcome, WakeValue};
use crate::pricing::{settled_cost, Pricing, Usage};
use crate::scanner::Scanner;
use crate::usage::Kind;
use crate::runtime;

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
fn map_send_error(e: reqwest::Error) -> OpError {
    let msg = error_chain(&e);
    if e.is_timeout() {
        OpError::Timeout(msg)
    } else if e.is_builder() {
        OpError::Value(msg)
    } else {
        OpError::Connect(msg)
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

/// A Python future waiting on a stream (``__anext__``, or ``read_all`` when `all`).
pub struct Waiter {
    pub id: u64,
    pub hub: Arc<HubInner>,
    pub all: bool,
}

#[derive(Default)]
struct BufState {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks` (what the client has not taken yet).
    bytes: usize,
    /// When the oldest chunk in `chunks` was pushed (None while empty).
    unread_since: Option<Instant>,
    done: bool,
    closed: bool,
    stalled: bool,
    waiter: Option<Waiter>,
}

impl BufState {
    fn drain(&mut self) -> Vec<Bytes> {
        self.bytes = 0;
        self.unread_since = None;
        self.chunks.drain(..).collect()
    }

    /// A ``read_all`` waiter takes the body only once it is complete: the window must not hold it back.
    fn wants_all(&self) -> bool {
        self.waiter.as_ref().is_some_and(|w| w.all)
    }
}

/// How far ahead of its client a stream reads the upstream (see ``UpstreamClient``).
#[derive(Clone, Copy)]
pub(crate) struct Flow {
    /// Unread bytes at which the reader stops reading the upstream until the client takes some.
    window: usize,
    /// How long unread bytes may wait for the client before the stream is closed ("client_stalled").
    stall: Option<Duration>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow { window: usize::MAX, stall: None }
    }
}

/// What a stream has for its consumer right now.
enum Next {
    Data(Vec<Bytes>),
    End,
    /// Closed because the client stopped reading: the body is cut, not complete.
    Stalled,
    Empty,
}

#[derive(Default)]
pub struct Shared {
    buf: Mutex<BufState>,
    /// Wakes the reader task on close.
    cancel: Notify,
    /// Wakes the reader task when the client took what filled the window.
    space: Notify,
    closed: AtomicBool,
    flow: Flow,
}

impl Shared {
    fn wake(self: &Arc<Self>, w: Option<Waiter>) {
        if let Some(w) = w {
            w.hub.complete(w.id, Outcome::Wake { shared: self.clone(), all: w.all });
        }
    }

    fn push(self: &Arc<Self>, b: Bytes) {
        if b.is_empty() {
            return;
        }
        let w = {
            let mut st = self.buf.lock().unwrap();
            if st.closed {
                return;
            }
            st.bytes += b.len();
            if st.unread_since.is_none() {
                st.unread_since = Some(Instant::now());
            }
            st.chunks.push_back(b);
            if st.waiter.as_ref().is_some_and(|w| !w.all) {
                st.waiter.take()
            } else {
                None
            }
        };
        self.wake(w);
    }

    fn finish(self: &Arc<Self>) {
        let w = {
            let mut st = self.buf.lock().unwrap();
            st.done = true;
            st.waiter.take()
        };
        self.wake(w);
    }

    fn close(self: &Arc<Self>) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.cancel.notify_one();
            let w = {
                let mut st = self.buf.lock().unwrap();
                st.closed = true;
                st.drain();
                st.waiter.take()
            };
            self.wake(w);
        }
    }

    fn close_stalled(self: &Arc<Self>) {
        self.buf.lock().unwrap().stalled = true;
        self.close();
    }

    fn is_done(&self) -> bool {
        self.buf.lock().unwrap().done
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn has_data(&self) -> bool {
        !self.buf.lock().unwrap().chunks.is_empty()
    }

    /// What ``__anext__`` (or, with `all`, ``read_all``) can return without waiting.
    fn poll(&self, st: &mut BufState, all: bool) -> Next {
        if st.closed {
            return if st.stalled { Next::Stalled } else { Next::End };
        }
        if all && !st.done {
            return Next::Empty;
        }
        if !st.chunks.is_empty() {
            if st.bytes >= self.flow.window {
                // the reader may be waiting for room (a stored permit if it is not yet)
                self.space.notify_one();
            }
            return Next::Data(st.drain());
        }
        if st.done {
            Next::End
        } else {
            Next::Empty
        }
    }

    fn try_next(&self, all: bool) -> Next {
        self.poll(&mut self.buf.lock().unwrap(), all)
    }

    /// Register `w` unless something can be returned at once.
    fn arm(&self, w: Waiter) -> Next {
        let mut st = self.buf.lock().unwrap();
        let n = self.poll(&mut st, w.all);
        if let Next::Empty = n {
            if w.all {
                self.space.notify_one();
            }
            st.waiter = Some(w);
        }
        n
    }

    /// Whether the window is full, and when the client must have taken the unread bytes by.
    fn backlog(&self) -> (bool, Option<Instant>) {
        let st = self.buf.lock().unwrap();
        if st.wants_all() {
            return (false, None);
        }
        let deadline = match (self.flow.stall, st.unread_since) {
            (Some(d), Some(t)) => Some(t + d),
            _ => None,
        };
        (st.bytes >= self.flow.window, deadline)
    }

    /// True when unread bytes have waited for the client past the stall timeout.
    fn stalled(&self) -> bool {
        let st = self.buf.lock().unwrap();
        match (self.flow.stall, st.unread_since) {
            (Some(d), Some(t)) => !st.wants_all() && t.elapsed() >= d,
            _ => false,
        }
    }

    /// Called by the hub (GIL held) when this stream's waiter was woken.
    pub fn wake_value<'py>(&self, py: Python<'py>, all: bool, id: u64, hub: &Arc<HubInner>) -> PyResult<WakeValue<'py>> {
        let n = self.arm(Waiter { id, hub: hub.clone(), all });
        Ok(next_value(py, n, all))
    }
}

fn next_value<'py>(py: Python<'py>, n: Next, all: bool) -> WakeValue<'py> {
    match n {
        Next::Data(chunks) => Some(bytes_value(py, &chunks)),
        Next::End if all => Some(Ok(empty_bytes(py))),
        Next::End => Some(Err(stop_async_iteration())),
        Next::Stalled => Some(Err(PyConnectionAbortedError::new_err(
            "the client took nothing for client_stall_timeout: the stream was cut",
        ))),
        Next::Empty => None,
    }
}

/// Owner handle of a stream: dropping it closes the stream.
pub struct StreamHandle(Arc<Shared>);

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
    /// "ok", "client_closed", "client_stalled", "upstream_error" or "timeout".
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
    /// Responses streams: the JSON bytes of the terminal event's response object (None when cut before it).
    final_response: Option<Py<PyBytes>>,
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
    pub(crate) status: u16,
    pub(crate) headers: Py<PyList>,
    pub(crate) body: Py<PyBytes>,
    pub(crate) latency_ms: u64,
}

#[pymethods]
impl UpstreamResponse {
    fn __repr__(&self) -> String {
        format!("UpstreamResponse(status={}, latency_ms={})", self.status, self.latency_ms)
    }
}

pub struct SendResult {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<Bytes>,
    pub(crate) latency_ms: u64,
}

/// A streamed upstream response: forward its chunks, report what it cost.
///
/// Created by ``UpstreamClient.stream`` once the response headers arrived. When
/// ``status`` is 2xx, a tokio task reads the upstream to its end (independently of
/// how fast Python consumes), scans every byte, and when the upstream ends or
/// fails, or ``close()`` is called, or this object is dropped, it computes the
/// usage, prices it, applies the settlement rule (`settled_cost`) to a hold of
/// ``hold_micros`` and calls ``on_done(outcome)`` exactly once: the caller settles
/// its hold to ``outcome.cost_micros``.
/// When ``status`` is not 2xx ``on_done`` is never called.
#[pyclass(module = "tollway._core", frozen)]
pub struct UpstreamStream {
    #[pyo3(get)]
    status: u16,
    #[pyo3(get)]
    headers: Py<PyList>,
    handle: StreamHandle,
    hub: Py<Hub>,
    /// Op id of the last future handed out by ``__anext__`` / ``read_all`` (0: none).
    waiter_id: AtomicU64,
}

pub struct StreamReady {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) handle: StreamHandle,
}

impl UpstreamStream {
    pub(crate) fn new(status: u16, headers: Py<PyList>, handle: StreamHandle, hub: Py<Hub>) -> Self {
        UpstreamStream { status, headers, handle, hub, waiter_id: AtomicU64::new(0) }
    }

    /// The value now (an already-complete awaitable), or a future resolved by the hub.
    fn next_awaitable<'py>(&self, py: Python<'py>, all: bool) -> PyResult<Option<Bound<'py, PyAny>>> {
        let sh = &self.handle.0;
        let hub = self.hub.bind(py);
        let prev = self.waiter_id.load(Ordering::Relaxed);
        if prev != 0 {
            if hub.get().is_waiting(py, prev) {
                return Err(PyRuntimeError::new_err("another __anext__() or read_all() is already waiting on this stream"));
            }
            // Resolved, or cancelled by the caller (then its data stays buffered for this call).
            hub.get().forget(prev);
            self.waiter_id.store(0, Ordering::Relaxed);
        }
        match next_value(py, sh.try_next(all), all) {
            Some(Ok(v)) => return ready(py, v).map(Some),
            Some(Err(e)) => return end_or_raise(py, e),
            None => {}
        }
        let (id, fut) = Hub::begin(hub)?;
        match next_value(py, sh.arm(new_waiter(hub, id, all)), all) {
            None => {
                self.waiter_id.store(id, Ordering::Relaxed);
                Ok(Some(fut))
            }
            Some(v) => {
                hub.get().forget(id);
                match v {
                    Ok(v) => ready(py, v).map(Some),
                    Err(e) => end_or_raise(py, e),
                }
            }
        }
    }
}

/// The end of the stream (None: StopAsyncIteration), or the error that cut it.
fn end_or_raise<'py>(py: Python<'py>, e: PyErr) -> PyResult<Option<Bound<'py, PyAny>>> {
    if e.is_instance_of::<pyo3::exceptions::PyStopAsyncIteration>(py) {
        Ok(None)
    } else {
        Err(e)
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
        self.next_awaitable(py, false)
    }

    /// The rest of the body in one piece (for non-2xx bodies).
    fn read_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.next_awaitable(py, true)? {
            Some(a) => Ok(a),
            None => ready(py, empty_bytes(py)),
        }
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
    hold_micros: i64,
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
        // Read the upstream only as fast as the client takes it: with the window full,
        // wait for room (the upstream's TCP flow control holds the rest back). Unread
        // bytes older than the stall timeout close the stream. A read interrupted by a
        // stall check loses nothing (`chunk()` takes a frame only when it is ready);
        // the read timeout restarts after each wait, as the gap was ours.
        let (full, stall_at) = shared.backlog();
        let stall_check = async move {
            match stall_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        if full {
            tokio::select! {
                biased;
                _ = shared.cancel.notified() => {
                    status = "client_closed";
                    break;
                }
                _ = shared.space.notified() => continue,
                _ = stall_check => {
                    if shared.stalled() {
                        status = "client_stalled";
                        shared.close_stalled();
                        break;
                    }
                    continue;
                }
            }
        }
        let chunk = tokio::select! {
            biased;
            _ = shared.cancel.notified() => {
                status = "client_closed";
                break;
            }
            _ = stall_check => {
                if shared.stalled() {
                    status = "client_stalled";
                    shared.close_stalled();
                    break;
                }
                continue;
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
    if !out.is_empty() && !shared.is_closed() {
        forwarded += out.len() as u64;
        shared.push(Bytes::copy_from_slice(&out));
    }
    let usage = s.scanner.final_usage(s.input_estimate);
    let cost = settled_cost(s.pricing.cost_of(&usage), usage.estimated, s.hold_micros);
    let latency = start.elapsed();
    let first_byte_ms = ms(first_byte.unwrap_or(headers_at));
    let text = std::mem::take(&mut s.scanner.text);
    let tool_calls_json = s.scanner.tool_calls_json();
    let finish_reason = s.scanner.finish_reason.clone();
    let error_json = s.scanner.error_json.clone();
    let final_response = s.scanner.final_response.take();
    let on_done = s.on_done;
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
                        final_response: final_response.map(|b| PyBytes::new(py, &b).unbind()),
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
        });
        shared2.finish();
    })
    .await;
    if r.is_err() {
        shared.finish();
    }
}

// ---------------------------------------------------------------------------
// The runtime

/// A current-thread tokio runtime driven by one dedicated thread ("tollway-core").
///
/// With a single worker this is leaner than the multi-thread scheduler (no work
/// stealing, no searching/idle bookkeeping); tasks spawned from the event loop go
/// through the injection queue and unpark the driver, as before.
pub(crate) fn single_thread_runtime() -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tollway-core".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .thread_name("tollway-core")
                .enable_all()
                .build()
                .expect("cannot build the tokio runtime");
            let _ = tx.send(rt.handle().clone());
            rt.block_on(std::future::pending::<()>());
        })
        .expect("cannot start the runtime thread");
    rx.recv().expect("the runtime thread failed to start")
}

/// A submitted call's task, spawned on the runtime by the submission task.
type CallTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

enum SlotState {
    Queued,
    Spawned(tokio::task::AbortHandle),
    Cancelled,
}

/// How a call submitted from the event loop is cancelled: before the submission
/// task spawned it (it is then never spawned) or after (its task is aborted).
pub struct CallSlot(Mutex<SlotState>);

impl CallSlot {
    pub fn abort(&self) {
        if let SlotState::Spawned(h) = std::mem::replace(&mut *self.0.lock().unwrap(), SlotState::Cancelled) {
            h.abort();
        }
    }
}

/// Calls go from the event loop to the runtime through one queue: the first call
/// queued after a drain wakes the submission task (one cross-thread wake-up, a
/// syscall when the runtime thread sleeps); the calls queued before it runs ride
/// along. Spawning each call from the loop instead would unpark the runtime on
/// every call (the current-thread scheduler always signals its driver).
struct Submitter {
    queue: Mutex<Vec<(Arc<CallSlot>, CallTask)>>,
    wake_pending: AtomicBool,
    notify: Notify,
}

static SUBMITTER: Submitter =
    Submitter { queue: Mutex::new(Vec::new()), wake_pending: AtomicBool::new(false), notify: Notify::const_new() };
static SUBMITTER_STARTED: std::sync::Once = std::sync::Once::new();

async fn submission_task() {
    let mut batch = Vec::new();
    loop {
        SUBMITTER.notify.notified().await;
        SUBMITTER.wake_pending.store(false, Ordering::Release);
        std::mem::swap(&mut batch, &mut *SUBMITTER.queue.lock().unwrap());
        for (slot, task) in batch.drain(..) {
            let mut st = slot.0.lock().unwrap();
            if let SlotState::Queued = *st {
                *st = SlotState::Spawned(tokio::spawn(task).abort_handle());
            }
        }
    }
}

/// Queue `task` for the runtime; the returned slot cancels it.
fn submit(task: CallTask) -> Arc<CallSlot> {
    SUBMITTER_STARTED.call_once(|| {
        runtime().spawn(submission_task());
    });
    let slot = Arc::new(CallSlot(Mutex::new(SlotState::Queued)));
    SUBMITTER.queue.lock().unwrap().push((slot.clone(), task));
    if !SUBMITTER.wake_pending.swap(true, Ordering::AcqRel) {
        SUBMITTER.notify.notify_one();
    }
    slot
}

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
