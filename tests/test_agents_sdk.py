"""The OpenAI Agents SDK in its default mode (the Responses API), against the gateway."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import Gateway, fake_requests

agents = pytest.importorskip("agents", reason="openai-agents is a test extra (pip install -e '.[test]')")


def test_agent_with_a_function_tool(gateway: Gateway, fake) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    calls: list[str] = []

    @agents.function_tool
    def lookup_account(query: str) -> str:
        """Find a customer account by name."""
        calls.append(query)
        return json.dumps({"account": query, "plan": "pro"})

    client = openai.AsyncOpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    model = agents.OpenAIResponsesModel(model="test-gpt", openai_client=client)
    agent = agents.Agent(name="support", instructions="Answer briefly.", model=model, tools=[lookup_account])
    agents.set_tracing_disabled(True)
    tag = secret[-8:]
    result = agents.Runner.run_sync(agent, f"acme {tag} #tool=lookup_account #words=4")
    assert calls == ["acme"]
    assert result.final_output == "w0 w1 w2 w3"
    ours = [q for q in fake_requests(fake) if tag in json.dumps(q["body"])]
    assert [q["path"] for q in ours] == ["/v1/responses", "/v1/responses"]  # a tool round, then the answer
    sent_back = [i for i in ours[1]["body"]["input"] if i.get("type") == "function_call_output"]
    assert len(sent_back) == 1 and json.loads(sent_back[0]["output"])["plan"] == "pro"
    info = gateway.wait_settled(key_id)
    events = gateway.key_usage(key_id)["events"]
    assert len(events) == 2 and all(not e["estimated"] for e in events)
    assert sum(e["cost_micros"] for e in events) == info["spent_micros"] > 0


def test_default_client_uses_responses(gateway: Gateway, fake) -> None:
    """Only the client is configured: the SDK's default model provider speaks Responses."""
    _, secret = gateway.mint(max_spend_usd=1)
    agents.set_default_openai_client(
        openai.AsyncOpenAI(api_key=secret, base_url=gateway.url + "/v1"), use_for_tracing=False
    )
    agents.set_tracing_disabled(True)
    tag = secret[-8:]
    result = agents.Runner.run_sync(agents.Agent(name="a", model="test-gpt"), f"hi {tag} #words=3")
    assert result.final_output == "w0 w1 w2"
    assert [q["path"] for q in fake_requests(fake) if tag in json.dumps(q["body"])] == ["/v1/responses"]


async def test_streamed_run_is_metered(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    client = openai.AsyncOpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    agents.set_tracing_disabled(True)
    agent = agents.Agent(name="a", model=agents.OpenAIResponsesModel(model="test-gpt", openai_client=client))
    run = agents.Runner.run_streamed(agent, "stream please #words=5")
    deltas = [
        e.data.delta
        async for e in run.stream_events()
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert "".join(deltas) == run.final_output == "w0 w1 w2 w3 w4"
    info = gateway.wait_settled(key_id)
    event = gateway.key_usage(key_id)["events"][0]
    assert event["stream"] is True and event["output_tokens"] == 5 and event["estimated"] is False
    assert event["cost_micros"] == info["spent_micros"] > 0
    await client.close()
