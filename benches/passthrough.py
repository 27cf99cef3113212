"""A bare pass-through proxy: the bar Tollway has to beat in ``benches/load.py``.

ASGI app forwarding ``POST /v1/chat/completions`` (and ``/v1/messages``) to an
upstream with ONE shared ``aiohttp.ClientSession``. No auth, no caps, no
metering: the request body goes up as is, the response comes back as is; an
``text/event-stream`` response is relayed chunk by chunk as it arrives.

Run under granian like Tollway (``benches/load.py`` does this)::

    PASSTHROUGH_UPSTREAM=http://127.0.0.1:9000 PASSTHROUGH_UPSTREAM_KEY=sk-fake-openai \\
      granian --interface asgi --loop uvloop --workers 1 \\
        --backpressure 16384 --backlog 4096 --working-dir benches passthrough:app

Environment:
    PASSTHROUGH_UPSTREAM      upstream origin, e.g. http://127.0.0.1:9000 (no /v1)
    PASSTHROUGH_UPSTREAM_KEY  sent upstream as ``Authorization: Bearer <key>``
"""

from __future__ import annotations

import os

import aiohttp

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:9000").rstrip("/")
UPSTREAM_KEY = os.environ.get("PASSTHROUGH_UPSTREAM_KEY", "sk-fake-openai")
ROUTES = frozenset({"/v1/chat/completions", "/v1/messages"})
# Request headers worth forwarding (everything else is hop-by-hop or irrelevant here).
FORWARD = frozenset({b"content-type", b"anthropic-version", b"anthropic-beta", b"accept"})

_session: aiohttp.ClientSession | None = None


def _get_session() -> aiohttp.ClientSession:
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(
            # limit=0: no cap on pooled upstream connections (the default of 100
            # would queue the 5,000-stream hold test inside the client).
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
    return _session


async def _lifespan(receive, send) -> None:
    global _session
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            _get_session()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
                _session = None
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionResetError("client went away")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _simple(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind != "http":
        return
    if scope["path"] not in ROUTES:
        await _simple(send, 404, b'{"error":"not found"}')
        return
    if scope["method"] != "POST":
        await _simple(send, 405, b'{"error":"method not allowed"}')
        return

    body = await _read_body(receive)
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in FORWARD}
    headers["Authorization"] = "Bearer " + UPSTREAM_KEY
    headers["x-api-key"] = UPSTREAM_KEY
    try:
        async with _get_session().post(UPSTREAM + scope["path"], data=body, headers=headers) as resp:
            ctype = resp.headers.get("Content-Type", "application/json")
            if ctype.startswith("text/event-stream"):
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": [(b"content-type", ctype.encode()), (b"cache-control", b"no-cache")],
                    }
                )
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                data = await resp.read()
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": data})
    except aiohttp.ClientError as exc:
        # Headers may already be out (mid-stream failure): then there is nothing to send.
        try:
            await _simple(send, 502, b'{"error":"upstream: %s"}' % type(exc).__name__.encode())
        except Exception:
            pass
