//! The one SSE framer: bytes in, events out, split anywhere.
//!
//! [`Framer`] follows the SSE rules: lines end in CRLF, LF or CR (split anywhere
//! across chunks, also between the CR and the LF), `:` starts a comment, several
//! `data:` lines join with `\n`, one space after the colon is dropped, a blank line
//! dispatches the event, and an event without data is not dispatched. Each event
//! goes to a callback as `(event name, data)` (the name is empty without an
//! `event:` line). In rewrite mode the framer also keeps each event's raw bytes and
//! writes them out as the callback's [`Action`] says (kept, dropped, or with a range
//! of its data deleted), event-aligned; otherwise it only observes.
//!
//! The [`scanner`](crate::scanner) frames a provider's stream with it for billing;
//! [`Decoder`] (and the Python `SseDecoder`) frames streams the gateway rewrites (a
//! stream translated between the OpenAI and Anthropic formats).

use memchr::{memchr, memchr2};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// One SSE line split into its field name and value (one space after the colon dropped).
pub fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b':', line) {
        Some(c) => {
            let v = &line[c + 1..];
            (&line[..c], if v.first() == Some(&b' ') { &v[1..] } else { v })
        }
        None => (line, &line[line.len()..]),
    }
}

/// What a rewriting framer writes for one event.
pub enum Action {
    Keep,
    Drop,
    /// The event without this byte range of its (joined) data.
    Delete(usize, usize),
}

#[derive(Default)]
pub struct Framer {
    rewrite: bool,
    partial: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: Vec<u8>,
    ev_raw: Vec<u8>,
    spans: Vec<(usize, usize, usize)>, // (raw start, raw end, joined start) of each data value
}

impl Framer {
    pub fn new(rewrite: bool) -> Self {
        Framer { rewrite, ..Framer::default() }
    }

    pub fn rewrites(&self) -> bool {
        self.rewrite
    }

    /// Frame `chunk`, calling `on(event, data)` for every completed event. In rewrite
    /// mode the bytes to forward are appended to `out`; otherwise `out` is untouched.
    pub fn feed<F: FnMut(&[u8], &[u8]) -> Action>(&mut self, chunk: &[u8], out: &mut Vec<u8>, on: &mut F) {
        if chunk.is_empty() {
            return;
        }
        let mut rest = chunk;
        if !self.partial.is_empty() {
            let mut p = std::mem::take(&mut self.partial);
            if p.last() == Some(&b'\r') {
                // Deferred CR: the line is complete; swallow a following LF.
                let extra = usize::from(rest[0] == b'\n');
                let raw_start = self.ev_raw.len();
                if self.rewrite {
                    self.ev_raw.extend_from_slice(&p);
                    self.ev_raw.extend_from_slice(&rest[..extra]);
                }
                let l = p.len() - 1;
                self.handle_line(&p[..l], raw_start, out, on);
                rest = &rest[extra..];
            } else {
                match memchr2(b'\n', b'\r', rest) {
                    None => {
                        p.extend_from_slice(rest);
                        self.partial = p;
                        return;
                    }
                    Some(i) if rest[i] == b'\r' && i + 1 == rest.len() => {
                        p.extend_from_slice(rest);
                        self.partial = p;
                        return;
                    }
                    Some(i) => {
                        let end = i + 1 + usize::from(rest[i] == b'\r' && rest[i + 1] == b'\n');
                        let l = p.len() + i;
                        p.extend_from_slice(&rest[..end]);
                        let raw_start = self.ev_raw.len();
                        if self.rewrite {
                            self.ev_raw.extend_from_slice(&p);
                        }
                        self.handle_line(&p[..l], raw_start, out, on);
                        rest = &rest[end..];
                    }
                }
            }
            p.clear();
            self.partial = p;
        }
        loop {
            match memchr2(b'\n', b'\r', rest) {
                None => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
                Some(i) if rest[i] == b'\r' && i + 1 == rest.len() => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
                Some(i) => {
                    let end = i + 1 + usize::from(rest[i] == b'\r' && rest[i + 1] == b'\n');
                    let raw_start = self.ev_raw.len();
                    if self.rewrite {
                        self.ev_raw.extend_from_slice(&rest[..end]);
                    }
                    self.handle_line(&rest[..i], raw_start, out, on);
                    rest = &rest[end..];
                }
            }
        }
    }

    /// End of input: an unterminated last line counts and a pending event is
    /// dispatched; in rewrite mode whatever was held back is appended to `out` as is.
    pub fn finish<F: FnMut(&[u8], &[u8]) -> Action>(&mut self, out: &mut Vec<u8>, on: &mut F) {
        if !self.partial.is_empty() {
            let p = std::mem::take(&mut self.partial);
            let raw_start = self.ev_raw.len();
            if self.rewrite {
                self.ev_raw.extend_from_slice(&p);
            }
            let l = if p.last() == Some(&b'\r') { p.len() - 1 } else { p.len() };
            self.handle_line(&p[..l], raw_start, out, on);
        }
        if self.has_data {
            let _ = on(&self.event, &self.data);
        }
        if self.rewrite {
            out.extend_from_slice(&self.ev_raw);
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event.clear();
        self.ev_raw.clear();
        self.spans.clear();
    }

    fn handle_line<F: FnMut(&[u8], &[u8]) -> Action>(&mut self, line: &[u8], raw_start: usize, out: &mut Vec<u8>, on: &mut F) {
        if line.is_empty() {
            self.dispatch(out, on);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = split_field(line);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                let joined = self.data.len();
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.rewrite {
                    let voff = line.len() - value.len();
                    self.spans.push((raw_start + voff, raw_start + line.len(), joined));
                }
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {}
        }
    }

    fn dispatch<F: FnMut(&[u8], &[u8]) -> Action>(&mut self, out: &mut Vec<u8>, on: &mut F) {
        let action = if self.has_data { on(&self.event, &self.data) } else { Action::Keep };
        if self.rewrite {
            match action {
                Action::Keep => out.extend_from_slice(&self.ev_raw),
                Action::Drop => {}
                Action::Delete(a, b) => {
                    let mut pos = 0;
                    for &(rs, re, js) in &self.spans {
                        out.extend_from_slice(&self.ev_raw[pos..rs]);
                        let len = re - rs;
                        let da = a.clamp(js, js + len) - js;
                        let db = b.clamp(js, js + len) - js;
                        out.extend_from_slice(&self.ev_raw[rs..rs + da]);
                        out.extend_from_slice(&self.ev_raw[rs + db..re]);
                        pos = re;
                    }
                    out.extend_from_slice(&self.ev_raw[pos..]);
                }
            }
        }
        self.reset_event();
    }
}

/// Events as owned `(name or None, data)` pairs, for streams the gateway rewrites.
#[derive(Default)]
pub struct Decoder {
    framer: Framer,
}

pub type Event = (Option<String>, String);

fn collect(out: &mut Vec<Event>) -> impl FnMut(&[u8], &[u8]) -> Action + '_ {
    move |name, data| {
        let name = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        out.push((name, String::from_utf8_lossy(data).into_owned()));
        Action::Keep
    }
}

impl Decoder {
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        self.framer.feed(chunk, &mut Vec::new(), &mut collect(out));
    }

    /// End of input: an unterminated last line counts, and a pending event is dispatched.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.framer.finish(&mut Vec::new(), &mut collect(out));
    }
}

/// Incremental SSE decoder: ``feed(bytes)`` returns the events completed so far
/// as ``(event name or None, data)`` pairs.
#[pyclass(module = "tollway._core")]
#[derive(Default)]
pub struct SseDecoder {
    inner: Decoder,
}

#[pymethods]
impl SseDecoder {
    #[new]
    fn py_new() -> Self {
        SseDecoder::default()
    }

    fn feed(&mut self, chunk: &Bound<'_, PyBytes>) -> Vec<Event> {
        let mut out = Vec::new();
        self.inner.feed(chunk.as_bytes(), &mut out);
        out
    }

    fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.inner.finish(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], split: usize) -> Vec<Event> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for c in input.chunks(split.max(1)) {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn events_survive_any_split() {
        let input = "event: a\r\ndata: {\"x\":\"é\"}\r\n\r\n: comment\n\ndata: one\ndata:two\r\rdata: [DONE]\n\n".as_bytes();
        let want: Vec<Event> = vec![
            (Some("a".into()), "{\"x\":\"é\"}".into()),
            (None, "one\ntwo".into()),
            (None, "[DONE]".into()),
        ];
        for split in 1..input.len() + 1 {
            assert_eq!(decode(input, split), want, "split {split}");
        }
    }

    #[test]
    fn unterminated_event_is_dispatched_at_finish() {
        assert_eq!(decode(b"event: x\ndata: 1", 3), vec![(Some("x".into()), "1".into())]);
        assert_eq!(decode(b"event: x\n\n", 3), vec![]);
    }
}
