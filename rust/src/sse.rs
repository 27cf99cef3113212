//! A plain incremental SSE decoder: bytes in, `(event, data)` pairs out.
//!
//! The [`scanner`](crate::scanner) observes a provider's stream for billing and
//! forwards it untouched; this decoder is for streams the gateway must rewrite
//! (a stream translated between the OpenAI and Anthropic formats). It follows
//! the SSE rules: lines end in CRLF, LF or CR (split anywhere across chunks, also
//! between the CR and the LF), `:` starts a comment, several `data:` lines join
//! with `\n`, one space after the colon is dropped, a blank line dispatches the
//! event, and an event without data is not dispatched.

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

#[derive(Default)]
pub struct Decoder {
    line: Vec<u8>,
    pending_cr: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

pub type Event = (Option<String>, String);

impl Decoder {
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) {
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while let Some(i) = memchr2(b'\n', b'\r', chunk) {
            let line_end = i;
            let mut next = i + 1;
            if chunk[i] == b'\r' {
                if i + 1 == chunk.len() {
                    self.pending_cr = true;
                } else if chunk[i + 1] == b'\n' {
                    next += 1;
                }
            }
            if self.line.is_empty() {
                self.handle_line(&chunk[..line_end], out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[..line_end]);
                self.handle_line(&line, out);
                line.clear();
                self.line = line;
            }
            chunk = &chunk[next..];
        }
        self.line.extend_from_slice(chunk);
    }

    /// End of input: an unterminated last line counts, and a pending event is dispatched.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.handle_line(&line, out);
        }
        self.dispatch(out);
        self.pending_cr = false;
    }

    fn handle_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
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
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let event = self.event.take();
        if self.has_data {
            out.push((event, String::from_utf8_lossy(&self.data).into_owned()));
        }
        self.data.clear();
        self.has_data = false;
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
