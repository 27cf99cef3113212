"""The gateway runs the tool loop: registered webhook tools, called against a real local receiver."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterator

import anthropic
import openai
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import Gateway, fake_requests
from tests.fakes.webhooks import WebhookServer, start_webhook_server
from tollway.webhooks import unwrap, verify

CLIENT_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "client_fn",
        "description": "runs in the app",
        "parameters": {"type": "object", "properties": {}},
    },
}
CLIENT_TOOL_ANTHROPIC = {
    "name": "client_fn",
    "description": "runs in the app",
    "input_schema": {"type": "object", "properties": {}},
}


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    server = start_webhook_server()
    try:
        yield server
    finally:
        server.stop()


def register(gw: Gateway, hooks: WebhookServer, name: str, path: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "description": f"{name} for tests",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        "webhook_url": hooks.url(path),
        **extra,
    }
    r = gw.request("POST", "/v1/tools", gw.admin, json=body)
    assert r.status_code == 201, r.text
    tool = r.json()
    hooks.program(path, secret=tool["signing_secret"])
    return tool


@pytest.fixture
def tool(gateway: Gateway, hooks: WebhookServer) -> Iterator[dict[str, Any]]:
    """ "lookup_account" (the name the fake's #tool= directive calls), removed afterwards."""
    path = "/lookup-" + uuid.uuid4().hex[:8]
    made = register(gateway, hooks, "lookup_account", path)
    yield made | {"path": path}
    assert gateway.request("DELETE", f"/v1/tools/{made['id']}", gateway.admin).status_code in (200, 204)


def upstream_calls(fake, marker: str) -> list[dict[str, Any]]:
    return [q for q in fake_requests(fake) if marker in json.dumps(q["body"])]


def tool_results_sent(kind: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "openai":
        return [m for m in body["messages"] if m["role"] == "tool"]
    return [
        b
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]


# ------------------------------------------------------------------ one tool, every shape
@pytest.mark.parametrize("model", ["test-gpt", "test-claude"])
def test_single_tool_on_both_routes(gateway: Gateway, user, tool, hooks: WebhookServer, fake, model: str) -> None:
    marker = "acme" + uuid.uuid4().hex[:8]
    oai = openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    res = oai.chat.completions.with_raw_response.create(
        model=model,
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker} #tool=lookup_account"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    completion = res.parse()
    assert completion.choices[0].message.content == " ".join(f"w{i}" for i in range(12))
    assert completion.choices[0].finish_reason == "stop" and res.headers["x-tollway-tool-turns"] == "2"
    # The webhook got the call, signed.
    got = hooks.requests(tool["path"])[-1]
    assert got["json"]["tool_name"] == "lookup_account" and got["json"]["input"] == {"query": marker}
    assert got["json"]["tool_id"] == tool["id"] and got["json"]["call_id"]
    assert got["signature_ok"] is True and got["headers"]["x-tollway-delivery"].startswith("dlv_")
    assert verify(tool["signing_secret"], got["headers"], got["body"])
    assert not verify(tool["signing_secret"], got["headers"], got["body"] + b" ")  # tampered
    assert not verify("whsec_forged", got["headers"], got["body"])  # forged
    # ...and as a Standard Webhook: the standardwebhooks package and tollway.webhooks.unwrap verify it.
    assert got["headers"]["webhook-id"] == got["headers"]["x-tollway-delivery"]
    assert Webhook(tool["signing_secret"]).verify(got["body"], got["headers"]) == got["json"]
    assert unwrap(tool["signing_secret"], got["headers"], got["body"]) == got["json"]
    # The second model turn carried the result, in the provider's own format.
    kind = "openai" if model == "test-gpt" else "anthropic"
    turns = upstream_calls(fake, marker)
    assert len(turns) == 2
    results = tool_results_sent(kind, turns[1]["body"])
    assert len(results) == 1 and marker in json.dumps(results[0])
    tools_offered = turns[0]["body"]["tools"]
    assert len(tools_offered) == 1
    # Every model turn is a usage event.
    events = gateway.key_usage(user[0])["events"]
    assert [e["model"] for e in events[:2]] == [model, model]

    claude = anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    msg = claude.messages.create(
        model=model,
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker}b #tool=lookup_account"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    assert msg.stop_reason == "end_turn" and msg.content[0].text.startswith("w0 w1")


def test_parallel_tools_run_concurrently(gateway: Gateway, user, hooks: WebhookServer, fake) -> None:
    paths = ["/slow-a-" + uuid.uuid4().hex[:6], "/slow-b-" + uuid.uuid4().hex[:6]]
    a = register(gateway, hooks, "tool_a_" + uuid.uuid4().hex[:4], paths[0])
    b = register(gateway, hooks, "tool_b_" + uuid.uuid4().hex[:4], paths[1])
    for path, t in zip(paths, (a, b), strict=True):
        hooks.program(path, default={"delay_ms": 500, "echo": True}, secret=t["signing_secret"])
    claude = anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    msg = claude.messages.create(
        model="test-claude",
        max_tokens=50,
        messages=[{"role": "user", "content": f"go #tool={a['name']},{b['name']}"}],
        extra_body={"tool_ids": [a["id"], b["id"]]},
    )
    assert msg.stop_reason == "end_turn"
    ra, rb = hooks.requests(paths[0])[-1], hooks.requests(paths[1])[-1]
    # Both were in flight at the same time.
    assert ra["start"] < rb["end"] and rb["start"] < ra["end"]
    assert abs(ra["start"] - rb["start"]) < 0.3


def test_retries_then_success(gateway: Gateway, user, tool, hooks: WebhookServer, fake) -> None:
    hooks.program(
        tool["path"], responses=[{"status": 500}, {"status": 503}], default="echo", secret=tool["signing_secret"]
    )
    marker = "retry" + uuid.uuid4().hex[:6]
    claude = anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    claude.messages.create(
        model="test-claude",
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker} #tool=lookup_account"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    attempts = [r for r in hooks.requests(tool["path"]) if marker in json.dumps(r["json"])]
    assert [r["status"] for r in attempts] == [500, 503, 200]
    assert len({r["headers"]["x-tollway-delivery"] for r in attempts}) == 1  # stable across retries
    result = tool_results_sent("anthropic", upstream_calls(fake, marker)[-1]["body"])[0]
    assert "is_error" not in result and marker in result["content"]


def test_permanent_failure_becomes_an_error_result(gateway: Gateway, user, tool, hooks: WebhookServer, fake) -> None:
    hooks.program(tool["path"], default={"status": 500}, secret=tool["signing_secret"])
    marker = "fail" + uuid.uuid4().hex[:6]
    oai = openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    res = oai.chat.completions.create(
        model="test-claude",
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker} #tool=lookup_account"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    assert res.choices[0].finish_reason == "stop"  # the model answered after seeing the error
    assert len([r for r in hooks.requests(tool["path"]) if marker in json.dumps(r["json"])]) == 3
    result = tool_results_sent("anthropic", upstream_calls(fake, marker)[-1]["body"])[0]
    assert result["is_error"] is True and "failed" in result["content"]

    hooks.program(
        tool["path"], default={"status": 404, "json": {"error": "no such account"}}, secret=tool["signing_secret"]
    )
    marker = "final" + uuid.uuid4().hex[:6]
    oai.chat.completions.create(
        model="test-gpt",
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker} #tool=lookup_account"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    assert len([r for r in hooks.requests(tool["path"]) if marker in json.dumps(r["json"])]) == 1  # 4xx is final
    result = tool_results_sent("openai", upstream_calls(fake, marker)[-1]["body"])[0]
    assert result["content"].startswith("Error") and "no such account" in result["content"]


def test_a_slow_webhook_times_out(gateway: Gateway, user, hooks: WebhookServer, fake) -> None:
    path = "/sleepy-" + uuid.uuid4().hex[:6]
    slow = register(gateway, hooks, "sleepy_" + uuid.uuid4().hex[:4], path, timeout_ms=200)
    hooks.program(path, default={"delay_ms": 3000, "echo": True}, secret=slow["signing_secret"])
    marker = "late" + uuid.uuid4().hex[:6]
    claude = anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    msg = claude.messages.create(
        model="test-claude",
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker} #tool={slow['name']}"}],
        extra_body={"tool_ids": [slow["id"]]},
    )
    assert msg.stop_reason == "end_turn"
    result = tool_results_sent("anthropic", upstream_calls(fake, marker)[-1]["body"])[0]
    assert result["is_error"] is True and "timed out" in result["content"]


@pytest.mark.parametrize("model", ["test-gpt", "test-claude"])
def test_the_loop_stops_at_max_tool_turns(gateway: Gateway, user, tool, fake, model: str) -> None:
    marker = "loop" + uuid.uuid4().hex[:6]
    r = gateway.request(
        "POST",
        "/v1/messages",
        user[1],
        json={
            "model": model,
            "max_tokens": 50,
            "tool_ids": [tool["id"]],
            "messages": [{"role": "user", "content": f"{marker} #tool=lookup_account #tool_turns=50"}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-tollway-tool-turns"] == "8" and r.json()["stop_reason"] == "end_turn"
    turns = upstream_calls(fake, marker)
    assert len(turns) == 8
    last = turns[-1]["body"]["tool_choice"]
    assert last in ("none", {"type": "none"})  # the last turn must answer in text
    # Overridable per request.
    r = gateway.request(
        "POST",
        "/v1/messages",
        user[1],
        json={
            "model": model,
            "max_tokens": 50,
            "tool_ids": [tool["id"]],
            "max_tool_turns": 3,
            "messages": [{"role": "user", "content": f"{marker}x #tool=lookup_account #tool_turns=50"}],
        },
    )
    assert r.headers["x-tollway-tool-turns"] == "3"
    assert (
        gateway.request(
            "POST",
            "/v1/messages",
            user[1],
            json={
                "model": model,
                "max_tokens": 5,
                "tool_ids": [tool["id"]],
                "max_tool_turns": 0,
                "messages": [{"role": "user", "content": "x"}],
            },
        ).status_code
        == 400
    )


def test_cap_reached_mid_loop(gateway: Gateway, tool, hooks: WebhookServer, fake) -> None:
    # out-claude: 10 micros per output token, input free. A tool call is 4 fragments = 40 micros;
    # a cap of 45 serves the first model turn and refuses the second (needs at least 10).
    for stream in (False, True):
        key_id, key = gateway.mint(max_spend_usd=0.000045)
        marker = "cap" + uuid.uuid4().hex[:6]
        body = {
            "model": "out-claude",
            "max_tokens": 10,
            "tool_ids": [tool["id"]],
            "stream": stream,
            "messages": [{"role": "user", "content": f"acme #tool=lookup_account {marker}"}],
        }
        r = gateway.request("POST", "/v1/messages", key, json=body)
        if stream:
            assert r.status_code == 200
            assert "event: tool_call.completed" in r.text
            assert "event: error" in r.text and "billing_error" in r.text and "spending cap" in r.text
        else:
            assert r.status_code == 402, r.text
            assert r.json()["error"]["message"].startswith("this API key has reached its spending cap")
        assert len(upstream_calls(fake, marker)) == 1  # the webhook ran, the second turn never went upstream
        info = gateway.wait_settled(key_id)
        assert info["spent_micros"] == 40 and info["reserved_micros"] == 0


# ------------------------------------------------------------------ streaming
def test_streamed_loop_anthropic_sdk(gateway: Gateway, user, tool) -> None:
    claude = anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    for model in ("test-claude", "test-gpt"):
        with claude.messages.stream(
            model=model,
            max_tokens=50,
            messages=[{"role": "user", "content": "acme #tool=lookup_account #words=5"}],
            extra_body={"tool_ids": [tool["id"]]},
        ) as stream:
            final = stream.get_final_message()
        assert [b.type for b in final.content] == ["text"] and final.content[0].text == "w0 w1 w2 w3 w4"
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4 + 5
    # The raw stream shows the tool activity as events of its own.
    r = gateway.request(
        "POST",
        "/v1/messages",
        user[1],
        json={
            "model": "test-claude",
            "max_tokens": 50,
            "stream": True,
            "tool_ids": [tool["id"]],
            "messages": [{"role": "user", "content": "acme #tool=lookup_account #words=3"}],
        },
    )
    events = [(line.split(": ", 1)[1]) for line in r.text.splitlines() if line.startswith("event: ")]
    assert events.count("message_start") == 1 and events.count("message_stop") == 1
    assert events.index("tool_call.started") < events.index("tool_call.completed") < events.index("content_block_delta")
    datas = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    done = [d for d in datas if d.get("type") == "tool_call.completed"][0]
    assert (
        done["name"] == "lookup_account" and done["is_error"] is False and done["duration_ms"] >= 0 and done["call_id"]
    )


def test_streamed_loop_openai_sdk(gateway: Gateway, user, tool) -> None:
    oai = openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    for model in ("test-gpt", "test-claude"):
        chunks = list(
            oai.chat.completions.create(
                model=model,
                max_tokens=50,
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "acme #tool=lookup_account #words=4"}],
                extra_body={"tool_ids": [tool["id"]]},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "w0 w1 w2 w3"
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        kinds = [getattr(c, "type", None) for c in chunks if not c.choices]
        assert kinds[:2] == ["tool_call.started", "tool_call.completed"]
        usage = [c.usage for c in chunks if c.usage]
        assert len(usage) == 1 and usage[0].completion_tokens == 4 + 4
        assert len({c.id for c in chunks}) == 1
        with oai.chat.completions.stream(
            model=model,
            max_tokens=50,
            messages=[{"role": "user", "content": "acme #tool=lookup_account #words=2"}],
            extra_body={"tool_ids": [tool["id"]]},
        ) as s:
            final = s.get_final_completion()
        assert final.choices[0].message.content == "w0 w1" and final.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------ mixing with the client's own tools
def test_client_tools_stay_the_clients(gateway: Gateway, user, tool, hooks: WebhookServer, fake) -> None:
    oai = openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    before = len(hooks.requests(tool["path"]))
    res = oai.chat.completions.create(
        model="test-gpt",
        max_tokens=50,
        tools=[CLIENT_TOOL_OPENAI],
        messages=[{"role": "user", "content": "acme #tool=client_fn"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    assert res.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in res.choices[0].message.tool_calls] == ["client_fn"]
    # Both in one turn: the client gets its call; the registered one is left out, not run.
    claude = anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    msg = claude.messages.create(
        model="test-claude",
        max_tokens=50,
        tools=[CLIENT_TOOL_ANTHROPIC],
        messages=[{"role": "user", "content": "acme #tool=lookup_account,client_fn"}],
        extra_body={"tool_ids": [tool["id"]]},
    )
    assert msg.stop_reason == "tool_use" and [b.name for b in msg.content if b.type == "tool_use"] == ["client_fn"]
    assert len(hooks.requests(tool["path"])) == before
    # Offered side by side.
    assert [t["name"] for t in fake_requests(fake)[-1]["body"]["tools"]] == ["client_fn", "lookup_account"]
    # A name on both sides is refused.
    r = gateway.request(
        "POST",
        "/v1/messages",
        user[1],
        json={
            "model": "test-claude",
            "max_tokens": 5,
            "tool_ids": [tool["id"]],
            "messages": [{"role": "user", "content": "x"}],
            "tools": [dict(CLIENT_TOOL_ANTHROPIC, name="lookup_account")],
        },
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = gateway.request(
        "POST",
        "/v1/chat/completions",
        user[1],
        json={"model": "test-gpt", "tool_ids": ["tool_nope"], "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404


# ------------------------------------------------------------------ threads
def test_thread_turn_with_tools_persists_every_step(gateway: Gateway, tool, hooks: WebhookServer) -> None:
    _, key = gateway.mint(max_spend_usd=10, end_user_id="tooluser-" + uuid.uuid4().hex[:6])
    t = gateway.request("POST", "/v1/threads", key, json={}).json()
    r = gateway.request(
        "POST",
        f"/v1/threads/{t['id']}/messages",
        key,
        json={
            "model": "test-gpt",
            "max_tokens": 50,
            "tool_ids": [tool["id"]],
            "content": "acme #tool=lookup_account #words=3",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "w0 w1 w2"}]
    got = hooks.requests(tool["path"])[-1]["json"]
    assert got["thread_id"] == t["id"] and got["end_user_id"].startswith("tooluser-")
    # The next turn on the other provider, streamed, also runs the tool.
    r = gateway.request(
        "POST",
        f"/v1/threads/{t['id']}/messages",
        key,
        json={
            "model": "test-claude",
            "max_tokens": 50,
            "tool_ids": [tool["id"]],
            "stream": True,
            "content": "again #tool=lookup_account #words=2",
        },
    )
    assert r.status_code == 200 and "tool_call.completed" in r.text
    for _ in range(200):
        deadline_data = gateway.request("GET", f"/v1/threads/{t['id']}/messages", key, params={"limit": 100}).json()[
            "data"
        ]
        if len(deadline_data) >= 8:
            break
        time.sleep(0.05)
    kinds = [(m["role"], [b["type"] for b in m["content"]]) for m in deadline_data]
    assert kinds == [
        ("user", ["text"]),
        ("assistant", ["tool_use"]),
        ("user", ["tool_result"]),
        ("assistant", ["text"]),
        ("user", ["text"]),
        ("assistant", ["tool_use"]),
        ("user", ["tool_result"]),
        ("assistant", ["text"]),
    ]
    call_ids = [
        m["content"][0]["id"]
        for m in deadline_data
        if m["role"] == "assistant" and m["content"][0]["type"] == "tool_use"
    ]
    result_ids = [m["content"][0]["tool_use_id"] for m in deadline_data if m["content"][0]["type"] == "tool_result"]
    assert call_ids == result_ids
    assert deadline_data[-1]["content"] == [{"type": "text", "text": "w0 w1"}]


def test_thread_cap_mid_loop_keeps_what_was_produced(gateway: Gateway, tool) -> None:
    _, key = gateway.mint(max_spend_usd=0.000045)
    t = gateway.request("POST", "/v1/threads", key, json={}).json()
    r = gateway.request(
        "POST",
        f"/v1/threads/{t['id']}/messages",
        key,
        json={
            "model": "out-claude",
            "max_tokens": 10,
            "tool_ids": [tool["id"]],
            "content": "acme #tool=lookup_account",
        },
    )
    assert r.status_code == 402
    data = gateway.request("GET", f"/v1/threads/{t['id']}/messages", key).json()["data"]
    assert [m["role"] for m in data] == ["user", "assistant", "user"]
    assert data[2]["content"][0]["type"] == "tool_result"
    # The thread is free again.
    assert (
        gateway.request(
            "POST",
            f"/v1/threads/{t['id']}/messages",
            key,
            json={"model": "out-claude", "max_tokens": 1, "content": "x"},
        ).status_code
        == 402
    )


def test_thread_loop_survives_a_client_that_leaves_mid_tool_call(gateway: Gateway, tool, hooks: WebhookServer) -> None:
    """The loop runs in its own task: what was produced is stored and billed, the thread is freed."""
    import socket

    hooks.program(tool["path"], default={"delay_ms": 800, "echo": True}, secret=tool["signing_secret"])
    key_id, key = gateway.mint(max_spend_usd=10)
    t = gateway.request("POST", "/v1/threads", key, json={}).json()
    body = json.dumps(
        {
            "model": "test-claude",
            "max_tokens": 50,
            "stream": True,
            "tool_ids": [tool["id"]],
            "content": "acme #tool=lookup_account #words=3",
        }
    ).encode()
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST /v1/threads/{t['id']}/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    got = b""
    while b"tool_call.started" not in got:
        got += sock.recv(65536)
    sock.close()  # gone while the webhook is still working
    for _ in range(200):
        data = gateway.request("GET", f"/v1/threads/{t['id']}/messages", key).json()["data"]
        if len(data) >= 3 and gateway.key(key_id)["reserved_micros"] == 0:
            break
        time.sleep(0.05)
    kinds = [(m["role"], m["content"][0]["type"]) for m in data]
    assert kinds[:3] == [("user", "text"), ("assistant", "tool_use"), ("user", "tool_result")]
    assert gateway.key(key_id)["reserved_micros"] == 0 and gateway.key(key_id)["spent_micros"] > 0
    # The thread is free for the next turn.
    r = gateway.request(
        "POST",
        f"/v1/threads/{t['id']}/messages",
        key,
        json={"model": "test-claude", "max_tokens": 20, "content": "again #words=1"},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_thread_turn_mixing_client_and_registered_tools(
    gateway: Gateway, tool, hooks: WebhookServer, fake, stream: bool
) -> None:
    """In a thread, registered calls made next to the client's own run, and their results wait
    for the client's: the next turn sends the model every result of that assistant message."""
    _, key = gateway.mint(max_spend_usd=10)
    t = gateway.request("POST", "/v1/threads", key, json={}).json()
    marker = "mix" + uuid.uuid4().hex[:6]
    before = len(hooks.requests(tool["path"]))
    r = gateway.request(
        "POST",
        f"/v1/threads/{t['id']}/messages",
        key,
        json={
            "model": "test-gpt",
            "max_tokens": 50,
            "tools": [CLIENT_TOOL_ANTHROPIC],
            "tool_ids": [tool["id"]],
            "stream": stream,
            "content": f"{marker} #tool=lookup_account,client_fn",
        },
    )
    assert r.status_code == 200, r.text
    if stream:
        assert "event: tool_call.completed" in r.text and '"name":"client_fn"' in r.text
        assert '"name":"lookup_account"' not in r.text.split("tool_call.started")[0]  # the client sees only its call
    else:
        assert r.json()["stop_reason"] == "tool_use"
    assert len(hooks.requests(tool["path"])) == before + 1  # the registered call ran
    for _ in range(100):
        data = gateway.request("GET", f"/v1/threads/{t['id']}/messages", key).json()["data"]
        if len(data) >= 3:
            break
        time.sleep(0.05)
    assert [m["role"] for m in data] == ["user", "assistant", "user"]
    calls = {b["name"]: b["id"] for b in data[1]["content"] if b["type"] == "tool_use"}
    assert set(calls) == {"lookup_account", "client_fn"}
    assert [b["tool_use_id"] for b in data[2]["content"]] == [calls["lookup_account"]]
    # The client answers its own call, on the other provider: both results reach the model.
    r = gateway.request(
        "POST",
        f"/v1/threads/{t['id']}/messages",
        key,
        json={
            "model": "test-claude",
            "max_tokens": 50,
            "tools": [CLIENT_TOOL_ANTHROPIC],
            "tool_ids": [tool["id"]],
            "content": [{"type": "tool_result", "tool_use_id": calls["client_fn"], "content": "done in the app"}],
        },
    )
    assert r.status_code == 200, r.text
    sent = upstream_calls(fake, marker)[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert {b["tool_use_id"] for b in sent[2]["content"]} == set(calls.values())
