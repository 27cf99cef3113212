//! OpenAI Chat Completions (`POST {base_url}/chat/completions`): usage of a completion
//! and of its chunk stream.
//!
//! Usage comes in `usage` (`prompt_tokens` includes `prompt_tokens_details.cached_tokens`),
//! in a stream as a last chunk with `"choices":[]` when `stream_options.include_usage` was
//! asked. In strip mode (the gateway asked for it, the client did not) that chunk and
//! the top-level `"usage":null` members of the others are cut from what the client gets.

use std::borrow::Cow;

use memchr::{memchr2, memmem};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::format::WireFormat;
use crate::pricing::Usage;
use crate::scanner::{set_opt, Counts, Scan, ToolCall};
use crate::sse::Action;
use crate::usage::RawUsage;

pub struct ChatCompletions;

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
struct FinishOnly<'a> {
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Option<Vec<FinishOnly<'a>>>,
    usage: Option<RawUsage>,
}

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

impl WireFormat for ChatCompletions {
    fn extract_usage(body: &[u8]) -> Option<Usage> {
        let b: Body = serde_json::from_slice(body).ok()?;
        let (i, o, cr, cw) = b.usage?.openai_counts();
        let finish_reason = b.choices.and_then(|c| c.into_iter().next()).and_then(|c| c.finish_reason);
        Some(Usage {
            input_tokens: i,
            output_tokens: o,
            cache_read_tokens: cr,
            cache_write_tokens: cw,
            estimated: false,
            model: b.model.map(Cow::into_owned),
            finish_reason: finish_reason.map(Cow::into_owned),
        })
    }

    fn on_event(scan: &mut Scan, _name: &[u8], data: &[u8]) -> Action {
        let (a, b) = trim_range(data);
        let d = &data[a..b];
        if d == b"[DONE]" {
            scan.completed = true;
            return Action::Keep;
        }
        if d.first() != Some(&b'{') {
            return Action::Keep;
        }
        let mut drop_it = false;
        if let Ok(c) = serde_json::from_slice::<OaChunk>(d) {
            set_opt(&mut scan.model, c.model);
            if c.error.is_some() {
                scan.error_json = Some(String::from_utf8_lossy(d).into_owned());
            }
            let choices_empty = c.choices.as_ref().is_some_and(|v| v.is_empty());
            if let Some(u) = c.usage {
                let (i, o, cr, cw) = u.openai_counts();
                scan.counts = Counts { input: i, output: o, cache_read: cr, cache_write: cw };
                scan.usage_seen = true;
                scan.final_output = true;
                drop_it = choices_empty;
            }
            if let Some(choices) = c.choices {
                for ch in choices {
                    if ch.index.unwrap_or(0) != 0 {
                        continue;
                    }
                    if let Some(delta) = ch.delta {
                        on_delta(scan, delta);
                    }
                    set_opt(&mut scan.finish_reason, ch.finish_reason);
                }
            }
        }
        if !scan.strip {
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
}

fn on_delta(scan: &mut Scan, delta: OaDelta<'_>) {
    if let Some(t) = delta.content {
        if !t.is_empty() {
            scan.text.push_str(&t);
            scan.delta_count += 1;
        }
    }
    for r in [delta.reasoning_content, delta.reasoning, delta.refusal].into_iter().flatten() {
        if !r.is_empty() {
            scan.other_bytes += r.len();
            scan.delta_count += 1;
        }
    }
    if let Some(tcs) = delta.tool_calls {
        for tc in tcs {
            let slot = match tc.index {
                Some(i) => i,
                None if tc.id.is_some() || scan.tools.is_empty() => scan.tools.len(),
                None => scan.tools.len() - 1,
            };
            if slot > 4096 {
                continue; // absurd index: ignore rather than allocate
            }
            if scan.tools.len() <= slot {
                scan.tools.resize_with(slot + 1, ToolCall::default);
            }
            let t = &mut scan.tools[slot];
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
                    scan.other_bytes += a.len();
                }
            }
            scan.delta_count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::tests::run;
    use crate::usage::{extract, Kind};

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
    fn openai_body() {
        let body = br#"{"id":"x","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,"prompt_tokens_details":{"cached_tokens":60}}}"#;
        let u = extract(Kind::OpenAI, body).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens), (40, 7, 60, 0));
        assert_eq!(u.finish_reason.as_deref(), Some("stop"));
        assert_eq!(u.model.as_deref(), Some("gpt-4o"));
        assert!(extract(Kind::OpenAI, b"not json").is_none());
        assert!(extract(Kind::OpenAI, br#"{"usage":null}"#).is_none());
    }
}
