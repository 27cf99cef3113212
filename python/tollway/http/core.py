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
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union
from urllib.parse import parse_qsl

import orjson

from tollway._core import json_scan
from tollway.errors import Headers, HTTPError, Shape, http_error_body
from tollway.http.limits import MAX_ID_CHARS, MAX_JSON_DEPTH

log = logging.getLogger("tollway.http")

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
        query = dict(parse_qsl(self.query_string, keep_blank_values=True))
        for name, value in query.items():
            if "\x00" in value or "\x00" in name:
                raise HTTPError(400, f"the query parameter {name!r} contains a NUL character", param=name)
        return query

    def json(self, *, allow_nul: bool = False) -> Any:
        """The body parsed, once its nesting depth is within MAX_JSON_DEPTH and, unless
        ``allow_nul`` (a body only forwarded, never stored), it has no NUL character."""
        if not self.body:
            raise HTTPError(400, "the request body must be a JSON object")
        depth, nul = json_scan(self.body)
        if depth > MAX_JSON_DEPTH:
            raise HTTPError(400, f"the request body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
        if nul and not allow_nul:
            raise HTTPError(400, "the request body contains a NUL character (\\u0000), which cannot be stored")
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


def error_response(shape: Shape, exc: HTTPError) -> Response:
    return Response(
        exc.status,
        http_error_body(shape, exc),
        list(JSON_HEADERS) + exc.headers_for(shape),
    )


_ANTHROPIC_PATHS = ("/v1/messages", "/v1/complete")


def shape_for(path: str) -> Shape:
    """Anthropic-shaped errors on the Anthropic routes, OpenAI-shaped everywhere else."""
    return "anthropic" if path.startswith(_ANTHROPIC_PATHS) else "openai"


def unrouted_shape(path: str, headers: dict[str, str]) -> Shape:
    """The shape of a 404/405: also Anthropic's for any path an Anthropic SDK called (it sends anthropic-version)."""
    return "anthropic" if "anthropic-version" in headers else shape_for(path)


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


_PARAM = re.compile(r"\{(\w+)(:path)?\}")


def _param_regex(match: re.Match[str]) -> str:
    return f"(?P<{match[1]}>.+)" if match[2] else f"(?P<{match[1]}>[^/]+)"


class Router:
    """Exact paths in a dict; paths with ``{param}`` segments as regexes.

    ``{name:path}``, last in a path, also takes slashes (a model id such as
    ``org/model``, which an SDK percent-encodes and the server decodes back).
    """

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self.templates: list[tuple[str, str]] = []  # (method, path with {param}s), for adapters
        self.path_params: set[str] = set()  # the params declared {name:path}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.path_params.update(m[1] for m in _PARAM.finditer(path) if m[2])
        self.templates.append((method, _PARAM.sub(r"{\1}", path)))
        if "{" in path:
            regex = re.compile("^" + _PARAM.sub(_param_regex, path) + "$")
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
            raise NoRoute(404, f"no route for {method} {path}", code="not_found")
        handler = methods.get(method)
        if handler is None:
            raise NoRoute(405, f"method {method} is not allowed on {path}")
        for name, value in params.items():
            # An id that cannot exist names nothing: 404 here rather than an error from
            # the database. isprintable() is False for NUL and the other control
            # characters and for lone surrogates (a path that was not UTF-8).
            if len(value) > MAX_ID_CHARS or not value.isprintable():
                raise HTTPError(
                    404, f"no such {name.removesuffix('_id')}: the id is not valid", code="not_found", param=name
                )
        return handler, params


class NoRoute(HTTPError):
    """No route for the method and path (404 or 405): answered only to an authenticated caller."""


class App:
    """Routes requests to handlers and turns every failure into a shaped error."""

    def __init__(self, max_body_bytes: int) -> None:
        self.router = Router()
        self.max_body_bytes = max_body_bytes
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.handling = 0  # requests inside handle() right now (event loop thread only)
        # Checks the caller's key before a 404/405 is answered (raises the 401), so
        # that an unauthenticated client cannot map the routes.
        self.authenticate: Optional[Callable[[dict[str, str]], Awaitable[Any]]] = None
        # Last guards for whole classes of bad input that slipped past a handler's
        # checks: each maps an exception to the 4xx it means, or None.
        self.error_mappers: list[Callable[[Exception], Optional[HTTPError]]] = []

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.router.add(method, path, handler)
            return handler

        return register

    def too_large(self, path: str) -> Response:
        limit_mb = self.max_body_bytes / (1024 * 1024)
        # The rest of the body stays unread, so the connection cannot be reused: say so.
        exc = HTTPError(
            413, f"the request body is larger than the limit of {limit_mb:g} MB", headers=[("connection", "close")]
        )
        return self._finish(error_response(shape_for(path), exc), new_request_id())

    def unreadable_body(self, path: str, headers: dict[str, str], exc: BaseException) -> Response:
        """The server could not read the body (malformed chunked encoding, say): 400, and
        the connection is closed since what follows on it cannot be trusted."""
        log.info("could not read a request body for %s: %s", path, exc)
        error = HTTPError(
            400, "the request body could not be read (malformed HTTP framing)", headers=[("connection", "close")]
        )
        return self._finish(error_response(unrouted_shape(path, headers), error), new_request_id())

    def too_slow(self, path: str, timeout: float) -> Response:
        exc = HTTPError(
            408,
            f"the request body did not arrive within {timeout:g} s",
            code="request_timeout",
            headers=[("connection", "close")],
        )
        return self._finish(error_response(shape_for(path), exc), new_request_id())

    async def handle(self, request: Request) -> AnyResponse:
        if not request.request_id:
            request.request_id = new_request_id()
        self.handling += 1
        try:
            if "\x00" in request.path:
                raise HTTPError(400, "the path contains a NUL character")
            try:
                handler, params = self.router.match(request.method, request.path)
            except NoRoute as exc:
                answer: HTTPError = exc
                if self.authenticate is not None:
                    try:
                        await self.authenticate(request.headers)
                    except HTTPError as denied:
                        answer = denied
                return self._finish(
                    error_response(unrouted_shape(request.path, request.headers), answer), request.request_id
                )
            response = await handler(request, **params)
        except HTTPError as exc:
            response = error_response(shape_for(request.path), exc)
        except Exception as exc:  # never a traceback to the client
            mapped = self._map_error(exc)
            if mapped is None:
                log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request.request_id)
                mapped = HTTPError(500, "internal error; the request id is in x-request-id")
            else:  # a check is missing somewhere: the client gets its 400, we get the traceback
                log.warning(
                    "bad input past the checks in %s %s (request %s)",
                    request.method,
                    request.path,
                    request.request_id,
                    exc_info=True,
                )
            response = error_response(shape_for(request.path), mapped)
        finally:
            self.handling -= 1
        return self._finish(response, request.request_id)

    def _map_error(self, exc: Exception) -> Optional[HTTPError]:
        for mapper in self.error_mappers:
            mapped = mapper(exc)
            if mapped is not None:
                return mapped
        return None

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
