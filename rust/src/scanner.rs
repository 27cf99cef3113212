//! Incremental stream scanner: the one SSE [`Framer`] and one [`WireFormat`] per
//! provider format ([`ChatCompletions`], [`Messages`], [`Responses`]) that reads
//! each event into the [`Scan`] (text, tool calls, usage, the end).
//!
//! Lines may be split anywhere across chunks (mid line, mid UTF-8, between the
//! CR and LF of a CRLF). Without strip mode the scanner only observes bytes; the
//! caller forwards its input unchanged. With strip mode (OpenAI) the output is
//! event-aligned and omits the usage-only chunk and top-level `"usage":null`.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Serialize;

use crate::anthropic::Messages;
use crate::format::WireFormat;
use crate::openai::ChatCompletions;
use crate::pricing::Usage;
use crate::responses::Responses;
use crate::sse::{Action, Framer};
use crate::usage::Kind;

#[derive(Serialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Counts {
    pub(crate) input: i64,
    pub(crate) output: i64,
    pub(crate) cache_read: i64,
    pub(crate) cache_write: i64,
}

/// What a stream said so far: the accumulators every format fills.
pub struct Scan {
    kind: Kind,
    /// Strip mode (OpenAI): the framer rewrites, and the format says what to cut.
    pub(crate) strip: bool,
    // accumulated
    pub text: String,
    /// Bytes of output that is not assistant text (reasoning, tool arguments): used for estimates.
    pub other_bytes: usize,
    pub tools: Vec<ToolCall>,
    pub(crate) block_tools: Vec<(usize, usize)>, // (content block index, tool slot)
    pub finish_reason: Option<String>,
    pub model: Option<String>,
    pub(crate) counts: Counts,
    pub usage_seen: bool,
    /// The final output count was reported (OpenAI usage chunk, Anthropic message_delta usage).
    pub final_output: bool,
    pub delta_count: u64,
    pub completed: bool,
    pub error_json: Option<String>,
    /// Responses streams: the JSON of the terminal event's response object.
    pub final_response: Option<Vec<u8>>,
}

/// A provider's stream, framed by the one SSE [`Framer`] and read by its format.
pub struct Scanner {
    framer: Framer,
    scan: Scan,
}

impl std::ops::Deref for Scanner {
    type Target = Scan;
    fn deref(&self) -> &Scan {
        &self.scan
    }
}

impl std::ops::DerefMut for Scanner {
    fn deref_mut(&mut self) -> &mut Scan {
        &mut self.scan
    }
}

pub(crate) fn set_opt(slot: &mut Option<String>, v: Option<Cow<'_, str>>) {
    if let Some(v) = v {
        match slot {
            Some(s) if s.as_str() == v.as_ref() => {}
            _ => *slot = Some(v.into_owned()),
        }
    }
}

impl Scanner {
    pub fn new(kind: Kind, strip: bool) -> Self {
        let strip = strip && kind == Kind::OpenAI;
        Scanner { framer: Framer::new(strip), scan: Scan::new(kind, strip) }
    }

    pub fn strips(&self) -> bool {
        self.framer.rewrites()
    }

    /// Scan `chunk`. In strip mode, the bytes to forward are appended to `out`;
    /// otherwise `out` is untouched and the caller forwards `chunk` itself.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let scan = &mut self.scan;
        self.framer.feed(chunk, out, &mut |name, data| scan.on_event(name, data));
    }

    /// End of input: process a trailing line / event for accounting and, in strip
    /// mode, append whatever was held back (as is) to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let scan = &mut self.scan;
        self.framer.finish(out, &mut |name, data| scan.on_event(name, data));
    }
}

impl Scan {
    fn new(kind: Kind, strip: bool) -> Self {
        Scan {
            kind,
            strip,
            text: String::new(),
            other_bytes: 0,
            tools: Vec::new(),
            block_tools: Vec::new(),
            finish_reason: None,
            model: None,
            counts: Counts::default(),
            usage_seen: false,
            final_output: false,
            delta_count: 0,
            completed: false,
            error_json: None,
            final_response: None,
        }
    }

    fn on_event(&mut self, name: &[u8], data: &[u8]) -> Action {
        match self.kind {
            Kind::OpenAI => ChatCompletions::on_event(self, name, data),
            Kind::Anthropic => Messages::on_event(self, name, data),
            Kind::Responses => Responses::on_event(self, name, data),
        }
    }

    // ---------- what a WireFormat may update ----------

    /// A tool call starts at output position `block`.
    pub(crate) fn open_tool(&mut self, block: usize, id: String, name: String) {
        self.tools.push(ToolCall { id, name, arguments: String::new() });
        self.block_tools.push((block, self.tools.len() - 1));
    }

    /// The tool call slot of output position `block` (the latest one opened there).
    pub(crate) fn tool_at(&self, block: usize) -> Option<usize> {
        self.block_tools.iter().rev().find(|(b, _)| *b == block).map(|&(_, slot)| slot)
    }

    pub(crate) fn set_model(&mut self, model: Option<Cow<'_, str>>) {
        set_opt(&mut self.model, model);
    }

    /// The provider's final (input, output, cache_read, cache_write).
    pub(crate) fn set_counts(&mut self, (input, output, cache_read, cache_write): (i64, i64, i64, i64)) {
        self.counts = Counts { input, output, cache_read, cache_write };
        self.usage_seen = true;
    }

    /// Usage reported so far (not estimated), or None.
    pub fn usage(&self) -> Option<Usage> {
        if !self.usage_seen {
            return None;
        }
        Some(Usage {
            input_tokens: self.counts.input,
            output_tokens: self.counts.output,
            cache_read_tokens: self.counts.cache_read,
            cache_write_tokens: self.counts.cache_write,
            estimated: false,
            model: self.model.clone(),
            finish_reason: self.finish_reason.clone(),
        })
    }

    /// Estimated output tokens from what was streamed: max(deltas, ceil(bytes / 4)).
    pub fn estimated_output(&self) -> i64 {
        let bytes = self.text.len() + self.other_bytes;
        (self.delta_count as i64).max(bytes.div_ceil(4) as i64)
    }

    /// Final usage of a finished stream (estimating what was not reported).
    pub fn final_usage(&self, input_estimate: i64) -> Usage {
        match self.usage() {
            Some(mut u) => {
                if !self.final_output {
                    u.output_tokens = u.output_tokens.max(self.estimated_output());
                    u.estimated = true;
                }
                u
            }
            None => Usage {
                input_tokens: input_estimate.max(0),
                output_tokens: self.estimated_output(),
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                estimated: true,
                model: self.model.clone(),
                finish_reason: self.finish_reason.clone(),
            },
        }
    }

    pub fn tool_calls_json(&self) -> String {
        serde_json::to_string(&self.tools).unwrap_or_else(|_| "[]".to_string())
    }
}

/// Incremental SSE scanner for one provider's stream format.
///
/// Fed arbitrary byte chunks (split anywhere, mid UTF-8, CRLF or LF, comments,
/// multi-line ``data:``), it returns the bytes to forward to the client and
/// accumulates usage, finish reason, assembled text and tool calls.
#[pyclass(module = "tollway._core")]
pub struct StreamScanner {
    inner: Scanner,
    out: Vec<u8>,
}

#[pymethods]
impl StreamScanner {
    #[new]
    #[pyo3(signature = (kind, strip_usage_chunk=false))]
    fn py_new(kind: &str, strip_usage_chunk: bool) -> PyResult<Self> {
        Ok(StreamScanner { inner: Scanner::new(Kind::parse(kind)?, strip_usage_chunk), out: Vec::new() })
    }

    fn feed<'py>(&mut self, py: Python<'py>, chunk: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let owned;
        let (bytes, is_bytes): (&[u8], bool) = match chunk.cast::<PyBytes>() {
            Ok(b) => (b.as_bytes(), true),
            Err(_) => {
                owned = chunk.extract::<Vec<u8>>()?;
                (&owned[..], false)
            }
        };
        let inner = &mut self.inner;
        let out = &mut self.out;
        out.clear();
        if bytes.len() >= 64 * 1024 {
            py.detach(|| inner.feed(bytes, out));
        } else {
            inner.feed(bytes, out);
        }
        if inner.strips() {
            Ok(PyBytes::new(py, out).into_any())
        } else if is_bytes {
            Ok(chunk.clone())
        } else {
            Ok(PyBytes::new(py, bytes).into_any())
        }
    }

    /// End of input: flush whatever was held back (an incomplete trailing event is forwarded as is).
    fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.inner.finish(&mut self.out);
        PyBytes::new(py, &self.out)
    }

    /// Usage reported in the stream so far (None when none was reported).
    #[getter]
    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }

    /// Assembled assistant text (all text deltas, in order).
    #[getter]
    fn text(&self) -> &str {
        &self.inner.text
    }

    /// Assembled tool calls as a JSON array of {"id","name","arguments"} (arguments: the raw JSON string).
    #[getter]
    fn tool_calls_json(&self) -> String {
        self.inner.tool_calls_json()
    }

    #[getter]
    fn finish_reason(&self) -> Option<&str> {
        self.inner.finish_reason.as_deref()
    }

    /// Number of content/tool deltas seen (used to estimate output when usage is missing).
    #[getter]
    fn delta_count(&self) -> u64 {
        self.inner.delta_count
    }

    /// True once the provider's terminal event was seen (OpenAI ``[DONE]``, Anthropic ``message_stop``).
    #[getter]
    fn completed(&self) -> bool {
        self.inner.completed
    }

    /// The data of an in-stream error event, if any.
    #[getter]
    fn error_json(&self) -> Option<&str> {
        self.inner.error_json.as_deref()
    }

    /// The model named by the stream, if any.
    #[getter]
    fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }

    /// Responses streams: the JSON bytes of the terminal event's response object, if seen.
    #[getter]
    fn final_response<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.final_response.as_deref().map(|b| PyBytes::new(py, b))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feed `input` in pieces of `split` bytes: (what the client gets, the scanner).
    pub(crate) fn run(kind: Kind, strip: bool, input: &[u8], split: usize) -> (Vec<u8>, Scanner) {
        let mut s = Scanner::new(kind, strip);
        let mut out = Vec::new();
        for c in input.chunks(split.max(1)) {
            let mut o = Vec::new();
            s.feed(c, &mut o);
            if strip {
                out.extend(o);
            } else {
                out.extend_from_slice(c);
            }
        }
        s.finish(&mut out);
        (out, s)
    }
}
