"""Translation between the OpenAI Chat Completions and Anthropic Messages wire formats.

Requests, responses, error bodies and streams, so that either API can name a
model of the other provider and each SDK still sees its own format.
"""

from tollway.translate.errors import TranslationError
from tollway.translate.requests import anthropic_request_to_openai, openai_request_to_anthropic
from tollway.translate.responses import (
    anthropic_error_to_openai,
    anthropic_response_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)
from tollway.translate.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "openai_error_to_anthropic",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]
