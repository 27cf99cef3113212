"""POST /v1/responses on models whose provider does not speak Responses, with the official openai SDK.

An Anthropic model (and a Chat-only OpenAI one) behind /v1/responses: create
(sync, async), the .stream() helper, function tools, structured output, the
stored conversation (previous_response_id, across providers), GET / DELETE /
input_items, the scoping of stored responses to the key that made them, and
webhook tools (tool_ids) run by the gateway.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import Gateway, fake_requests
from tests.fakes.webhooks import start_webhook_server
from tests.test_tool_loop import register

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.fixture
def oai(gateway: Gateway, user) -> openai.OpenAI:
    return openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)


def _last_upstream(fake, path: str) -> dict:
    return [r for r in fake_requests(fake) if r["path"] == path][-1]


def test_create_on_an_anthropic_model(oai: openai.OpenAI, gateway: Gateway, user, fake) -> None:
    resp = oai.responses.create(
        model="test-claude", instructions="Be brief.", input="hello #words=5", max_output_tokens=40
    )
    assert resp.object == "response" and resp.id.startswith("resp_") and resp.model == "test-claude"
    assert resp.status == "completed" and resp.incomplete_details is None
    assert resp.output_text == "w0 w1 w2 w3 w4"
    assert resp.output[0].type == "message" and resp.output[0].content[0].type == "output_text"
    assert resp.usage.output_tokens == 5 and resp.usage.input_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + 5
    sent = _last_upstream(fake, "/v1/messages")["body"]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 40
    assert sent["messages"] == [{"role": "user", "content": "hello #words=5"}]
    events = gateway.key_usage(user[0])["events"]
    assert events[0]["model"] == "test-claude" and events[0]["output_tokens"] == 5


def test_max_output_tokens_is_incomplete(oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="test-claude", input="hi #words=30", max_output_tokens=3)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == "w0 w1 w2"


def test_async_create(gateway: Gateway, user) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
        resp = await client.responses.create(model="test-claude", input="hi #words=3")
        await client.close()
        return resp.output_text

    assert asyncio.run(run()) == "w0 w1 w2"


def test_stream_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="test-claude", input="hi #words=6") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and kinds.count("response.output_text.delta") == 6
    assert final.output_text == "w0 w1 w2 w3 w4 w5" and final.usage.output_tokens == 6
    # The streamed response was stored: GET answers the same.
    assert oai.responses.retrieve(final.id).output_text == "w0 w1 w2 w3 w4 w5"


def test_stream_on_a_chat_model(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="chat-gpt", input="hi #words=4") as stream:
        final = stream.get_final_response()
    assert final.output_text == "w0 w1 w2 w3" and final.usage.output_tokens == 4 and final.usage.input_tokens > 0


def test_function_tool_round_trip(oai: openai.OpenAI, fake) -> None:
    first = oai.responses.create(model="test-claude", input="paris #tool=get_weather", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"query": "paris"}
    second = oai.responses.create(
        model="test-claude",
        previous_response_id=first.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"}],
    )
    assert second.status == "completed" and second.output_text
    sent = _last_upstream(fake, "/v1/messages")["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[1]["content"][0]["id"] == calls[0].call_id
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": calls[0].call_id, "content": "sunny, 21C"}]


def test_streamed_function_call(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="test-claude", input="rome #tool=get_weather", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"query": "rome"}


class City(BaseModel):
    city: str


def test_structured_output_reaches_the_provider(oai: openai.OpenAI, fake) -> None:
    resp = oai.responses.create(
        model="test-claude",
        input="hi",
        text={"format": {"type": "json_schema", "name": "city", "schema": City.model_json_schema()}},
    )
    assert resp.text.format.type == "json_schema"
    system = _last_upstream(fake, "/v1/messages")["body"]["system"]
    assert "JSON" in system and '"city"' in system


def test_previous_response_across_providers(oai: openai.OpenAI, fake) -> None:
    first = oai.responses.create(model="test-claude", instructions="Only here.", input="one #words=2")
    second = oai.responses.create(model="chat-gpt", previous_response_id=first.id, input="two #words=3")
    assert second.output_text == "w0 w1 w2" and second.previous_response_id == first.id
    sent = _last_upstream(fake, "/v1/chat/completions")["body"]["messages"]
    assert sent == [
        {"role": "user", "content": "one #words=2"},
        {"role": "assistant", "content": "w0 w1"},
        {"role": "user", "content": "two #words=3"},
    ]  # the first response's instructions are not carried over
    items = oai.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message", "message", "message"]
    assert items.data[0].content[0].text == "two #words=3"  # newest first by default
    asc = oai.responses.input_items.list(second.id, order="asc", limit=1)
    assert asc.has_more and asc.data[0].content[0].text == "one #words=2"
    after = oai.responses.input_items.list(second.id, order="asc", after=asc.last_id)
    assert [i.role for i in after.data] == ["assistant", "user"] and not after.has_more


def test_store_false_is_not_kept(oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="test-claude", input="hi", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(resp.id)


def test_delete_erases_and_scoping(oai: openai.OpenAI, gateway: Gateway) -> None:
    resp = oai.responses.create(model="test-claude", input="secret words")
    other = openai.OpenAI(api_key=gateway.mint(max_spend_usd=1)[1], base_url=gateway.url + "/v1", max_retries=0)
    for call in (
        lambda: other.responses.retrieve(resp.id),
        lambda: other.responses.delete(resp.id),
        lambda: other.responses.input_items.list(resp.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="test-claude", previous_response_id=resp.id, input="tell me")
    assert oai.responses.retrieve(resp.id).id == resp.id
    deleted = gateway.request("DELETE", f"/v1/responses/{resp.id}", oai.api_key)
    assert deleted.status_code == 200 and deleted.json() == {"id": resp.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(resp.id)
    assert gateway.request("GET", f"/v1/threads/{resp.id}", gateway.admin).status_code == 404


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "test-claude"}, "input"),
        ({"model": "test-claude", "input": [{"type": "web_search_call"}]}, "input[0].type"),
        ({"model": "test-claude", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "test-claude", "input": "x", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"model": "test-claude", "input": "x", "store": "yes"}, "store"),
        (
            {
                "model": "test-claude",
                "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "file:///x"}]}],
            },
            "input[0].content[0].image_url",
        ),
    ],
)
def test_bad_input_is_an_openai_400(gateway: Gateway, user, body, param) -> None:
    r = httpx.post(gateway.url + "/v1/responses", json=body, headers={"authorization": f"Bearer {user[1]}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == param


def test_upstream_error_in_openai_shape(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        oai.responses.create(model="test-claude", input="hi #status=429")
    assert caught.value.body["type"] == "rate_limit_error"


@pytest.fixture(scope="module")
def hooks():
    server = start_webhook_server()
    try:
        yield server
    finally:
        server.stop()


def test_webhook_tools_run_by_the_gateway(oai: openai.OpenAI, gateway: Gateway, hooks, fake) -> None:
    path = "/lookup-" + uuid.uuid4().hex[:8]
    tool = register(gateway, hooks, "lookup_account", path)
    try:
        marker = "acme" + uuid.uuid4().hex[:8]
        resp = oai.responses.create(
            model="test-claude", input=f"{marker} #tool=lookup_account #words=3", extra_body={"tool_ids": [tool["id"]]}
        )
        assert resp.output_text == "w0 w1 w2" and [item.type for item in resp.output] == ["message"]
        assert "tool_ids" not in resp.model_dump()
        sent = [q["body"] for q in fake_requests(fake) if marker in json.dumps(q["body"])]
        assert len(sent) == 2  # the call, then the follow-up with the webhook's result
        assert any(
            b.get("type") == "tool_result"
            for m in sent[1]["messages"]
            if isinstance(m["content"], list)
            for b in m["content"]
        )
        # Streamed, on a Chat model too: the turns merged into one Responses stream, stored at its end.
        with oai.responses.stream(
            model="chat-gpt", input=f"{marker} #tool=lookup_account #words=4", extra_body={"tool_ids": [tool["id"]]}
        ) as stream:
            final = stream.get_final_response()
        assert final.output_text == "w0 w1 w2 w3" and [item.type for item in final.output] == ["message"]
        assert final.status == "completed" and final.usage.output_tokens > 4  # both model turns
        assert oai.responses.retrieve(final.id).output_text == "w0 w1 w2 w3"
    finally:
        gateway.request("DELETE", f"/v1/tools/{tool['id']}", gateway.admin)
