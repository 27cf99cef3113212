"""Anthropic Messages (``POST {base_url}/v1/messages``)."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.config import ModelRoute, Provider
from tollway.providers.base import MessagesAdapter, PreparedRequest, rename_and_clamp, upstream_headers

DEFAULT_VERSION = "2023-06-01"
_DEFAULTS = {"anthropic-version": DEFAULT_VERSION}  # the client's own version wins


class AnthropicAdapter(MessagesAdapter):
    kind = "anthropic"
    path = "/v1/messages"

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
        changed = rename_and_clamp(payload, upstream_model, "max_tokens", max_tokens)
        # Anthropic streams always carry usage (message_start and message_delta).
        return PreparedRequest(orjson.dumps(payload) if changed else raw, False)

    def headers(self, provider: Provider, client_headers: dict[str, str]) -> list[tuple[str, str]]:
        ours = {"content-type": "application/json"}
        if provider.api_key:
            ours["x-api-key"] = provider.api_key
        return upstream_headers(client_headers, ours, _DEFAULTS)

    def count_tokens_url(self, provider: Provider) -> Optional[str]:
        return provider.base_url.rstrip("/") + "/v1/messages/count_tokens"

    def embeddings_url(self, provider: Provider) -> Optional[str]:
        return None  # Anthropic has no embeddings API

    def model_object(self, name: str, route: ModelRoute, created: int) -> dict[str, Any]:
        return {"type": "model", "id": name, "display_name": name, "created_at": _CREATED_AT}

    def model_list(self, objects: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "data": objects,
            "has_more": False,
            "first_id": objects[0]["id"] if objects else None,
            "last_id": objects[-1]["id"] if objects else None,
        }


_CREATED_AT = "1970-01-01T00:00:00Z"  # what a configured model's release date is, we do not know
ADAPTER = AnthropicAdapter()
