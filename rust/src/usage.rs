//! Usage extraction from whole (non-stream) bodies, and the serde structs shared
//! with the stream scanner. Only the fields we need are declared; everything else
//! is skipped by serde without being materialised.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Deserialize;

use crate::anthropic::Messages;
use crate::format::WireFormat;
use crate::openai::ChatCompletions;
use crate::pricing::Usage;
use crate::responses::Responses;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OpenAI,
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`), see [`crate::responses`].
    Responses,
}

impl Kind {
    pub fn parse(s: &str) -> PyResult<Kind> {
        match s {
            "openai" => Ok(Kind::OpenAI),
            "anthropic" => Ok(Kind::Anthropic),
            "openai_responses" => Ok(Kind::Responses),
            _ => Err(PyValueError::new_err(format!(
                "unknown provider kind {s:?} (expected 'openai', 'anthropic' or 'openai_responses')"
            ))),
        }
    }
}

/// Token counts as both providers name them (all optional, nulls accepted).
#[derive(Deserialize, Default, Debug)]
pub struct RawUsage {
    // OpenAI
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub prompt_tokens_details: Option<PromptDetails>,
    // Anthropic (and OpenAI Responses)
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cache_read_input_tokens: Option<i64>,
    pub cache_creation_input_tokens: Option<i64>,
    // OpenAI Responses
    pub input_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Default, Debug)]
pub struct PromptDetails {
    pub cached_tokens: Option<i64>,
}

impl RawUsage {
    /// (input, output, cache_read, cache_write) per the provider's conventions.
    pub fn openai_counts(&self) -> (i64, i64, i64, i64) {
        let prompt = self.prompt_tokens.unwrap_or(0).max(0);
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .clamp(0, prompt);
        (prompt - cached, self.completion_tokens.unwrap_or(0).max(0), cached, 0)
    }

    /// OpenAI Responses: `input_tokens` includes the cached tokens, as chat's `prompt_tokens` does.
    pub fn responses_counts(&self) -> (i64, i64, i64, i64) {
        let input = self.input_tokens.unwrap_or(0).max(0);
        let cached = self
            .input_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .clamp(0, input);
        (input - cached, self.output_tokens.unwrap_or(0).max(0), cached, 0)
    }

    pub fn anthropic_counts(&self) -> (i64, i64, i64, i64) {
        (
            self.input_tokens.unwrap_or(0).max(0),
            self.output_tokens.unwrap_or(0).max(0),
            self.cache_read_input_tokens.unwrap_or(0).max(0),
            self.cache_creation_input_tokens.unwrap_or(0).max(0),
        )
    }
}

/// Usage of a whole response body; None when it is not JSON or has no usage object.
pub fn extract(kind: Kind, body: &[u8]) -> Option<Usage> {
    match kind {
        Kind::OpenAI => ChatCompletions::extract_usage(body),
        Kind::Anthropic => Messages::extract_usage(body),
        Kind::Responses => Responses::extract_usage(body),
    }
}

/// Usage of a whole non-stream response body, parsed in Rust (no Python dicts).
///
/// OpenAI chat completion: usage.prompt_tokens / completion_tokens /
/// prompt_tokens_details.cached_tokens, choices[0].finish_reason, model.
/// Anthropic message: usage.input_tokens / output_tokens /
/// cache_read_input_tokens / cache_creation_input_tokens, stop_reason, model.
/// OpenAI Responses ("openai_responses"): usage.input_tokens / output_tokens /
/// input_tokens_details.cached_tokens, incomplete_details.reason or status, model.
/// None when the body is not JSON or has no usage object.
#[pyfunction]
pub fn extract_usage(py: Python<'_>, kind: &str, body: &[u8]) -> PyResult<Option<Usage>> {
    let kind = Kind::parse(kind)?;
    if body.len() >= 16 * 1024 {
        Ok(py.detach(|| extract(kind, body)))
    } else {
        Ok(extract(kind, body))
    }
}
