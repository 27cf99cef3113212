"""A small request/response core with no server types in it.

Server adapters (ASGI in ``asgi.py``) turn their native request into a ``Request``,
call ``App.handle`` and write back a ``Response`` or ``StreamResponse``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Optional, Union
from urllib.parse import parse_qsl

import orjson

log = logging.getLogger("tollway.http")

Shape = Literal["openai", "anthropic"]
Headers = list[tuple[str, str]]

JSON_HEADERS: Headers = [("content-type", "application/json")]
SSE_HEADERS: Headers = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query_string: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    request_id: str = ""

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        if not self.body:
            raise HTTPError(400, "the request body must be a JSON object")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"the request body is not valid JSON: {exc}") from None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Headers = field(default_factory=lambda: list(JSON_HEADERS))


@dataclass(slots=True)
class StreamResponse:
    """A streamed body. ``close`` is called exactly when the stream must stop
    (client gone, or the adapter is done); it must be idempotent."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes]
    close: Callable[[], None]


AnyResponse = Union[Response, StreamResponse]
Handler = Callable[..., Awaitable[AnyResponse]]


def json_response(status: int, data: Any, headers: Optional[Headers] = None) -> Response:
    return Response(status, orjson.dumps(data), list(JSON_HEADERS) + (headers or []))


class HTTPError(Exception):
    """An error answered to the client in the shape its SDK expects."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: Optional[str] = None,
        param: Optional[str] = None,
        headers: Optional[Headers] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or []


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(shape: Shape, status: int, message: str, code: Optional[str] = None, param: Optional[str] = None) -> bytes:
    if shape == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    kind = _OPENAI_TYPES.get(status, "server_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def error_response(shape: Shape, exc: HTTPError) -> Response:
    return Response(
        exc.status,
        error_body(shape, exc.status, exc.message, exc.code, exc.param),
        list(JSON_HEADERS) + exc.headers,
    )


def shape_for(path: str) -> Shape:
    """Anthropic-shaped errors on the Anthropic route, OpenAI-shaped everywhere else."""
    return "anthropic" if path.startswith("/v1/messages") else "openai"


_ID_PREFIX = "req_" + os.urandom(6).hex()
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = "req_" + os.urandom(6).hex()
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    """Unique per process start (random prefix) and per request (counter); no syscall."""
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


_PARAM = re.compile(r"\{(\w+)\}")


class Router:
    """Exact paths in a dict; paths with ``{param}`` segments as regexes."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self.templates: list[tuple[str, str]] = []  # (method, path with {param}s), for adapters

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.templates.append((method, path))
        if "{" in path:
            regex = re.compile("^" + _PARAM.sub(r"(?P<\1>[^/]+)", path) + "$")
            for pattern, methods in self._patterns:
                if pattern.pattern == regex.pattern:
                    methods[method] = handler
                    return
            self._patterns.append((regex, {method: handler}))
        else:
            self._exact.setdefault(path, {})[method] = handler

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        methods = self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for pattern, candidate in self._patterns:
                m = pattern.match(path)
                if m:
                    methods, params = candidate, m.groupdict()
                    break
        if methods is None:
            raise HTTPError(404, f"no route for {method} {path}", code="not_found")
        handler = methods.get(method)
        if handler is None:
            raise HTTPError(405, f"method {method} is not allowed on {path}")
        return handler, params


class App:
    """Routes requests to handlers and turns every failure into a shaped error."""

    def __init__(self, max_body_bytes: int) -> None:
        self.router = Router()
        self.max_body_bytes = max_body_bytes
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.handling = 0  # requests inside handle() right now (event loop thread only)

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.router.add(method, path, handler)
            return handler

        return register

    def too_large(self, path: str) -> Response:
        limit_mb = self.max_body_bytes / (1024 * 1024)
        # The rest of the body stays unread, so the connection cannot be reused: say so.
        exc = HTTPError(413, f"the request body is larger than the limit of {limit_mb:g} MB", headers=[("connection", "close")])
        return self._finish(error_response(shape_for(path), exc), new_request_id())

    def too_slow(self, path: str, timeout: float) -> Response:
        exc = HTTPError(408, f"the request body did not arrive within {timeout:g} s", code="request_timeout", headers=[("connection", "close")])
        return self._finish(error_response(shape_for(path), exc), new_request_id())

    async def handle(self, request: Request) -> AnyResponse:
        if not request.request_id:
            request.request_id = new_request_id()
        self.handling += 1
        try:
            handler, params = self.router.match(request.method, request.path)
            response = await handler(request, **params)
        except HTTPError as exc:
            response = error_response(shape_for(request.path), exc)
        except Exception:  # never a traceback to the client
            log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request.request_id)
            response = error_response(
                shape_for(request.path), HTTPError(500, "internal error; the request id is in x-request-id")
            )
        finally:
            self.handling -= 1
        return self._finish(response, request.request_id)

    @staticmethod
    def _finish(response: AnyResponse, request_id: str) -> AnyResponse:
        response.headers.append(("x-request-id", request_id))
        return response

    async def startup(self) -> None:
        for hook in self.on_startup:
            await hook()

    async def shutdown(self) -> None:
        for hook in reversed(self.on_shutdown):
            await hook()
