//! The tokio runtime the client runs on, and how a call gets onto it from the event loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::runtime;

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
pub(crate) type CallTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

pub(crate) enum SlotState {
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
pub(crate) struct Submitter {
    queue: Mutex<Vec<(Arc<CallSlot>, CallTask)>>,
    wake_pending: AtomicBool,
    notify: Notify,
}

static SUBMITTER: Submitter =
    Submitter { queue: Mutex::new(Vec::new()), wake_pending: AtomicBool::new(false), notify: Notify::const_new() };
static SUBMITTER_STARTED: std::sync::Once = std::sync::Once::new();

pub(crate) async fn submission_task() {
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
pub(crate) fn submit(task: CallTask) -> Arc<CallSlot> {
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

