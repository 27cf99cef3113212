"""The fake upstream, driven directly by the official openai and anthropic SDKs."""

import json
import socket
import time
import uuid

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from tests.fakes import upstream
from tests.fakes.runner import start_fake

OPENAI_KEY = "sk-fake-openai"
ANTHROPIC_KEY = "sk-ant-fake"
TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
TOOLS_ANTHROPIC = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def tok(text: str) -> int:
    return -(-len(text.encode()) // 4)


@pytest.fixture(scope="module")
def fake():
    with start_fake() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    httpx.post(fake.url + "/_fake/reset").raise_for_status()


@pytest.fixture
def oai(fake):
    with openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0) as client:
        yield client


@pytest.fixture
def ant(fake):
    with anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, max_retries=0) as client:
        yield client


def user(text: str) -> list:
    return [{"role": "user", "content": text}]


def requests_seen(fake) -> list:
    return httpx.get(fake.url + "/_fake/requests").json()


def stats(fake) -> dict:
    return httpx.get(fake.url + "/_fake/stats").json()


# --- token rules (no server) ----------------------------------------------------


def test_directives_and_counting_rules():
    assert upstream.parse_directives("hi #words=3 #hang #tool=f #x=1 plain") == {"words": 3, "hang": True, "tool": "f"}
    with pytest.raises(upstream.BadRequest):
        upstream.parse_directives("#words=three")
    turn = upstream.OpenAI.parse(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "héllo"},  # 6 bytes -> 2
                {"role": "user", "content": [{"type": "text", "text": "abcde"}, {"type": "image_url"}]},
            ],
        }
    )
    assert turn.input_tokens == 3 + 2 + 3 + 2 + 85
    turn = upstream.Anthropic.parse(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "abcd"}],
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "abcdefghi"}]},
            ],
        }
    )
    assert turn.input_tokens == 1 + (3 + 1) + 3 + (3 + 3)
    assert upstream.make_reply(turn).text == words(5)


def test_tool_pairing_is_enforced_like_the_real_apis() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(upstream.BadRequest, match="did not have response messages: c1"):
        upstream.OpenAI.parse(
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "tool_calls": [call]},
                    {"role": "user", "content": "x"},
                ],
            }
        )
    with pytest.raises(upstream.BadRequest, match="must be a response to a preceeding message"):
        upstream.OpenAI.parse(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c9", "content": "x"}],
            }
        )
    use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    with pytest.raises(upstream.BadRequest, match="without `tool_result` blocks immediately after: t1"):
        upstream.Anthropic.parse(
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": [use]},
                    {"role": "user", "content": "x"},
                ],
            }
        )
    with pytest.raises(upstream.BadRequest, match="unexpected `tool_use_id`"):
        upstream.Anthropic.parse(
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}
                ],
            }
        )


def test_tool_rounds_and_parallel_calls() -> None:
    tools = [{"name": n, "input_schema": {"type": "object"}} for n in ("a", "b")]
    prompt = {"role": "user", "content": "acme #tool=a,b #tool_turns=2"}
    turn = upstream.Anthropic.parse({"model": "m", "max_tokens": 5, "tools": tools, "messages": [prompt]})
    assert turn.tools == ("a", "b")
    body = orjson.loads(upstream.Anthropic.render(turn, upstream.make_reply(turn)))
    assert [b["name"] for b in body["content"]] == ["a", "b"] and body["content"][0]["input"] == {"query": "acme"}
    round_one = [
        prompt,
        {"role": "assistant", "content": body["content"]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"} for b in body["content"]],
        },
    ]
    assert upstream.Anthropic.parse({"model": "m", "max_tokens": 5, "tools": tools, "messages": round_one}).tools == (
        "a",
        "b",
    )
    round_two = round_one + round_one[1:]
    assert upstream.Anthropic.parse({"model": "m", "max_tokens": 5, "tools": tools, "messages": round_two}).tools == ()


# --- OpenAI ---------------------------------------------------------------------


def test_openai_text(oai):
    text = "Hello there friend"
    resp = oai.chat.completions.create(model="gpt-test", messages=user(text))
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-test"
    choice = resp.choices[0]
    assert choice.message.content == words(12) and choice.finish_reason == "stop"
    assert choice.message.refusal is None and choice.message.annotations == []
    assert resp.usage.prompt_tokens == 3 + tok(text)
    assert resp.usage.completion_tokens == 12 and resp.usage.total_tokens == 3 + tok(text) + 12
    assert resp.usage.completion_tokens_details.reasoning_tokens == 0
    assert resp.service_tier == "default" and resp.system_fingerprint
    assert resp._request_id


def test_openai_max_tokens_and_cache(oai):
    text = "count me #words=10 #cache_read=100"
    resp = oai.chat.completions.create(model="m", messages=user(text), max_completion_tokens=4)
    assert resp.choices[0].message.content == words(4) and resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == 3 + tok(text) + 100
    assert resp.usage.prompt_tokens_details.cached_tokens == 100


def test_openai_image_parts_counted(oai):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
    ]
    resp = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
    assert resp.usage.prompt_tokens == 3 + tok("what is this") + 2 * 85


def test_openai_stream_without_usage(oai):
    chunks = list(oai.chat.completions.create(model="m", messages=user("hi #words=3"), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == words(3)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_openai_stream_include_usage_wire_format(fake):
    body = {
        "model": "m",
        "messages": user("hi #words=2"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = httpx.post(
        fake.openai_base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {OPENAI_KEY}"}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = raw.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [e.removeprefix("data: ") for e in events[:-2]]
    assert all(" " not in p.replace('" w', "") for p in payloads)  # compact JSON
    assert all(p.endswith(',"usage":null}') for p in payloads[:-1])
    chunks = [json.loads(p) for p in payloads]
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "w0"},
        {"content": " w1"},
        {},
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


async def test_openai_async_stream_usage(fake):
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="m", messages=user("hey #words=5"), stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == words(5)
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].usage.prompt_tokens == 3 + tok("hey #words=5")


async def test_openai_no_usage_directive(fake):
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="m", messages=user("#no_usage"), stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)


def test_openai_tool_call(oai):
    resp = oai.chat.completions.create(model="m", messages=user("paris weather #tool=lookup"), tools=TOOLS_OPENAI)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "paris"}
    assert resp.usage.completion_tokens == tok(call.function.arguments)


def test_openai_tool_call_stream_helper(oai):
    with oai.chat.completions.stream(
        model="m", messages=user("paris #tool=lookup"), tools=TOOLS_OPENAI, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"query": "paris"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.completion_tokens == tok(call.function.arguments)


def test_openai_tool_result_gets_text_reply(oai):
    messages = user("paris #tool=lookup #words=2") + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    resp = oai.chat.completions.create(model="m", messages=messages, tools=TOOLS_OPENAI)
    assert resp.choices[0].message.content == words(2)


# --- Anthropic ------------------------------------------------------------------


def test_anthropic_text_and_cache(ant):
    text = "Hello Claude #words=4 #cache_read=7 #cache_write=9"
    msg = ant.messages.create(model="claude-test", max_tokens=100, system="Be brief.", messages=user(text))
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-test" and msg.content[0].text == words(4)
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens == tok("Be brief.") + 3 + tok(text)
    assert msg.usage.output_tokens == 4
    assert msg.usage.cache_read_input_tokens == 7 and msg.usage.cache_creation_input_tokens == 9
    assert msg.usage.service_tier == "standard"


def test_anthropic_images_and_max_tokens(ant):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "text", "text": "describe"},
    ]
    msg = ant.messages.create(model="m", max_tokens=3, messages=[{"role": "user", "content": content}])
    assert msg.usage.input_tokens == 3 + 85 + tok("describe")
    assert msg.content[0].text == words(3) and msg.stop_reason == "max_tokens"


def test_anthropic_stream_helper(ant):
    with ant.messages.stream(model="m", max_tokens=50, messages=user("go #words=6")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == words(6) == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6 and final.usage.input_tokens == 3 + tok("go #words=6")


def test_anthropic_stream_event_sequence(ant):
    with ant.messages.create(model="m", max_tokens=50, messages=user("#words=2"), stream=True) as stream:
        kinds = [(e.type, getattr(e, "delta", None)) for e in stream]
    assert [k for k, _ in kinds] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK swallows ping
    assert kinds[2][1].text == "w0" and kinds[3][1].text == " w1"
    assert kinds[5][1].stop_reason == "end_turn"


def test_anthropic_tool_use(ant):
    msg = ant.messages.create(model="m", max_tokens=50, tools=TOOLS_ANTHROPIC, messages=user("london #tool=lookup"))
    block = msg.content[0]
    assert msg.stop_reason == "tool_use"
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "lookup"
    assert block.input == {"query": "london"}
    with ant.messages.stream(model="m", max_tokens=50, tools=TOOLS_ANTHROPIC, messages=user("rome #tool=lookup")) as s:
        final = s.get_final_message()
    assert final.content[0].input == {"query": "rome"} and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == tok(json.dumps({"query": "rome"}, separators=(",", ":")))


async def test_anthropic_async(fake):
    async with anthropic.AsyncAnthropic(
        api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, max_retries=0
    ) as client:
        msg = await client.messages.create(model="m", max_tokens=9, messages=user("async"))
        async with client.messages.stream(model="m", max_tokens=9, messages=user("async")) as stream:
            final = await stream.get_final_message()
    assert msg.content[0].text == final.content[0].text == words(9)
    assert final.stop_reason == "max_tokens"


# --- errors, retries, failures ----------------------------------------------------


def test_auth_errors(fake):
    bad = openai.OpenAI(api_key="nope", base_url=fake.openai_base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="m", messages=user("x"))
    assert err.value.body["code"] == "invalid_api_key" and err.value.body["type"] == "invalid_request_error"
    bad = anthropic.Anthropic(api_key="nope", base_url=fake.anthropic_base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model="m", max_tokens=5, messages=user("x"))
    assert err.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    body = {"model": "m", "max_tokens": 5, "messages": user("x")}
    raw = httpx.post(fake.url + "/v1/messages", headers={"x-api-key": ANTHROPIC_KEY}, json=body)
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"  # no anthropic-version
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    assert httpx.post(fake.url + "/v1/messages", headers=headers, json=body).status_code == 200


def test_malformed_json(fake):
    raw = httpx.post(
        fake.openai_base_url + "/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"}, content=b"{"
    )
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    raw = httpx.post(
        fake.url + "/v1/messages",
        headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
        content=b"nope",
    )
    assert raw.status_code == 400 and raw.json()["type"] == "error"


@pytest.mark.parametrize(
    ("status", "oai_exc", "ant_exc", "ant_type"),
    [
        (400, openai.BadRequestError, anthropic.BadRequestError, "invalid_request_error"),
        (429, openai.RateLimitError, anthropic.RateLimitError, "rate_limit_error"),
        (500, openai.InternalServerError, anthropic.InternalServerError, "api_error"),
        (529, openai.InternalServerError, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_status_directive(oai, ant, status, oai_exc, ant_exc, ant_type):
    with pytest.raises(oai_exc) as err:
        oai.chat.completions.create(model="m", messages=user(f"#status={status}"))
    assert err.value.status_code == status and set(err.value.body) == {"message", "type", "param", "code"}
    with pytest.raises(ant_exc) as err:
        ant.messages.create(model="m", max_tokens=5, messages=user(f"#status={status}"))
    assert err.value.status_code == status and err.value.body["error"]["type"] == ant_type


def test_fail_then_succeed_with_sdk_retries(fake):
    tag = uuid.uuid4().hex
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=2)
    resp = client.chat.completions.create(model="m", messages=user(f"#fail=2 #id={tag} #retry_after=0.01 #words=1"))
    assert resp.choices[0].message.content == "w0"
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, max_retries=1)
    text = f"#fail=1 #id=a{tag} #status=429 #retry_after=0.01 #words=1"
    assert client.messages.create(model="m", max_tokens=5, messages=user(text)).content[0].text == "w0"
    assert [r["headers"]["x-stainless-retry-count"] for r in requests_seen(fake)] == ["0", "1", "2", "0", "1"]


def test_retry_after_header(fake):
    raw = httpx.post(
        fake.openai_base_url + "/chat/completions",
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
        json={"model": "m", "messages": user("#fail=1 #id=ra #retry_after=3")},
    )
    assert raw.status_code == 503 and raw.headers["retry-after"] == "3"
    assert raw.json()["error"]["type"] == "server_error"


# --- streaming failure modes -----------------------------------------------------


def test_cut_after_openai(oai):
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(
            model="m", messages=user("#cut_after=3"), stream=True, stream_options={"include_usage": True}
        ):
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "w0", " w1", " w2"]


def test_cut_after_anthropic(ant):
    got = []
    # anthropic < 2.17 let the transport's error through; 2.17 wraps it as APIConnectionError.
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)) as raised:
        with ant.messages.stream(model="m", max_tokens=50, messages=user("#cut_after=2 #chunk_delay_ms=5")) as s:
            got.extend(s.text_stream)
    assert "incomplete chunked read" in str(raised.value)
    assert got == ["w0", " w1"]


def test_cut_after_closes_connection(fake):
    body = json.dumps({"model": "m", "stream": True, "messages": user("#cut_after=1")}).encode()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + OPENAI_KEY.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip
        data = b""
        while chunk := sock.recv(65536):  # returns b"" only once the server closed the socket
            data += chunk
    assert b"transfer-encoding: chunked" in data.lower()
    assert data.count(b"data: ") == 2 and not data.endswith(b"0\r\n\r\n") and b"[DONE]" not in data


def test_client_abort_is_counted(fake):
    body = {"model": "m", "stream": True, "messages": user("#words=100 #chunk_delay_ms=20")}
    with httpx.stream(
        "POST", fake.openai_base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {OPENAI_KEY}"}
    ) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
        assert stats(fake)["open_streams"] == 1
    deadline = time.monotonic() + 5
    while (s := stats(fake))["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s == {"open_streams": 0, "aborted_streams": 1, "completed_streams": 0, "requests": 1, "completed_calls": 0}


def test_delay_and_hang(oai):
    start = time.monotonic()
    oai.chat.completions.create(model="m", messages=user("#delay_ms=150"))
    assert time.monotonic() - start >= 0.15
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).chat.completions.create(model="m", messages=user("#hang"))


# --- models, routing, introspection ----------------------------------------------


def test_models_lists(oai, ant):
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]
    models = list(ant.models.list())
    assert models and all(m.id.startswith("claude-") and m.type == "model" for m in models)


def test_unknown_route(fake):
    raw = httpx.get(fake.url + "/v1/nope")
    assert raw.status_code == 404 and raw.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


def test_requests_are_recorded(fake, oai, ant):
    before = time.monotonic()
    oai.chat.completions.create(model="m", messages=user("one"))
    ant.messages.create(model="m", max_tokens=5, messages=user("two"))
    first, second = requests_seen(fake)
    assert first["path"] == "/v1/chat/completions" and first["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert first["body"]["messages"] == user("one") and before <= first["t"] <= second["t"]
    assert second["path"] == "/v1/messages" and second["headers"]["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert "anthropic-version" in second["headers"]
    assert stats(fake)["requests"] == 2
