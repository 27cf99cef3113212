"""What every provider module offers, and the shared input-token estimate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import orjson

from tollway.config import ModelRoute, Provider

# Conservative: real tokenizers average ~4 bytes per token on prose; 3 over-counts
# nearly all text, so holds are on the safe side of the actual input cost.
BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 8
TOKENS_PER_IMAGE = 1600  # above both providers' per-image maximum at default detail

# Request headers worth passing on to the provider; everything else (the client's
# key above all) stays here.
_FORWARDED_PREFIXES = ("anthropic-", "openai-")
_FORWARDED = {"content-type", "accept", "user-agent", "idempotency-key"}
# ... except those that choose whose account pays: the OpenAI SDKs send these
# whenever OPENAI_ORG_ID / OPENAI_PROJECT_ID are set in the caller's environment.
# A provider's own organization and project come from its config.
_NEVER_FORWARDED = {"openai-organization", "openai-project"}


@dataclass(slots=True)
class PreparedRequest:
    body: bytes
    strip_usage_chunk: bool = False


class ProviderAdapter(Protocol):
    kind: str  # the wire format, as the Rust core names it (extract_usage, stream kind)
    min_output_tokens: int  # the smallest output limit the provider accepts

    def endpoint(self, provider: Provider) -> str: ...

    def estimate_input_tokens(self, payload: dict[str, Any], body_len: int, context_window: Optional[int]) -> int:
        """An upper estimate of the call's input tokens (``context_window``: the model's, if known)."""
        ...

    def requested_max_tokens(self, payload: dict[str, Any]) -> Optional[int]: ...

    def prepare(
        self,
        payload: dict[str, Any],
        raw: bytes,
        upstream_model: str,
        max_tokens: Optional[int],
        stream: bool,
    ) -> PreparedRequest: ...

    def headers(self, provider: Provider, client_headers: dict[str, str]) -> list[tuple[str, str]]: ...

    # The provider's other routes (None: it has none).
    def count_tokens_url(self, provider: Provider) -> Optional[str]: ...

    def embeddings_url(self, provider: Provider) -> Optional[str]: ...

    # A model as this wire format's SDK reads it (GET /v1/models, GET /v1/models/{id}).
    def model_object(self, name: str, route: ModelRoute, created: int) -> dict[str, Any]: ...

    def model_list(self, objects: list[dict[str, Any]]) -> dict[str, Any]: ...


class MessagesAdapter:
    """What the chat completions and Anthropic messages adapters share."""

    min_output_tokens = 1
    path = ""  # the generation route, after the provider's base URL

    def endpoint(self, provider: Provider) -> str:
        return provider.base_url.rstrip("/") + self.path

    def estimate_input_tokens(self, payload: dict[str, Any], body_len: int, context_window: Optional[int]) -> int:
        return estimate_input_tokens(payload, body_len)


def rename_and_clamp(payload: dict[str, Any], upstream_model: str, field: str, max_tokens: Optional[int]) -> bool:
    """Set the provider's model name and (when the cap requires it) the output limit
    ``field``; True when ``payload`` changed (the client's bytes cannot be sent as they are)."""
    changed = False
    if payload.get("model") != upstream_model:
        payload["model"] = upstream_model
        changed = True
    if max_tokens is not None:
        payload[field] = max_tokens
        changed = True
    return changed


def upstream_headers(
    client_headers: dict[str, str], ours: dict[str, str], defaults: Optional[dict[str, str]] = None
) -> list[tuple[str, str]]:
    """Headers for the provider: ``defaults``, overridden by the client's forwardable
    headers, overridden by ``ours`` (the provider key, the content type)."""
    out = dict(defaults) if defaults else {}
    out["accept-encoding"] = "identity"  # we read the body: no compression
    for name, value in client_headers.items():
        if (name in _FORWARDED or name.startswith(_FORWARDED_PREFIXES)) and name not in _NEVER_FORWARDED:
            out[name] = value
    out.update(ours)
    return list(out.items())


def _image_bytes(part: dict[str, Any]) -> int:
    """Bytes of inline image data in one content part (not text: it is billed per image)."""
    if part.get("type") == "image_url":
        url = (part.get("image_url") or {}).get("url", "")
        return len(url) if isinstance(url, str) else 0
    if part.get("type") in ("image", "document"):
        source = part.get("source") or {}
        data = source.get("data", "")
        return len(data) if isinstance(data, str) else 0
    return 0


def estimate_input_tokens(payload: dict[str, Any], body_len: int) -> int:
    """An upper estimate of the input tokens of a request.

    Every byte of the JSON body counts (keys and punctuation too), at 3 bytes per
    token, plus a per-message overhead; inline image data is replaced by a fixed
    per-image count, since providers bill images by size, not by base64 length.
    """
    messages = payload.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    billable = body_len
    images = 0
    if count and body_len > 4096:
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for part in content:
                if isinstance(part, dict):
                    inline = _image_bytes(part)
                    if inline or part.get("type") in ("image", "image_url"):
                        images += 1
                        billable -= inline
                    elif part.get("type") == "tool_result" and isinstance(part.get("content"), list):
                        for inner in part["content"]:
                            if isinstance(inner, dict) and _image_bytes(inner):
                                images += 1
                                billable -= _image_bytes(inner)
    return -(-billable // BYTES_PER_TOKEN) + count * TOKENS_PER_MESSAGE + images * TOKENS_PER_IMAGE


# What real tokenizers average on English prose; used where the count is reported, not held.
BYTES_PER_TOKEN_TYPICAL = 4


def _text_bytes(content: Any) -> tuple[int, int]:
    """(text bytes, images) of a system prompt or a message's content: strings, text blocks,
    tool calls' names and inputs, tool results; image and document blocks counted apart."""
    if isinstance(content, str):
        return len(content.encode("utf-8", "surrogatepass")), 0
    size = images = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("image", "document", "image_url"):
            images += 1
        elif kind == "tool_use":
            size += len(orjson.dumps(block.get("input"))) + len(str(block.get("name", "")))
        elif kind == "tool_result":
            inner, inner_images = _text_bytes(block.get("content"))
            size, images = size + inner, images + inner_images
        else:
            for field in ("text", "thinking"):
                if isinstance(block.get(field), str):
                    size += len(block[field].encode("utf-8", "surrogatepass"))
    return size, images


def count_message_tokens(payload: dict[str, Any]) -> int:
    """An estimate of a Messages request's input tokens, as close as we can make it without
    the model's tokenizer: text at BYTES_PER_TOKEN_TYPICAL bytes a token, tool definitions as
    their JSON, a per-message overhead and a fixed count per image or document."""
    size, images = _text_bytes(payload.get("system"))
    messages = payload.get("messages")
    messages = messages if isinstance(messages, list) else []
    for message in messages:
        more, more_images = _text_bytes(message.get("content") if isinstance(message, dict) else None)
        size, images = size + more, images + more_images
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        size += len(orjson.dumps(tools))
    return -(-size // BYTES_PER_TOKEN_TYPICAL) + len(messages) * TOKENS_PER_MESSAGE // 2 + images * TOKENS_PER_IMAGE


def estimate_embedding_tokens(inputs: list[Any]) -> int:
    """An upper estimate of an embeddings request's input tokens (for the hold): strings at
    BYTES_PER_TOKEN bytes a token, token-id arrays by their length."""
    tokens = 0
    for item in inputs:
        if isinstance(item, str):
            tokens += -(-len(item.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)
        elif isinstance(item, list):
            tokens += len(item)
        else:
            tokens += 1
    return max(tokens, 1)
