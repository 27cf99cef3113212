"""The canonical converters of each provider wire format, in one table.

Code outside providers/ picks a format by ``route.provider.kind`` from
``FORMATS`` and calls it through this interface, never by the format's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from tollway.config import ModelRoute
from tollway.providers import anthropic_convert, canonical, openai_chat_convert


class StreamDecoder(Protocol):
    def feed(self, event: Optional[str], data: str) -> list[canonical.Event]: ...

    def finish(self) -> list[canonical.Event]: ...


@dataclass(frozen=True, slots=True)
class Format:
    request_from_canonical: Callable[[canonical.Request, ModelRoute], dict[str, Any]]
    response_to_canonical: Callable[[Any], canonical.Response]
    error_to_canonical: Callable[[int, bytes], canonical.Error]
    stream_decoder: Callable[[], StreamDecoder]
    # Request headers of the other providers, meaningless to this one.
    foreign_header_prefix: str


FORMATS: dict[str, Format] = {
    "anthropic": Format(
        lambda request, route: anthropic_convert.from_canonical(request, route.upstream_model, route.max_output_tokens),
        anthropic_convert.response_to_canonical,
        anthropic_convert.error_to_canonical,
        anthropic_convert.StreamDecoder,
        "openai-",
    ),
    "openai": Format(
        lambda request, route: openai_chat_convert.from_canonical(request, route.upstream_model),
        openai_chat_convert.response_to_canonical,
        openai_chat_convert.error_to_canonical,
        openai_chat_convert.StreamDecoder,
        "anthropic-",
    ),
}


def openai_error_body(status: int, error: canonical.Error) -> bytes:
    """A canonical error as an OpenAI error body (the Chat and Responses APIs share it)."""
    return openai_chat_convert.error_body(status, error)
