"""Robyn adapter over the request/response core (``tollway serve --server robyn``).

Only the mapping between Robyn's request/response types and ours lives here;
routing, auth, caps and errors are the core's. What Robyn 0.88 does not do, the
adapter does itself (README, "Servers"):

- it reads the whole body whatever ROBYN_MAX_PAYLOAD_SIZE says: we answer 413 in
  the route's shape from our own limit;
- it ignores SIGTERM in a single process: we catch it, drain requests and streams
  in flight (bounded), flush the usage writer and exit 0;
- it notices a client that left only when a later request arrives: our streams do
  not depend on it, the Rust stream settles when the upstream ends;
- it sets no header or keep-alive timeout on actix (``KeepAlive::Os``, a request
  timeout of 0) and drops the ``client_timeout`` / ``keep_alive_timeout`` that
  ``Robyn.start`` takes before they reach actix: we pass ours anyway, so that they
  apply once Robyn hands them on; until then only the connection guard closes
  connections that send nothing;
- it parses a multipart/form-data body itself and hands over its parts' data run
  together: we write the form back from its ``form_data`` and ``files`` (a file's
  field name is lost there: every file part is named ``file``, as POST /v1/files has it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
from typing import Any, AsyncIterator, Callable
from urllib.parse import unquote

from tollway._core import unsettled_connections
from tollway.http.core import App, Request, Response, StreamResponse

log = logging.getLogger("tollway.robyn")

_METHODS = ("GET", "POST", "PATCH", "DELETE", "PUT")
# Paths no route matches still get the core's 404/405 in our error shape.
_CATCH_ALL = ("/:a", "/:a/:b", "/:a/:b/:c", "/:a/:b/:c/:d", "/:a/:b/:c/:d/:e")


def _robyn_path(template: str, path_params: set[str]) -> str:
    """Robyn's route syntax: ``:name`` for one segment, ``*name`` (last) for the rest of the path."""
    for name in path_params:
        template = template.replace("{" + name + "}", "*" + name)
    return template.replace("{", ":").replace("}", "")


def build_robyn(app: App) -> Any:
    # Robyn's Config parses sys.argv when robyn is imported: give it only what it should see.
    sys.argv = sys.argv[:1] + ["--log-level", os.environ.get("TOLLWAY_ROBYN_LOG_LEVEL", "WARNING")]
    from robyn import Headers, Robyn, StreamingResponse
    from robyn import Response as RobynResponse
    from robyn.argument_parser import Config

    config = Config()
    config.disable_openapi = True
    server = Robyn(__file__, config=config)

    def to_headers(pairs: list[tuple[str, str]]) -> Any:
        headers = Headers({})
        for name, value in pairs:
            headers.append(name, value)
        return headers

    def to_robyn(response: Response) -> Any:
        return RobynResponse(
            status_code=response.status, headers=to_headers(response.headers), description=response.body
        )

    relaying = [0]  # streamed bodies still being handed to Robyn (the drain waits for them)

    async def relay(stream: StreamResponse) -> AsyncIterator[bytes]:
        relaying[0] += 1
        try:
            async for chunk in stream.chunks:
                yield chunk
        finally:
            relaying[0] -= 1
            stream.close()

    def form_body(request: Any, content_type: str) -> bytes:
        boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
        out = bytearray()
        for name, value in request.form_data.items():
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += value.encode("utf-8") + b"\r\n"
        for filename, data in request.files.items():
            filename = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
            out += b"Content-Type: application/octet-stream\r\n\r\n" + bytes(data) + b"\r\n"
        return bytes(out + f"--{boundary}--\r\n".encode())

    async def handle(request: Any) -> Any:
        # Robyn hands over the path and the query values still percent-encoded;
        # decode them as ASGI servers do, so that both servers see the same request.
        path = unquote(request.url.path, errors="replace")
        body = request.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        content_type = request.headers.get("content-type") or ""
        if content_type.lower().startswith("multipart/form-data") and "boundary=" in content_type:
            body = form_body(request, content_type)
        if len(body) > app.max_body_bytes:
            return to_robyn(app.too_large(path))  # type: ignore[arg-type]
        ours = Request(
            method=request.method.upper(),
            path=path,
            query_string="&".join(f"{k}={v}" for k, v in request.query_params.multi_items()),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        response = await app.handle(ours)
        if isinstance(response, StreamResponse):
            content_type = next((v for k, v in response.headers if k == "content-type"), "text/event-stream")
            return StreamingResponse(
                content=relay(response),
                status_code=response.status,
                headers=to_headers(response.headers),
                media_type=content_type,
            )
        return to_robyn(response)

    registered = set()
    for method, template in app.router.templates:
        route = (method, _robyn_path(template, app.router.path_params))
        if route not in registered:
            registered.add(route)
            server.add_route(method, route[1], handle)
    for path in _CATCH_ALL:
        for method in _METHODS:
            if (method, path) not in registered:
                server.add_route(method, path, handle)

    stopping = asyncio.Event()

    async def startup() -> None:
        await app.startup()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        loop.create_task(_exit_when(stopping, app, lambda: relaying[0]))

    server.startup_handler(startup)
    return server


async def _exit_when(stopping: asyncio.Event, app: App, relaying: Callable[[], int]) -> None:
    await stopping.wait()
    log.info("stopping: draining requests in flight and the usage writer")
    code = 0
    try:
        await app.shutdown()
    except Exception:
        log.exception("shutdown failed")
        code = 1
    # A stream settles when its upstream ends, which can be before Robyn has taken its
    # last chunks: wait (bounded) for every relay to end. actix then still has to
    # write what it holds (the last chunks, the chunked body's end), and os._exit
    # ends the process at once: wait, at least FLUSH_GRACE_S and at most FLUSH_MAX_S,
    # until no connection is still taking a response (bytes the client has not
    # acknowledged, or data sent in the last FLUSH_QUIET_MS); an idle keep-alive
    # connection does not hold the exit (a supervisor's death must end us promptly).
    deadline = time.monotonic() + 5.0
    while relaying() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(FLUSH_GRACE_S)
    port = os.environ.get("TOLLWAY_LISTEN_PORT")
    deadline = time.monotonic() + FLUSH_MAX_S - FLUSH_GRACE_S
    while port and unsettled_connections(int(port), FLUSH_QUIET_MS) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


FLUSH_GRACE_S = 0.2
FLUSH_QUIET_MS = 1000
FLUSH_MAX_S = 5.0  # (2 s cut a drained stream short once on a loaded machine)


def whole_seconds(seconds: float) -> int:
    """Robyn takes timeouts in whole seconds: round up, at least 1."""
    return max(1, math.ceil(seconds))


def serve_robyn(app: App, host: str, port: int, header_timeout: float) -> None:
    # As on granian, one timeout for the request head and for the idle time between
    # two requests (Robyn 0.88 ignores both: see the module docstring).
    timeout = whole_seconds(header_timeout)
    build_robyn(app).start(host=host, port=port, _check_port=False, client_timeout=timeout, keep_alive_timeout=timeout)
