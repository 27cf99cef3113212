"""The fake Responses API (tests/fakes/responses.py), driven by the official openai SDK."""

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.runner import start_fake

OPENAI_KEY = "sk-fake-openai"
TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Find a thing",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        "strict": True,
    }
]


def tok(text: str) -> int:
    return -(-len(text.encode()) // 4)


class Answer(BaseModel):
    city: str
    days: int
    cheap: bool


@pytest.fixture(scope="module")
def fake():
    with start_fake() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    httpx.post(fake.url + "/_fake/reset").raise_for_status()


@pytest.fixture
def oai(fake):
    return openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0)


def test_create_string_input_and_usage(oai):
    r = oai.responses.create(model="gpt-4o-mini", input="hello there #words=5", instructions="Be brief.")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output_text == "w0 w1 w2 w3 w4"
    assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text"
    assert r.instructions == "Be brief."
    expected_input = tok("Be brief.") + 3 + tok("hello there #words=5")
    assert r.usage.input_tokens == expected_input
    assert r.usage.output_tokens == 5 and r.usage.total_tokens == expected_input + 5
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0


def test_items_images_cache_and_max_output_tokens(oai):
    r = oai.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "developer", "content": "dev"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look #cache_read=7"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            },
        ],
        max_output_tokens=16,
    )
    assert r.status == "completed"  # 12 words fit in 16
    assert r.usage.input_tokens == 3 + tok("dev") + 3 + tok("look #cache_read=7") + 85 + 7
    assert r.usage.input_tokens_details.cached_tokens == 7
    cut = oai.responses.create(model="gpt-4o-mini", input="long #words=40", max_output_tokens=20)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 20 and cut.output[0].status == "incomplete"
    with pytest.raises(openai.BadRequestError) as exc:
        oai.responses.create(model="gpt-4o-mini", input="x", max_output_tokens=5)
    assert "max_output_tokens" in exc.value.message


def test_reasoning_tokens_are_output_tokens(oai):
    r = oai.responses.create(model="o4-mini", input="think #reasoning=30 #words=4", reasoning={"effort": "low"})
    assert [i.type for i in r.output] == ["reasoning", "message"]
    assert r.usage.output_tokens_details.reasoning_tokens == 30
    assert r.usage.output_tokens == 34 and r.output_text == "w0 w1 w2 w3"
    # max_output_tokens counts reasoning too: 30 reasoning + 10 visible.
    cut = oai.responses.create(
        model="o4-mini", input="think #reasoning=30", reasoning={"effort": "low"}, max_output_tokens=40
    )
    assert cut.status == "incomplete" and cut.usage.output_tokens == 40 and cut.output_text.count("w") == 10


def test_stream_helper_accumulates(oai):
    with oai.responses.stream(model="gpt-4o-mini", input="hi #words=6") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds == (
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        + ["response.output_text.delta"] * 6
        + ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    )
    assert final.output_text == "w0 w1 w2 w3 w4 w5" and final.usage.output_tokens == 6


def test_stream_wire_format(fake):
    with httpx.stream(
        "POST",
        fake.openai_base_url + "/responses",
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
        json={"model": "m", "input": "hi #words=2", "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [block.split("\n") for block in raw.strip().split("\n\n")]
    assert all(lines[0].startswith("event: ") and lines[1].startswith("data: ") for lines in events)
    datas = [json.loads(lines[1][6:]) for lines in events]
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    assert [lines[0][7:] for lines in events] == [d["type"] for d in datas]
    assert datas[0]["response"]["status"] == "in_progress" and datas[0]["response"]["usage"] is None
    assert datas[-1]["type"] == "response.completed" and datas[-1]["response"]["usage"]["output_tokens"] == 2
    assert "[DONE]" not in raw


def test_stream_incomplete_and_cut(oai, fake):
    with oai.responses.stream(model="m", input="x #words=30", max_output_tokens=16) as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"
    body = {"model": "m", "input": "x #cut_after=2", "stream": True}
    with httpx.stream(
        "POST", fake.openai_base_url + "/responses", headers={"authorization": f"Bearer {OPENAI_KEY}"}, json=body
    ) as r:
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()


def test_function_call_round_trip(oai):
    first = oai.responses.create(model="gpt-4o-mini", input="paris #tool=lookup", tools=TOOLS)
    call = first.output[0]
    assert call.type == "function_call" and call.name == "lookup" and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"query": "paris"}
    assert first.usage.output_tokens == -(-len(call.arguments) // 4)
    second = oai.responses.create(
        model="gpt-4o-mini",
        tools=TOOLS,
        input=[
            {"role": "user", "content": "paris #tool=lookup"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text.startswith("w0")
    follow = oai.responses.create(
        model="gpt-4o-mini",
        tools=TOOLS,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert follow.output_text.startswith("w0") and follow.usage.input_tokens > first.usage.input_tokens
    with pytest.raises(openai.BadRequestError, match="No tool call found"):
        oai.responses.create(model="m", input=[{"type": "function_call_output", "call_id": "call_x", "output": "1"}])
    with pytest.raises(openai.BadRequestError, match="not found"):
        oai.responses.create(model="m", input="x", previous_response_id="resp_nope")


def test_function_call_stream_events(oai):
    with oai.responses.stream(model="m", input="rome #tool=lookup", tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"query": "rome"}
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments) == {"query": "rome"}


def test_structured_output_parse(oai):
    parsed = oai.responses.parse(model="gpt-4o-mini", input="lisbon trip", text_format=Answer)
    assert parsed.output_parsed == Answer(city="lisbon", days=1, cheap=True)
    with oai.responses.stream(model="gpt-4o-mini", input="porto", text_format=Answer) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Answer(city="porto", days=1, cheap=True)


async def test_async_client(fake):
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0)
    r = await client.responses.create(model="m", input="hey #words=3")
    assert r.output_text == "w0 w1 w2"
    await client.close()


def test_errors_in_openai_shape(fake, oai):
    bad = openai.OpenAI(api_key="sk-wrong", base_url=fake.openai_base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError, match="input"):
        oai.responses.create(model="m")  # type: ignore[call-arg]
    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model="m", input="x #status=429")
    r = httpx.post(
        fake.openai_base_url + "/responses", headers={"authorization": f"Bearer {OPENAI_KEY}"}, content=b"{nope"
    )
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_sent_bytes_recorded(fake, oai):
    r = oai.responses.create(model="m", input="x #id=abc")
    assert json.loads(httpx.get(fake.url + "/_fake/sent/abc").content)["id"] == r.id
