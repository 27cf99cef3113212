//! Spend counters keyed by *budget* (a key's cap today; an account's wallet and a
//! key's period windows next), and holds that may span several budgets at once.
//!
//! Each budget's `spent`, `reserved` and `limit` sit behind one short mutex. A hold
//! on several budgets locks them in id order, checks that every one can cover it
//! and reserves on all of them, or on none: concurrent requests can never together
//! hold more than any budget's limit, and a refusal is never caused by another
//! request's half-made hold. One budget costs one uncontended lock (tens of ns).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use pyo3::prelude::*;

#[derive(Debug, Default, Clone, Copy)]
struct State {
    spent: i64,
    reserved: i64,
    /// None: no limit
    limit: Option<i64>,
}

impl State {
    fn available(&self) -> i64 {
        match self.limit {
            Some(limit) => limit.max(0).saturating_sub(self.spent.saturating_add(self.reserved)),
            None => i64::MAX,
        }
    }
}

#[derive(Debug, Default)]
pub struct Budget {
    state: Mutex<State>,
}

impl Budget {
    fn new(spent: i64, limit: Option<i64>) -> Self {
        Budget { state: Mutex::new(State { spent, reserved: 0, limit }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain integers behind: still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> (i64, i64, Option<i64>) {
        let s = *self.lock();
        (s.spent, s.reserved, s.limit)
    }
}

/// Money reserved on one or more budgets for one in-flight request: the same
/// ``micros`` on each. Settled or released exactly once: later calls are no-ops
/// that return False. A Hold dropped without either is released.
// weakref: the crash journal watches holds without keeping them alive (a dropped Hold releases).
#[pyclass(module = "tollway._core", frozen, weakref)]
pub struct Hold {
    #[pyo3(get)]
    micros: i64,
    ids: Vec<String>,
    budgets: Vec<Arc<Budget>>,
    done: AtomicBool,
}

impl Hold {
    fn finish(&self, spent: Option<i64>) -> bool {
        if self.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        for b in &self.budgets {
            let mut s = b.lock();
            s.reserved -= self.micros;
            if let Some(actual) = spent {
                s.spent = s.spent.saturating_add(actual.max(0));
            }
        }
        true
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.finish(None);
    }
}

#[pymethods]
impl Hold {
    #[getter]
    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The budgets held on (their ids), in the order they were asked for.
    #[getter]
    fn budgets(&self) -> Vec<String> {
        self.ids.clone()
    }

    /// The first budget (a key's hold: the key's id).
    #[getter]
    fn key_id(&self) -> String {
        self.ids.first().cloned().unwrap_or_default()
    }

    /// Record ``actual_micros`` as spent on every budget and give back the rest of the hold.
    fn settle(&self, actual_micros: i64) -> bool {
        self.finish(Some(actual_micros))
    }

    /// Give the whole hold back (nothing was spent).
    fn release(&self) -> bool {
        self.finish(None)
    }

    fn __repr__(&self) -> String {
        format!("Hold(budgets={:?}, micros={}, done={})", self.ids, self.micros, if self.done() { "True" } else { "False" })
    }
}

/// Spend counters by budget id (a sharded map of short mutexes; safe from any thread).
#[pyclass(module = "tollway._core", frozen)]
#[derive(Default)]
pub struct Ledger {
    budgets: DashMap<String, Arc<Budget>>,
}

impl Ledger {
    fn budget(&self, id: &str) -> Arc<Budget> {
        if let Some(b) = self.budgets.get(id) {
            return b.value().clone();
        }
        self.budgets.entry(id.to_owned()).or_insert_with(|| Arc::new(Budget::new(0, None))).value().clone()
    }

    /// Hold min(want, what every budget can cover) on all of ``ids``, or name the first
    /// budget (in the order given) that cannot cover ``min``.
    pub fn reserve_on(&self, ids: &[String], min: i64, want: i64) -> Result<Hold, String> {
        let min = min.max(0);
        let want = want.max(min);
        if let [id] = ids {
            // One budget (every call today): one lock, no ordering.
            let budget = self.budget(id);
            let micros = {
                let mut g = budget.lock();
                let available = g.available();
                if available < min {
                    return Err(id.clone());
                }
                let micros = want.min(available);
                g.reserved = g.reserved.saturating_add(micros);
                micros
            };
            return Ok(Hold { micros, ids: vec![id.clone()], budgets: vec![budget], done: AtomicBool::new(false) });
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
        order.dedup_by(|a, b| ids[*a] == ids[*b]);
        let budgets: Vec<Arc<Budget>> = order.iter().map(|&i| self.budget(&ids[i])).collect();
        let mut guards: Vec<MutexGuard<'_, State>> = budgets.iter().map(|b| b.lock()).collect();
        let mut micros = want;
        for id in ids {
            // `order` is sorted by id: the lock of `id` is at its place in it.
            let at = order.binary_search_by(|&o| ids[o].as_str().cmp(id)).unwrap_or(0);
            let available = guards[at].available();
            if available < min {
                return Err(id.clone());
            }
            micros = micros.min(available);
        }
        for g in guards.iter_mut() {
            g.reserved = g.reserved.saturating_add(micros);
        }
        drop(guards);
        let mut asked: Vec<String> = Vec::with_capacity(order.len());
        for id in ids {
            if !asked.contains(id) {
                asked.push(id.clone());
            }
        }
        Ok(Hold { micros, ids: asked, budgets, done: AtomicBool::new(false) })
    }

    pub fn reserve_hold(&self, id: &str, min: i64, want: i64) -> Option<Hold> {
        self.reserve_on(std::slice::from_ref(&id.to_owned()), min, want).ok()
    }
}

#[pymethods]
impl Ledger {
    #[new]
    fn py_new() -> Self {
        Ledger::default()
    }

    /// Create or reset a budget (at start, from the database): its spend and limit.
    /// Keeps the holds in flight.
    fn load(&self, budget_id: &str, spent_micros: i64, limit_micros: Option<i64>) {
        let b = self.budget(budget_id);
        let mut s = b.lock();
        s.spent = spent_micros;
        s.limit = limit_micros;
    }

    /// Change a budget's limit (None: no limit).
    fn set_cap(&self, budget_id: &str, limit_micros: Option<i64>) {
        self.budget(budget_id).lock().limit = limit_micros;
    }

    /// Drop a budget's counters (holds in flight settle into the forgotten counters).
    fn forget(&self, budget_id: &str) {
        self.budgets.remove(budget_id);
    }

    /// Hold min(want, available) micros on one budget, or None when available < min_micros.
    ///
    /// available = limit - spent - reserved (unbounded without a limit). Unknown
    /// budgets are created with spent 0 and no limit.
    fn reserve(&self, budget_id: &str, min_micros: i64, want_micros: i64) -> Option<Hold> {
        self.reserve_hold(budget_id, min_micros, want_micros)
    }

    /// Hold the same amount on every budget of ``budget_ids`` at once, all or none:
    /// min(want, the least any of them has available). When one cannot cover
    /// ``min_micros``, nothing is held and its id is returned instead.
    fn reserve_all(&self, py: Python<'_>, budget_ids: Vec<String>, min_micros: i64, want_micros: i64) -> PyResult<Py<PyAny>> {
        if budget_ids.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err("a hold needs at least one budget"));
        }
        Ok(match self.reserve_on(&budget_ids, min_micros, want_micros) {
            Ok(hold) => Py::new(py, hold)?.into_any(),
            Err(id) => id.into_pyobject(py)?.into_any().unbind(),
        })
    }

    /// (spent, reserved, limit) of a budget; (0, 0, None) for an unknown one.
    fn snapshot(&self, budget_id: &str) -> (i64, i64, Option<i64>) {
        match self.budgets.get(budget_id) {
            Some(b) => b.snapshot(),
            None => (0, 0, None),
        }
    }

    fn __len__(&self) -> usize {
        self.budgets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn basic() {
        let l = Ledger::default();
        l.budgets.insert("k".into(), Arc::new(Budget::new(0, Some(100))));
        let h = l.reserve_hold("k", 10, 60).unwrap();
        assert_eq!(h.micros, 60);
        let h2 = l.reserve_hold("k", 10, 60).unwrap();
        assert_eq!(h2.micros, 40);
        assert!(l.reserve_hold("k", 1, 1).is_none());
        assert!(h.finish(Some(20)));
        assert!(!h.finish(Some(20)));
        assert_eq!(l.budget("k").snapshot(), (20, 40, Some(100)));
        drop(h2);
        assert_eq!(l.budget("k").snapshot(), (20, 0, Some(100)));
    }

    #[test]
    fn several_budgets_all_or_none() {
        let l = Ledger::default();
        l.budgets.insert("a".into(), Arc::new(Budget::new(0, Some(100))));
        l.budgets.insert("b".into(), Arc::new(Budget::new(0, Some(30))));
        let h = l.reserve_on(&ids(&["a", "b"]), 10, 50).unwrap();
        assert_eq!(h.micros, 30);
        assert_eq!(l.reserve_on(&ids(&["a", "b"]), 1, 5).err(), Some("b".to_string()));
        assert_eq!(l.budget("a").snapshot(), (0, 30, Some(100)));
        assert!(h.finish(Some(7)));
        assert_eq!(l.budget("a").snapshot(), (7, 0, Some(100)));
        assert_eq!(l.budget("b").snapshot(), (7, 0, Some(30)));
    }

    #[test]
    fn contention_never_exceeds_either_limit() {
        let l = Arc::new(Ledger::default());
        let (ca, cb) = (100_000, 60_000);
        l.budgets.insert("a".into(), Arc::new(Budget::new(0, Some(ca))));
        l.budgets.insert("b".into(), Arc::new(Budget::new(0, Some(cb))));
        let max_seen = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let l = l.clone();
                let max_seen = max_seen.clone();
                std::thread::spawn(move || {
                    let mut spent = 0i64;
                    let both = ids(&["a", "b"]);
                    let only_a = ids(&["a"]);
                    for i in 0..20_000 {
                        let on = if (i + t) % 2 == 0 { &both } else { &only_a };
                        if let Ok(h) = l.reserve_on(on, 5, 37) {
                            let (s, r, _) = l.budget("b").snapshot();
                            max_seen.fetch_max(s + r, Ordering::Relaxed);
                            if (i + t) % 3 == 0 {
                                h.finish(None);
                            } else {
                                let a = (i % 5) as i64;
                                if on.len() == 2 {
                                    spent += a;
                                }
                                h.finish(Some(a));
                            }
                        }
                    }
                    spent
                })
            })
            .collect();
        let total_b: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let (sa, ra, _) = l.budget("a").snapshot();
        let (sb, rb, _) = l.budget("b").snapshot();
        assert_eq!((ra, rb), (0, 0));
        assert_eq!(sb, total_b);
        assert!(sa <= ca && sb <= cb);
        assert!(max_seen.load(Ordering::Relaxed) <= cb);
    }
}
