"""One error taxonomy: for each status, the exception each official SDK raises and the
body's ``type``, the same for our own errors, for a provider's error passed on, and for
one translated from the other wire format."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from tests.conftest import Gateway
from tests.test_translate import AnthropicToOpenAIStream
from tollway import errors
from tollway.http.core import App, HTTPError, Request
from tollway.providers.anthropic.tools import AnthropicLoopWriter
from tollway.providers.openai_chat.tools import OpenAILoopWriter

# status: (openai SDK class, anthropic SDK class, OpenAI type, Anthropic type). The classes
# are exact: a 402 is openai.APIStatusError itself, no subclass of it.
TABLE: dict[int, tuple[type, type, str, str]] = {
    400: (openai.BadRequestError, anthropic.BadRequestError, "invalid_request_error", "invalid_request_error"),
    401: (openai.AuthenticationError, anthropic.AuthenticationError, "invalid_request_error", "authentication_error"),
    402: (openai.APIStatusError, anthropic.PaymentRequiredError, "insufficient_quota", "billing_error"),
    403: (openai.PermissionDeniedError, anthropic.PermissionDeniedError, "permission_error", "permission_error"),
    404: (openai.NotFoundError, anthropic.NotFoundError, "invalid_request_error", "not_found_error"),
    405: (openai.APIStatusError, anthropic.APIStatusError, "invalid_request_error", "invalid_request_error"),
    408: (openai.APIStatusError, anthropic.RequestTimeoutError, "invalid_request_error", "invalid_request_error"),
    409: (openai.ConflictError, anthropic.ConflictError, "invalid_request_error", "invalid_request_error"),
    413: (openai.APIStatusError, anthropic.ContentTooLargeError, "invalid_request_error", "request_too_large"),
    422: (
        openai.UnprocessableEntityError,
        anthropic.UnprocessableEntityError,
        "invalid_request_error",
        "invalid_request_error",
    ),
    429: (openai.RateLimitError, anthropic.RateLimitError, "rate_limit_error", "rate_limit_error"),
    500: (openai.InternalServerError, anthropic.InternalServerError, "server_error", "api_error"),
    502: (openai.InternalServerError, anthropic.InternalServerError, "server_error", "api_error"),
    503: (openai.InternalServerError, anthropic.ServiceUnavailableError, "server_error", "api_error"),
    504: (openai.InternalServerError, anthropic.GatewayTimeoutError, "server_error", "timeout_error"),
    529: (openai.InternalServerError, anthropic.OverloadedError, "server_error", "overloaded_error"),
}
SHAPES = ("openai", "anthropic")
# A provider answers these; the gateway passes them on (or translates them).
UPSTREAM_STATUSES = [s for s in TABLE if s not in (405, 408)]


def expected(shape: str, status: int) -> tuple[type, str]:
    oai_class, ant_class, oai_type, ant_type = TABLE[status]
    return (oai_class, oai_type) if shape == "openai" else (ant_class, ant_type)


def body_type(shape: str, body: Any) -> str:
    assert isinstance(body, dict), body
    if shape == "anthropic":  # the SDK's .body is the whole {"type": "error", "error": {...}}
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}, body
        return body["error"]["type"]
    assert set(body) == {"message", "type", "param", "code"}, body  # the SDK's .body is the error object
    return body["type"]


def raised(shape: str, call: Callable[[], Any]) -> Exception:
    base = openai.APIStatusError if shape == "openai" else anthropic.APIStatusError
    with pytest.raises(base) as info:
        call()
    return info.value


def check(shape: str, status: int, exc: Exception) -> None:
    cls, kind = expected(shape, status)
    assert exc.status_code == status, exc
    assert type(exc) is cls, (shape, status, type(exc))
    assert body_type(shape, exc.body) == kind, (shape, status, exc.body)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("status", sorted(TABLE))
def test_the_table_is_the_module(shape: str, status: int) -> None:
    assert errors.error_type(shape, status) == expected(shape, status)[1]
    assert status in errors.STATUSES


def test_the_readme_shows_the_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = {int(m[1]): (m[2], m[3]) for m in re.finditer(r"^\| (\d{3}) \| `(\w+)` \| `(\w+)` \|", readme, re.M)}
    assert rows == {s: (t[2], t[3]) for s, t in TABLE.items()}


# ------------------------------------------------------- our own errors, every status
def _sdk_clients(app: App) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    """Both SDKs talking to ``app`` in-process (the adapters' job done by hand)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        ours = Request(
            request.method,
            request.url.path,
            request.url.query.decode(),
            {k.lower(): v for k, v in request.headers.items()},
            request.read(),
        )
        response = asyncio.run(app.handle(ours))
        return httpx2.Response(response.status, headers=response.headers, content=response.body)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return (
        openai.OpenAI(api_key="k", base_url="http://gw.test/v1", http_client=http, max_retries=0),
        anthropic.Anthropic(api_key="k", base_url="http://gw.test", http_client=http, max_retries=0),
    )


@pytest.mark.parametrize("status", sorted(TABLE))
def test_own_errors_of_every_status_in_both_shapes(status: int) -> None:
    app = App(1024)

    async def fail(request: Request):
        if status == 500:
            raise RuntimeError("a bug")  # the catch-all's 500
        raise HTTPError(status, f"no ({status})")

    app.route("POST", "/v1/chat/completions")(fail)
    app.route("POST", "/v1/messages")(fail)
    oai, claude = _sdk_clients(app)
    check(
        "openai",
        status,
        raised("openai", lambda: oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])),
    )
    check(
        "anthropic",
        status,
        raised(
            "anthropic",
            lambda: claude.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]),
        ),
    )


def test_own_408_413_and_405_from_the_app_in_both_shapes() -> None:
    app = App(1024)
    for path, shape in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")):
        for response, status in ((app.too_slow(path, 1.0), 408), (app.too_large(path), 413)):
            assert response.status == status
            body = httpx.Response(status, content=response.body).json()
            assert body_type(shape, body if shape == "anthropic" else body["error"]) == expected(shape, status)[1]
    app.route("POST", "/v1/messages")(lambda request: None)
    app.route("POST", "/v1/chat/completions")(lambda request: None)
    oai, claude = _sdk_clients(app)
    check("openai", 405, raised("openai", lambda: oai.get("/chat/completions", cast_to=object)))
    check("anthropic", 405, raised("anthropic", lambda: claude.get("/v1/messages", cast_to=object)))


# ---------------------------------------------- our own errors, through the gateway
def _chat(client: openai.OpenAI, model: str, text: str = "x", **kw: Any) -> Callable[[], Any]:
    return lambda: client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def _message(
    client: anthropic.Anthropic, model: str, text: str = "x", max_tokens: int = 20, **kw: Any
) -> Callable[[], Any]:
    return lambda: client.messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": text}], **kw
    )


def _clients(gateway: Gateway, secret: str) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0, timeout=30),
        anthropic.Anthropic(api_key=secret, base_url=gateway.url, max_retries=0, timeout=30),
    )


def test_own_errors_through_the_gateway(gateway: Gateway, user) -> None:
    oai, claude = _clients(gateway, user[1])
    bad_oai, bad_claude = _clients(gateway, "tw_live_wrong")
    broke_oai, broke_claude = _clients(gateway, gateway.mint(max_spend_usd=0)[1])
    big = "x" * (3 * 1024 * 1024)
    cases = {
        "openai": {
            400: _chat(oai, "test-gpt", max_tokens=-3),
            401: _chat(bad_oai, "test-gpt"),
            402: _chat(broke_oai, "test-gpt"),
            403: lambda: oai.get("/keys", cast_to=object),
            404: _chat(oai, "gpt-imaginary"),
            405: lambda: oai.put("/chat/completions", cast_to=object),
            413: _chat(oai, "test-gpt", big),
            502: _chat(oai, "dead-gpt"),
        },
        "anthropic": {
            400: _message(claude, "test-claude", max_tokens=-3),
            401: _message(bad_claude, "test-claude"),
            402: _message(broke_claude, "test-claude"),
            404: _message(claude, "claude-imaginary"),
            405: lambda: claude.put("/v1/messages", cast_to=object),
            413: _message(claude, "test-claude", big),
            502: _message(claude, "dead-gpt"),  # translated to an OpenAI provider that is down
        },
    }
    for shape, by_status in cases.items():
        for status, call in by_status.items():
            check(shape, status, raised(shape, call))


def test_own_409_through_the_gateway(gateway: Gateway) -> None:
    admin, _ = _clients(gateway, gateway.admin)
    tool = {
        "name": f"t_{uuid.uuid4().hex[:8]}",
        "description": "d",
        "input_schema": {"type": "object"},
        "webhook_url": "http://127.0.0.1:9/hook",
    }
    admin.post("/tools", body=tool, cast_to=object)
    check("openai", 409, raised("openai", lambda: admin.post("/tools", body=tool, cast_to=object)))


@pytest.mark.parametrize("stream", [False, True])
def test_own_504_through_the_gateway(gateway: Gateway, user, stream: bool) -> None:
    oai, claude = _clients(gateway, user[1])  # the test gateway's first-byte timeout: 3 s
    check("openai", 504, raised("openai", _chat(oai, "test-gpt", "x #hang", stream=stream)))
    check("anthropic", 504, raised("anthropic", _message(claude, "test-claude", "x #hang", stream=stream)))


# ------------------------------------- a provider's error: passed on, or translated
@pytest.mark.parametrize("status", UPSTREAM_STATUSES)
def test_provider_errors_passed_on_and_translated(gateway: Gateway, fake, user, status: int) -> None:
    oai, claude = _clients(gateway, user[1])
    text = f"x #status={status} #retry_after=0"  # 429 and 5xx are retried: at once
    # Native: the provider's status and body as they are (its SDK class follows the status).
    native_oai = raised("openai", _chat(oai, "test-gpt", text))
    direct = httpx.post(
        fake.url + "/v1/chat/completions",
        headers={"authorization": "Bearer sk-fake-openai"},
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
    )
    assert type(native_oai) is TABLE[status][0] and native_oai.status_code == status
    assert native_oai.body == direct.json()["error"]
    native_claude = raised("anthropic", _message(claude, "test-claude", text))
    check("anthropic", status, native_claude)  # Anthropic's own types are the table's
    # Translated, streamed or not: the same class and type as our own error of that status.
    for stream in (False, True):
        check("openai", status, raised("openai", _chat(oai, "test-claude", text, stream=stream)))
        check("anthropic", status, raised("anthropic", _message(claude, "test-gpt", text, stream=stream)))


# ------------------------------------------------------------- errors inside streams
def _sse_data(frame: bytes) -> dict[str, Any]:
    return orjson.loads(next(line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")))


@pytest.mark.parametrize("status", sorted(TABLE))
def test_stream_errors_follow_the_table(status: int) -> None:
    """The tool loop's error events, and an Anthropic stream error translated for an
    OpenAI client (Anthropic's types name their status; OpenAI's mostly do not)."""
    error = _sse_data(OpenAILoopWriter(set(), "m", False).error(status, "no"))["error"]
    assert body_type("openai", error) == expected("openai", status)[1]
    assert (
        body_type("anthropic", _sse_data(AnthropicLoopWriter(set()).error(status, "no")))
        == expected("anthropic", status)[1]
    )
    event = orjson.dumps(
        {"type": "error", "error": {"type": expected("anthropic", status)[1], "message": "no"}}
    ).decode()
    chunk = _sse_data(AnthropicToOpenAIStream("m", False).feed("error", event))["error"]
    assert chunk["type"] == expected("openai", status)[1] and chunk["code"] == expected("anthropic", status)[1]
