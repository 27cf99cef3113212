//! Exact sliding-window rate limits per bucket: the logic of
//! `tollway.policy.ratelimit` (its docstring is the specification; the pure-Python
//! `tollway.policy.ratelimit_ref` is the reference both are tested against).
//!
//! [`Core`] (`ratelimit/table.rs`) is plain Rust (no Python): a slab of buckets
//! (`ratelimit/bucket.rs`), each a log of
//! `(ts, tokens, live)` entries oldest first with its live count and token sum, and
//! an id -> slot map. A [`Held`] names a bucket by (slot, generation) and its entry by
//! a per-bucket sequence number, so a permit outliving its bucket (forgotten or swept)
//! touches nothing, and an entry pruned from the log is recognised as gone.
//!
//! The Python classes parse their arguments first, then lock, decide, unlock and only
//! then make Python objects: no Python code ever runs under the lock, so a permit
//! dropped anywhere (its `Drop` takes the lock) cannot deadlock. The GIL is kept.


mod bucket;
mod table;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

pub use bucket::{Held, Helds, Kind, Limits, Refused, Win, BIG, PARALLEL_RETRY_MS, WINDOW_MS};
pub use table::{Core, Req, State};

// -- Python ------------------------------------------------------------------------------

type Shared = Arc<Mutex<Core>>;

fn lock(core: &Shared) -> MutexGuard<'_, Core> {
    // A panic under the lock leaves plain integers behind: still consistent enough to go on.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// An int, clamped to [-BIG, BIG] (a Python int has no bound).
fn int(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    match v.extract::<i64>() {
        Ok(n) => Ok(n.clamp(-BIG, BIG)),
        Err(e) => match v.cast::<PyInt>() {
            Ok(i) => Ok(if i.gt(0)? { BIG } else { -BIG }),
            Err(_) => Err(e),
        },
    }
}

fn limit(v: Bound<'_, PyAny>, name: &str) -> PyResult<Option<i64>> {
    if v.is_none() {
        return Ok(None);
    }
    let n = int(&v)?;
    if n < 1 {
        return Err(PyValueError::new_err(format!("{name} must be an integer >= 1 or None, not {n}")));
    }
    Ok(Some(n))
}

fn limits_of(obj: &Bound<'_, PyAny>) -> PyResult<Limits> {
    let py = obj.py();
    Ok(Limits {
        rpm: limit(obj.getattr(intern!(py, "rpm"))?, "rpm")?,
        tpm: limit(obj.getattr(intern!(py, "tpm"))?, "tpm")?,
        max_parallel: limit(obj.getattr(intern!(py, "max_parallel"))?, "max_parallel")?,
    })
}

struct PyReq<'py> {
    name: Bound<'py, PyString>,
    limits: Limits,
}

impl Req for PyReq<'_> {
    fn id(&self) -> &str {
        // Checked to be UTF-8 when parsed (the UTF-8 form is cached in the string).
        self.name.to_str().unwrap_or_default()
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
}

fn req_of<'py>(name: Bound<'py, PyAny>, limits: &Bound<'py, PyAny>) -> PyResult<PyReq<'py>> {
    let name = name.cast_into::<PyString>().map_err(|_| PyTypeError::new_err("a bucket id must be a str"))?;
    name.to_str()?;
    Ok(PyReq { name, limits: limits_of(limits)? })
}

fn pair<'py>(item: Bound<'py, PyAny>) -> PyResult<PyReq<'py>> {
    if let Ok(t) = item.cast::<PyTuple>() {
        if t.len() == 2 {
            return req_of(t.get_item(0)?, &t.get_item(1)?);
        }
    }
    let (name, limits): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item.extract()?;
    req_of(name, &limits)
}

/// A request's buckets as parsed: up to four inline (no allocation), more on the heap.
#[allow(clippy::large_enum_variant)] // on the stack for one call: the point is not to allocate
enum Reqs<'py> {
    Inline([Option<PyReq<'py>>; 4], usize),
    Heap(Vec<Option<PyReq<'py>>>),
}

impl<'py> Reqs<'py> {
    fn push(&mut self, r: PyReq<'py>) {
        match self {
            Reqs::Inline(items, n) if *n < 4 => {
                items[*n] = Some(r);
                *n += 1;
            }
            Reqs::Inline(items, _) => {
                let mut v: Vec<Option<PyReq<'py>>> = items.iter_mut().map(Option::take).collect();
                v.push(Some(r));
                *self = Reqs::Heap(v);
            }
            Reqs::Heap(v) => v.push(Some(r)),
        }
    }

    fn as_slice(&self) -> &[Option<PyReq<'py>>] {
        match self {
            Reqs::Inline(items, n) => &items[..*n],
            Reqs::Heap(v) => v,
        }
    }
}

static NO_LIMITS: Limits = Limits { rpm: None, tpm: None, max_parallel: None };

impl Req for Option<PyReq<'_>> {
    fn id(&self) -> &str {
        self.as_ref().map_or("", |r| r.id())
    }
    fn limits(&self) -> &Limits {
        self.as_ref().map_or(&NO_LIMITS, |r| &r.limits)
    }
}

fn reqs<'py>(buckets: &Bound<'py, PyAny>) -> PyResult<Reqs<'py>> {
    let mut out = Reqs::Inline([None, None, None, None], 0);
    if let Ok(list) = buckets.cast::<PyList>() {
        for item in list.iter() {
            out.push(pair(item)?);
        }
    } else {
        for item in buckets.try_iter()? {
            out.push(pair(item?)?);
        }
    }
    Ok(out)
}

/// The rate limiter (see `tollway.policy.ratelimit`). Built with the Python types it
/// returns: ``Window``, ``RateSnapshot`` and ``Refusal`` (made only for a refusal or a
/// snapshot; an admitted request gets a ``RatePermit``).
#[pyclass(module = "tollway._core", frozen, subclass)]
pub struct RateLimiter {
    core: Shared,
    window: Py<PyAny>,
    snapshot: Py<PyAny>,
    refusal: Py<PyAny>,
}

/// A request admitted in every bucket (see `tollway.policy.ratelimit.Permit`).
#[pyclass(module = "tollway._core", frozen)]
pub struct RatePermit {
    core: Shared,
    held: Helds,
    done: AtomicBool,
    /// The estimate it was admitted with (the int given).
    #[pyo3(get)]
    tokens: Py<PyAny>,
}

impl Drop for RatePermit {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Acquire) {
            let mut core = lock(&self.core);
            if !self.done.swap(true, Ordering::AcqRel) {
                core.dropped(&self.held);
            }
        }
    }
}

#[pymethods]
impl RatePermit {
    #[getter]
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The request went upstream: its tokens corrected to ``actual_tokens``, its parallel slots freed.
    fn settle(&self, actual_tokens: &Bound<'_, PyAny>, now_ms: &Bound<'_, PyAny>) -> PyResult<()> {
        let actual = int(actual_tokens)?;
        if actual < 0 {
            return Err(PyValueError::new_err("actual_tokens must be >= 0"));
        }
        let now = int(now_ms)?;
        let mut core = lock(&self.core);
        if !self.done.swap(true, Ordering::AcqRel) {
            core.settle(&self.held, actual, now);
        }
        Ok(())
    }

    /// The request did not go upstream after all: everything given back.
    fn release(&self) {
        let mut core = lock(&self.core);
        if !self.done.swap(true, Ordering::AcqRel) {
            core.release(&self.held);
        }
    }

    fn __repr__(&self) -> String {
        format!("RatePermit(buckets={}, done={})", self.held.len(), if self.done() { "True" } else { "False" })
    }
}

fn name_at<'py>(py: Python<'py>, req: &[Option<PyReq<'py>>], at: usize) -> Bound<'py, PyAny> {
    req[at].as_ref().map_or_else(|| PyString::new(py, "").into_any(), |r| r.name.clone().into_any())
}

impl RateLimiter {
    fn window_obj(&self, py: Python<'_>, req: &[Option<PyReq<'_>>], w: Option<Win>) -> PyResult<Py<PyAny>> {
        match w {
            None => Ok(py.None()),
            Some(w) => self.window.call1(py, (name_at(py, req, w.at), w.limit, w.remaining, w.reset_ms)),
        }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }
}

#[pymethods]
impl RateLimiter {
    #[new]
    fn py_new(window: Py<PyAny>, snapshot: Py<PyAny>, refusal: Py<PyAny>) -> Self {
        RateLimiter { core: Arc::default(), window, snapshot, refusal }
    }

    /// A ``RatePermit`` in every bucket of ``buckets`` ([(id, limits)], distinct ids) for a
    /// request of ``tokens``, or a ``Refusal`` and nothing taken.
    fn acquire(&self, buckets: &Bound<'_, PyAny>, tokens: &Bound<'_, PyAny>, now_ms: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = buckets.py();
        let n = int(tokens)?;
        if n < 0 {
            return Err(PyValueError::new_err("tokens must be >= 0"));
        }
        let now = int(now_ms)?;
        let reqs = reqs(buckets)?;
        let req = reqs.as_slice();
        let got = self.core().acquire(req, n, now);
        match got {
            Ok(held) => Ok(Py::new(py, RatePermit { core: self.core.clone(), held, done: AtomicBool::new(false), tokens: tokens.clone().unbind() })?.into_any()),
            Err(r) => {
                let requests = self.window_obj(py, req, r.requests)?;
                let tokens = self.window_obj(py, req, r.tokens)?;
                let limit = PyString::intern(py, r.kind.name());
                self.refusal.call1(py, (name_at(py, req, r.at), limit, r.value, r.remaining, r.retry_after_ms, requests, tokens))
            }
        }
    }

    /// The windows of a request's buckets now (a ``RateSnapshot``).
    fn snapshot(&self, buckets: &Bound<'_, PyAny>, now_ms: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = buckets.py();
        let now = int(now_ms)?;
        let reqs = reqs(buckets)?;
        let req = reqs.as_slice();
        let (rw, tw) = self.core().snapshot(req, now);
        let (rw, tw) = (self.window_obj(py, req, rw)?, self.window_obj(py, req, tw)?);
        self.snapshot.call1(py, (rw, tw))
    }

    /// A bucket now, JSON-ready (see `tollway.policy.ratelimit_ref.ReferenceRateLimiter.state`).
    fn state<'py>(&self, bucket: &Bound<'py, PyAny>, limits: &Bound<'py, PyAny>, now_ms: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let py = bucket.py();
        let now = int(now_ms)?;
        let req = req_of(bucket.clone(), limits)?;
        let s = self.core().state(req.id(), &req.limits, now);
        let window = |w: Option<Win>| -> PyResult<Py<PyAny>> {
            match w {
                None => Ok(py.None()),
                Some(w) => {
                    let d = PyDict::new(py);
                    d.set_item("limit", w.limit)?;
                    d.set_item("remaining", w.remaining)?;
                    d.set_item("reset_ms", w.reset_ms)?;
                    Ok(d.into_any().unbind())
                }
            }
        };
        let d = PyDict::new(py);
        d.set_item("bucket", &req.name)?;
        d.set_item("window_ms", WINDOW_MS)?;
        d.set_item("requests", window(s.requests)?)?;
        d.set_item("tokens", window(s.tokens)?)?;
        d.set_item("requests_in_window", s.requests_in_window)?;
        d.set_item("tokens_in_window", s.tokens_in_window)?;
        d.set_item("in_flight", s.in_flight)?;
        d.set_item("max_parallel", req.limits.max_parallel)?;
        Ok(d)
    }

    /// Drop a bucket's log and in-flight count (a deleted key).
    fn forget(&self, bucket: &str) {
        self.core().forget(bucket);
    }

    /// The ids of the buckets kept, oldest first.
    fn bucket_ids(&self) -> Vec<String> {
        self.core().bucket_ids().iter().map(|s| s.to_string()).collect()
    }

    fn __len__(&self) -> usize {
        self.core().len()
    }
}
