"""Prepare, address and authenticate a Responses call; estimate its input."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from tollway.config import Provider
from tollway.providers import openai_chat
from tollway.providers.base import (
    BYTES_PER_TOKEN,
    TOKENS_PER_IMAGE,
    TOKENS_PER_MESSAGE,
    PreparedRequest,
    rename_and_clamp,
)

KIND = "openai_responses"
# The Responses API refuses a max_output_tokens below 16.
MIN_OUTPUT_TOKENS = 16
_IMAGE_PARTS = ("input_image", "input_file")
# Input the provider adds from its own storage, which the request body does not show.
STORED_CONTEXT = ("previous_response_id", "conversation", "prompt")


class OpenAIResponsesAdapter:
    kind = KIND
    min_output_tokens = MIN_OUTPUT_TOKENS

    def endpoint(self, provider: Provider) -> str:
        return provider.base_url.rstrip("/") + "/responses"

    def requested_max_tokens(self, payload: dict[str, Any]) -> Optional[int]:
        return payload.get("max_output_tokens")

    def prepare(
        self,
        payload: dict[str, Any],
        raw: bytes,
        upstream_model: str,
        max_tokens: Optional[int],
        stream: bool,
    ) -> PreparedRequest:
        """The upstream body: renamed model, clamped ``max_output_tokens``; else the client's bytes.

        Streams always end with a ``response.completed`` (or ``.incomplete`` /
        ``.failed``) event carrying the usage: nothing to ask for, nothing to strip.
        """
        changed = rename_and_clamp(payload, upstream_model, "max_output_tokens", max_tokens)
        return PreparedRequest(orjson.dumps(payload) if changed else raw, False)

    def headers(self, provider: Provider, client_headers: dict[str, str]) -> list[tuple[str, str]]:
        return openai_chat.ADAPTER.headers(provider, client_headers)  # the same key, organization and project

    def estimate_input_tokens(self, payload: dict[str, Any], body_len: int, context_window: Optional[int]) -> int:
        """An upper estimate of the input: every body byte at 3 bytes per token, plus a
        per-item overhead; inline image and file data count as one image each.

        A request that continues stored state (``previous_response_id``, ``conversation``,
        a stored ``prompt``) is billed for input the body does not show: its estimate is
        the model's whole context window, when known (the hold shrinks to the real cost
        when the call settles)."""
        body = self._body_estimate(payload, body_len)
        if context_window is not None and any(payload.get(name) is not None for name in STORED_CONTEXT):
            return max(body, context_window)
        return body

    def _body_estimate(self, payload: dict[str, Any], body_len: int) -> int:
        items = payload.get("input")
        if not isinstance(items, list):
            return -(-body_len // BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE
        billable, images = body_len, 0
        if body_len > 4096:
            for item in items:
                content = item.get("content") if isinstance(item, dict) else None
                for part in content if isinstance(content, list) else ():
                    if isinstance(part, dict) and part.get("type") in _IMAGE_PARTS:
                        images += 1
                        billable -= sum(
                            len(v) for k, v in part.items() if k in ("image_url", "file_data") and isinstance(v, str)
                        )
        return -(-billable // BYTES_PER_TOKEN) + len(items) * TOKENS_PER_MESSAGE + images * TOKENS_PER_IMAGE


ADAPTER = OpenAIResponsesAdapter()
