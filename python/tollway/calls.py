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

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from tollway.capabilities import Capability
from tollway.http.core import AnyResponse, new_request_id
from tollway.proxy.handler import Origin

if TYPE_CHECKING:
    from tollway.keys.auth import Authenticator
    from tollway.proxy.handler import Proxy
    from tollway.threads.turns import ThreadTurns


Respond = Callable[..., Awaitable[AnyResponse]]  # tollway.responses.routes: POST /v1/responses for a key


class Calls:
    def __init__(
        self, auth: "Authenticator", proxy: "Proxy", turns: "ThreadTurns", respond: Optional[Respond] = None
    ) -> None:
        self.auth = auth
        self.proxy = proxy
        self.turns = turns
        self.respond = respond

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

    async def responses(self, key_id: str, payload: dict[str, Any], request_id: Optional[str] = None) -> AnyResponse:
        """A Responses API call (``POST /v1/responses``) for ``key_id``, stored as the route stores it."""
        if self.respond is None:
            raise RuntimeError("the Responses capability is not part of this gateway")
        key = await self.auth.key_by_id(key_id)
        return await self.respond(Origin(request_id or new_request_id()), key, dict(payload))


def capability(*, auth: "Authenticator", proxy: "Proxy", turns: "ThreadTurns", respond: Respond) -> Capability:
    """Provides ``calls`` (this module's ``Calls``) to the capabilities after it (jobs)."""
    return Capability(provides={"calls": Calls(auth, proxy, turns, respond)})
