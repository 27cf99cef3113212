"""Model calls and thread turns with no HTTP request behind them.

The routes and this module go through the same call path (``Proxy.call`` and
``ThreadTurns.run``): the same checks, hold, settlement, usage event, hooks and
persistence. What a route takes from its HTTP request (the key's secret, the
body, a request id) is given here as plain values: a key id, a payload or a
thread id and content, options. The result is the route's own response (a
``Response`` whose body is JSON, or a ``StreamResponse`` to iterate); the error
is the route's ``HTTPError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from tollway.http.core import AnyResponse, new_request_id
from tollway.proxy.handler import Origin

if TYPE_CHECKING:
    from tollway.keys.auth import Authenticator
    from tollway.proxy.handler import Proxy
    from tollway.threads.turns import ThreadTurns


class Calls:
    def __init__(self, auth: "Authenticator", proxy: "Proxy", turns: "ThreadTurns") -> None:
        self.auth = auth
        self.proxy = proxy
        self.turns = turns

    async def model(
        self, key_id: str, payload: dict[str, Any], shape: str, request_id: Optional[str] = None
    ) -> AnyResponse:
        """A model call in the wire format ``shape`` (a name of ``tollway.providers.ADAPTERS``),
        billed to ``key_id``, exactly as the route of that format would serve it."""
        key = await self.auth.key_by_id(key_id)
        return await self.proxy.call(key, dict(payload), shape, Origin(request_id or new_request_id()))

    async def turn(
        self, key_id: str, thread_id: str, content: Any, request_id: Optional[str] = None, **options: Any
    ) -> AnyResponse:
        """A turn of a thread, as ``POST /v1/threads/{id}/messages`` with ``content`` and
        ``options`` (model, max_tokens, stream, tool_ids...) would run it for ``key_id``."""
        key = await self.auth.key_by_id(key_id)
        thread = await self.turns.visible_thread(key, thread_id)
        return await self.turns.run(
            Origin(request_id or new_request_id()), key, thread, {**options, "content": content}
        )
