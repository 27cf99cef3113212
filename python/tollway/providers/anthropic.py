"""Anthropic Messages (``POST {base_url}/v1/messages``)."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.config import Provider
from tollway.providers.base import MessagesAdapter, PreparedRequest, upstream_headers

DEFAULT_VERSION = "2023-06-01"
_DEFAULTS = {"anthropic-version": DEFAULT_VERSION}  # the client's own version wins


class AnthropicAdapter(MessagesAdapter):
    kind = "anthropic"

    def requested_max_tokens(self, payload: dict[str, Any]) -> Optional[int]:
        return payload.get("max_tokens")

    def prepare(
        self,
        payload: dict[str, Any],
        raw: bytes,
        upstream_model: str,
        max_tokens: Optional[int],
        stream: bool,
    ) -> PreparedRequest:
        changed = False
        if payload.get("model") != upstream_model:
            payload["model"] = upstream_model
            changed = True
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
            changed = True
        # Anthropic streams always carry usage (message_start and message_delta).
        return PreparedRequest(orjson.dumps(payload) if changed else raw, False)

    def headers(self, provider: Provider, client_headers: dict[str, str]) -> list[tuple[str, str]]:
        ours = {"content-type": "application/json"}
        if provider.api_key:
            ours["x-api-key"] = provider.api_key
        return upstream_headers(client_headers, ours, _DEFAULTS)


ADAPTER = AnthropicAdapter()
