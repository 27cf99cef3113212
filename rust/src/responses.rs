//! The OpenAI Responses format (`POST /v1/responses`): usage of a response object and
//! of its typed stream events.
//!
//! Usage is `{input_tokens, input_tokens_details.cached_tokens, output_tokens,
//! output_tokens_details.reasoning_tokens}`. As in chat completions, `input_tokens`
//! includes the cached tokens (billed as cache reads, the rest as input) and
//! `output_tokens` includes the reasoning tokens (billed as output). A stream reports
//! it once, in the `response` of its terminal event (`response.completed`,
//! `response.incomplete` or `response.failed`), whose JSON is also kept whole
//! ([`Scan::final_response`]) for whoever records the response.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::format::WireFormat;
use crate::pricing::Usage;
use crate::scanner::Scan;
use crate::sse::Action;
use crate::usage::RawUsage;

pub struct Responses;

#[derive(Deserialize)]
struct Incomplete<'a> {
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

/// The fields of a response object that billing needs.
#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    incomplete_details: Option<Incomplete<'a>>,
    usage: Option<RawUsage>,
}

impl Object<'_> {
    /// `incomplete_details.reason` when there is one ("max_output_tokens"), else the status.
    fn finish_reason(&self) -> Option<String> {
        self.incomplete_details
            .as_ref()
            .and_then(|d| d.reason.as_deref())
            .or(self.status.as_deref())
            .map(str::to_owned)
    }
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// Any stream event: only the members some event type uses are read.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
    output_index: Option<usize>,
    #[serde(borrow)]
    item: Option<Item<'a>>,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
}

impl WireFormat for Responses {
    fn extract_usage(body: &[u8]) -> Option<Usage> {
        let object: Object = serde_json::from_slice(body).ok()?;
        let usage = object.usage.as_ref()?;
        let (input, output, cache_read, cache_write) = usage.responses_counts();
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            estimated: false,
            model: object.model.as_deref().map(str::to_owned),
            finish_reason: object.finish_reason(),
        })
    }

    fn on_event(scan: &mut Scan, name: &[u8], data: &[u8]) -> Action {
        if let Ok(event) = serde_json::from_slice::<Event>(data) {
            on_typed(scan, name, event, data);
        }
        Action::Keep
    }
}

fn on_typed(scan: &mut Scan, name: &[u8], event: Event<'_>, data: &[u8]) {
    let kind: &[u8] = if name.is_empty() { event.ty.as_deref().unwrap_or("").as_bytes() } else { name };
    match kind {
        b"response.output_text.delta" => {
            if let Some(d) = event.delta.filter(|d| !d.is_empty()) {
                scan.text.push_str(&d);
                scan.delta_count += 1;
            }
        }
        b"response.refusal.delta"
        | b"response.reasoning_text.delta"
        | b"response.reasoning_summary_text.delta"
        | b"response.custom_tool_call_input.delta" => {
            if let Some(d) = event.delta.filter(|d| !d.is_empty()) {
                scan.other_bytes += d.len();
                scan.delta_count += 1;
            }
        }
        b"response.function_call_arguments.delta" => {
            if let Some(d) = event.delta.filter(|d| !d.is_empty()) {
                if let Some(slot) = scan.tool_at(event.output_index.unwrap_or(0)) {
                    scan.tools[slot].arguments.push_str(&d);
                }
                scan.other_bytes += d.len();
                scan.delta_count += 1;
            }
        }
        b"response.output_item.added" => {
            if let Some(item) = event.item {
                if item.ty.as_deref() == Some("function_call") {
                    let id = item.call_id.map(Cow::into_owned).unwrap_or_default();
                    let name = item.name.map(Cow::into_owned).unwrap_or_default();
                    scan.open_tool(event.output_index.unwrap_or(0), id, name);
                }
            }
        }
        b"response.created" | b"response.in_progress" | b"response.queued" => {
            if let Some(object) = event.response.and_then(|r| serde_json::from_str::<Object>(r.get()).ok()) {
                scan.set_model(object.model);
            }
        }
        b"response.completed" | b"response.incomplete" | b"response.failed" => {
            let Some(raw) = event.response else { return };
            if let Ok(object) = serde_json::from_str::<Object>(raw.get()) {
                scan.finish_reason = object.finish_reason();
                if let Some(u) = &object.usage {
                    scan.set_counts(u.responses_counts());
                    scan.final_output = true;
                }
                scan.set_model(object.model);
            }
            if kind == b"response.failed" {
                scan.error_json = Some(String::from_utf8_lossy(data).into_owned());
            }
            scan.final_response = Some(raw.get().as_bytes().to_vec());
            scan.completed = true;
        }
        b"error" => scan.error_json = Some(String::from_utf8_lossy(data).into_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::Scanner;
    use crate::usage::Kind;

    const BODY: &[u8] = br#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-5","output":[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","content":[{"type":"output_text","text":"hi","annotations":[]}]}],"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":60},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":130}}"#;

    #[test]
    fn whole_body() {
        let u = Responses::extract_usage(BODY).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens), (40, 30, 60, 0));
        assert_eq!(u.finish_reason.as_deref(), Some("completed"));
        assert_eq!(u.model.as_deref(), Some("gpt-5"));
        let cut = br#"{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":5,"output_tokens":16}}"#;
        let u = crate::usage::extract(Kind::Responses, cut).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens), (5, 16, 0));
        assert_eq!(u.finish_reason.as_deref(), Some("max_output_tokens"));
        assert!(Responses::extract_usage(br#"{"status":"in_progress","usage":null}"#).is_none());
        assert!(Responses::extract_usage(b"[1").is_none());
    }

    fn event(kind: &str, data: &str) -> String {
        format!("event: {kind}\ndata: {data}\n\n")
    }

    fn stream() -> String {
        let start = r#"{"id":"resp_1","model":"gpt-5","status":"in_progress","output":[],"usage":null}"#;
        let done = r#"{"id":"resp_1","model":"gpt-5","status":"completed","output":[],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":2},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":21}}"#;
        [
            event("response.created", &format!(r#"{{"type":"response.created","sequence_number":0,"response":{start}}}"#)),
            event("response.output_item.added", r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"type":"message","id":"msg_1","content":[]}}"#),
            event("response.output_text.delta", r#"{"type":"response.output_text.delta","sequence_number":2,"output_index":0,"content_index":0,"item_id":"msg_1","delta":"h\u00e9 \"x\""}"#),
            event("response.output_item.added", r#"{"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get","arguments":""}}"#),
            event("response.function_call_arguments.delta", r#"{"type":"response.function_call_arguments.delta","sequence_number":4,"output_index":1,"item_id":"fc_1","delta":"{\"a\":"}"#),
            event("response.function_call_arguments.delta", r#"{"type":"response.function_call_arguments.delta","sequence_number":5,"output_index":1,"item_id":"fc_1","delta":"1}"}"#),
            event("response.completed", &format!(r#"{{"type":"response.completed","sequence_number":6,"response":{done}}}"#)),
        ]
        .concat()
    }

    fn scan(input: &[u8], split: usize) -> Scanner {
        let mut s = Scanner::new(Kind::Responses, true);
        let mut out = Vec::new();
        for c in input.chunks(split.max(1)) {
            s.feed(c, &mut out);
            assert!(out.is_empty(), "a Responses stream is never rewritten");
        }
        s.finish(&mut out);
        s
    }

    #[test]
    fn stream_any_split() {
        let input = stream();
        for split in [1, 2, 3, 7, 64, input.len()] {
            let s = scan(input.as_bytes(), split);
            assert_eq!(s.text, "h\u{e9} \"x\"");
            assert_eq!(s.tool_calls_json(), r#"[{"id":"call_1","name":"get","arguments":"{\"a\":1}"}]"#);
            let u = s.final_usage(999);
            assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.estimated), (10, 9, 2, false));
            assert_eq!(u.finish_reason.as_deref(), Some("completed"));
            assert_eq!(s.model.as_deref(), Some("gpt-5"));
            assert!(s.completed);
            let fin: serde_json::Value = serde_json::from_slice(s.final_response.as_deref().unwrap()).unwrap();
            assert_eq!(fin["usage"]["output_tokens"], 9);
        }
    }

    #[test]
    fn cut_stream_is_estimated() {
        let input = stream();
        let cut = &input[..input.find("event: response.completed").unwrap()];
        let s = scan(cut.as_bytes(), 5);
        assert!(s.final_response.is_none() && !s.completed);
        let u = s.final_usage(77);
        assert!(u.estimated);
        assert_eq!(u.input_tokens, 77);
        assert_eq!(u.output_tokens, 4); // 3 deltas of 14 bytes: max(3, ceil(14 / 4))
    }

    #[test]
    fn incomplete_and_failed() {
        let inc = event("response.incomplete", r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":3,"output_tokens":16}}}"#);
        let s = scan(inc.as_bytes(), 4);
        let u = s.final_usage(0);
        assert_eq!((u.input_tokens, u.output_tokens, u.estimated), (3, 16, false));
        assert_eq!(s.finish_reason.as_deref(), Some("max_output_tokens"));
        let failed = "data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"x\"},\"usage\":null}}\n\n";
        let s = scan(failed.as_bytes(), 3);
        assert!(s.error_json.is_some() && s.completed && s.usage().is_none());
        let err = "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow\"}\n\n";
        assert!(scan(err.as_bytes(), 2).error_json.as_deref().unwrap().contains("slow"));
    }
}
