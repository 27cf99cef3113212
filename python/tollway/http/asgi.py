"""ASGI adapter over the request/response core (served by granian by default; any ASGI server works)."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Awaitable, Callable, Optional

from tollway.http.core import App, Request, Response, StreamResponse

log = logging.getLogger("tollway.asgi")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    def __str__(self) -> str:
        return "the connection ended before the body was complete"


class BodyTimeout(Exception):
    pass


def _content_length(headers: dict[str, str]) -> Optional[int]:
    """The body length the client declared (None when it did not, or not as a number)."""
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class ASGIAdapter:
    def __init__(self, app: App, body_timeout: float = 30.0) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.reads = _BodyReads(body_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The HTTP path is written out in this one coroutine (no helper coroutines on
        # the common path: each await of one is a frame and a generator per request).
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        # ASGI servers send header names lower-cased.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        # The body is complete at the last message, or as soon as the declared
        # Content-Length is in: granian sends a body with more_body set and then an
        # empty last message, which is not waited for (a round trip through the
        # server's threads, ~0.1 ms of an idle gateway's added latency).
        declared = _content_length(headers)
        try:
            if declared == 0 or (declared is None and "transfer-encoding" not in headers):
                message = await receive()  # no body to wait for
            else:
                message = await self.reads.receive(receive)
        except BodyTimeout:
            await self._send_plain(send, self.app.too_slow(path, self.body_timeout))
            return
        except Exception as exc:  # a malformed body (a bad chunk size, say): the server cannot read it
            await self._send_plain(send, self.app.unreadable_body(path, headers, exc))
            return
        body = message.get("body", b"")
        if message["type"] == "http.request" and (not message.get("more_body", False) or len(body) == declared):
            # the whole body in one message (the usual case)
            if len(body) > self.app.max_body_bytes:
                await self._send_plain(send, self.app.too_large(path))
                return
        else:
            try:
                body = await self._read_body(receive, declared, message)
            except BodyTooLarge:
                await self._send_plain(send, self.app.too_large(path))  # type: ignore[arg-type]
                return
            except BodyTimeout:
                await self._send_plain(send, self.app.too_slow(path, self.body_timeout))
                return
            except Exception as exc:  # ClientGone included
                # granian reports a malformed body (a bad chunk size) as a disconnect:
                # answer 400 (and close); to a client really gone, the write just fails.
                try:
                    await self._send_plain(send, self.app.unreadable_body(path, headers, exc))
                except Exception:
                    log.debug("client gone before its body was read", exc_info=True)
                return
        request = Request(
            method=scope["method"],
            path=path,
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
        )
        # A stream keeps this coroutine alive for as long as it lasts, and the cyclic GC
        # walks everything it refers to: let go of the request first.
        del scope, headers, message, body
        response = await self.app.handle(request)
        del request
        if not isinstance(response, StreamResponse):
            await send(
                {"type": "http.response.start", "status": response.status, "headers": _encode_headers(response.headers)}
            )
            await send({"type": "http.response.body", "body": response.body})
            return
        # The stream, written out here rather than in a helper coroutine (one frame less per held stream).
        chunks, close = response.chunks, response.close
        start = {"type": "http.response.start", "status": response.status, "headers": _encode_headers(response.headers)}
        del response
        watch = _DisconnectWatch(receive, close)
        try:
            await send(start)
            del start
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            # The client went away while we were writing (each server raises its own
            # error for that); the stream settles itself on close().
            log.debug("stream to the client ended early", exc_info=True)
        finally:
            close()
            watch.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.app.startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.app.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(
        self, receive: Receive, declared: Optional[int], message: Optional[dict[str, Any]] = None
    ) -> bytes:
        """The body, starting with ``message`` (the first one, already received) if given."""
        limit = self.app.max_body_bytes
        if declared is not None and declared > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            if message is None:
                message = await self.reads.receive(receive)
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
            if not message.get("more_body", False) or size == declared:
                break
            message = None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _send_plain(send: Send, response: Response) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": _encode_headers(response.headers),
            }
        )
        await send({"type": "http.response.body", "body": response.body})


class _BodyReads:
    """A body that stops arriving for ``timeout`` seconds ends the request (408).

    granian has no body timeout. Rather than a timer per ``receive()`` (on every
    POST), pending reads are kept with the tick they started at; one timer a second
    cancels those older than the timeout.
    """

    __slots__ = ("ticks", "tick", "pending", "expired", "timer")

    def __init__(self, timeout: float) -> None:
        self.ticks = max(1, math.ceil(timeout))
        self.tick = 0
        self.pending: dict[Any, int] = {}
        self.expired: set[Any] = set()
        self.timer: Any = None

    async def receive(self, receive: Receive) -> dict[str, Any]:
        awaitable = receive()
        if not asyncio.isfuture(awaitable):
            awaitable = asyncio.ensure_future(awaitable)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(1.0, self._sweep)
        self.pending[awaitable] = self.tick
        try:
            return await awaitable
        except asyncio.CancelledError:
            if awaitable in self.expired:
                raise BodyTimeout from None
            raise
        finally:
            self.pending.pop(awaitable, None)
            self.expired.discard(awaitable)

    def _sweep(self) -> None:
        self.tick += 1
        oldest = self.tick - self.ticks
        for awaitable, started in list(self.pending.items()):
            if started < oldest and awaitable not in self.expired:
                self.expired.add(awaitable)
                awaitable.cancel()
        self.timer = asyncio.get_running_loop().call_later(1.0, self._sweep)


class _DisconnectWatch:
    """Calls ``on_disconnect`` when ``http.disconnect`` arrives while a stream is sent.

    granian's ``receive()`` returns a future-like object: a done-callback on it
    watches the client without a task per stream (a stream held for minutes would
    otherwise keep a Task, its coroutine and their futures alive, all of which the
    cyclic GC walks). Servers whose ``receive()`` is a coroutine get a task.
    """

    __slots__ = ("receive", "on_disconnect", "pending", "stopped")

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self.receive = receive
        self.on_disconnect = on_disconnect
        self.stopped = False
        self.pending: Any = None
        self._arm()

    def _arm(self) -> None:
        awaitable = self.receive()
        if not asyncio.isfuture(awaitable):
            awaitable = asyncio.ensure_future(awaitable)
        self.pending = awaitable
        awaitable.add_done_callback(self._received)

    def _received(self, fut: Any) -> None:
        if self.stopped or fut.cancelled():
            return
        if fut.exception() is not None:
            self.on_disconnect()  # the server can no longer tell: treat as gone
            return
        if fut.result().get("type") == "http.disconnect":
            self.on_disconnect()
            return
        self._arm()  # anything else (an empty trailing body message): keep watching

    def stop(self) -> None:
        self.stopped = True
        pending, self.pending = self.pending, None  # no cycle left through the future's callback
        if pending is not None and not pending.done():
            pending.cancel()
