"""OpenAI Chat Completions (``POST {base_url}/chat/completions``)."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.config import ModelRoute, Provider
from tollway.providers.base import MessagesAdapter, PreparedRequest, rename_and_clamp, upstream_headers


class OpenAIAdapter(MessagesAdapter):
    kind = "openai"
    path = "/chat/completions"

    def requested_max_tokens(self, payload: dict[str, Any]) -> Optional[int]:
        value = payload.get("max_completion_tokens")
        if value is None:
            value = payload.get("max_tokens")
        return value

    def prepare(
        self,
        payload: dict[str, Any],
        raw: bytes,
        upstream_model: str,
        max_tokens: Optional[int],
        stream: bool,
    ) -> PreparedRequest:
        """The upstream body: renamed model, clamped output, usage asked for in streams.

        The client's bytes go through untouched unless one of those changes is needed.
        """
        # The clamp goes where the client put its limit (max_tokens, the older name, only alone).
        field = (
            "max_tokens"
            if "max_tokens" in payload and "max_completion_tokens" not in payload
            else "max_completion_tokens"
        )
        changed = rename_and_clamp(payload, upstream_model, field, max_tokens)
        strip = False
        if stream:
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                strip = True
                changed = True
        return PreparedRequest(orjson.dumps(payload) if changed else raw, strip)

    def headers(self, provider: Provider, client_headers: dict[str, str]) -> list[tuple[str, str]]:
        ours = {"content-type": "application/json"}
        if provider.api_key:
            ours["authorization"] = f"Bearer {provider.api_key}"
        if provider.organization:
            ours["openai-organization"] = provider.organization
        if provider.project:
            ours["openai-project"] = provider.project
        return upstream_headers(client_headers, ours)

    def count_tokens_url(self, provider: Provider) -> Optional[str]:
        return None

    def embeddings_url(self, provider: Provider) -> Optional[str]:
        return provider.base_url.rstrip("/") + "/embeddings"

    def model_object(self, name: str, route: ModelRoute, created: int) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": route.provider.name}

    def model_list(self, objects: list[dict[str, Any]]) -> dict[str, Any]:
        return {"object": "list", "data": objects}


ADAPTER = OpenAIAdapter()
