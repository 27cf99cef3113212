"""OpenAI Chat Completions (``POST {base_url}/chat/completions``): the wire format's own knowledge.

``adapter.py`` prepares and authenticates a call; ``request.py`` and ``convert.py``
convert requests, responses and errors to and from the canonical model, ``stream.py``
its streams; ``tools.py`` its tools and tool calls. The Rust core reads its usage
(``extract_usage("openai", body)``, ``rust/src/openai.rs``).
"""

from tollway.providers.openai_chat.adapter import ADAPTER, OpenAIAdapter

__all__ = ["ADAPTER", "OpenAIAdapter"]
