"""Cross-shape calls: /v1/messages naming an OpenAI model, /v1/chat/completions naming an Anthropic one.

Each official SDK must see its own format, streams included; the call is capped
and billed like any other (from the provider's own usage figures).
"""

from __future__ import annotations

import json
import uuid

import anthropic
import openai
import pytest

from tests.conftest import Gateway
from tests.test_proxy_sdks import TOOLS_ANTHROPIC, TOOLS_OPENAI, last_upstream


@pytest.fixture
def oai(gateway: Gateway, user) -> openai.OpenAI:
    return openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)


@pytest.fixture
def claude(gateway: Gateway, user) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)


# ------------------------------------------------------ Anthropic SDK -> OpenAI model
def test_anthropic_sdk_on_an_openai_model(claude: anthropic.Anthropic, gateway: Gateway, user, fake) -> None:
    msg = claude.messages.create(
        model="test-gpt",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello #words=4"}],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "test-gpt"
    assert [b.text for b in msg.content] == ["w0 w1 w2 w3"]
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 4 and msg.usage.input_tokens > 0
    sent = last_upstream(fake, "/v1/chat/completions")
    assert sent["body"]["model"] == "gpt-test-upstream"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello #words=4"},
    ]
    assert sent["body"]["max_completion_tokens"] == 50
    # The upstream saw the provider's key and no Anthropic headers.
    assert sent["headers"]["authorization"] == "Bearer sk-fake-openai"
    assert not any(h.startswith("anthropic-") for h in sent["headers"])
    # Billed from OpenAI's usage: input 1 $/Mtok, output 10 $/Mtok.
    events = gateway.key_usage(user[0])["events"]
    assert events[0]["model"] == "test-gpt" and events[0]["output_tokens"] == 4
    assert events[0]["cost_micros"] == round(events[0]["input_tokens"] * 1 + 4 * 10)


def test_anthropic_sdk_streams_an_openai_model(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="test-gpt", max_tokens=50, messages=[{"role": "user", "content": "hi #words=7"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "w0 w1 w2 w3 w4 w5 w6" and len(texts) == 7
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7 and final.usage.input_tokens > 0


def test_anthropic_sdk_tool_use_on_an_openai_model(claude: anthropic.Anthropic, fake) -> None:
    for streamed in (False, True):
        kwargs = dict(
            model="test-gpt",
            max_tokens=100,
            tools=TOOLS_ANTHROPIC,
            messages=[{"role": "user", "content": "acme #tool=lookup_account"}],
        )
        if streamed:
            with claude.messages.stream(**kwargs) as stream:
                msg = stream.get_final_message()
        else:
            msg = claude.messages.create(**kwargs)
        assert msg.stop_reason == "tool_use"
        call = [b for b in msg.content if b.type == "tool_use"][0]
        assert call.name == "lookup_account" and call.input == {"query": "acme"}
        sent = last_upstream(fake, "/v1/chat/completions")["body"]
        assert sent["tools"] == TOOLS_OPENAI
        # Send the result back: tool_use/tool_result become tool_calls + a tool message.
        follow = claude.messages.create(
            model="test-gpt",
            max_tokens=100,
            tools=TOOLS_ANTHROPIC,
            messages=[
                {"role": "user", "content": "acme #tool=lookup_account"},
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "balance 42"}]},
            ],
        )
        assert follow.stop_reason == "end_turn"
        sent = last_upstream(fake, "/v1/chat/completions")["body"]
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "balance 42"}


def test_anthropic_sdk_sees_anthropic_errors_from_an_openai_model(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        claude.messages.create(
            model="test-gpt", max_tokens=10, messages=[{"role": "user", "content": "#status=429 #retry_after=100"}]
        )
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="test-gpt",
            max_tokens=10,
            messages=[
                {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "http://x"}}]}
            ],
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------ OpenAI SDK -> Anthropic model
def test_openai_sdk_on_an_anthropic_model(oai: openai.OpenAI, gateway: Gateway, user, fake) -> None:
    res = oai.chat.completions.create(
        model="test-claude",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello #words=5"}],
        max_completion_tokens=40,
        temperature=1.5,
        stop=["zzz"],
    )
    assert res.object == "chat.completion" and res.model == "test-claude"
    assert res.choices[0].message.content == "w0 w1 w2 w3 w4" and res.choices[0].finish_reason == "stop"
    assert res.usage.completion_tokens == 5 and res.usage.total_tokens == res.usage.prompt_tokens + 5
    sent = last_upstream(fake, "/v1/messages")
    body = sent["body"]
    assert body["model"] == "claude-test-upstream" and body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "hello #words=5"}] or body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello #words=5"}]}
    ]
    assert body["max_tokens"] == 40 and body["temperature"] == 1.0 and body["stop_sequences"] == ["zzz"]
    assert sent["headers"]["x-api-key"] == "sk-ant-fake" and "authorization" not in sent["headers"]
    events = gateway.key_usage(user[0])["events"]
    assert events[0]["model"] == "test-claude" and events[0]["output_tokens"] == 5


def test_openai_sdk_on_an_anthropic_model_without_max_tokens_gets_the_model_default(oai: openai.OpenAI, fake) -> None:
    oai.chat.completions.create(model="test-claude", messages=[{"role": "user", "content": "hi #words=1"}])
    assert last_upstream(fake, "/v1/messages")["body"]["max_tokens"] == 64000


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_sdk_streams_an_anthropic_model(oai: openai.OpenAI, include_usage: bool) -> None:
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = oai.chat.completions.create(
        model="test-claude", messages=[{"role": "user", "content": "hi #words=6"}], max_tokens=30, stream=True, **kwargs
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 w5"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    if include_usage:
        assert len(usage) == 1 and usage[0].completion_tokens == 6 and chunks[-1].choices == []
    else:
        assert usage == []
    assert {c.model for c in chunks} == {"test-claude"} and len({c.id for c in chunks}) == 1


def test_openai_sdk_tool_calls_on_an_anthropic_model(oai: openai.OpenAI, fake) -> None:
    messages = [{"role": "user", "content": "acme #tool=lookup_account"}]
    res = oai.chat.completions.create(model="test-claude", messages=messages, tools=TOOLS_OPENAI, max_tokens=50)
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_account" and json.loads(call.function.arguments) == {"query": "acme"}
    assert last_upstream(fake, "/v1/messages")["body"]["tools"] == TOOLS_ANTHROPIC
    # Streamed, the SDK's accumulator rebuilds the same call.
    with oai.chat.completions.stream(model="test-claude", messages=messages, tools=TOOLS_OPENAI, max_tokens=50) as s:
        final = s.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls" and json.loads(streamed.function.arguments) == {
        "query": "acme"
    }
    # The result goes back as an Anthropic tool_result.
    follow = oai.chat.completions.create(
        model="test-claude",
        tools=TOOLS_OPENAI,
        max_tokens=50,
        messages=messages
        + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "balance 42"},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    sent = last_upstream(fake, "/v1/messages")["body"]["messages"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "lookup_account",
        "input": {"query": "acme"},
    }
    assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["tool_use_id"] == call.id


def test_openai_sdk_sees_openai_errors_from_an_anthropic_model(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(
            model="test-claude", messages=[{"role": "user", "content": "#status=529 #retry_after=100"}]
        )
    assert info.value.status_code == 529 and "message" in info.value.body
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="test-claude", messages=[{"role": "user", "content": "x"}], n=2)
    assert info.value.body["param"] == "n"


def test_translated_streams_are_capped_and_billed(gateway: Gateway, fake) -> None:
    # out-claude / out-gpt: output 10 $/Mtok, so cost = 10 micros per output token exactly.
    key_id, key = gateway.mint(max_spend_usd=0.0005)  # 500 micros: 50 output tokens
    oai = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
    stream = oai.chat.completions.create(
        model="out-claude", messages=[{"role": "user", "content": "#words=20"}], max_tokens=20, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).count("w") == 20
    claude = anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0)
    # 300 micros left: a 1000-token request is clamped to 30 tokens, not refused.
    raw = claude.messages.with_raw_response.create(
        model="out-gpt", max_tokens=1000, messages=[{"role": "user", "content": "#words=1000"}]
    )
    assert raw.headers["x-tollway-max-tokens-clamped"] == "30"
    assert raw.parse().stop_reason == "max_tokens" and raw.parse().usage.output_tokens == 30
    with pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(model="out-gpt", max_tokens=10, messages=[{"role": "user", "content": "more"}])
    assert info.value.status_code == 402 and info.value.body["error"]["message"].startswith(
        "this API key has reached its spending cap"
    )
    info = gateway.wait_settled(key_id)
    assert info["spent_micros"] == 500 and info["reserved_micros"] == 0
    assert [e["model"] for e in gateway.key_usage(key_id)["events"][:2]] == ["out-gpt", "out-claude"]


def test_translated_stream_cut_upstream_raises_in_the_sdk(claude: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(
            model="test-gpt", max_tokens=50, messages=[{"role": "user", "content": "#words=20 #cut_after=3"}]
        ) as s:
            s.get_final_message()
    with pytest.raises(openai.APIError):
        list(
            oai.chat.completions.create(
                model="test-claude",
                max_tokens=50,
                stream=True,
                messages=[{"role": "user", "content": "#words=20 #cut_after=3"}],
            )
        )


def test_marker_unique_ids(claude: anthropic.Anthropic) -> None:
    ids = {
        claude.messages.create(
            model="test-gpt", max_tokens=5, messages=[{"role": "user", "content": f"{uuid.uuid4()} #words=1"}]
        ).id
        for _ in range(3)
    }
    assert len(ids) == 3 and all(i.startswith("msg_") for i in ids)
