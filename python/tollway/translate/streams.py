"""Stream translators: fed decoded upstream SSE events, they return client-ready SSE bytes."""

from tollway.translate.stream_to_anthropic import OpenAIToAnthropicStream
from tollway.translate.stream_to_openai import AnthropicToOpenAIStream

__all__ = ["AnthropicToOpenAIStream", "OpenAIToAnthropicStream"]
