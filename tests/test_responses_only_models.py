"""A model that exists only on the Responses API (``responses_only``): the chat and
messages routes and thread turns call it in the Responses format, through the
canonical model, capped and metered like any call."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import Gateway, fake_requests
from tollway.config import ConfigError, load_settings


def _paths(fake, tag: str) -> list[str]:
    return [q["path"] for q in fake_requests(fake) if tag in str(q["body"])]


def test_chat_and_messages_routes_call_it_in_the_responses_format(gateway: Gateway, fake) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    tag = secret[-8:]
    oai = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    done = oai.chat.completions.create(
        model="resp-only-gpt", max_tokens=50, messages=[{"role": "user", "content": f"chat {tag} #words=3"}]
    )
    assert done.choices[0].message.content == "w0 w1 w2" and done.usage.completion_tokens == 3
    chunks = list(
        oai.chat.completions.create(
            model="resp-only-gpt",
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"stream {tag} #words=4"}],
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2 w3"
    assert chunks[-1].usage.completion_tokens == 4
    claude = anthropic.Anthropic(api_key=secret, base_url=gateway.url, max_retries=0)
    message = claude.messages.create(
        model="resp-only-gpt", max_tokens=50, messages=[{"role": "user", "content": f"messages {tag} #words=2"}]
    )
    assert message.content[0].text == "w0 w1" and message.usage.output_tokens == 2
    assert _paths(fake, tag) == ["/v1/responses"] * 3
    sent = [q["body"] for q in fake_requests(fake) if tag in str(q["body"])]
    assert all(b["model"] == "gpt-resp-only" and "input" in b and "messages" not in b for b in sent)
    info = gateway.wait_settled(key_id)
    events = gateway.key_usage(key_id)["events"]
    assert sorted(e["output_tokens"] for e in events) == [2, 3, 4] and not any(e["estimated"] for e in events)
    assert sum(e["cost_micros"] for e in events) == info["spent_micros"] > 0


def test_a_thread_turn_on_it(gateway: Gateway, fake) -> None:
    _, secret = gateway.mint(max_spend_usd=1)
    thread = gateway.request("POST", "/v1/threads", secret, json={}).json()
    body = {"model": "resp-only-gpt", "max_tokens": 50, "content": "hello #words=3"}
    r = gateway.request("POST", f"/v1/threads/{thread['id']}/messages", secret, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": "w0 w1 w2"}]


def test_webhook_tools_are_refused_with_it(gateway: Gateway, fake) -> None:
    """The tool loop runs in a provider kind's format, which this model is not called in:
    a clear 400 before anything is held or sent."""
    key_id, secret = gateway.mint(max_spend_usd=1)
    tool = gateway.request(
        "POST", "/v1/tools", gateway.admin,
        json={"name": "lookup_" + secret[-6:], "description": "look up", "webhook_url": "http://127.0.0.1:9/hook",
              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
    )  # fmt: skip
    assert tool.status_code == 201, tool.text
    tool_id = tool.json()["id"]
    before = len(fake_requests(fake))
    body = {"model": "resp-only-gpt", "messages": [{"role": "user", "content": "x"}], "tool_ids": [tool_id]}
    r = gateway.request("POST", "/v1/chat/completions", secret, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_ids", r.text
    assert "resp-only-gpt" in r.json()["error"]["message"]
    assert len(fake_requests(fake)) == before and gateway.key(key_id)["reserved_micros"] == 0


def test_responses_only_needs_a_provider_that_serves_responses(tmp_path) -> None:
    config = tmp_path / "tollway.toml"
    config.write_text(
        '[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "k"\n\n'
        '[[models]]\nname = "m"\nprovider = "p"\nresponses_only = true\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n'
    )
    with pytest.raises(ConfigError, match="responses_only"):
        load_settings({"TOLLWAY_CONFIG": str(config), "TOLLWAY_DATA_DIR": str(tmp_path)})
    config.write_text(config.read_text().replace('api_key = "k"', 'api_key = "k"\nresponses = true'))
    route = load_settings({"TOLLWAY_CONFIG": str(config), "TOLLWAY_DATA_DIR": str(tmp_path)}).models["m"]
    assert route.wire == "openai_responses" and route.responses
