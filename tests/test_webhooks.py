"""Webhook signatures (tollway.webhooks) and the dispatcher (tollway.tools.dispatch) against
a real local receiver (tests/fakes/webhooks.py). No gateway needed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from typing import Any, Iterator

import pytest

from tests.fakes.webhooks import WebhookServer, start_webhook_server
from tollway.tools.dispatch import Dispatcher, ToolResult
from tollway.tools.store import Tool, generate_signing_secret
from tollway.webhooks import WebhookVerificationError, construct_event, sign, verify


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    server = start_webhook_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _clean(hooks: WebhookServer) -> None:
    hooks.reset()


@pytest.fixture
async def dispatcher() -> Any:
    d = Dispatcher()
    try:
        yield d
    finally:
        await d.aclose()


def make_tool(url: str, timeout_ms: int = 10_000, name: str = "lookup_account") -> Tool:
    return Tool(
        id="tool_test" + name,
        account_id="acct_test",
        name=name,
        description="Find an account",
        input_schema={"type": "object", "properties": {"q": {"type": "string"}}},
        webhook_url=url,
        timeout_ms=timeout_ms,
        signing_secret=generate_signing_secret(),
        created_at=0,
        updated_at=0,
    )


# ---------------------------------------------------------------- signatures


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    header = sign("whsec_abc", body, timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_abc", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("whsec_abc", {"x-tollway-signature": header}, body, now=1_700_000_000)


def test_verify_rejects_forged_tampered_expired_and_malformed() -> None:
    secret = generate_signing_secret()
    body = b'{"call_id":"c1","input":{"q":"x"}}'
    t = int(time.time())
    good = sign(secret, body, timestamp=t)
    ok = {"x-tollway-signature": good}
    assert verify(secret, ok, body)
    # Any capitalisation of the header name, in a plain dict or as pairs.
    assert verify(secret, {"X-Tollway-Signature": good}, body)
    assert verify(secret, [(b"X-TOLLWAY-SIGNATURE", good.encode())], body)

    assert not verify(generate_signing_secret(), ok, body)  # another secret
    assert not verify(secret, ok, body + b" ")  # tampered body
    assert not verify(secret, ok, body.replace(b"x", b"y"))
    forged = f"t={t},v1=" + hmac.new(b"guess", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert not verify(secret, {"x-tollway-signature": forged}, body)
    # The timestamp is signed: moving it breaks the signature.
    moved = good.replace(f"t={t}", f"t={t + 1}")
    assert not verify(secret, {"x-tollway-signature": moved}, body)
    # Expired or from the future, beyond the tolerance.
    old = sign(secret, body, timestamp=t - 301)
    assert not verify(secret, {"x-tollway-signature": old}, body)
    assert verify(secret, {"x-tollway-signature": old}, body, tolerance_s=600)
    assert not verify(secret, ok, body, now=t + 301)
    assert not verify(secret, ok, body, now=t - 301)
    assert verify(secret, ok, body, now=t + 299)
    # Missing or malformed.
    for headers in (
        {},
        {"x-tollway-signature": ""},
        {"x-tollway-signature": "garbage"},
        {"x-tollway-signature": good.split(",")[1]},
        {"x-tollway-signature": good.split(",")[0]},
        {"x-tollway-signature": f"t=abc,{good.split(',')[1]}"},
        None,
    ):
        assert not verify(secret, headers, body), headers


def test_verify_accepts_any_of_several_v1_signatures() -> None:
    old, new = generate_signing_secret(), generate_signing_secret()
    body = b"{}"
    t = int(time.time())
    v_old = sign(old, body, t).split(",")[1]
    v_new = sign(new, body, t).split(",")[1]
    header = {"x-tollway-signature": f"t={t},{v_old},{v_new}"}
    assert verify(old, header, body) and verify(new, header, body)
    assert not verify(generate_signing_secret(), header, body)


def test_construct_event_returns_the_call_or_raises() -> None:
    secret = generate_signing_secret()
    body = json.dumps({"tool_name": "t", "call_id": "c", "input": {"a": 1}}).encode()
    headers = {"x-tollway-signature": sign(secret, body)}
    assert construct_event(secret, headers, body) == {"tool_name": "t", "call_id": "c", "input": {"a": 1}}
    with pytest.raises(WebhookVerificationError, match="mismatch"):
        construct_event(secret, headers, body + b"\n")
    with pytest.raises(WebhookVerificationError, match="missing"):
        construct_event(secret, {}, body)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        construct_event(secret, {"x-tollway-signature": sign(secret, body, int(time.time()) - 1000)}, body)
    not_object = b"[1,2]"
    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        construct_event(secret, {"x-tollway-signature": sign(secret, not_object)}, not_object)


# ---------------------------------------------------------------- dispatcher


async def test_signed_request_and_echo_result(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/echo"))
    hooks.program("/echo", default="echo", secret=tool.signing_secret)
    result = await dispatcher.call(tool, "call_1", {"q": "acme"}, thread_id="thread_9", end_user_id="u42")
    assert isinstance(result, ToolResult)
    assert (result.is_error, result.error, result.attempts, result.status) == (False, None, 1, 200)
    assert result.output == {"echo": {"q": "acme"}, "tool": "lookup_account"}
    assert (result.call_id, result.tool_id, result.tool_name) == ("call_1", tool.id, tool.name)
    assert json.loads(result.content_text()) == result.output
    assert result.duration_ms >= 0

    [req] = hooks.requests("/echo")
    assert req["method"] == "POST" and req["signature_ok"] is True
    assert req["json"] == {
        "tool_id": tool.id,
        "tool_name": "lookup_account",
        "call_id": "call_1",
        "input": {"q": "acme"},
        "thread_id": "thread_9",
        "end_user_id": "u42",
    }
    h = req["headers"]
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("tollway-webhooks/")
    assert h["x-tollway-delivery"].startswith("dlv_")
    # The receiver's check, done by hand with the recorded raw request.
    assert verify(tool.signing_secret, h, req["body"])
    assert not verify(generate_signing_secret(), h, req["body"])
    assert not verify(tool.signing_secret, h, req["body"].replace(b"acme", b"evil"))
    t = int(h["x-tollway-signature"].split(",")[0][2:])
    assert abs(t - time.time()) < 5
    assert not verify(tool.signing_secret, h, req["body"], now=t + 301)

    # Absent optional keys are omitted, not null.
    await dispatcher.call(tool, "call_2", {"q": "b"})
    assert set(hooks.requests("/echo")[1]["json"]) == {"tool_id", "tool_name", "call_id", "input"}


async def test_retries_then_success_with_one_delivery_id(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/flaky"))
    hooks.program("/flaky", responses=[{"status": 500}, {"status": 502}], default="echo", secret=tool.signing_secret)
    result = await dispatcher.call(tool, "call_r", {"q": 1})
    assert (result.is_error, result.attempts, result.status) == (False, 3, 200)
    assert result.output == {"echo": {"q": 1}, "tool": tool.name}
    reqs = hooks.requests("/flaky")
    assert [r["attempt"] for r in reqs] == [1, 2, 3]
    assert [r["status"] for r in reqs] == [500, 502, 200]
    assert len({r["headers"]["x-tollway-delivery"] for r in reqs}) == 1
    assert all(r["signature_ok"] for r in reqs)
    assert len({r["body"] for r in reqs}) == 1
    # Backed off between attempts (0.2 s and 0.5 s, ±25 %).
    assert reqs[1]["start"] - reqs[0]["end"] >= 0.14
    assert reqs[2]["start"] - reqs[1]["end"] >= 0.37

    # Another call: another delivery id.
    await dispatcher.call(tool, "call_s", {"q": 2})
    assert hooks.requests("/flaky")[-1]["headers"]["x-tollway-delivery"] != reqs[0]["headers"]["x-tollway-delivery"]


async def test_4xx_is_final(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/gone"))
    hooks.program("/gone", responses=[{"status": 404, "json": {"error": "no such account"}}], default="echo")
    result = await dispatcher.call(tool, "call_4", {})
    assert (result.is_error, result.attempts, result.status, result.output) == (True, 1, 404, None)
    assert "404" in result.error and "no such account" in result.error
    assert len(hooks.requests("/gone")) == 1


async def test_permanent_failure_is_an_error_result(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/down"))
    hooks.program("/down", default={"status": 503})
    result = await dispatcher.call(tool, "call_p", {"q": "x"})
    assert (result.is_error, result.attempts, result.status) == (True, 3, 503)
    assert "503" in result.error and "3 attempts" in result.error
    assert result.content_text().startswith("Error:") and "503" in result.content_text()
    assert len(hooks.requests("/down")) == 3


async def test_connection_refused_and_dropped_are_retried(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await dispatcher.call(make_tool(f"http://127.0.0.1:{port}/nobody"), "call_c", {})
    assert (result.is_error, result.attempts, result.status) == (True, 3, None)
    assert "could not connect" in result.error

    tool = make_tool(hooks.url("/drop"))
    hooks.program("/drop", responses=[{"drop": True}], default="echo")
    result = await dispatcher.call(tool, "call_d", {"q": 1})
    assert (result.is_error, result.attempts) == (False, 2), result.error
    assert len(hooks.requests("/drop")) == 2


async def test_timeout_is_an_error_with_bounded_duration(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/slow"), timeout_ms=200)
    hooks.program("/slow", default={"delay_ms": 3000})
    started = time.monotonic()
    result = await dispatcher.call(tool, "call_t", {})
    elapsed = time.monotonic() - started
    assert result.is_error and "timed out after 200 ms" in result.error
    assert result.attempts == 3 and result.status is None
    # 3 × 0.2 s + backoffs (≤ 0.25 + 0.625 s), far from the receiver's 3 × 3 s.
    assert elapsed < 2.5 and result.duration_ms <= elapsed * 1000 + 1
    assert len(hooks.requests("/slow")) == 3


async def test_timeout_then_success(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/slow-once"), timeout_ms=200)
    hooks.program("/slow-once", responses=[{"delay_ms": 1000}], default="echo")
    result = await dispatcher.call(tool, "call_t2", {"q": 1})
    assert (result.is_error, result.attempts, result.status) == (False, 2, 200)


async def test_deadline_cuts_retries_short(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/failing"))
    hooks.program("/failing", default={"status": 500})
    started = time.monotonic()
    result = await dispatcher.call(tool, "call_dl", {}, deadline=started + 0.3)
    elapsed = time.monotonic() - started
    # First attempt, a 0.15-0.25 s pause, maybe a second; never the third (another 0.375+ s pause).
    assert result.is_error and result.attempts in (1, 2) and elapsed < 0.45
    assert "deadline" in result.error
    assert len(hooks.requests("/failing")) == result.attempts

    # A slow webhook is cut at the deadline, not at its own 10 s timeout.
    hooks.program("/failing", default={"delay_ms": 5000})
    started = time.monotonic()
    result = await dispatcher.call(tool, "call_dl2", {}, deadline=started + 0.4)
    elapsed = time.monotonic() - started
    assert result.is_error and "timed out" in result.error and "deadline" in result.error
    assert result.attempts == 1 and 0.35 < elapsed < 1.0

    # A deadline already past: no request at all.
    hooks.reset()
    result = await dispatcher.call(tool, "call_dl3", {}, deadline=time.monotonic() - 1)
    assert result.is_error and result.attempts == 0 and "deadline" in result.error
    assert hooks.requests() == []


async def test_error_and_malformed_answers(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/answers"))
    hooks.program(
        "/answers",
        responses=[
            {"json": {"error": "account is locked"}},
            {"body": b"<html>oops</html>", "content_type": "text/html"},
            {"json": {"result": 1}},
            {"json": [1, 2]},
            {"status": 204, "body": b""},
            {"json": {"output": "plain text"}},
            {"json": {"output": None}},
            {"status": 302, "headers": {"location": hooks.url("/elsewhere")}},
        ],
    )
    r = await dispatcher.call(tool, "c1", {})
    assert (r.is_error, r.error, r.attempts, r.status) == (True, "account is locked", 1, 200)
    assert "account is locked" in r.content_text() and r.content_text().startswith("Error:")
    r = await dispatcher.call(tool, "c2", {})
    assert r.is_error and "not JSON" in r.error and r.attempts == 1
    r = await dispatcher.call(tool, "c3", {})
    assert r.is_error and 'neither "output" nor "error"' in r.error
    r = await dispatcher.call(tool, "c4", {})
    assert r.is_error and "not an object" in r.error
    r = await dispatcher.call(tool, "c5", {})
    assert r.is_error and "empty body" in r.error and r.status == 204
    r = await dispatcher.call(tool, "c6", {})
    assert (r.is_error, r.output, r.content_text()) == (False, "plain text", "plain text")
    r = await dispatcher.call(tool, "c7", {})
    assert (r.is_error, r.output, r.content_text()) == (False, None, "null")
    r = await dispatcher.call(tool, "c8", {})
    assert r.is_error and r.status == 302 and r.attempts == 1 and "redirect" in r.error
    assert hooks.requests("/elsewhere") == []


async def test_concurrent_calls_overlap_at_the_receiver(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    tool = make_tool(hooks.url("/parallel"))
    hooks.program("/parallel", default={"delay_ms": 400})
    started = time.monotonic()
    results = await asyncio.gather(*(dispatcher.call(tool, f"call_{i}", {"i": i}) for i in range(6)))
    elapsed = time.monotonic() - started
    assert all(not r.is_error for r in results)
    assert [r.output["echo"]["i"] for r in results] == list(range(6))
    reqs = hooks.requests("/parallel")
    assert len(reqs) == 6
    # Every request arrived before any was answered: all six were in flight together.
    assert max(r["start"] for r in reqs) < min(r["end"] for r in reqs)
    assert elapsed < 6 * 0.4 / 2
    assert len({r["headers"]["x-tollway-delivery"] for r in reqs}) == 6


async def test_one_client_reused_and_aclose(hooks: WebhookServer) -> None:
    d = Dispatcher()
    tool = make_tool(hooks.url("/reuse"))
    await d.call(tool, "a", {})
    client = d._client
    await d.call(tool, "b", {})
    assert d._client is client and client is not None
    await d.aclose()
    assert client.is_closed and d._client is None
    r = await d.call(tool, "c", {})  # a new client after aclose
    assert not r.is_error
    await d.aclose()


async def test_logs_hold_no_secret_url_or_body(hooks: WebhookServer, dispatcher: Dispatcher, caplog) -> None:
    tool = make_tool(hooks.url("/secret-path-xyz"))
    hooks.program("/secret-path-xyz", responses=[{"status": 500}], default={"json": {"error": "nope"}})
    with caplog.at_level(logging.DEBUG, logger="tollway"):
        await dispatcher.call(tool, "call_log", {"password": "hunter2"})
    text = caplog.text
    assert "call_log" in text  # something was logged
    for secret in (tool.signing_secret, "hunter2", "secret-path-xyz", "nope"):
        assert secret not in text


async def test_unserialisable_input_is_a_programming_error(hooks: WebhookServer, dispatcher: Dispatcher) -> None:
    with pytest.raises((TypeError, ValueError)):
        await dispatcher.call(make_tool(hooks.url("/x")), "c", {"bad": object()})
    assert hooks.requests() == []
