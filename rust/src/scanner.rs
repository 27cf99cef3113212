//! Incremental SSE scanner for OpenAI and Anthropic streams.
//!
//! Lines may be split anywhere across chunks (mid line, mid UTF-8, between the
//! CR and LF of a CRLF). Without strip mode the scanner only observes bytes; the
//! caller forwards its input unchanged. With strip mode (OpenAI) the output is
//! event-aligned and omits the usage-only chunk and top-level `"usage":null`.

use std::borrow::Cow;

use memchr::{memchr2, memmem};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::format::WireFormat;
use crate::pricing::Usage;
use crate::responses::Responses;
use crate::sse::{Action, Framer};
use crate::usage::{Kind, RawUsage};

#[derive(Serialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Default, Clone, Copy, Debug)]
struct Counts {
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
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
    block_tools: Vec<(usize, usize)>, // (content block index, tool slot)
    pub finish_reason: Option<String>,
    pub model: Option<String>,
    counts: Counts,
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

// ---------- serde structs (borrowed; only what we need) ----------

#[derive(Deserialize)]
struct OaChunk<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<OaChoice<'a>>>,
    usage: Option<RawUsage>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OaChoice<'a> {
    index: Option<i64>,
    #[serde(borrow)]
    delta: Option<OaDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OaDelta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<OaToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct OaToolDelta<'a> {
    index: Option<usize>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<OaFn<'a>>,
}

#[derive(Deserialize)]
struct OaFn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnTypeOnly<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnBlockDelta<'a> {
    index: Option<usize>,
    #[serde(borrow)]
    delta: Option<AnDelta<'a>>,
}

#[derive(Deserialize)]
struct AnDelta<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnMessageStart<'a> {
    #[serde(borrow)]
    message: Option<AnMessage<'a>>,
}

#[derive(Deserialize)]
struct AnMessage<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct AnBlockStart<'a> {
    index: Option<usize>,
    #[serde(borrow)]
    content_block: Option<AnBlock<'a>>,
}

#[derive(Deserialize)]
struct AnBlock<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AnMessageDelta<'a> {
    #[serde(borrow)]
    delta: Option<AnStop<'a>>,
    usage: Option<RawUsage>,
}

#[derive(Deserialize)]
struct AnStop<'a> {
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

// ---------- helpers ----------

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_range(d: &[u8]) -> (usize, usize) {
    let mut a = 0;
    let mut b = d.len();
    while a < b && is_ws(d[a]) {
        a += 1;
    }
    while b > a && is_ws(d[b - 1]) {
        b -= 1;
    }
    (a, b)
}

/// End (exclusive) of the JSON string starting at `d[i] == '"'`.
fn skip_string(d: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        let j = memchr2(b'"', b'\\', &d[i..])? + i;
        if d[j] == b'\\' {
            i = j + 2;
            if i > d.len() {
                return None;
            }
        } else {
            return Some(j + 1);
        }
    }
}

/// Byte range to delete so that the top-level member `"key":null` disappears
/// from the JSON object `d` (with one adjacent comma), or None.
pub fn find_null_member(d: &[u8], key: &[u8]) -> Option<(usize, usize)> {
    let (s, e) = trim_range(d);
    let t = &d[s..e];
    // Fast path: `,"key":null}` at the very end (OpenAI puts it last).
    let mut suffix = Vec::with_capacity(key.len() + 9);
    suffix.extend_from_slice(b",\"");
    suffix.extend_from_slice(key);
    suffix.extend_from_slice(b"\":null}");
    if t.ends_with(&suffix) && t.first() == Some(&b'{') {
        let a = s + t.len() - suffix.len();
        return Some((a, a + suffix.len() - 1));
    }
    let mut quoted = Vec::with_capacity(key.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(key);
    quoted.push(b'"');
    memmem::find(t, &quoted)?;
    let n = d.len();
    let mut i = s;
    if i >= n || d[i] != b'{' {
        return None;
    }
    i += 1;
    let mut depth = 1usize;
    let mut expect_key = true;
    let mut prev_comma: Option<usize> = None;
    let skip_ws = |mut j: usize| {
        while j < n && is_ws(d[j]) {
            j += 1;
        }
        j
    };
    while i < n {
        match d[i] {
            b'"' => {
                let st = i;
                let en = skip_string(d, i)?;
                if depth == 1 && expect_key {
                    expect_key = false;
                    if &d[st + 1..en - 1] == key {
                        let mut j = skip_ws(en);
                        if j >= n || d[j] != b':' {
                            return None;
                        }
                        j = skip_ws(j + 1);
                        if d[j..].starts_with(b"null") {
                            let k = j + 4;
                            let m = skip_ws(k);
                            if m < n && (d[m] == b',' || d[m] == b'}') {
                                return Some(match (prev_comma, d[m]) {
                                    (Some(pc), _) => (pc, k),
                                    (None, b',') => (st, skip_ws(m + 1)),
                                    (None, _) => (st, k),
                                });
                            }
                        }
                        return None;
                    }
                }
                i = en;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return None;
                }
            }
            b',' if depth == 1 => {
                prev_comma = Some(i);
                expect_key = true;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn set_opt(slot: &mut Option<String>, v: Option<Cow<'_, str>>) {
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
            Kind::OpenAI => self.on_openai(data),
            Kind::Anthropic => {
                self.on_anthropic(name, data);
                Action::Keep
            }
            Kind::Responses => {
                Responses::on_event(self, name, data);
                Action::Keep
            }
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

    fn on_openai(&mut self, data: &[u8]) -> Action {
        let (a, b) = trim_range(data);
        let d = &data[a..b];
        if d == b"[DONE]" {
            self.completed = true;
            return Action::Keep;
        }
        if d.first() != Some(&b'{') {
            return Action::Keep;
        }
        let mut drop_it = false;
        if let Ok(c) = serde_json::from_slice::<OaChunk>(d) {
            set_opt(&mut self.model, c.model);
            if c.error.is_some() {
                self.error_json = Some(String::from_utf8_lossy(d).into_owned());
            }
            let choices_empty = c.choices.as_ref().is_some_and(|v| v.is_empty());
            if let Some(u) = c.usage {
                let (i, o, cr, cw) = u.openai_counts();
                self.counts = Counts { input: i, output: o, cache_read: cr, cache_write: cw };
                self.usage_seen = true;
                self.final_output = true;
                drop_it = choices_empty;
            }
            if let Some(choices) = c.choices {
                for ch in choices {
                    if ch.index.unwrap_or(0) != 0 {
                        continue;
                    }
                    if let Some(delta) = ch.delta {
                        self.on_openai_delta(delta);
                    }
                    set_opt(&mut self.finish_reason, ch.finish_reason);
                }
            }
        }
        if !self.strip {
            return Action::Keep;
        }
        if drop_it {
            return Action::Drop;
        }
        match find_null_member(d, b"usage") {
            Some((x, y)) => Action::Delete(a + x, a + y),
            None => Action::Keep,
        }
    }

    fn on_openai_delta(&mut self, delta: OaDelta<'_>) {
        if let Some(t) = delta.content {
            if !t.is_empty() {
                self.text.push_str(&t);
                self.delta_count += 1;
            }
        }
        for r in [delta.reasoning_content, delta.reasoning, delta.refusal].into_iter().flatten() {
            if !r.is_empty() {
                self.other_bytes += r.len();
                self.delta_count += 1;
            }
        }
        if let Some(tcs) = delta.tool_calls {
            for tc in tcs {
                let slot = match tc.index {
                    Some(i) => i,
                    None if tc.id.is_some() || self.tools.is_empty() => self.tools.len(),
                    None => self.tools.len() - 1,
                };
                if slot > 4096 {
                    continue; // absurd index: ignore rather than allocate
                }
                if self.tools.len() <= slot {
                    self.tools.resize_with(slot + 1, ToolCall::default);
                }
                let t = &mut self.tools[slot];
                if let Some(id) = tc.id {
                    if t.id.is_empty() {
                        t.id = id.into_owned();
                    }
                }
                if let Some(f) = tc.function {
                    if let Some(n) = f.name {
                        t.name.push_str(&n);
                    }
                    if let Some(a) = f.arguments {
                        t.arguments.push_str(&a);
                        self.other_bytes += a.len();
                    }
                }
                self.delta_count += 1;
            }
        }
    }

    fn on_anthropic(&mut self, name: &[u8], data: &[u8]) {
        match name {
            b"content_block_delta" => {
                if let Ok(e) = serde_json::from_slice::<AnBlockDelta>(data) {
                    let Some(delta) = e.delta else { return };
                    match delta.ty.as_deref() {
                        Some("text_delta") => {
                            if let Some(t) = delta.text {
                                self.text.push_str(&t);
                                self.delta_count += 1;
                            }
                        }
                        Some("input_json_delta") => {
                            if let Some(pj) = delta.partial_json {
                                let idx = e.index.unwrap_or(0);
                                if let Some(&(_, slot)) = self.block_tools.iter().rev().find(|(b, _)| *b == idx) {
                                    self.tools[slot].arguments.push_str(&pj);
                                }
                                self.other_bytes += pj.len();
                                self.delta_count += 1;
                            }
                        }
                        Some("thinking_delta") => {
                            if let Some(t) = delta.thinking {
                                self.other_bytes += t.len();
                                self.delta_count += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
            b"message_start" => {
                if let Ok(e) = serde_json::from_slice::<AnMessageStart>(data) {
                    if let Some(m) = e.message {
                        set_opt(&mut self.model, m.model);
                        if let Some(u) = m.usage {
                            let (i, o, cr, cw) = u.anthropic_counts();
                            self.counts = Counts { input: i, output: o, cache_read: cr, cache_write: cw };
                            self.usage_seen = true;
                        }
                    }
                }
            }
            b"content_block_start" => {
                if let Ok(e) = serde_json::from_slice::<AnBlockStart>(data) {
                    if let Some(b) = e.content_block {
                        if matches!(b.ty.as_deref(), Some("tool_use") | Some("server_tool_use")) {
                            self.tools.push(ToolCall {
                                id: b.id.map(Cow::into_owned).unwrap_or_default(),
                                name: b.name.map(Cow::into_owned).unwrap_or_default(),
                                arguments: String::new(),
                            });
                            self.block_tools.push((e.index.unwrap_or(0), self.tools.len() - 1));
                        }
                    }
                }
            }
            b"message_delta" => {
                if let Ok(e) = serde_json::from_slice::<AnMessageDelta>(data) {
                    if let Some(d) = e.delta {
                        set_opt(&mut self.finish_reason, d.stop_reason);
                    }
                    if let Some(u) = e.usage {
                        if let Some(o) = u.output_tokens {
                            self.counts.output = o.max(0);
                            self.final_output = true;
                        }
                        if let Some(i) = u.input_tokens {
                            self.counts.input = i.max(0);
                        }
                        if let Some(c) = u.cache_read_input_tokens {
                            self.counts.cache_read = c.max(0);
                        }
                        if let Some(c) = u.cache_creation_input_tokens {
                            self.counts.cache_write = c.max(0);
                        }
                        self.usage_seen = true;
                    }
                }
            }
            b"message_stop" => self.completed = true,
            b"error" => self.error_json = Some(String::from_utf8_lossy(data).into_owned()),
            b"ping" | b"content_block_stop" => {}
            _ => {
                // No (or unknown) event name: fall back to the data's "type".
                if let Ok(t) = serde_json::from_slice::<AnTypeOnly>(data) {
                    if let Some(ty) = t.ty {
                        let ty = ty.into_owned();
                        if ty.as_bytes() != name && !ty.is_empty() {
                            self.on_anthropic(ty.as_bytes(), data);
                        }
                    }
                }
            }
        }
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
mod tests {
    use super::*;

    fn run(kind: Kind, strip: bool, input: &[u8], split: usize) -> (Vec<u8>, Scanner) {
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

    const OA: &[u8] = b"data: {\"id\":\"1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n: keepalive\n\ndata: {\"id\":\"1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\xc3\xa9llo\"},\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\r\rdata: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\ndata: [DONE]\n\n";

    #[test]
    fn openai_any_split() {
        let (_, whole) = run(Kind::OpenAI, false, OA, OA.len());
        assert_eq!(whole.text, "h\u{e9}llo");
        assert!(whole.completed);
        let u = whole.usage().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens), (6, 3, 4));
        for split in 1..40 {
            let (out, s) = run(Kind::OpenAI, false, OA, split);
            assert_eq!(out, OA);
            assert_eq!(s.text, whole.text);
            assert_eq!(s.usage(), whole.usage());
            assert!(s.completed);
        }
    }

    #[test]
    fn openai_strip() {
        let expected: &[u8] = b"data: {\"id\":\"1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\r\n\r\n: keepalive\n\ndata: {\"id\":\"1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\xc3\xa9llo\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\rdata: [DONE]\n\n";
        for split in 1..50 {
            let (out, s) = run(Kind::OpenAI, true, OA, split);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(expected), "split {split}");
            assert!(s.usage().is_some());
        }
    }

    #[test]
    fn null_member() {
        let f = |s: &str| {
            find_null_member(s.as_bytes(), b"usage").map(|(a, b)| {
                let mut v = s.as_bytes().to_vec();
                v.drain(a..b);
                String::from_utf8(v).unwrap()
            })
        };
        assert_eq!(f(r#"{"usage":null,"a":1}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(f(r#"{"a":1,"usage":null,"b":2}"#).as_deref(), Some(r#"{"a":1,"b":2}"#));
        assert_eq!(f(r#"{"a":1, "usage" : null }"#).as_deref(), Some(r#"{"a":1 }"#));
        assert_eq!(f(r#"{"usage":null}"#).as_deref(), Some(r#"{}"#));
        assert_eq!(f(r#"{"a":{"usage":null}}"#), None);
        assert_eq!(f(r#"{"a":"\",\"usage\":null","usage":{"x":1}}"#), None);
        assert_eq!(f(r#"{"a":"x\\","usage":null}"#).as_deref(), Some(r#"{"a":"x\\"}"#));
    }

    #[test]
    fn anthropic() {
        let s: &[u8] = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"世界 🙂\"}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"get\",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":20}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".as_bytes();
        for split in 1..30 {
            let (out, sc) = run(Kind::Anthropic, false, s, split);
            assert_eq!(out, s);
            assert_eq!(sc.text, "世界 🙂");
            assert_eq!(sc.tool_calls_json(), r#"[{"id":"t1","name":"get","arguments":"{\"a\":1}"}]"#);
            let u = sc.final_usage(0);
            assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.estimated), (12, 20, 2, false));
            assert_eq!(sc.finish_reason.as_deref(), Some("tool_use"));
            assert!(sc.completed);
            assert_eq!(sc.delta_count, 3);
        }
    }
}
