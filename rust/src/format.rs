//! What one upstream wire format knows about billing: where the usage is in a whole
//! response body, and what each event of its streams means (text, tool calls, usage,
//! the end). The stream's framing (lines and events, split anywhere) is the
//! [`crate::sse::Framer`]'s; a format only sees dispatched events.
//!
//! One implementor per format: [`crate::openai::ChatCompletions`],
//! [`crate::anthropic::Messages`], [`crate::responses::Responses`]; [`crate::usage::Kind`]
//! (the name Python passes) picks one.

use crate::pricing::Usage;
use crate::scanner::Scan;
use crate::sse::Action;

pub trait WireFormat {
    /// Usage of a whole (non-stream) response body; None when it is not JSON or has no usage.
    fn extract_usage(body: &[u8]) -> Option<Usage>;

    /// One dispatched SSE event of a stream (`name` is empty when the event had no
    /// `event:` line). The action matters in strip mode only (what the client gets).
    fn on_event(scan: &mut Scan, name: &[u8], data: &[u8]) -> Action;
}
