"""One module per upstream wire format: how to prepare a request and authenticate to it."""

from tollway.providers import anthropic, openai, openai_responses
from tollway.providers.base import ProviderAdapter, PreparedRequest

# By wire format. A provider's own format is its ``kind``; "openai_responses" is the
# Responses API of an openai provider that serves it (Provider.responses).
ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": openai.ADAPTER,
    "anthropic": anthropic.ADAPTER,
    openai_responses.KIND: openai_responses.ADAPTER,
}

__all__ = ["ADAPTERS", "PreparedRequest", "ProviderAdapter"]
