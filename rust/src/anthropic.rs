//! Anthropic Messages (`POST {base_url}/v1/messages`): usage of a message and of its
//! event stream (`message_start` carries the input, `message_delta` the final output).

use std::borrow::Cow;

use serde::Deserialize;

use crate::format::WireFormat;
use crate::pricing::Usage;
use crate::scanner::{set_opt, Counts, Scan, ToolCall};
use crate::sse::Action;
use crate::usage::RawUsage;

pub struct Messages;

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

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
    usage: Option<RawUsage>,
}

impl WireFormat for Messages {
    fn extract_usage(body: &[u8]) -> Option<Usage> {
        let b: Body = serde_json::from_slice(body).ok()?;
        let (i, o, cr, cw) = b.usage?.anthropic_counts();
        Some(Usage {
            input_tokens: i,
            output_tokens: o,
            cache_read_tokens: cr,
            cache_write_tokens: cw,
            estimated: false,
            model: b.model.map(Cow::into_owned),
            finish_reason: b.stop_reason.map(Cow::into_owned),
        })
    }

    fn on_event(scan: &mut Scan, name: &[u8], data: &[u8]) -> Action {
        on_named(scan, name, data);
        Action::Keep
    }
}

fn on_named(scan: &mut Scan, name: &[u8], data: &[u8]) {
    match name {
        b"content_block_delta" => {
            if let Ok(e) = serde_json::from_slice::<AnBlockDelta>(data) {
                let Some(delta) = e.delta else { return };
                match delta.ty.as_deref() {
                    Some("text_delta") => {
                        if let Some(t) = delta.text {
                            scan.text.push_str(&t);
                            scan.delta_count += 1;
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(pj) = delta.partial_json {
                            let idx = e.index.unwrap_or(0);
                            if let Some(&(_, slot)) = scan.block_tools.iter().rev().find(|(b, _)| *b == idx) {
                                scan.tools[slot].arguments.push_str(&pj);
                            }
                            scan.other_bytes += pj.len();
                            scan.delta_count += 1;
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = delta.thinking {
                            scan.other_bytes += t.len();
                            scan.delta_count += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        b"message_start" => {
            if let Ok(e) = serde_json::from_slice::<AnMessageStart>(data) {
                if let Some(m) = e.message {
                    set_opt(&mut scan.model, m.model);
                    if let Some(u) = m.usage {
                        let (i, o, cr, cw) = u.anthropic_counts();
                        scan.counts = Counts { input: i, output: o, cache_read: cr, cache_write: cw };
                        scan.usage_seen = true;
                    }
                }
            }
        }
        b"content_block_start" => {
            if let Ok(e) = serde_json::from_slice::<AnBlockStart>(data) {
                if let Some(b) = e.content_block {
                    if matches!(b.ty.as_deref(), Some("tool_use") | Some("server_tool_use")) {
                        scan.tools.push(ToolCall {
                            id: b.id.map(Cow::into_owned).unwrap_or_default(),
                            name: b.name.map(Cow::into_owned).unwrap_or_default(),
                            arguments: String::new(),
                        });
                        scan.block_tools.push((e.index.unwrap_or(0), scan.tools.len() - 1));
                    }
                }
            }
        }
        b"message_delta" => {
            if let Ok(e) = serde_json::from_slice::<AnMessageDelta>(data) {
                if let Some(d) = e.delta {
                    set_opt(&mut scan.finish_reason, d.stop_reason);
                }
                if let Some(u) = e.usage {
                    if let Some(o) = u.output_tokens {
                        scan.counts.output = o.max(0);
                        scan.final_output = true;
                    }
                    if let Some(i) = u.input_tokens {
                        scan.counts.input = i.max(0);
                    }
                    if let Some(c) = u.cache_read_input_tokens {
                        scan.counts.cache_read = c.max(0);
                    }
                    if let Some(c) = u.cache_creation_input_tokens {
                        scan.counts.cache_write = c.max(0);
                    }
                    scan.usage_seen = true;
                }
            }
        }
        b"message_stop" => scan.completed = true,
        b"error" => scan.error_json = Some(String::from_utf8_lossy(data).into_owned()),
        b"ping" | b"content_block_stop" => {}
        _ => {
            // No (or unknown) event name: fall back to the data's "type".
            if let Ok(t) = serde_json::from_slice::<AnTypeOnly>(data) {
                if let Some(ty) = t.ty {
                    let ty = ty.into_owned();
                    if ty.as_bytes() != name && !ty.is_empty() {
                        on_named(scan, ty.as_bytes(), data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::scanner::tests::run;
    use crate::usage::{extract, Kind};

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

    #[test]
    fn anthropic_body() {
        let body = br#"{"id":"m","type":"message","model":"claude","content":[{"type":"text","text":"a"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":9,"cache_read_input_tokens":3,"cache_creation_input_tokens":null}}"#;
        let u = extract(Kind::Anthropic, body).unwrap();
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens), (5, 9, 3, 0));
        assert_eq!(u.finish_reason.as_deref(), Some("end_turn"));
    }
}
