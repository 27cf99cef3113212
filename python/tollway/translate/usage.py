"""Token usage in each provider's shape.

OpenAI's ``prompt_tokens`` includes cached tokens; Anthropic's ``input_tokens``
excludes cache reads and cache writes, which it reports separately.
"""

from __future__ import annotations

from typing import Any


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def anthropic_usage(openai_usage: Any) -> dict[str, int]:
    """Anthropic usage for an OpenAI ``usage`` object (zeros when absent)."""
    usage = openai_usage if isinstance(openai_usage, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = min(_count(details.get("cached_tokens")) if isinstance(details, dict) else 0, prompt)
    return {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def openai_usage(anthropic_usage: Any) -> dict[str, Any]:
    """OpenAI usage for an Anthropic ``usage`` object (zeros when absent)."""
    usage = anthropic_usage if isinstance(anthropic_usage, dict) else {}
    cache_read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + cache_read + _count(usage.get("cache_creation_input_tokens"))
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "audio_tokens": 0},
    }
