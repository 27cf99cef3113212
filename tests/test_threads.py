"""Threads through plain HTTP: history kept server-side, any model per turn, streamed and persisted."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx

from tests.conftest import Gateway, fake_requests
from tests.test_keys import _new_account

TOOLS = [
    {
        "name": "lookup_account",
        "description": "Find an account",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
]


def new_thread(gw: Gateway, key: str, **body: Any) -> dict[str, Any]:
    r = gw.request("POST", "/v1/threads", key, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def turn(gw: Gateway, key: str, thread_id: str, **body: Any) -> httpx.Response:
    body.setdefault("max_tokens", 100)
    return gw.request("POST", f"/v1/threads/{thread_id}/messages", key, json=body)


def messages(gw: Gateway, key: str, thread_id: str, **params: Any) -> dict[str, Any]:
    r = gw.request("GET", f"/v1/threads/{thread_id}/messages", key, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def upstream_bodies(fake, marker: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of the upstream requests whose body mentions ``marker``."""
    out = []
    for q in fake_requests(fake):
        if marker in str(q["body"]):
            out.append((q["path"], q["body"]))
    return out


def wait_messages(gw: Gateway, key: str, thread_id: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        data = messages(gw, key, thread_id, limit=100)["data"]
        if len(data) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


# ------------------------------------------------------------------ ownership
def test_create_stamps_end_user_and_isolates(gateway: Gateway) -> None:
    alice_user = "alice-" + uuid.uuid4().hex[:6]
    _, alice = gateway.mint(max_spend_usd=10, end_user_id=alice_user)
    _, bob = gateway.mint(max_spend_usd=10, end_user_id="bob-" + uuid.uuid4().hex[:6])

    t = new_thread(gateway, alice, metadata={"title": "hi"}, system="Be brief.")
    assert t["end_user_id"] == alice_user and t["metadata"] == {"title": "hi"} and t["id"].startswith("thread_")
    # A standard key cannot put its thread on someone else.
    r = gateway.request("POST", "/v1/threads", alice, json={"end_user_id": "mallory"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "end_user_mismatch"
    # Bob sees nothing of Alice's.
    for method, path in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/messages"),
        ("GET", "/export"),
        ("POST", "/messages"),
    ):
        body = (
            {"metadata": {}}
            if method == "PATCH"
            else ({"model": "test-claude", "content": "x"} if method == "POST" else None)
        )
        r = gateway.request(method, f"/v1/threads/{t['id']}{path}", bob, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert t["id"] not in [x["id"] for x in gateway.request("GET", "/v1/threads", bob).json()["data"]]
    assert t["id"] in [x["id"] for x in gateway.request("GET", "/v1/threads", alice).json()["data"]]
    # The admin sees every thread of the account and may filter by end user.
    listed = gateway.request("GET", "/v1/threads", gateway.admin, params={"end_user_id": alice_user}).json()["data"]
    assert [x["id"] for x in listed] == [t["id"]]
    # PATCH changes metadata; GET shows it.
    r = gateway.request("PATCH", f"/v1/threads/{t['id']}", alice, json={"metadata": {"title": "renamed"}})
    assert r.status_code == 200 and r.json()["metadata"] == {"title": "renamed"}
    assert gateway.request("GET", f"/v1/threads/{t['id']}", gateway.admin).json()["metadata"] == {"title": "renamed"}
    # Another account's admin sees nothing.
    other_admin = _new_account(gateway, "other-" + uuid.uuid4().hex[:6])
    assert gateway.request("GET", f"/v1/threads/{t['id']}", other_admin).status_code == 404
    assert gateway.request("GET", "/v1/threads", other_admin).json()["data"] == []
    # No key: 401.
    assert gateway.request("GET", "/v1/threads").status_code == 401


def test_key_without_end_user_sees_only_threads_it_created(gateway: Gateway) -> None:
    _, k1 = gateway.mint(max_spend_usd=1)
    _, k2 = gateway.mint(max_spend_usd=1)
    t = new_thread(gateway, k1)
    assert t["end_user_id"] is None
    assert gateway.request("GET", f"/v1/threads/{t['id']}", k2).status_code == 404
    assert [x["id"] for x in gateway.request("GET", "/v1/threads", k1).json()["data"]] == [t["id"]]
    assert gateway.request("GET", "/v1/threads", k2).json()["data"] == []


def test_thread_listing_pages_with_a_cursor(gateway: Gateway) -> None:
    _, key = gateway.mint(max_spend_usd=1, end_user_id="pager-" + uuid.uuid4().hex[:6])
    made = [new_thread(gateway, key)["id"] for _ in range(7)]
    seen, after = [], None
    while True:
        params = {"limit": 3} | ({"after": after} if after else {})
        page = gateway.request("GET", "/v1/threads", key, params=params).json()
        seen += [x["id"] for x in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == list(reversed(made))
    r = gateway.request("GET", "/v1/threads", key, params={"after": "thread_nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    assert gateway.request("GET", "/v1/threads", key, params={"limit": 0}).status_code == 400


# ------------------------------------------------------------------ turns
def test_turns_keep_history_and_switch_providers(gateway: Gateway, fake) -> None:
    key_id, key = gateway.mint(max_spend_usd=10)
    marker = uuid.uuid4().hex[:10]
    t = new_thread(gateway, key, system=f"You are terse {marker}.")

    r1 = turn(gateway, key, t["id"], model="test-claude", content=f"first {marker} #words=3")
    assert r1.status_code == 200, r1.text
    reply1 = r1.json()
    assert reply1["role"] == "assistant" and reply1["thread_id"] == t["id"] and reply1["model"] == "test-claude"
    assert reply1["content"] == [{"type": "text", "text": "w0 w1 w2"}]
    assert reply1["stop_reason"] == "end_turn" and reply1["usage"]["output_tokens"] == 3
    assert reply1["context"] == {"messages_in_thread": 0, "messages_sent": 0, "messages_dropped": 0, "truncated": False}

    r2 = turn(gateway, key, t["id"], model="test-gpt", content=[{"type": "text", "text": f"second {marker} #words=4"}])
    assert r2.status_code == 200, r2.text
    assert r2.json()["content"] == [{"type": "text", "text": "w0 w1 w2 w3"}] and r2.json()["stop_reason"] == "end_turn"
    r3 = turn(gateway, key, t["id"], model="test-claude", content=f"third {marker}")
    assert r3.status_code == 200, r3.text

    sent = upstream_bodies(fake, marker)
    assert [p for p, _ in sent] == ["/v1/messages", "/v1/chat/completions", "/v1/messages"]
    # Turn 2 went to OpenAI in its own shape, with the whole history translated.
    oa = sent[1][1]
    assert oa["model"] == "gpt-test-upstream"
    assert oa["messages"][0] == {"role": "system", "content": f"You are terse {marker}."}
    assert [m["role"] for m in oa["messages"]] == ["system", "user", "assistant", "user"]
    assert "w0 w1 w2" in str(oa["messages"][2]["content"])
    # Turn 3 back on Anthropic carries the OpenAI turn's reply as history.
    an = sent[2][1]
    assert an["system"] == f"You are terse {marker}." and an["model"] == "claude-test-upstream"
    assert [m["role"] for m in an["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert an["messages"][3]["content"] == [{"type": "text", "text": "w0 w1 w2 w3"}]

    data = messages(gateway, key, t["id"])["data"]
    assert [m["role"] for m in data] == ["user", "assistant"] * 3
    assert [m["model"] for m in data[1::2]] == ["test-claude", "test-gpt", "test-claude"]
    # Billed like direct calls: one usage event per turn, on this key.
    usage = gateway.key_usage(key_id)
    assert len(usage["events"]) == 3 and usage["total_cost_micros"] > 0
    assert sum(m["usage"]["cost_micros"] for m in data[1::2]) == usage["total_cost_micros"]


def test_client_tools_round_trip_across_providers(gateway: Gateway, fake) -> None:
    _, key = gateway.mint(max_spend_usd=10)
    marker = uuid.uuid4().hex[:10]
    t = new_thread(gateway, key)
    r = turn(gateway, key, t["id"], model="test-gpt", tools=TOOLS, content=f"acme{marker} #tool=lookup_account")
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["stop_reason"] == "tool_use"
    call = reply["content"][-1]
    assert (
        call["type"] == "tool_use" and call["name"] == "lookup_account" and call["input"] == {"query": f"acme{marker}"}
    )
    # The result goes back on the other provider: the tool call and its result are translated.
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "balance 42"}
    r = turn(gateway, key, t["id"], model="test-claude", tools=TOOLS, content=[result])
    assert r.status_code == 200, r.text
    an = upstream_bodies(fake, f"acme{marker}")[-1][1]
    assert an["messages"][1]["content"][-1] == {
        "type": "tool_use",
        "id": call["id"],
        "name": "lookup_account",
        "input": {"query": f"acme{marker}"},
    }
    assert an["messages"][2]["content"][0]["type"] == "tool_result"
    # And once more on OpenAI: tool_calls + a tool message.
    r = turn(gateway, key, t["id"], model="test-gpt", content=f"thanks {marker}")
    assert r.status_code == 200, r.text
    oa = upstream_bodies(fake, f"thanks {marker}")[-1][1]
    roles = [m["role"] for m in oa["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    assert oa["messages"][1]["tool_calls"][0]["id"] == call["id"] and oa["messages"][2]["tool_call_id"] == call["id"]


def test_stream_turn_is_anthropic_sse_and_persisted(gateway: Gateway) -> None:
    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    for model in ("test-claude", "test-gpt"):
        with gateway._client.stream(
            "POST",
            f"{gateway.url}/v1/threads/{t['id']}/messages",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "max_tokens": 50, "content": "hi #words=6", "stream": True},
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-tollway-thread-id"] == t["id"]
            body = r.read().decode()
        events = [line[len("event: ") :] for line in body.splitlines() if line.startswith("event: ")]
        assert events[0] == "message_start" and events[-1] == "message_stop", (model, events)
        assert events.count("content_block_delta") == 6, (model, events)
    data = wait_messages(gateway, key, t["id"], 4)
    assert [m["role"] for m in data] == ["user", "assistant", "user", "assistant"]
    for m in data[1::2]:
        assert m["content"] == [{"type": "text", "text": "w0 w1 w2 w3 w4 w5"}]
        assert m["stop_reason"] == "end_turn" and m["usage"]["output_tokens"] == 6


def test_stream_turn_parsed_by_the_anthropic_sdk(gateway: Gateway) -> None:
    """The thread stream is Anthropic's event format: the SDK's own stream machinery accumulates it."""
    from anthropic import NOT_GIVEN
    from anthropic._streaming import Stream
    from anthropic.lib.streaming import MessageStreamManager
    from anthropic.types import RawMessageStreamEvent

    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    client = anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0)
    for model in ("test-gpt", "test-claude"):
        request = lambda model=model: client.post(  # noqa: E731
            f"/v1/threads/{t['id']}/messages",
            body={"model": model, "max_tokens": 50, "content": "hey #words=5", "stream": True},
            cast_to=anthropic.types.Message,
            stream=True,
            stream_cls=Stream[RawMessageStreamEvent],
        )
        with MessageStreamManager(request, output_format=NOT_GIVEN) as stream:
            final = stream.get_final_message()
        assert [b.text for b in final.content] == ["w0 w1 w2 w3 w4"]
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


def test_disconnect_mid_stream_keeps_and_bills_what_was_generated(gateway: Gateway) -> None:
    key_id, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    host, port = gateway.url.removeprefix("http://").split(":")
    body = (
        '{"model":"test-claude","max_tokens":200,"stream":true,"content":"long one #words=100 #chunk_delay_ms=40"}'
    ).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST /v1/threads/{t['id']}/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    got = b""
    while got.count(b"event: content_block_delta") < 5:
        got += sock.recv(65536)
    sock.close()
    data = wait_messages(gateway, key, t["id"], 2)
    assert [m["role"] for m in data] == ["user", "assistant"]
    partial = data[1]
    words = partial["content"][0]["text"].split()
    assert 5 <= len(words) < 100 and words[:5] == ["w0", "w1", "w2", "w3", "w4"]
    assert partial["stop_reason"] is None and partial["metadata"]["outcome"] == "client_closed"
    info = gateway.wait_settled(key_id)
    assert info["reserved_micros"] == 0 and info["spent_micros"] == partial["usage"]["cost_micros"] > 0
    # The thread is free again.
    assert turn(gateway, key, t["id"], model="test-claude", content="again #words=2").status_code == 200


def test_a_second_turn_waits_for_the_running_one_then_gets_409(gateway: Gateway) -> None:
    """The gateway under test waits TOLLWAY_THREAD_BUSY_WAIT=1 s for a busy thread."""
    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    results: dict[str, httpx.Response] = {}
    slow = threading.Thread(
        target=lambda: results.update(
            first=turn(gateway, key, t["id"], model="test-claude", content="first #delay_ms=400")
        )
    )
    slow.start()
    time.sleep(0.15)
    second = turn(gateway, key, t["id"], model="test-gpt", content="second #words=2")  # waits, then runs
    slow.join()
    assert results["first"].status_code == 200 and second.status_code == 200, second.text
    data = messages(gateway, key, t["id"])["data"]
    assert [m["content"][0]["text"] for m in data[::2]] == ["first #delay_ms=400", "second #words=2"]
    assert [m["role"] for m in data] == ["user", "assistant"] * 2

    slow = threading.Thread(
        target=lambda: turn(gateway, key, t["id"], model="test-claude", content="slow #delay_ms=2500")
    )
    slow.start()
    time.sleep(0.3)
    busy = turn(gateway, key, t["id"], model="test-claude", content="impatient")
    slow.join()
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "thread_busy"
    assert len(messages(gateway, key, t["id"])["data"]) == 6  # nothing lost, nothing doubled


def test_parallel_turns_never_lose_or_duplicate(gateway: Gateway) -> None:
    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: turn(gateway, key, t["id"], model="test-gpt", content=f"n{i} #delay_ms=50"), range(8))
        )
    ok = [r for r in results if r.status_code == 200]
    assert ok and all(r.status_code in (200, 409) for r in results)
    data = messages(gateway, key, t["id"], limit=100)["data"]
    assert len(data) == 2 * len(ok)
    assert [m["role"] for m in data] == ["user", "assistant"] * len(ok)


def test_truncation_on_a_small_context_model(gateway: Gateway, fake) -> None:
    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    marker = uuid.uuid4().hex[:8]
    for i in range(6):
        r = turn(gateway, key, t["id"], model="tiny-claude", max_tokens=20, content=f"turn {i} {marker} " + "x" * 120)
        assert r.status_code == 200, r.text
    context = r.json()["context"]
    assert context["truncated"] is True and context["messages_in_thread"] == 10
    assert 0 < context["messages_sent"] < 10 and context["messages_dropped"] == 10 - context["messages_sent"]
    sent = upstream_bodies(fake, f"turn 5 {marker}")[-1][1]["messages"]
    assert len(sent) == context["messages_sent"] + 1 and sent[0]["role"] == "user"
    # The newest history is what was kept.
    assert f"turn 4 {marker}" in str(sent[-3]["content"])
    # A turn that cannot fit at all is refused before any upstream call.
    r = turn(gateway, key, t["id"], model="tiny-claude", max_tokens=20, content="y" * 5000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_truncation_keeps_tool_use_with_its_result(gateway: Gateway, fake) -> None:
    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    marker = uuid.uuid4().hex[:8]
    r = turn(
        gateway,
        key,
        t["id"],
        model="tiny-claude",
        max_tokens=20,
        tools=TOOLS,
        content=f"q{marker} #tool=lookup_account",
    )
    call = r.json()["content"][-1]
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "z" * 300}
    assert (
        turn(gateway, key, t["id"], model="tiny-claude", max_tokens=20, tools=TOOLS, content=[result]).status_code
        == 200
    )
    r = turn(
        gateway, key, t["id"], model="tiny-claude", max_tokens=20, tools=TOOLS, content=f"final {marker} " + "k" * 200
    )
    assert r.status_code == 200, r.text
    sent = upstream_bodies(fake, f"final {marker}")[-1][1]["messages"]
    ids_used = {
        b["id"] for m in sent if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_use"
    }
    ids_answered = {
        b["tool_use_id"]
        for m in sent
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    }
    assert ids_used == ids_answered  # never one without the other
    assert sent[0]["role"] == "user"


def test_history_pages_500_messages_both_ways(gateway: Gateway) -> None:
    _, key = gateway.mint(max_spend_usd=50)
    t = new_thread(gateway, key)
    with ThreadPoolExecutor(1) as pool:
        list(
            pool.map(
                lambda i: turn(gateway, key, t["id"], model="out-gpt", max_tokens=3, content=f"m{i} #words=1"),
                range(250),
            )
        )
    # Scroll up like a chat UI: newest first, then older pages with before=.
    seen, before = [], None
    while True:
        params = {"order": "desc", "limit": 30} | ({"before": before} if before else {})
        page = messages(gateway, key, t["id"], **params)
        seen += page["data"]
        if not page["has_more"]:
            break
        before = page["last_id"]
    assert len(seen) == 500 and len({m["id"] for m in seen}) == 500
    assert seen[-1]["content"][0]["text"].startswith("m0 ") and seen[1]["content"][0]["text"].startswith("m249 ")
    # And forward with after=.
    forward, after = [], None
    while True:
        params = {"order": "asc", "limit": 45} | ({"after": after} if after else {})
        page = messages(gateway, key, t["id"], **params)
        forward += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [m["id"] for m in forward] == [m["id"] for m in reversed(seen)]
    export = gateway.request("GET", f"/v1/threads/{t['id']}/export", key).json()
    assert export["thread"]["id"] == t["id"] and [m["id"] for m in export["messages"]] == [m["id"] for m in forward]
    assert messages(gateway, key, t["id"], order="sideways") if False else True
    r = gateway.request("GET", f"/v1/threads/{t['id']}/messages", key, params={"order": "sideways"})
    assert r.status_code == 400


def test_delete_erases_the_thread(gateway: Gateway) -> None:
    _, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    keep = new_thread(gateway, key)
    assert turn(gateway, key, t["id"], model="test-claude", content="secret words #words=2").status_code == 200
    assert turn(gateway, key, keep["id"], model="test-claude", content="kept words #words=2").status_code == 200
    r = gateway.request("DELETE", f"/v1/threads/{t['id']}", key)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert gateway.request("GET", f"/v1/threads/{t['id']}", key).status_code == 404
    assert gateway.request("GET", f"/v1/threads/{t['id']}/messages", key).status_code == 404
    assert len(messages(gateway, key, keep["id"])["data"]) == 2


def test_bad_turns_get_clear_errors(gateway: Gateway, fake) -> None:
    key_id, key = gateway.mint(max_spend_usd=10)
    t = new_thread(gateway, key)
    cases = [
        ({"model": "test-claude"}, "content"),
        ({"model": "test-claude", "content": []}, "content"),
        ({"model": "test-claude", "content": [{"type": "video"}]}, "content"),
        ({"model": "test-claude", "content": [{"type": {"a": 1}}]}, "content"),  # schemathesis: was a 500
        ({"model": "test-gpt", "content": [{"type": ["text"], "text": "x"}]}, "content"),
        ({"model": "test-claude", "content": "x", "max_tokens": 0}, "max_tokens"),
        ({"content": "x"}, "model"),
        ({"model": "test-claude", "content": "x", "bogus": 1}, "bogus"),
    ]
    for body, param in cases:
        r = gateway.request("POST", f"/v1/threads/{t['id']}/messages", key, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param
    r = gateway.request("POST", f"/v1/threads/{t['id']}/messages", key, content=b"{nope")
    assert r.status_code == 400
    assert (
        gateway.request(
            "POST", f"/v1/threads/{t['id']}/messages", key, json={"model": "nope", "content": "x"}
        ).status_code
        == 404
    )
    # An upstream failure keeps its status, stores nothing and frees the thread.
    r = turn(gateway, key, t["id"], model="test-claude", content="#status=400")
    assert r.status_code == 400 and "upstream" in r.json()["error"]["message"]
    assert messages(gateway, key, t["id"])["data"] == []
    assert turn(gateway, key, t["id"], model="test-claude", content="fine #words=1").status_code == 200


def test_a_turn_is_capped_like_a_direct_call(gateway: Gateway) -> None:
    # out-gpt: $10 per Mtok output only; 1000 max output = 10,000 micros; cap 25,000.
    key_id, key = gateway.mint(max_spend_usd=0.025)
    t = new_thread(gateway, key)
    r = turn(gateway, key, t["id"], model="out-gpt", max_tokens=1000, content="#words=1000")
    assert r.status_code == 200
    r = turn(gateway, key, t["id"], model="out-gpt", max_tokens=1000, content="#words=1000")
    assert r.status_code == 200
    r = turn(gateway, key, t["id"], model="out-gpt", max_tokens=1000, content="more #words=1000")
    assert r.status_code == 200 and r.headers["x-tollway-max-tokens-clamped"] == "500"
    r = turn(gateway, key, t["id"], model="out-gpt", max_tokens=1000, content="more")
    assert r.status_code == 402 and r.json()["error"]["message"].startswith("this API key has reached its spending cap")
    assert gateway.key(key_id)["spent_micros"] == 25_000


def test_tollway_compact_rewrites_the_thread_tables(gateway: Gateway) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    _, key = gateway.mint(max_spend_usd=10)
    gone, kept = new_thread(gateway, key), new_thread(gateway, key)
    for t in (gone, kept):
        assert turn(gateway, key, t["id"], model="test-claude", content="words #words=2").status_code == 200
    assert gateway.request("DELETE", f"/v1/threads/{gone['id']}", key).status_code == 200
    out = subprocess.run(
        [sys.executable, "-m", "tollway", "compact"],
        env=gateway.env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Compacted the thread tables" in out.stdout
    assert len(messages(gateway, key, kept["id"])["data"]) == 2
