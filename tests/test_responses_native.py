"""POST /v1/responses passed through natively, driven by the official openai SDK."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import FAKE_OPENAI_KEY, Gateway, fake_requests
from tollway._core import StreamScanner

TOOLS = [
    {
        "type": "function",
        "name": "lookup_account",
        "description": "Find an account",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        "strict": True,
    }
]


class Trip(BaseModel):
    city: str
    days: int


def tok(text: str) -> int:
    return -(-len(text.encode()) // 4)


def test_gpt_micros(input_tokens: int, output_tokens: int, cached: int = 0) -> int:
    """test-gpt: 1 micro-USD per input token, 10 per output token, 0.1 per cached token (half up)."""
    return input_tokens + 10 * output_tokens + (cached + 5) // 10


test_gpt_micros.__test__ = False  # a helper, not a test


def upstream_calls(fake) -> list[dict]:
    return [q for q in fake_requests(fake) if q["path"] == "/v1/responses"]


@pytest.fixture
def oai(gateway: Gateway, user) -> openai.OpenAI:
    return openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)


def test_create_is_forwarded_and_metered(gateway: Gateway, fake) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    prompt = "hello #words=5 #cache_read=40"
    r = client.responses.create(model="test-gpt", input=prompt, instructions="Be brief.", temperature=0.2, user="u7")
    assert r.output_text == "w0 w1 w2 w3 w4" and r.status == "completed"
    counted = tok("Be brief.") + 3 + tok(prompt)
    assert r.usage.input_tokens == counted + 40 and r.usage.input_tokens_details.cached_tokens == 40
    sent = upstream_calls(fake)[-1]
    assert sent["body"]["model"] == "gpt-test-upstream" and sent["body"]["temperature"] == 0.2
    assert sent["headers"]["authorization"] == f"Bearer {FAKE_OPENAI_KEY}" and secret not in str(sent["headers"])
    event = gateway.key_usage(key_id)["events"][0]
    assert (event["input_tokens"], event["output_tokens"], event["cache_read_tokens"]) == (counted, 5, 40)
    assert event["estimated"] is False and event["stream"] is False
    assert event["cost_micros"] == test_gpt_micros(counted, 5, 40) == gateway.wait_settled(key_id)["spent_micros"]


async def test_async_create(gateway: Gateway, user) -> None:
    client = openai.AsyncOpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    r = await client.responses.create(model="test-gpt", input="hey #words=3")
    assert r.output_text == "w0 w1 w2"
    await client.close()


def test_stream_helper_with_reasoning_is_metered(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    prompt = "think #words=6 #reasoning=20"
    with client.responses.stream(model="test-gpt", input=prompt, reasoning={"effort": "low"}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 6
    assert final.output_text == "w0 w1 w2 w3 w4 w5"
    assert final.usage.output_tokens == 26 and final.usage.output_tokens_details.reasoning_tokens == 20
    info = gateway.wait_settled(key_id)
    event = gateway.key_usage(key_id)["events"][0]
    assert event["stream"] is True and event["estimated"] is False and event["outcome"] == "ok"
    assert (event["input_tokens"], event["output_tokens"]) == (3 + tok(prompt), 26)  # reasoning billed as output
    assert event["cost_micros"] == test_gpt_micros(3 + tok(prompt), 26) == info["spent_micros"]


def test_function_tool_round_trip(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="test-gpt", input="acme #tool=lookup_account", tools=TOOLS)
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"query": "acme"}
    second = oai.responses.create(
        model="test-gpt",
        tools=TOOLS,
        input=[
            {"role": "user", "content": "acme #tool=lookup_account"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"plan":"pro"}'},
        ],
    )
    assert second.output_text.startswith("w0")
    with oai.responses.stream(model="test-gpt", input="acme #tool=lookup_account", tools=TOOLS) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments) == {"query": "acme"}


def test_structured_output_parse(oai: openai.OpenAI) -> None:
    parsed = oai.responses.parse(model="test-gpt", input="lisbon please", text_format=Trip)
    assert parsed.output_parsed == Trip(city="lisbon", days=1)


def test_cap_is_enforced_before_the_upstream(gateway: Gateway, fake) -> None:
    _, secret = gateway.mint(max_spend_usd=0)
    httpx.post(fake.url + "/_fake/reset")
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.APIStatusError) as exc:
        client.responses.create(model="test-gpt", input="hi")
    assert exc.value.status_code == 402
    assert exc.value.body["code"] == "spend_cap_reached"
    assert exc.value.body["message"].startswith("this API key has reached its spending cap")
    assert upstream_calls(fake) == []


def test_max_output_tokens_clamped_to_the_budget(gateway: Gateway, fake) -> None:
    # out-gpt: 10 micros per output token. 205 micros buy 20 tokens.
    key_id, secret = gateway.mint(max_spend_usd="0.000205")
    r = gateway.request("POST", "/v1/responses", secret, json={"model": "out-gpt", "input": "tell me #words=40"})
    assert r.status_code == 200, r.text
    assert r.headers["x-tollway-max-tokens-clamped"] == "20"
    assert upstream_calls(fake)[-1]["body"]["max_output_tokens"] == 20
    assert r.json()["status"] == "incomplete" and r.json()["usage"]["output_tokens"] == 20
    assert gateway.wait_settled(key_id)["spent_micros"] == 200
    # 5 micros left: fewer tokens than the Responses API's minimum of 16 -> 402, nothing sent.
    before = len(upstream_calls(fake))
    r = gateway.request("POST", "/v1/responses", secret, json={"model": "out-gpt", "input": "again"})
    assert r.status_code == 402 and r.json()["error"]["code"] == "spend_cap_reached"
    assert len(upstream_calls(fake)) == before
    assert gateway.wait_settled(key_id)["reserved_micros"] == 0


def test_previous_response_id_is_served_from_our_store(gateway: Gateway, fake) -> None:
    """A response passed through natively is stored by Tollway; previous_response_id then
    sends the stored conversation to the provider as input items (the provider never
    sees our id), so the hold sees the whole input and the key pays for exactly it."""
    key_id, secret = gateway.mint(max_spend_usd="0.2")
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    first = client.responses.create(model="test-gpt", input="remember lisbon #words=3")
    assert client.responses.retrieve(first.id).output_text == first.output_text
    spent = gateway.wait_settled(key_id)["spent_micros"]
    second = client.responses.create(model="test-gpt", input="and then? #words=2", previous_response_id=first.id)
    sent = upstream_calls(fake)[-1]["body"]
    assert "previous_response_id" not in sent
    texts = [
        part.get("text") for item in sent["input"] for part in (item.get("content") or []) if isinstance(part, dict)
    ]
    assert "remember lisbon #words=3" in texts and first.output_text in texts and "and then? #words=2" in texts
    assert second.usage.input_tokens > first.usage.input_tokens  # the provider counted the earlier turn
    info = gateway.wait_settled(key_id)
    assert info["spent_micros"] - spent == test_gpt_micros(second.usage.input_tokens, 2)
    assert second.previous_response_id == first.id
    with client.responses.stream(model="test-gpt", input="third #words=1", previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert third.previous_response_id == second.id and third.output_text == "w0"
    items = client.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in items.data][:1] == ["message"] and len(items.data) == 3
    # Another key does not see the stored response.
    _, other = gateway.mint(max_spend_usd="0.05")
    other_client = openai.OpenAI(api_key=other, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other_client.responses.create(model="test-gpt", input="more", previous_response_id=first.id)


def test_a_streamed_native_response_is_stored_and_store_false_is_not(gateway: Gateway) -> None:
    _, secret = gateway.mint(max_spend_usd="0.2")
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    with client.responses.stream(model="test-gpt", input="stream me #words=4") as stream:
        final = stream.get_final_response()
    for _ in range(100):  # stored when the stream settles, off the event loop
        try:
            stored = client.responses.retrieve(final.id)
            break
        except openai.NotFoundError:
            time.sleep(0.05)
    assert stored.output_text == final.output_text == "w0 w1 w2 w3"
    assert [i.type for i in client.responses.input_items.list(final.id).data] == ["message"]
    unstored = client.responses.create(model="test-gpt", input="forget me #words=1", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_state_stored_at_the_provider_holds_the_context_window(gateway: Gateway, fake) -> None:
    """A conversation or stored prompt kept by the provider adds input the body does not
    show: the hold covers test-gpt's 100,000-token context window (100,000 micros)."""
    _, poor = gateway.mint(max_spend_usd="0.05")
    poor_client = openai.OpenAI(api_key=poor, base_url=gateway.url + "/v1", max_retries=0)
    assert poor_client.responses.create(model="test-gpt", input="hi #words=2").output_text == "w0 w1"
    before = len(upstream_calls(fake))
    for extra in ({"conversation": "conv_123"}, {"prompt": {"id": "pmpt_123"}}):
        with pytest.raises(openai.APIStatusError) as exc:
            poor_client.responses.create(model="test-gpt", input="more", **extra)
        assert exc.value.status_code == 402
    assert len(upstream_calls(fake)) == before


def test_cut_stream_settles_estimated(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=1)
    body = {"model": "out-gpt", "input": "x #words=50 #cut_after=6", "stream": True}
    with httpx.Client(timeout=30) as client:
        with client.stream(
            "POST", gateway.url + "/v1/responses", json=body, headers={"authorization": f"Bearer {secret}"}
        ) as r:
            assert r.status_code == 200
            try:
                for _ in r.iter_bytes():
                    pass
            except httpx.HTTPError:
                pass
    info = gateway.wait_settled(key_id)
    event = gateway.key_usage(key_id)["events"][0]
    assert info["reserved_micros"] == 0 and event["outcome"] == "upstream_error"
    assert event["output_tokens"] == 6 and event["estimated"] is True
    assert event["cost_micros"] == 60 == info["spent_micros"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_responses_are_byte_for_byte(gateway: Gateway, user, fake, stream: bool) -> None:
    tag = uuid.uuid4().hex[:10]
    body = {"model": "test-gpt", "input": f"héllo 🙂 #words=7 #id={tag}", "stream": stream}
    r = gateway.request("POST", "/v1/responses", user[1], json=body)
    assert r.status_code == 200, r.text
    sent = httpx.get(f"{fake.url}/_fake/sent/{tag}")
    assert sent.status_code == 200 and r.content == sent.content
    assert upstream_calls(fake)[-1]["body"] == {**body, "model": "gpt-test-upstream"}


def test_unchanged_request_bytes_pass_through(gateway: Gateway, user, fake) -> None:
    """A model that needs no rename and no clamp: the provider gets the client's very bytes."""
    raw = '{ "model" : "out-gpt",\n  "input": "same bytes \\u00e9 #words=2",  "max_output_tokens": 64 }'.encode()
    r = gateway.request("POST", "/v1/responses", user[1], content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    record = upstream_calls(fake)[-1]
    assert record["headers"]["content-length"] == str(len(raw)) and record["body"] == json.loads(raw)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "test-gpt", "input": 123}, "input"),
        ({"model": "test-gpt"}, "input"),
        ({"model": "test-gpt", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "test-gpt", "input": ["x"]}, "input[0]"),
        ({"input": "x"}, "model"),
        ({"model": "test-gpt", "input": "x", "max_output_tokens": "ten"}, "max_output_tokens"),
        ({"model": "test-gpt", "input": "x", "stream": "yes"}, "stream"),
    ],
)
def test_bad_input_is_a_400_in_openai_shape(oai: openai.OpenAI, fake, body, param) -> None:
    before = len(upstream_calls(fake))
    with pytest.raises(openai.BadRequestError) as exc:
        oai.post("/responses", body=body, cast_to=httpx.Response)
    assert exc.value.status_code == 400
    assert set(exc.value.body) >= {"message", "type", "param", "code"} and exc.value.body["param"] == param
    assert len(upstream_calls(fake)) == before


def test_upstream_error_is_passed_on(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model="test-gpt", input="x #status=429")


def test_final_response_of_a_stream(gateway: Gateway, user, fake) -> None:
    """The scanner keeps the terminal event's response object: what the SDK accumulates."""
    tag = uuid.uuid4().hex[:10]
    client = openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)
    with client.responses.stream(model="test-gpt", input=f"keep #words=4 #id={tag}") as stream:
        final = stream.get_final_response()
    scanner = StreamScanner("openai_responses")
    scanner.feed(httpx.get(f"{fake.url}/_fake/sent/{tag}").content)
    scanner.finish()
    kept = json.loads(scanner.final_response)
    assert kept["id"] == final.id and kept["usage"]["output_tokens"] == 4 == scanner.usage.output_tokens
    assert scanner.text == "w0 w1 w2 w3"
