//! Per-key spend counters with lock-free reservations.
//!
//! Each key has one atomic `committed = spent + reserved` compared against `cap`,
//! so a reservation is a single compare-and-swap and concurrent requests can
//! never together hold more than the cap.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use pyo3::prelude::*;

const NO_CAP: i64 = i64::MAX;

#[derive(Debug)]
pub struct KeyCounters {
    /// spent + reserved
    committed: AtomicI64,
    spent: AtomicI64,
    /// NO_CAP when the key has no cap
    cap: AtomicI64,
}

fn cap_of(c: Option<i64>) -> i64 {
    c.map(|c| c.max(0)).unwrap_or(NO_CAP)
}

impl KeyCounters {
    pub fn new(spent: i64, cap: Option<i64>) -> Self {
        KeyCounters { committed: AtomicI64::new(spent), spent: AtomicI64::new(spent), cap: AtomicI64::new(cap_of(cap)) }
    }

    /// Hold min(want, available), or None when available < min.
    pub fn try_reserve(&self, min: i64, want: i64) -> Option<i64> {
        let min = min.max(0);
        let want = want.max(min);
        let mut cur = self.committed.load(Ordering::Acquire);
        loop {
            let cap = self.cap.load(Ordering::Acquire);
            let available = if cap == NO_CAP { i64::MAX } else { cap.saturating_sub(cur) };
            if available < min {
                return None;
            }
            let hold = want.min(available);
            match self.committed.compare_exchange_weak(cur, cur.saturating_add(hold), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(hold),
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn settle(&self, hold: i64, actual: i64) {
        let actual = actual.max(0);
        self.committed.fetch_add(actual - hold, Ordering::AcqRel);
        self.spent.fetch_add(actual, Ordering::AcqRel);
    }

    pub fn release(&self, hold: i64) {
        self.committed.fetch_sub(hold, Ordering::AcqRel);
    }

    /// Reset spent (keeping the holds in flight) and the cap.
    pub fn load(&self, spent: i64, cap: Option<i64>) {
        let old = self.spent.swap(spent, Ordering::AcqRel);
        self.committed.fetch_add(spent - old, Ordering::AcqRel);
        self.cap.store(cap_of(cap), Ordering::Release);
    }

    pub fn set_cap(&self, cap: Option<i64>) {
        self.cap.store(cap_of(cap), Ordering::Release);
    }

    pub fn snapshot(&self) -> (i64, i64, Option<i64>) {
        let spent = self.spent.load(Ordering::Acquire);
        let committed = self.committed.load(Ordering::Acquire);
        let cap = self.cap.load(Ordering::Acquire);
        (spent, (committed - spent).max(0), if cap == NO_CAP { None } else { Some(cap) })
    }
}

/// Money reserved on one key for one in-flight request.
///
/// Settled or released exactly once: later calls are no-ops that return False.
/// A Hold dropped without either is released.
// weakref: the crash journal watches holds without keeping them alive (a dropped Hold releases).
#[pyclass(module = "tollway._core", frozen, weakref)]
pub struct Hold {
    #[pyo3(get)]
    key_id: String,
    #[pyo3(get)]
    micros: i64,
    counters: Arc<KeyCounters>,
    done: AtomicBool,
}

impl Hold {
    /// Settle from Rust (no GIL needed). Returns false when already done.
    pub fn settle_now(&self, actual_micros: i64) -> bool {
        if self.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.counters.settle(self.micros, actual_micros);
        true
    }

    pub fn release_now(&self) -> bool {
        if self.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.counters.release(self.micros);
        true
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release_now();
    }
}

#[pymethods]
impl Hold {
    #[getter]
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Record ``actual_micros`` as spent and give back the rest of the hold.
    fn settle(&self, actual_micros: i64) -> bool {
        self.settle_now(actual_micros)
    }

    /// Give the whole hold back (nothing was spent).
    fn release(&self) -> bool {
        self.release_now()
    }

    fn __repr__(&self) -> String {
        format!("Hold(key_id={:?}, micros={}, done={})", self.key_id, self.micros, if self.done() { "True" } else { "False" })
    }
}

/// Per-key spend counters (lock-free atomics on a sharded map).
#[pyclass(module = "tollway._core", frozen)]
#[derive(Default)]
pub struct Ledger {
    keys: DashMap<String, Arc<KeyCounters>>,
}

impl Ledger {
    pub fn counters(&self, key_id: &str) -> Arc<KeyCounters> {
        if let Some(c) = self.keys.get(key_id) {
            return c.value().clone();
        }
        self.keys
            .entry(key_id.to_owned())
            .or_insert_with(|| Arc::new(KeyCounters::new(0, None)))
            .value()
            .clone()
    }

    pub fn reserve_hold(&self, key_id: &str, min: i64, want: i64) -> Option<Hold> {
        let c = self.counters(key_id);
        let micros = c.try_reserve(min, want)?;
        Some(Hold { key_id: key_id.to_owned(), micros, counters: c, done: AtomicBool::new(false) })
    }
}

#[pymethods]
impl Ledger {
    #[new]
    fn py_new() -> Self {
        Ledger::default()
    }

    /// Create or reset a key's counters (at start, from the database). Keeps current holds.
    fn load(&self, key_id: &str, spent_micros: i64, cap_micros: Option<i64>) {
        if let Some(c) = self.keys.get(key_id) {
            c.load(spent_micros, cap_micros);
            return;
        }
        match self.keys.entry(key_id.to_owned()) {
            dashmap::Entry::Occupied(e) => e.get().load(spent_micros, cap_micros),
            dashmap::Entry::Vacant(v) => {
                v.insert(Arc::new(KeyCounters::new(spent_micros, cap_micros)));
            }
        }
    }

    fn set_cap(&self, key_id: &str, cap_micros: Option<i64>) {
        self.counters(key_id).set_cap(cap_micros);
    }

    /// Drop a key's counters (holds in flight settle into the forgotten counters).
    fn forget(&self, key_id: &str) {
        self.keys.remove(key_id);
    }

    /// Hold min(want, available) micros, or None when available < min_micros.
    ///
    /// available = cap - spent - reserved (unbounded without a cap). Unknown keys
    /// are created with spent 0 and no cap.
    fn reserve(&self, key_id: &str, min_micros: i64, want_micros: i64) -> Option<Hold> {
        self.reserve_hold(key_id, min_micros, want_micros)
    }

    /// (spent, reserved, cap) of a key; (0, 0, None) for an unknown key.
    fn snapshot(&self, key_id: &str) -> (i64, i64, Option<i64>) {
        match self.keys.get(key_id) {
            Some(c) => c.snapshot(),
            None => (0, 0, None),
        }
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic() {
        let l = Ledger::default();
        l.keys.insert("k".into(), Arc::new(KeyCounters::new(0, Some(100))));
        let h = l.reserve_hold("k", 10, 60).unwrap();
        assert_eq!(h.micros, 60);
        let h2 = l.reserve_hold("k", 10, 60).unwrap();
        assert_eq!(h2.micros, 40);
        assert!(l.reserve_hold("k", 1, 1).is_none());
        assert!(h.settle_now(20));
        assert!(!h.settle_now(20));
        assert_eq!(l.counters("k").snapshot(), (20, 40, Some(100)));
        drop(h2);
        assert_eq!(l.counters("k").snapshot(), (20, 0, Some(100)));
    }

    #[test]
    fn contention_never_exceeds_cap() {
        let l = Arc::new(Ledger::default());
        let cap = 100_000;
        l.keys.insert("k".into(), Arc::new(KeyCounters::new(0, Some(cap))));
        let max_seen = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let l = l.clone();
                let max_seen = max_seen.clone();
                std::thread::spawn(move || {
                    let mut spent = 0i64;
                    for i in 0..20_000 {
                        if let Some(h) = l.reserve_hold("k", 5, 37) {
                            let (s, r, _) = l.counters("k").snapshot();
                            max_seen.fetch_max(s + r, Ordering::Relaxed);
                            if (i + t) % 3 == 0 {
                                h.release_now();
                            } else {
                                let a = (i % 5) as i64;
                                spent += a;
                                h.settle_now(a);
                            }
                        }
                    }
                    spent
                })
            })
            .collect();
        let total: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let (s, r, _) = l.counters("k").snapshot();
        assert_eq!(s, total);
        assert_eq!(r, 0);
        assert!(s <= cap);
        assert!(max_seen.load(Ordering::Relaxed) <= cap);
    }
}
