//! A streamed upstream response: its Python objects and the reader task that tees,
//! scans and prices it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::hub::{empty_bytes, new_waiter, Hub};
use crate::pricing::{settled_cost, Pricing, Usage};
use crate::scanner::Scanner;

use crate::client::*;
use crate::window::*;

// ---------------------------------------------------------------------------
// Python classes

/// What a finished stream hands over, exactly once, through ``on_done``.
#[pyclass(module = "tollway._core", frozen, get_all)]
pub struct StreamOutcome {
    /// "ok", "client_closed", "client_stalled", "upstream_error" or "timeout".
    status: &'static str,
    pub(crate) usage: Py<Usage>,
    cost_micros: i64,
    pub(crate) text: String,
    pub(crate) tool_calls_json: String,
    pub(crate) finish_reason: Option<String>,
    pub(crate) error_json: Option<String>,
    /// Bytes produced for the client (after stripping), whether or not it read them all.
    bytes_forwarded: u64,
    /// From the request being sent upstream to the stream settling.
    latency_ms: u64,
    /// From the request being sent upstream to the first body chunk (the headers when there was none).
    first_byte_ms: u64,
    /// Responses streams: the JSON bytes of the terminal event's response object (None when cut before it).
    pub(crate) final_response: Option<Py<PyBytes>>,
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
    pub(crate) headers: Py<PyList>,
    pub(crate) handle: StreamHandle,
    pub(crate) hub: Py<Hub>,
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
pub(crate) fn end_or_raise<'py>(py: Python<'py>, e: PyErr) -> PyResult<Option<Bound<'py, PyAny>>> {
    if e.is_instance_of::<pyo3::exceptions::PyStopAsyncIteration>(py) {
        Ok(None)
    } else {
        Err(e)
    }
}

pub(crate) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
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

pub(crate) struct Settlement {
    pub(crate) scanner: Scanner,
    pub(crate) pricing: Pricing,
    pub(crate) hold_micros: i64,
    pub(crate) input_estimate: i64,
    pub(crate) on_done: Py<PyAny>,
}

pub(crate) async fn pump(
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

