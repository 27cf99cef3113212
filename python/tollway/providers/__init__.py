"""One module per upstream wire format: how to prepare a request and authenticate to it."""

from tollway.providers import anthropic, openai
from tollway.providers.base import ProviderAdapter, PreparedRequest

ADAPTERS: dict[str, ProviderAdapter] = {"openai": openai.ADAPTER, "anthropic": anthropic.ADAPTER}

__all__ = ["ADAPTERS", "PreparedRequest", "ProviderAdapter"]
