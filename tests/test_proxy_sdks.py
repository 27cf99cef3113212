"""The official SDKs, pointed at the gateway with only base_url changed."""

from __future__ import annotations

import uuid

import anthropic
import httpx
import openai
import pytest

from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, Gateway, fake_requests

TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "lookup_account",
            "description": "Find an account",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
TOOLS_ANTHROPIC = [
    {
        "name": "lookup_account",
        "description": "Find an account",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
]


@pytest.fixture
def oai(gateway: Gateway, user) -> openai.OpenAI:
    return openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)


@pytest.fixture
def claude(gateway: Gateway, user) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)


def last_upstream(fake, path: str) -> dict:
    return [q for q in fake_requests(fake) if q["path"] == path][-1]


# ------------------------------------------------------------------ OpenAI
def test_openai_non_stream(oai: openai.OpenAI, fake) -> None:
    res = oai.chat.completions.create(
        model="test-gpt",
        messages=[{"role": "user", "content": "hello #words=5"}],
        max_tokens=50,
        temperature=0.3,
        user="end-user-7",
        metadata={"k": "v"},
        seed=4,
    )
    assert res.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert res.usage.completion_tokens == 5
    assert res.model == "gpt-test-upstream"
    sent = last_upstream(fake, "/v1/chat/completions")
    # Every field passed through; the model renamed; the provider key replaces the user's.
    assert sent["body"]["temperature"] == 0.3 and sent["body"]["user"] == "end-user-7"
    assert sent["body"]["metadata"] == {"k": "v"} and sent["body"]["seed"] == 4
    assert sent["body"]["model"] == "gpt-test-upstream"
    assert sent["headers"]["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert oai.api_key not in str(sent["headers"])


def test_openai_stream_without_usage_sees_no_usage(oai: openai.OpenAI, fake) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="test-gpt", messages=[{"role": "user", "content": "hi #words=6"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 w5"
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    # We asked upstream for usage anyway.
    assert last_upstream(fake, "/v1/chat/completions")["body"]["stream_options"] == {"include_usage": True}


def test_openai_stream_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="test-gpt",
            messages=[{"role": "user", "content": "hi #words=6"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].choices == []


def test_openai_stream_bytes_without_include_usage(gateway: Gateway, user) -> None:
    """What the client receives is what a provider sends to a client that did not ask for usage."""
    body = {"model": "test-gpt", "messages": [{"role": "user", "content": "hi #words=3"}], "stream": True}
    r = gateway.request("POST", "/v1/chat/completions", user[1], json=body)
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in r.text
    assert r.headers["content-type"].startswith("text/event-stream")


def test_openai_tools(oai: openai.OpenAI) -> None:
    res = oai.chat.completions.create(
        model="test-gpt", messages=[{"role": "user", "content": "acme #tool=lookup_account"}], tools=TOOLS_OPENAI
    )
    call = res.choices[0].message.tool_calls[0]
    assert res.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup_account" and call.function.arguments == '{"query":"acme"}'
    with oai.chat.completions.stream(
        model="test-gpt",
        messages=[{"role": "user", "content": "acme #tool=lookup_account"}],
        tools=TOOLS_OPENAI,
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "lookup_account"


def test_openai_image_input(oai: openai.OpenAI) -> None:
    pixel = "data:image/png;base64," + "iVBORw0KGgo" * 2000
    res = oai.chat.completions.create(
        model="test-gpt",
        max_tokens=5,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": pixel}}],
            }
        ],
    )
    assert res.usage.prompt_tokens == 3 + 3 + 85  # text, message, one image


def test_openai_errors_map_to_sdk_exceptions(oai: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="unpriced-gpt", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(
            model="test-gpt", messages=[{"role": "user", "content": "x #status=429 #retry_after=60"}]
        )
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(
            model="test-gpt", messages=[{"role": "user", "content": "x #status=500 #retry_after=60"}]
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="tw_live_wrong", base_url=gateway.url + "/v1", max_retries=0).models.list()


def test_openai_models_list(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"test-gpt", "test-claude", "gpt-4o-mini", "claude-sonnet-4-5"} <= ids


# ------------------------------------------------------------------ Anthropic
def test_anthropic_non_stream(claude: anthropic.Anthropic, fake) -> None:
    msg = claude.messages.create(
        model="test-claude",
        max_tokens=100,
        system="be brief",
        stop_sequences=["zzz"],
        messages=[{"role": "user", "content": "hello #words=4"}],
        metadata={"user_id": "u1"},
    )
    assert msg.content[0].text == "w0 w1 w2 w3"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 4
    sent = last_upstream(fake, "/v1/messages")
    assert sent["body"]["system"] == "be brief" and sent["body"]["metadata"] == {"user_id": "u1"}
    assert sent["body"]["stop_sequences"] == ["zzz"]
    assert sent["body"]["model"] == "claude-test-upstream"
    assert sent["headers"]["x-api-key"] == FAKE_ANTHROPIC_KEY
    assert claude.api_key not in str(sent["headers"])
    assert sent["headers"]["anthropic-version"]  # the SDK's own version, passed on


def test_anthropic_version_and_beta_headers(gateway: Gateway, user, fake) -> None:
    body = {"model": "test-claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    assert gateway.request("POST", "/v1/messages", user[1], json=body).status_code == 200
    assert last_upstream(fake, "/v1/messages")["headers"]["anthropic-version"] == "2023-06-01"  # default
    r = gateway.request(
        "POST",
        "/v1/messages",
        user[1],
        json=body,
        headers={"anthropic-version": "2099-01-01", "anthropic-beta": "some-beta"},
    )
    assert r.status_code == 200
    sent = last_upstream(fake, "/v1/messages")["headers"]
    assert (sent["anthropic-version"], sent["anthropic-beta"]) == ("2099-01-01", "some-beta")


def test_anthropic_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="test-claude", max_tokens=100, messages=[{"role": "user", "content": "hi #words=6"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "w0 w1 w2 w3 w4 w5"
    assert final.usage.output_tokens == 6


def test_anthropic_tools(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model="test-claude",
        max_tokens=100,
        tools=TOOLS_ANTHROPIC,
        messages=[{"role": "user", "content": "acme #tool=lookup_account"}],
    )
    block = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and block.name == "lookup_account" and block.input == {"query": "acme"}
    with claude.messages.stream(
        model="test-claude",
        max_tokens=100,
        tools=TOOLS_ANTHROPIC,
        messages=[{"role": "user", "content": "acme #tool=lookup_account"}],
    ) as stream:
        final = stream.get_final_message()
    assert next(b for b in final.content if b.type == "tool_use").input == {"query": "acme"}


def test_anthropic_errors_map_to_sdk_exceptions(claude: anthropic.Anthropic, gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.create(model="unpriced-gpt", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "has no price configured" in str(exc.value)
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="test-claude", max_tokens=5, messages=[{"role": "user", "content": "x #status=429 #retry_after=60"}]
        )
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(
            model="test-claude", max_tokens=5, messages=[{"role": "user", "content": "x #status=529 #retry_after=60"}]
        )
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="tw_live_wrong", base_url=gateway.url, max_retries=0).messages.create(
            model="test-claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_anthropic_models_list(claude: anthropic.Anthropic) -> None:
    ids = {m.id for m in claude.models.list()}
    assert {"test-claude", "claude-sonnet-4-5"} <= ids


@pytest.mark.asyncio
async def test_async_clients_stream(gateway: Gateway, user) -> None:
    aoai = openai.AsyncOpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    stream = await aoai.chat.completions.create(
        model="test-gpt", stream=True, messages=[{"role": "user", "content": "hi #words=3"}]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "w0 w1 w2"
    aclaude = anthropic.AsyncAnthropic(api_key=user[1], base_url=gateway.url, max_retries=0)
    async with aclaude.messages.stream(
        model="test-claude", max_tokens=10, messages=[{"role": "user", "content": "hi #words=3"}]
    ) as s:
        assert "".join([t async for t in s.text_stream]) == "w0 w1 w2"


# ------------------------------------------------------------------ byte for byte
@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"model": "test-gpt", "messages": [{"role": "user", "content": "héllo 🙂 #words=9"}]}),
        (
            "/v1/chat/completions",
            {
                "model": "test-gpt",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "héllo 🙂 #words=9"}],
            },
        ),
        (
            "/v1/chat/completions",
            {
                "model": "test-gpt",
                "stream": True,
                "tools": TOOLS_OPENAI,
                "messages": [{"role": "user", "content": "acme #tool=lookup_account"}],
            },
        ),
        (
            "/v1/messages",
            {"model": "test-claude", "max_tokens": 50, "messages": [{"role": "user", "content": "héllo 🙂 #words=9"}]},
        ),
        (
            "/v1/messages",
            {
                "model": "test-claude",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "héllo 🙂 #words=9 #chunk_delay_ms=5"}],
            },
        ),
        (
            "/v1/messages",
            {
                "model": "test-claude",
                "max_tokens": 50,
                "stream": True,
                "tools": TOOLS_ANTHROPIC,
                "messages": [{"role": "user", "content": "acme #tool=lookup_account"}],
            },
        ),
    ],
    ids=["openai", "openai-stream", "openai-stream-tools", "anthropic", "anthropic-stream", "anthropic-stream-tools"],
)
def test_responses_are_byte_for_byte_what_the_provider_sent(gateway: Gateway, user, fake, path, body) -> None:
    tag = uuid.uuid4().hex[:10]
    body["messages"][0]["content"] += f" #id={tag}"
    r = gateway.request("POST", path, user[1], json=body)
    assert r.status_code == 200, r.text
    sent = httpx.get(f"{fake.url}/_fake/sent/{tag}")
    assert sent.status_code == 200
    expected = sent.content
    if body.get("stream") and path == "/v1/chat/completions" and "stream_options" not in body:
        # We asked upstream for usage the client did not want: exactly that is taken out again.
        events = [e for e in expected.split(b"\n\n") if e and b'"choices":[]' not in e]
        expected = b"".join(e.replace(b',"usage":null', b"") + b"\n\n" for e in events)
        assert b'"usage"' not in expected and expected != sent.content
    assert r.content == expected
