"""Anthropic Messages (``POST {base_url}/v1/messages``): the wire format's own knowledge.

``adapter.py`` prepares and authenticates a call; ``convert.py`` converts requests,
responses and errors to and from the canonical model, ``stream.py`` its streams;
``tools.py`` its tools and tool calls. The Rust core reads its usage
(``extract_usage("anthropic", body)``, ``rust/src/anthropic.rs``).
"""

from tollway.providers.anthropic.adapter import ADAPTER, DEFAULT_VERSION, AnthropicAdapter

__all__ = ["ADAPTER", "DEFAULT_VERSION", "AnthropicAdapter"]
