//! The bounded read-ahead window between a stream's reader task and its Python object.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::PyConnectionAbortedError;
use pyo3::prelude::*;
use tokio::sync::Notify;

use crate::hub::{bytes_value, empty_bytes, stop_async_iteration, HubInner, Outcome, WakeValue};


// ---------------------------------------------------------------------------
// Shared state between a stream's reader task and its Python object

/// A Python future waiting on a stream (``__anext__``, or ``read_all`` when `all`).
pub struct Waiter {
    pub id: u64,
    pub hub: Arc<HubInner>,
    pub all: bool,
}

#[derive(Default)]
pub(crate) struct BufState {
    pub(crate) chunks: VecDeque<Bytes>,
    /// Bytes in `chunks` (what the client has not taken yet).
    pub(crate) bytes: usize,
    /// When the oldest chunk in `chunks` was pushed (None while empty).
    pub(crate) unread_since: Option<Instant>,
    pub(crate) done: bool,
    pub(crate) closed: bool,
    pub(crate) stalled: bool,
    pub(crate) waiter: Option<Waiter>,
}

impl BufState {
    pub(crate) fn drain(&mut self) -> Vec<Bytes> {
        self.bytes = 0;
        self.unread_since = None;
        self.chunks.drain(..).collect()
    }

    /// A ``read_all`` waiter takes the body only once it is complete: the window must not hold it back.
    pub(crate) fn wants_all(&self) -> bool {
        self.waiter.as_ref().is_some_and(|w| w.all)
    }
}

/// How far ahead of its client a stream reads the upstream (see ``UpstreamClient``).
#[derive(Clone, Copy)]
pub(crate) struct Flow {
    /// Unread bytes at which the reader stops reading the upstream until the client takes some.
    pub(crate) window: usize,
    /// How long unread bytes may wait for the client before the stream is closed ("client_stalled").
    pub(crate) stall: Option<Duration>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow { window: usize::MAX, stall: None }
    }
}

/// What a stream has for its consumer right now.
pub(crate) enum Next {
    Data(Vec<Bytes>),
    End,
    /// Closed because the client stopped reading: the body is cut, not complete.
    Stalled,
    Empty,
}

#[derive(Default)]
pub struct Shared {
    pub(crate) buf: Mutex<BufState>,
    /// Wakes the reader task on close.
    pub(crate) cancel: Notify,
    /// Wakes the reader task when the client took what filled the window.
    pub(crate) space: Notify,
    pub(crate) closed: AtomicBool,
    pub(crate) flow: Flow,
}

impl Shared {
    pub(crate) fn wake(self: &Arc<Self>, w: Option<Waiter>) {
        if let Some(w) = w {
            w.hub.complete(w.id, Outcome::Wake { shared: self.clone(), all: w.all });
        }
    }

    pub(crate) fn push(self: &Arc<Self>, b: Bytes) {
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

    pub(crate) fn finish(self: &Arc<Self>) {
        let w = {
            let mut st = self.buf.lock().unwrap();
            st.done = true;
            st.waiter.take()
        };
        self.wake(w);
    }

    pub(crate) fn close(self: &Arc<Self>) {
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

    pub(crate) fn close_stalled(self: &Arc<Self>) {
        self.buf.lock().unwrap().stalled = true;
        self.close();
    }

    pub(crate) fn is_done(&self) -> bool {
        self.buf.lock().unwrap().done
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn has_data(&self) -> bool {
        !self.buf.lock().unwrap().chunks.is_empty()
    }

    /// What ``__anext__`` (or, with `all`, ``read_all``) can return without waiting.
    pub(crate) fn poll(&self, st: &mut BufState, all: bool) -> Next {
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

    pub(crate) fn try_next(&self, all: bool) -> Next {
        self.poll(&mut self.buf.lock().unwrap(), all)
    }

    /// Register `w` unless something can be returned at once.
    pub(crate) fn arm(&self, w: Waiter) -> Next {
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
    pub(crate) fn backlog(&self) -> (bool, Option<Instant>) {
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
    pub(crate) fn stalled(&self) -> bool {
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

pub(crate) fn next_value<'py>(py: Python<'py>, n: Next, all: bool) -> WakeValue<'py> {
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
pub struct StreamHandle(pub(crate) Arc<Shared>);

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

