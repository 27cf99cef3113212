"""Errors: the exception handlers raise, and the one taxonomy of error bodies.

Every error a client sees, whether ours or a provider's translated into the other
wire format, takes its ``type`` (and, in OpenAI's format, its ``code``) from the
tables here, so the same status reads the same on every route. Both official SDKs
choose their exception class from the HTTP status alone; the ``type`` is what a
caller matches on after that.

Sources: Anthropic's error types are the ones its API reference lists (and its SDKs'
``ErrorType``): 400 ``invalid_request_error`` (also "other 4XX status codes"),
401 ``authentication_error``, 402 ``billing_error``, 403 ``permission_error``,
404 ``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``,
500 ``api_error``, 504 ``timeout_error``, 529 ``overloaded_error``. OpenAI names
few types: ``invalid_request_error`` for every client error it answers, including a
wrong key (401, code ``invalid_api_key``) and an unknown model (404, code
``model_not_found``); ``permission_error`` for 403; ``insufficient_quota`` when
credit runs out (our 402); ``rate_limit_error``; ``server_error`` for 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import orjson

Shape = Literal["openai", "anthropic"]
Headers = list[tuple[str, str]]

# The statuses the gateway answers itself or passes on from a provider.
STATUSES = (400, 401, 402, 403, 404, 405, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529)


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
        shaped_headers: Optional[Callable[[Shape], Headers]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or []
        # Headers that depend on the caller's wire format (a 429's rate-limit headers).
        self.shaped_headers = shaped_headers

    def headers_for(self, shape: Shape) -> Headers:
        if self.shaped_headers is None:
            return self.headers
        return self.headers + self.shaped_headers(shape)


def _openai_object(error_type: str, message: str, code: Optional[str], param: Optional[str]) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _anthropic_object(error_type: str, message: str, code: Optional[str], param: Optional[str]) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


@dataclass(frozen=True)
class ErrorFormat:
    """One wire format's error taxonomy."""

    types: dict[int, str]  # status -> type
    client_type: str  # any other 4xx
    server_type: str  # any other 5xx
    codes: dict[int, str]  # status -> the code of an error that names none (formats with a code)
    build: Callable[[str, str, Optional[str], Optional[str]], dict[str, Any]]
    # A provider error of the other format whose type says more than its status
    # (a 429 that is out of credit, not a rate limit): other format's type -> ours.
    foreign_types: dict[str, str]
    # Types that appear in this format's stream errors (no status) -> their status.
    statuses_of_types: dict[str, int]


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

FORMATS: dict[str, ErrorFormat] = {
    "openai": ErrorFormat(
        types={
            400: "invalid_request_error",
            401: "invalid_request_error",
            402: "insufficient_quota",
            403: "permission_error",
            404: "invalid_request_error",
            405: "invalid_request_error",
            408: "invalid_request_error",
            409: "invalid_request_error",
            413: "invalid_request_error",
            422: "invalid_request_error",
            429: "rate_limit_error",
            500: "server_error",
            502: "server_error",
            503: "server_error",
            504: "server_error",
            529: "server_error",
        },
        client_type="invalid_request_error",
        server_type="server_error",
        codes={
            401: "invalid_api_key",
            404: "not_found",
            405: "method_not_allowed",
            408: "request_timeout",
            413: "request_too_large",
            429: "rate_limit_exceeded",
        },
        build=_openai_object,
        foreign_types={"billing_error": "insufficient_quota"},
        statuses_of_types={
            "invalid_request_error": 400,
            "authentication_error": 401,
            "insufficient_quota": 402,
            "permission_error": 403,
            "not_found_error": 404,
            "rate_limit_error": 429,
            "rate_limit_exceeded": 429,
            "requests": 429,
            "tokens": 429,
            "server_error": 500,
        },
    ),
    "anthropic": ErrorFormat(
        types=_ANTHROPIC_TYPES,
        client_type="invalid_request_error",
        server_type="api_error",
        codes={},
        build=_anthropic_object,
        foreign_types={"insufficient_quota": "billing_error"},
        statuses_of_types={kind: status for status, kind in _ANTHROPIC_TYPES.items()},
    ),
}


def error_type(shape: str, status: int) -> str:
    """The ``type`` of an error with this HTTP status in ``shape``'s format."""
    fmt = FORMATS[shape]
    return fmt.types.get(status) or (fmt.server_type if status >= 500 else fmt.client_type)


def error_code(shape: str, status: int, code: Optional[str] = None) -> Optional[str]:
    """The ``code`` written in ``shape``'s format: the error's own, else the status's default."""
    return code if code is not None else FORMATS[shape].codes.get(status)


def error_object(
    shape: str,
    status: int,
    message: str,
    code: Optional[str] = None,
    param: Optional[str] = None,
    kind: Optional[str] = None,
) -> dict[str, Any]:
    """An error body (as a dict) in ``shape``'s format; ``kind`` overrides the status's type."""
    fmt = FORMATS[shape]
    return fmt.build(kind or error_type(shape, status), message, error_code(shape, status, code), param)


def error_body(shape: str, status: int, message: str, code: Optional[str] = None, param: Optional[str] = None) -> bytes:
    return orjson.dumps(error_object(shape, status, message, code, param))


def http_error_body(shape: str, exc: HTTPError) -> bytes:
    return error_body(shape, exc.status, exc.message, exc.code, exc.param)


def provider_error(body: bytes) -> tuple[Optional[dict[str, Any]], str]:
    """The ``error`` object of a provider's error body of either format, and its
    message (the raw text when the body is no such error)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error, error["message"]
    return None, body.decode("utf-8", "replace").strip()


def foreign_error_body(shape: str, status: int, body: bytes) -> bytes:
    """A provider's error body in the other format, rewritten in ``shape``'s: the type
    from the status (as for our own errors), the provider's message, and in OpenAI's
    format the provider's own type as ``code`` (``overloaded_error``...)."""
    error, message = provider_error(body)
    named = [v for v in (error.get("type"), error.get("code")) if isinstance(v, str)] if error is not None else []
    foreign = named[0] if named else None
    kind = next((FORMATS[shape].foreign_types[v] for v in named if v in FORMATS[shape].foreign_types), None)
    return orjson.dumps(error_object(shape, status, message or f"upstream HTTP {status}", foreign, None, kind))


def stream_error_type(shape: str, foreign: dict[str, Any], foreign_shape: str) -> str:
    """The type, in ``shape``'s format, of a stream error of ``foreign_shape``'s (no
    status there): its type (or code) read as the status it stands for."""
    statuses = FORMATS[foreign_shape].statuses_of_types
    for key in ("type", "code"):
        value = foreign.get(key)
        if isinstance(value, str) and value in FORMATS[shape].foreign_types:
            return FORMATS[shape].foreign_types[value]
        if isinstance(value, str) and value in statuses:
            return error_type(shape, statuses[value])
    return error_type(shape, 500)
