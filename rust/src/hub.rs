//! The completion hub: how tokio tasks hand finished operations to the asyncio
//! loop without ever taking the GIL.
//!
//! * Producers (tokio tasks, any thread) push a [`Completion`] (op id + a
//!   Rust-typed result) onto a mutex-guarded queue and write to an eventfd (a
//!   nonblocking pipe where eventfd is unavailable) only when no wake-up is
//!   pending yet, so one loop wake-up drains many completions.
//! * The consumer side is the [`Hub`] Python object, bound to one running
//!   asyncio loop with `loop.add_reader(fd, hub._drain)`. It owns the pending
//!   asyncio futures (keyed by op id, touched only with the GIL held) and
//!   resolves them in `_drain`, on the loop thread.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList};
use pyo3::intern;

use crate::client::{concat_to_py, CallSlot, SendResult, Shared, StreamReady, UpstreamResponse, UpstreamStream, Waiter};
use crate::{UpstreamConnectError, UpstreamError, UpstreamTimeout};

// ---------------------------------------------------------------------------
// What a finished operation hands over (no Python objects inside)

/// An error of an operation, turned into the Python exception in `_drain`.
pub enum OpError {
    Timeout(String),
    Connect(String),
    Value(String),
    Upstream(String),
}

impl OpError {
    fn into_pyerr(self) -> PyErr {
        match self {
            OpError::Timeout(m) => UpstreamTimeout::new_err(m),
            OpError::Connect(m) => UpstreamConnectError::new_err(m),
            OpError::Value(m) => PyValueError::new_err(m),
            OpError::Upstream(m) => UpstreamError::new_err(m),
        }
    }
}

pub enum Outcome {
    Send(Result<SendResult, OpError>),
    Stream(Result<StreamReady, OpError>),
    /// A stream's waiter (``__anext__`` or ``read_all``): data arrived, or the stream ended or was closed.
    Wake { shared: Arc<Shared>, all: bool },
}

struct Completion {
    id: u64,
    outcome: Outcome,
}

// ---------------------------------------------------------------------------
// The thread-safe half

struct Queue {
    items: Vec<Completion>,
    wake_pending: bool,
}

/// Shared with the tokio tasks: the completion queue and the wake-up fd.
pub struct HubInner {
    queue: Mutex<Queue>,
    /// Set while `queue` holds completions (read without the lock by `spin_wait`).
    pub has_items: AtomicBool,
    read_fd: c_int,
    write_fd: c_int,
}

impl HubInner {
    fn new() -> std::io::Result<Self> {
        let (read_fd, write_fd) = wakeup_fds()?;
        Ok(HubInner { queue: Mutex::new(Queue { items: Vec::new(), wake_pending: false }), has_items: Default::default(), read_fd, write_fd })
    }

    /// Hand a finished operation to the loop. Never takes the GIL.
    pub fn complete(&self, id: u64, outcome: Outcome) {
        let wake = {
            let mut q = self.queue.lock().unwrap();
            q.items.push(Completion { id, outcome });
            self.has_items.store(true, Ordering::Release);
            !std::mem::replace(&mut q.wake_pending, true)
        };
        if wake {
            self.signal();
        }
    }

    fn signal(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.read_fd == self.write_fd {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our own eventfd.
            unsafe { libc::write(self.write_fd, &one as *const u64 as *const libc::c_void, 8) };
            return;
        }
        let b = [1u8];
        // SAFETY: writes 1 byte to our own pipe; EAGAIN (pipe full) still leaves it readable.
        unsafe { libc::write(self.write_fd, b.as_ptr() as *const libc::c_void, 1) };
    }

    fn reset(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a valid buffer from our own nonblocking fd.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            // eventfd: one read resets it; pipe: read until empty.
            if n <= 0 || self.read_fd == self.write_fd || (n as usize) < buf.len() {
                break;
            }
        }
    }

    fn take(&self) -> Vec<Completion> {
        let mut q = self.queue.lock().unwrap();
        q.wake_pending = false;
        self.has_items.store(false, Ordering::Release);
        std::mem::take(&mut q.items)
    }
}

impl Drop for HubInner {
    fn drop(&mut self) {
        // SAFETY: closing fds we own exactly once.
        unsafe {
            libc::close(self.read_fd);
            if self.write_fd != self.read_fd {
                libc::close(self.write_fd);
            }
        }
    }
}

fn wakeup_fds() -> std::io::Result<(c_int, c_int)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd >= 0 {
            return Ok((fd, fd));
        }
    }
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe() fills a 2-int array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for fd in fds {
        // SAFETY: fcntl on fds we just created.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
            let fdfl = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, fdfl | libc::FD_CLOEXEC);
        }
    }
    Ok((fds[0], fds[1]))
}

// ---------------------------------------------------------------------------
// The Python half (GIL only)

/// Op ids are sequential: hash them as themselves.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

struct Pending {
    fut: Py<PyAny>,
    /// The done-callback that propagates a cancellation (send / stream only).
    cancel_cb: Option<Py<PyAny>>,
    abort: Option<Arc<CallSlot>>,
}

#[derive(Default)]
struct HubState {
    /// The asyncio loop this hub is bound to (with its ``create_future``).
    event_loop: Option<Py<PyAny>>,
    create_future: Option<Py<PyAny>>,
    /// ``loop.add_reader`` was called and not undone.
    registered: bool,
    /// The client was closed: unregister once nothing is pending.
    closed: bool,
    next_id: u64,
    pending: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
}

/// The loop side of a client's completion hub (internal).
#[pyclass(module = "tollway._core", frozen)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
    state: Mutex<HubState>,
}

static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    GET_RUNNING_LOOP.import(py, "asyncio", "get_running_loop")?.call0()
}

fn loop_is_closed(l: &Bound<'_, PyAny>) -> bool {
    l.call_method0(intern!(l.py(), "is_closed")).and_then(|v| v.is_truthy()).unwrap_or(true)
}

impl Hub {
    pub fn new(py: Python<'_>) -> PyResult<Py<Hub>> {
        let inner = HubInner::new().map_err(|e| PyRuntimeError::new_err(format!("cannot create the wake-up fd: {e}")))?;
        Py::new(py, Hub { inner: Arc::new(inner), state: Mutex::new(HubState { next_id: 1, ..Default::default() }) })
    }

    pub fn fd(&self) -> c_int {
        self.inner.read_fd
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    pub fn pending_count(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// Bind to the running loop (or check it is the bound one), make sure the
    /// reader is registered, and return a new future with its op id.
    pub fn begin<'py>(slf: &Bound<'py, Hub>) -> PyResult<(u64, Bound<'py, PyAny>)> {
        let py = slf.py();
        let hub = slf.get();
        let running = running_loop(py)?;
        let (create_future, register) = {
            let st = hub.state.lock().unwrap();
            match &st.event_loop {
                Some(l) if l.bind(py).is(&running) => (st.create_future.as_ref().map(|c| c.clone_ref(py)), !st.registered),
                _ => (None, true),
            }
        };
        let create_future = match create_future {
            Some(c) => c.into_bound(py),
            None => hub.bind_loop(py, &running)?,
        };
        if register {
            hub.register(slf, &running)?;
        }
        let fut = create_future.call0()?;
        let mut st = hub.state.lock().unwrap();
        let id = st.next_id;
        st.next_id += 1;
        st.pending.insert(id, Pending { fut: fut.clone().unbind(), cancel_cb: None, abort: None });
        Ok((id, fut))
    }

    /// First use from `running` (or a rebind after the previous loop was closed).
    fn bind_loop<'py>(&self, py: Python<'py>, running: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let old = self.state.lock().unwrap().event_loop.as_ref().map(|l| l.clone_ref(py));
        let stale = match old {
            Some(old) => {
                let old = old.into_bound(py);
                if !loop_is_closed(&old) {
                    return Err(PyRuntimeError::new_err(
                        "this UpstreamClient is bound to another event loop (a client serves the one loop it was first used from; create one client per loop)",
                    ));
                }
                // The previous loop is closed: its futures can never be resolved.
                let mut st = self.state.lock().unwrap();
                st.registered = false;
                std::mem::take(&mut st.pending)
            }
            None => Default::default(),
        };
        drop(stale);
        let create_future = running.getattr(intern!(py, "create_future"))?;
        let mut st = self.state.lock().unwrap();
        st.event_loop = Some(running.clone().unbind());
        st.create_future = Some(create_future.clone().unbind());
        Ok(create_future)
    }

    fn register(&self, slf: &Bound<'_, Hub>, running: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let drain = slf.getattr(intern!(py, "_drain"))?;
        running.call_method1(intern!(py, "add_reader"), (self.fd(), drain))?;
        self.state.lock().unwrap().registered = true;
        Ok(())
    }

    fn unregister_if_idle(&self, py: Python<'_>) {
        let l = {
            let mut st = self.state.lock().unwrap();
            if !(st.closed && st.registered && st.pending.is_empty()) {
                return;
            }
            st.registered = false;
            st.event_loop.as_ref().map(|l| l.clone_ref(py))
        };
        if let Some(l) = l {
            let l = l.into_bound(py);
            if !loop_is_closed(&l) {
                if let Err(e) = l.call_method1(intern!(py, "remove_reader"), (self.fd(),)) {
                    e.write_unraisable(py, Some(&l));
                }
            }
        }
    }

    /// The client was closed or dropped: unregister the reader now, or once the last pending op is resolved.
    pub fn close(&self, py: Python<'_>) {
        self.state.lock().unwrap().closed = true;
        self.unregister_if_idle(py);
    }

    /// Make a send/stream future cancellable: its cancellation aborts the tokio task.
    pub fn watch_cancel(slf: &Bound<'_, Hub>, id: u64, fut: &Bound<'_, PyAny>, abort: Arc<CallSlot>) -> PyResult<()> {
        let py = slf.py();
        let cb = Bound::new(py, CancelCallback { hub: slf.clone().unbind(), id })?.into_any();
        fut.call_method1(intern!(py, "add_done_callback"), (&cb,))?;
        let mut st = slf.get().state.lock().unwrap();
        if let Some(p) = st.pending.get_mut(&id) {
            p.cancel_cb = Some(cb.unbind());
            p.abort = Some(abort);
        }
        Ok(())
    }

    /// Forget a pending op (its future is dropped unresolved).
    pub fn forget(&self, id: u64) {
        let p = self.state.lock().unwrap().pending.remove(&id);
        drop(p);
    }

    /// Is `id` pending with a future that is not done yet?
    pub fn is_waiting(&self, py: Python<'_>, id: u64) -> bool {
        let fut = self.state.lock().unwrap().pending.get(&id).map(|p| p.fut.clone_ref(py));
        match fut {
            Some(f) => !f.bind(py).call_method0(intern!(py, "done")).and_then(|d| d.is_truthy()).unwrap_or(true),
            None => false,
        }
    }

    fn resolve(slf: &Bound<'_, Hub>, c: Completion) -> PyResult<()> {
        let py = slf.py();
        let hub = slf.get();
        let pending = hub.state.lock().unwrap().pending.remove(&c.id);
        let Some(p) = pending else {
            return Ok(()); // cancelled (the result is dropped: a stream closes and settles itself)
        };
        let fut = p.fut.bind(py);
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        if let Some(cb) = &p.cancel_cb {
            fut.call_method1(intern!(py, "remove_done_callback"), (cb,))?;
        }
        let result: PyResult<Bound<'_, PyAny>> = match c.outcome {
            Outcome::Send(Ok(r)) => send_result(py, r),
            Outcome::Send(Err(e)) | Outcome::Stream(Err(e)) => Err(e.into_pyerr()),
            Outcome::Stream(Ok(r)) => stream_result(slf, r),
            Outcome::Wake { shared, all } => match shared.wake_value(py, all, c.id, &hub.inner)? {
                Some(v) => v,
                None => {
                    // Nothing to hand over yet (the waiter was re-armed): keep the future pending.
                    hub.state.lock().unwrap().pending.insert(c.id, p);
                    return Ok(());
                }
            },
        };
        match result {
            Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,))?,
            Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        Ok(())
    }
}

fn send_result<'py>(py: Python<'py>, r: SendResult) -> PyResult<Bound<'py, PyAny>> {
    let headers = PyList::new(py, r.headers)?.unbind();
    let body = concat_to_py(py, &r.body)?.unbind();
    Ok(Bound::new(py, UpstreamResponse { status: r.status, headers, body, latency_ms: r.latency_ms })?.into_any())
}

fn stream_result<'py>(hub: &Bound<'py, Hub>, r: StreamReady) -> PyResult<Bound<'py, PyAny>> {
    let py = hub.py();
    let StreamReady { status, headers, handle } = r;
    let headers = PyList::new(py, headers)?.unbind();
    Ok(Bound::new(py, UpstreamStream::new(status, headers, handle, hub.clone().unbind()))?.into_any())
}

/// What `_drain` hands to a stream waiter: `Some(Ok(bytes))`, `Some(Err(StopAsyncIteration))`, or `None` (re-armed, still waiting).
pub type WakeValue<'py> = Option<PyResult<Bound<'py, PyAny>>>;

pub fn stop_async_iteration() -> PyErr {
    PyStopAsyncIteration::new_err(())
}

pub fn bytes_value<'py>(py: Python<'py>, chunks: &[bytes::Bytes]) -> PyResult<Bound<'py, PyAny>> {
    Ok(concat_to_py(py, chunks)?.into_any())
}

pub fn empty_bytes(py: Python<'_>) -> Bound<'_, PyAny> {
    PyBytes::new(py, b"").into_any()
}

pub fn new_waiter(hub: &Bound<'_, Hub>, id: u64, all: bool) -> Waiter {
    Waiter { id, hub: hub.get().inner.clone(), all }
}

#[pymethods]
impl Hub {
    /// Called by the loop when the wake-up fd is readable: resolve every finished operation.
    fn _drain(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let hub = slf.get();
        hub.inner.reset();
        for c in hub.inner.take() {
            if let Err(e) = Hub::resolve(slf, c) {
                e.write_unraisable(py, Some(slf.as_any()));
            }
        }
        hub.unregister_if_idle(py);
    }
}

/// Done-callback of a send/stream future: a cancellation aborts the tokio task.
#[pyclass(module = "tollway._core", frozen)]
pub struct CancelCallback {
    hub: Py<Hub>,
    id: u64,
}

#[pymethods]
impl CancelCallback {
    fn __call__(&self, py: Python<'_>, fut: Bound<'_, PyAny>) -> PyResult<()> {
        if !fut.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            return Ok(());
        }
        let hub = self.hub.get();
        let p = hub.state.lock().unwrap().pending.remove(&self.id);
        if let Some(p) = p {
            if let Some(a) = &p.abort {
                a.abort();
            }
        }
        hub.unregister_if_idle(py);
        Ok(())
    }
}

