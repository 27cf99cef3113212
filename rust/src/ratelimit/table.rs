//! The limiter's table of buckets (plain Rust, no Python): a slab of buckets and an id ->
//! slot map, and every operation of `tollway.policy.ratelimit`'s limiter on it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::bucket::{Bucket, Entry, Held, Helds, Kind, Limits, Refused, Win, BIG, NO_ENTRY, WINDOW_MS};

const SWEEP_EVERY: u64 = 32;
const SWEEP_BUCKETS: usize = 128;

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
