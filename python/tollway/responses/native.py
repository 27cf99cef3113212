"""POST /v1/responses to a provider that serves the Responses API: passed through natively.

Byte for byte when nothing needs changing, and capped, clamped and metered exactly as
chat completions: the same ``Proxy.prepare`` / ``Proxy.forward`` with the Responses
wire format's adapter (its endpoint, its ``max_output_tokens``, its usage). Cached
input tokens are recorded as cache reads and reasoning tokens as output, as for chat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from tollway._core import StreamOutcome
from tollway.config import ModelRoute
from tollway.http.core import AnyResponse, Request
from tollway.keys import ApiKey
from tollway.providers import openai_responses

if TYPE_CHECKING:
    from tollway.proxy.handler import Proxy


async def passthrough(
    proxy: "Proxy",
    request: Request,
    key: ApiKey,
    route: ModelRoute,
    payload: dict[str, Any],
    raw: Optional[bytes],
    started: float,
    then: Optional[Callable[[StreamOutcome], None]] = None,
) -> AnyResponse:
    """Forward a Responses request to ``route``'s provider in the Responses format
    (``then``: called with a 2xx stream's outcome once it settled, from any thread).

    ``raw`` is the client's body when ``payload`` is exactly what it sent (forwarded
    unchanged unless the model is renamed or ``max_output_tokens`` clamped), else None.
    """
    stream = payload.get("stream") is True
    call = proxy.prepare(
        key, route, payload, raw, request.headers, request.request_id, stream, started, adapter=openai_responses.ADAPTER
    )
    return await proxy.forward(call, stream, then)
