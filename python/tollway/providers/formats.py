"""The canonical converters of each wire format, in one table.

A cross-format call is source -> canonical -> target: code outside providers/
picks both ends from ``FORMATS`` by name (the client's route shape, the
provider's kind) and goes through this interface, never by the format's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from tollway.config import ModelRoute
from tollway.config.routes import RESPONSES_WIRE
from tollway.providers import canonical
from tollway.providers.anthropic import convert as anthropic_convert
from tollway.providers.anthropic import stream as anthropic_stream
from tollway.providers.openai_chat import convert as openai_chat_convert
from tollway.providers.openai_chat import request as openai_chat_request
from tollway.providers.openai_chat import stream as openai_chat_stream
from tollway.providers.openai_responses import convert as responses_convert
from tollway.providers.openai_responses import stream as responses_stream
from tollway.providers.openai_responses import upstream as responses_upstream


class StreamDecoder(Protocol):
    def feed(self, event: Optional[str], data: str) -> list[canonical.Event]: ...

    def finish(self) -> list[canonical.Event]: ...


class StreamEncoder(Protocol):
    def encode(self, event: canonical.Event) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Format:
    request_to_canonical: Callable[[Any], canonical.Request]
    request_from_canonical: Callable[[canonical.Request, ModelRoute], dict[str, Any]]
    response_to_canonical: Callable[[Any], canonical.Response]
    response_from_canonical: Callable[[canonical.Response, str], dict[str, Any]]  # (response, model name)
    stop_reason_to_canonical: Callable[[Any], str]
    error_to_canonical: Callable[[int, bytes], canonical.Error]
    error_body: Callable[[int, canonical.Error], bytes]
    stream_decoder: Callable[[], StreamDecoder]
    stream_encoder: Callable[[str, dict[str, Any]], StreamEncoder]  # (model name, the client's request)
    # Request headers of the other formats' SDKs, meaningless to this provider.
    foreign_header_prefix: str


def _include_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


FORMATS: dict[str, Format] = {
    "anthropic": Format(
        anthropic_convert.to_canonical,
        lambda request, route: anthropic_convert.from_canonical(request, route.upstream_model, route.max_output_tokens),
        anthropic_convert.response_to_canonical,
        anthropic_convert.response_from_canonical,
        anthropic_convert.stop_reason,
        anthropic_convert.error_to_canonical,
        anthropic_convert.error_body,
        anthropic_stream.StreamDecoder,
        lambda model, payload: anthropic_stream.StreamEncoder(model),
        "openai-",
    ),
    "openai": Format(
        openai_chat_request.to_canonical,
        lambda request, route: openai_chat_convert.from_canonical(request, route.upstream_model),
        openai_chat_convert.response_to_canonical,
        openai_chat_convert.response_from_canonical,
        openai_chat_convert.stop_reason,
        openai_chat_convert.error_to_canonical,
        openai_chat_convert.error_body,
        openai_chat_stream.StreamDecoder,
        lambda model, payload: openai_chat_stream.StreamEncoder(model, _include_usage(payload)),
        "anthropic-",
    ),
}


# The Responses API as a provider's format (a model with responses_only: every route calls
# it in this format): registered under its wire name below.
RESPONSES = Format(
    responses_convert.to_canonical,
    lambda request, route: responses_upstream.from_canonical(request, route.upstream_model),
    responses_upstream.response_to_canonical,
    lambda response, model: responses_convert.response_from_canonical(
        response, {}, responses_convert.new_id("resp_"), model
    ),
    responses_upstream.outcome_stop_reason,
    openai_chat_convert.error_to_canonical,
    openai_chat_convert.error_body,
    responses_upstream.StreamDecoder,
    lambda model, payload: responses_stream.StreamEncoder(payload, responses_convert.new_id("resp_"), model),
    "anthropic-",
)


FORMATS[RESPONSES_WIRE] = RESPONSES


class StreamTranslator:
    """Decoded upstream SSE events in, the client's SSE bytes out, through canonical events."""

    __slots__ = ("decoder", "encoder")

    def __init__(self, decoder: StreamDecoder, encoder: StreamEncoder) -> None:
        self.decoder = decoder
        self.encoder = encoder

    def feed(self, event: Optional[str], data: str) -> bytes:
        return b"".join(self.encoder.encode(e) for e in self.decoder.feed(event, data))

    def finish(self) -> bytes:
        """The upstream ended (an error event for the client if it ended early)."""
        return b"".join(self.encoder.encode(e) for e in self.decoder.finish())


def openai_error_body(status: int, error: canonical.Error) -> bytes:
    """A canonical error as an OpenAI error body (the Chat and Responses APIs share it)."""
    return openai_chat_convert.error_body(status, error)
