//! Exact sliding-window rate limits per bucket: the logic of
//! `tollway.policy.ratelimit` (its docstring is the specification; the pure-Python
//! `tollway.policy.ratelimit_ref` is the reference both are tested against).
//!
//! [`Core`] is plain Rust (no Python): a slab of buckets, each a log of
//! `(ts, tokens, live)` entries oldest first with its live count and token sum, and
//! an id -> slot map. A [`Held`] names a bucket by (slot, generation) and its entry by
//! a per-bucket sequence number, so a permit outliving its bucket (forgotten or swept)
//! touches nothing, and an entry pruned from the log is recognised as gone.
//!
//! The Python classes parse their arguments first, then lock, decide, unlock and only
//! then make Python objects: no Python code ever runs under the lock, so a permit
//! dropped anywhere (its `Drop` takes the lock) cannot deadlock. The GIL is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

pub const WINDOW_MS: i64 = 60_000;
pub const PARALLEL_RETRY_MS: i64 = 1_000;
const SWEEP_EVERY: u64 = 32;
const SWEEP_BUCKETS: usize = 128;
/// Integers from Python are clamped to [-BIG, BIG]: far beyond any limit the API
/// accepts (tpm <= 10**12), and sums of such values cannot overflow (they are i128).
const BIG: i64 = 1 << 62;
const NO_ENTRY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_parallel: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
    Parallel,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Parallel => "parallel",
        }
    }
}

/// One limit of one bucket now; `at` is the bucket's index in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Win {
    pub at: usize,
    pub limit: i64,
    pub remaining: i64,
    pub reset_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub at: usize,
    pub kind: Kind,
    pub value: i64,
    pub remaining: i64,
    pub retry_after_ms: i64,
    pub requests: Option<Win>,
    pub tokens: Option<Win>,
}

/// A slot taken by a permit: the bucket (slot, generation) and its log entry (NO_ENTRY
/// when the bucket has neither rpm nor tpm).
#[derive(Clone, Copy, Debug)]
pub struct Held {
    slot: u32,
    generation: u64,
    seq: u64,
}

/// A permit's slots: up to two inline (a key and a model on it: no allocation), more on the heap.
#[derive(Debug, Default)]
pub struct Helds {
    n: usize,
    inline: [Option<Held>; 2],
    more: Vec<Held>,
}

impl Helds {
    fn with_capacity(n: usize) -> Self {
        Helds { n: 0, inline: [None, None], more: if n > 2 { Vec::with_capacity(n - 2) } else { Vec::new() } }
    }

    fn push(&mut self, h: Held) {
        match self.inline.get_mut(self.n) {
            Some(slot) => *slot = Some(h),
            None => self.more.push(h),
        }
        self.n += 1;
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Held> {
        self.inline.iter().flatten().chain(self.more.iter())
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    ts: i64,
    tokens: i64,
    live: bool,
}

#[derive(Debug, Default)]
pub struct Bucket {
    log: VecDeque<Entry>, // ts non-decreasing
    head: u64,            // the sequence number of log[0]
    count: i64,           // live entries
    tokens: i128,         // their tokens
    in_flight: i64,
}

impl Bucket {
    fn prune(&mut self, cutoff: i64) {
        while let Some(e) = self.log.front() {
            if e.ts > cutoff {
                break;
            }
            if e.live {
                self.count -= 1;
                self.tokens -= e.tokens as i128;
            }
            self.log.pop_front();
            self.head += 1;
        }
    }

    fn entry(&mut self, seq: u64) -> Option<&mut Entry> {
        if seq == NO_ENTRY || seq < self.head {
            return None; // pruned: out of the log, a late settle or release leaves the sums alone
        }
        self.log.get_mut((seq - self.head) as usize)
    }

    fn reset_ms(&self, now: i64, tokens: bool) -> i64 {
        self.log
            .iter()
            .rev()
            .find(|e| e.live && (e.tokens > 0 || !tokens))
            .map_or(0, |e| e.ts + WINDOW_MS - now)
    }

    fn windows(&self, at: usize, limits: &Limits, now: i64) -> (Option<Win>, Option<Win>) {
        let req = limits.rpm.map(|rpm| Win { at, limit: rpm, remaining: (rpm - self.count).max(0), reset_ms: self.reset_ms(now, false) });
        let tok = limits.tpm.map(|tpm| Win {
            at,
            limit: tpm,
            remaining: (tpm as i128 - self.tokens).max(0) as i64,
            reset_ms: self.reset_ms(now, true),
        });
        (req, tok)
    }

    fn remaining_tokens(&self, tpm: i64) -> i64 {
        (tpm as i128 - self.tokens).max(0) as i64
    }

    fn refuses(&self, limits: &Limits, tokens: i64) -> bool {
        limits.rpm.is_some_and(|rpm| self.count >= rpm)
            || limits.tpm.is_some_and(|tpm| self.tokens + tokens.min(tpm) as i128 > tpm as i128)
            || limits.max_parallel.is_some_and(|par| self.in_flight >= par)
    }

    /// None if a request of `tokens` fits now, else (ms until it fits, the limit, its
    /// value, remaining) for the limit here that frees last. The log is pruned to `now`.
    fn retry_ms(&self, limits: &Limits, tokens: i64, now: i64) -> Option<(i64, Kind, i64, i64)> {
        let mut worst: Option<(i64, Kind, i64, i64)> = None;
        if let Some(rpm) = limits.rpm {
            if self.count >= rpm {
                let mut need = self.count - rpm + 1; // live entries that must leave the window
                for e in self.log.iter().filter(|e| e.live) {
                    need -= 1;
                    if need == 0 {
                        worst = Some((e.ts + WINDOW_MS - now, Kind::Requests, rpm, 0));
                        break;
                    }
                }
            }
        }
        if let Some(tpm) = limits.tpm {
            let mut need = self.tokens + tokens.min(tpm) as i128 - tpm as i128; // tokens that must leave it
            if need > 0 {
                for e in self.log.iter().filter(|e| e.live) {
                    need -= e.tokens as i128;
                    if need <= 0 {
                        let wait = e.ts + WINDOW_MS - now;
                        if worst.is_none_or(|w| wait > w.0) {
                            worst = Some((wait, Kind::Tokens, tpm, self.remaining_tokens(tpm)));
                        }
                        break;
                    }
                }
            }
        }
        if let Some(par) = limits.max_parallel {
            if self.in_flight >= par && worst.is_none_or(|w| w.0 < PARALLEL_RETRY_MS) {
                worst = Some((PARALLEL_RETRY_MS, Kind::Parallel, par, 0));
            }
        }
        worst
    }
}

#[derive(Debug)]
struct Slot {
    generation: u64,
    name: Option<Arc<str>>, // None: free
    created: u64,           // creation order (the Python dict's insertion order)
    bucket: Bucket,
}

/// A request's bucket: its id and its limits.
pub trait Req {
    fn id(&self) -> &str;
    fn limits(&self) -> &Limits;
}

impl Req for (&str, Limits) {
    fn id(&self) -> &str {
        self.0
    }
    fn limits(&self) -> &Limits {
        &self.1
    }
}

/// The state of a bucket (`RateLimiter.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub requests: Option<Win>,
    pub tokens: Option<Win>,
    pub requests_in_window: i64,
    pub tokens_in_window: i128,
    pub in_flight: i64,
}

#[derive(Debug)]
pub struct Core {
    map: HashMap<Arc<str>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    now: i64, // the latest now_ms seen
    ops: u64,
    created: u64,
    sweep_keys: Vec<Arc<str>>,
    sweep_at: usize,
    sweep_started: i64,
    found: Vec<u32>, // scratch: the slots of the request being decided
}

impl Default for Core {
    fn default() -> Self {
        Core {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            now: -BIG,
            ops: 0,
            created: 0,
            sweep_keys: Vec::new(),
            sweep_at: 0,
            sweep_started: -BIG,
            found: Vec::new(),
        }
    }
}

static EMPTY: Bucket = Bucket { log: VecDeque::new(), head: 0, count: 0, tokens: 0, in_flight: 0 };

impl Core {
    fn advance(&mut self, now_ms: i64) -> i64 {
        let now_ms = now_ms.min(BIG - 1); // (so that now - sweep_started cannot overflow)
        if now_ms > self.now {
            self.now = now_ms;
        }
        self.now
    }

    fn slot_of(&mut self, id: &str) -> u32 {
        if let Some(&slot) = self.map.get(id) {
            return slot;
        }
        let name: Arc<str> = Arc::from(id);
        let created = self.created;
        self.created += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.name = Some(name.clone());
                s.created = created;
                slot
            }
            None => {
                self.slots.push(Slot { generation: 0, name: Some(name.clone()), created, bucket: Bucket::default() });
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(name, slot);
        slot
    }

    fn remove(&mut self, id: &str) {
        if let Some(slot) = self.map.remove(id) {
            let s = &mut self.slots[slot as usize];
            s.generation += 1;
            s.name = None;
            let b = &mut s.bucket;
            b.log.clear();
            b.head = 0;
            b.count = 0;
            b.tokens = 0;
            b.in_flight = 0;
            self.free.push(slot);
        }
    }

    fn held_bucket(&mut self, h: &Held) -> Option<&mut Bucket> {
        let s = &mut self.slots[h.slot as usize];
        (s.generation == h.generation && s.name.is_some()).then_some(&mut s.bucket)
    }

    /// Admit a request of `tokens` in every bucket of `req`, or in none.
    pub fn acquire<R: Req>(&mut self, req: &[R], tokens: i64, now_ms: i64) -> Result<Helds, Refused> {
        let now = self.advance(now_ms);
        let cutoff = now - WINDOW_MS;
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        let mut refused = false;
        for r in req {
            let slot = self.slot_of(r.id());
            let b = &mut self.slots[slot as usize].bucket;
            b.prune(cutoff);
            refused |= b.refuses(r.limits(), tokens);
            found.push(slot);
        }
        self.ops += 1;
        let out = if refused {
            Err(self.refusal(req, &found, tokens, now))
        } else {
            let mut held = Helds::with_capacity(req.len());
            for (r, &slot) in req.iter().zip(&found) {
                let s = &mut self.slots[slot as usize];
                let b = &mut s.bucket;
                b.in_flight += 1;
                let limits = r.limits();
                let seq = if limits.rpm.is_none() && limits.tpm.is_none() {
                    NO_ENTRY
                } else {
                    let n = limits.tpm.map_or(tokens, |tpm| tokens.min(tpm));
                    b.log.push_back(Entry { ts: now, tokens: n, live: true });
                    b.count += 1;
                    b.tokens += n as i128;
                    b.head + b.log.len() as u64 - 1
                };
                held.push(Held { slot, generation: s.generation, seq });
            }
            Ok(held)
        };
        self.found = found;
        if self.ops.is_multiple_of(SWEEP_EVERY) {
            self.sweep(now); // after the slots are taken: it drops only buckets with none in flight
        }
        out
    }

    fn refusal<R: Req>(&self, req: &[R], found: &[u32], tokens: i64, now: i64) -> Refused {
        let mut worst: Option<(i64, Kind, i64, i64, usize)> = None;
        for (at, (r, &slot)) in req.iter().zip(found).enumerate() {
            if let Some((wait, kind, value, remaining)) = self.slots[slot as usize].bucket.retry_ms(r.limits(), tokens, now) {
                if worst.is_none_or(|w| wait > w.0) {
                    worst = Some((wait, kind, value, remaining, at));
                }
            }
        }
        let (retry_after_ms, kind, value, remaining, at) = worst.expect("a refused request has a refusing limit");
        let buckets: Vec<&Bucket> = found.iter().map(|&s| &self.slots[s as usize].bucket).collect();
        let (requests, tokens) = best_windows(req, &buckets, now);
        Refused { at, kind, value, remaining, retry_after_ms, requests, tokens }
    }

    fn peek(&mut self, id: &str, now: i64) -> &Bucket {
        match self.map.get(id) {
            Some(&slot) => {
                let b = &mut self.slots[slot as usize].bucket;
                b.prune(now - WINDOW_MS);
                b
            }
            None => &EMPTY, // not stored: reading a bucket does not create it
        }
    }

    /// The most restrictive requests and tokens windows over `req`'s buckets now.
    pub fn snapshot<R: Req>(&mut self, req: &[R], now_ms: i64) -> (Option<Win>, Option<Win>) {
        let now = self.advance(now_ms);
        let cutoff = now - WINDOW_MS;
        for r in req {
            if let Some(&slot) = self.map.get(r.id()) {
                self.slots[slot as usize].bucket.prune(cutoff);
            }
        }
        let buckets: Vec<&Bucket> =
            req.iter().map(|r| self.map.get(r.id()).map_or(&EMPTY, |&s| &self.slots[s as usize].bucket)).collect();
        best_windows(req, &buckets, now)
    }

    pub fn state(&mut self, id: &str, limits: &Limits, now_ms: i64) -> State {
        let now = self.advance(now_ms);
        let b = self.peek(id, now);
        let (requests, tokens) = b.windows(0, limits, now);
        State { requests, tokens, requests_in_window: b.count, tokens_in_window: b.tokens, in_flight: b.in_flight }
    }

    /// A permit's end: `settle` (Some(actual)) or `release` (None).
    pub fn settle(&mut self, held: &Helds, actual: i64, now_ms: i64) {
        let cutoff = self.advance(now_ms) - WINDOW_MS;
        for h in held.iter() {
            let Some(b) = self.held_bucket(h) else { continue };
            b.in_flight -= 1;
            if h.seq != NO_ENTRY {
                b.prune(cutoff);
                if let Some(e) = b.entry(h.seq).filter(|e| e.live) {
                    let before = std::mem::replace(&mut e.tokens, actual);
                    b.tokens += actual as i128 - before as i128;
                }
            }
        }
    }

    pub fn release(&mut self, held: &Helds) {
        for h in held.iter() {
            let Some(b) = self.held_bucket(h) else { continue };
            b.in_flight -= 1;
            if let Some(e) = b.entry(h.seq).filter(|e| e.live) {
                e.live = false;
                let n = e.tokens;
                b.count -= 1;
                b.tokens -= n as i128;
            }
        }
    }

    /// A permit dropped without settle or release: its parallel slots are freed.
    pub fn dropped(&mut self, held: &Helds) {
        for h in held.iter() {
            if let Some(b) = self.held_bucket(h) {
                b.in_flight -= 1;
            }
        }
    }

    pub fn forget(&mut self, id: &str) {
        self.remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bucket ids in creation order.
    pub fn bucket_ids(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<(u64, &Arc<str>)> = self.slots.iter().filter_map(|s| s.name.as_ref().map(|n| (s.created, n))).collect();
        ids.sort_unstable_by_key(|&(c, _)| c);
        ids.into_iter().map(|(_, n)| n.clone()).collect()
    }

    fn sweep(&mut self, now: i64) {
        let mut i = self.sweep_at;
        if i >= self.sweep_keys.len() {
            if now - self.sweep_started < WINDOW_MS {
                return; // at most one pass a window
            }
            self.sweep_keys = self.bucket_ids();
            i = 0;
            self.sweep_started = now;
        }
        let cutoff = now - WINDOW_MS;
        let end = (i + SWEEP_BUCKETS).min(self.sweep_keys.len());
        for k in i..end {
            let id = self.sweep_keys[k].clone();
            if let Some(&slot) = self.map.get(&*id) {
                let b = &self.slots[slot as usize].bucket;
                if b.in_flight == 0 && b.log.back().is_none_or(|e| e.ts <= cutoff) {
                    self.remove(&id);
                }
            }
        }
        self.sweep_at = i + SWEEP_BUCKETS;
    }
}

fn best_windows<R: Req>(req: &[R], buckets: &[&Bucket], now: i64) -> (Option<Win>, Option<Win>) {
    let mut best: [Option<Win>; 2] = [None, None];
    for (at, (r, b)) in req.iter().zip(buckets).enumerate() {
        let (rw, tw) = b.windows(at, r.limits(), now);
        for (cur, w) in best.iter_mut().zip([rw, tw]) {
            if let Some(w) = w {
                if cur.is_none_or(|c| (w.remaining, -w.reset_ms) < (c.remaining, -c.reset_ms)) {
                    *cur = Some(w);
                }
            }
        }
    }
    (best[0], best[1])
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "key_1";
    const M: &str = "key_1|m";

    fn lim(rpm: Option<i64>, tpm: Option<i64>, par: Option<i64>) -> Limits {
        Limits { rpm, tpm, max_parallel: par }
    }

    #[test]
    fn exact_window_and_retry() {
        let mut c = Core::default();
        let l = lim(Some(2), Some(1000), None);
        let a = c.acquire(&[(K, l)], 300, 0).unwrap();
        c.settle(&a, 250, 10);
        c.acquire(&[(K, l)], 300, 1500).unwrap();
        let r = c.acquire(&[(K, l)], 0, 30_000).unwrap_err();
        assert_eq!((r.kind, r.retry_after_ms, r.value, r.remaining), (Kind::Requests, WINDOW_MS - 30_000, 2, 0));
        assert!(c.acquire(&[(K, l)], 0, WINDOW_MS - 1).is_err());
        assert!(c.acquire(&[(K, l)], 0, WINDOW_MS).is_ok());
        let s = c.state(K, &l, WINDOW_MS);
        assert_eq!((s.requests_in_window, s.tokens_in_window, s.in_flight), (2, 300, 2));
    }

    #[test]
    fn all_or_none_and_the_limit_that_frees_last() {
        let mut c = Core::default();
        let (key, model) = (lim(Some(10), Some(10_000), Some(5)), lim(Some(1), None, None));
        let p = c.acquire(&[(K, key), (M, model)], 100, 0).unwrap();
        c.settle(&p, 100, 1);
        let r = c.acquire(&[(K, key), (M, model)], 100, 5).unwrap_err();
        assert_eq!((r.at, r.kind, r.retry_after_ms), (1, Kind::Requests, WINDOW_MS - 5));
        assert_eq!(c.state(K, &key, 5).requests_in_window, 1);
        assert_eq!(r.requests, Some(Win { at: 1, limit: 1, remaining: 0, reset_ms: WINDOW_MS - 5 }));
    }

    #[test]
    fn release_drop_and_a_forgotten_bucket() {
        let mut c = Core::default();
        let l = lim(None, Some(1000), Some(1));
        let p = c.acquire(&[(K, l)], 700, 0).unwrap();
        assert_eq!(c.acquire(&[(K, l)], 0, 0).unwrap_err().kind, Kind::Parallel);
        c.release(&p);
        assert_eq!(c.state(K, &l, 0).tokens_in_window, 0);
        let q = c.acquire(&[(K, l)], 50_000, 0).unwrap(); // larger than tpm: reserves tpm
        assert_eq!(c.state(K, &l, 0).tokens_in_window, 1000);
        c.dropped(&q);
        let s = c.state(K, &l, 0);
        assert_eq!((s.in_flight, s.tokens_in_window), (0, 1000));
        c.forget(K);
        let fresh = c.acquire(&[(K, l)], 1, 0).unwrap();
        c.release(&q); // on the forgotten bucket: nothing
        assert_eq!(c.state(K, &l, 0).in_flight, 1);
        c.settle(&fresh, 0, 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn settle_after_the_entry_left_the_window() {
        let mut c = Core::default();
        let l = lim(None, Some(1000), None);
        let p = c.acquire(&[(K, l)], 800, 0).unwrap();
        let later = c.acquire(&[(K, l)], 100, WINDOW_MS - 1).unwrap();
        c.settle(&p, 5000, WINDOW_MS + 10);
        assert_eq!(c.state(K, &l, WINDOW_MS + 10).tokens_in_window, 100);
        c.release(&later);
        assert_eq!(c.state(K, &l, WINDOW_MS + 10).tokens_in_window, 0);
    }

    #[test]
    fn idle_buckets_are_swept() {
        let mut c = Core::default();
        let l = lim(Some(5), None, Some(3));
        for i in 0..1000 {
            let id = format!("key_{i}");
            let p = c.acquire(&[(id.as_str(), l)], 10, 0).unwrap();
            c.settle(&p, 10, 0);
        }
        let busy = c.acquire(&[("busy", l)], 0, 0).unwrap();
        let hot = lim(Some(100), None, None);
        for i in 0..1000 {
            let p = c.acquire(&[("hot", hot)], 0, WINDOW_MS + i * 1000).unwrap();
            c.settle(&p, 0, WINDOW_MS + i * 1000);
        }
        let ids: Vec<String> = c.bucket_ids().iter().map(|s| s.to_string()).collect();
        assert_eq!(ids, vec!["busy".to_string(), "hot".to_string()]);
        c.settle(&busy, 0, 2 * WINDOW_MS);
    }
}
