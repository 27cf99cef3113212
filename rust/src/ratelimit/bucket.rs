//! One bucket's sliding log, and the small types the limiter hands around.

use std::collections::VecDeque;

pub const WINDOW_MS: i64 = 60_000;
pub const PARALLEL_RETRY_MS: i64 = 1_000;
/// Integers from Python are clamped to [-BIG, BIG]: far beyond any limit the API
/// accepts (tpm <= 10**12), and sums of such values cannot overflow (they are i128).
pub const BIG: i64 = 1 << 62;
pub(super) const NO_ENTRY: u64 = u64::MAX;

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
    pub(super) slot: u32,
    pub(super) generation: u64,
    pub(super) seq: u64,
}

/// A permit's slots: up to two inline (a key and a model on it: no allocation), more on the heap.
#[derive(Debug, Default)]
pub struct Helds {
    n: usize,
    inline: [Option<Held>; 2],
    more: Vec<Held>,
}

impl Helds {
    pub(super) fn with_capacity(n: usize) -> Self {
        Helds { n: 0, inline: [None, None], more: if n > 2 { Vec::with_capacity(n - 2) } else { Vec::new() } }
    }

    pub(super) fn push(&mut self, h: Held) {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = &Held> {
        self.inline.iter().flatten().chain(self.more.iter())
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) ts: i64,
    pub(super) tokens: i64,
    pub(super) live: bool,
}

#[derive(Debug, Default)]
pub struct Bucket {
    pub(super) log: VecDeque<Entry>, // ts non-decreasing
    pub(super) head: u64,            // the sequence number of log[0]
    pub(super) count: i64,           // live entries
    pub(super) tokens: i128,         // their tokens
    pub(super) in_flight: i64,
}

impl Bucket {
    pub(super) fn prune(&mut self, cutoff: i64) {
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

    pub(super) fn entry(&mut self, seq: u64) -> Option<&mut Entry> {
        if seq == NO_ENTRY || seq < self.head {
            return None; // pruned: out of the log, a late settle or release leaves the sums alone
        }
        self.log.get_mut((seq - self.head) as usize)
    }

    pub(super) fn reset_ms(&self, now: i64, tokens: bool) -> i64 {
        self.log
            .iter()
            .rev()
            .find(|e| e.live && (e.tokens > 0 || !tokens))
            .map_or(0, |e| e.ts + WINDOW_MS - now)
    }

    pub(super) fn windows(&self, at: usize, limits: &Limits, now: i64) -> (Option<Win>, Option<Win>) {
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

    pub(super) fn refuses(&self, limits: &Limits, tokens: i64) -> bool {
        limits.rpm.is_some_and(|rpm| self.count >= rpm)
            || limits.tpm.is_some_and(|tpm| self.tokens + tokens.min(tpm) as i128 > tpm as i128)
            || limits.max_parallel.is_some_and(|par| self.in_flight >= par)
    }

    /// None if a request of `tokens` fits now, else (ms until it fits, the limit, its
    /// value, remaining) for the limit here that frees last. The log is pruned to `now`.
    pub(super) fn retry_ms(&self, limits: &Limits, tokens: i64, now: i64) -> Option<(i64, Kind, i64, i64)> {
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
