"""GET /v1/models/{id}, POST /v1/messages/count_tokens and POST /v1/embeddings through the
gateway, with the official SDKs (sync and async) and LangChain, on both servers and databases."""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import OpenAIEmbeddings

from tests.conftest import FAKE_ANTHROPIC_KEY, Gateway, fake_requests, gateway_env, start_gateway, stop_gateway
from tests.fakes import extras as fake_extras

SMALL = "text-embedding-3-small"


@pytest.fixture
def oai(gateway: Gateway, user) -> openai.OpenAI:
    return openai.OpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0)


@pytest.fixture
def claude(gateway: Gateway, user) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=user[1], base_url=gateway.url, max_retries=0)


def wait_events(gateway: Gateway, key_id: str, count: int) -> list[dict]:
    """The key's usage events once ``count`` are written (the writer batches), newest first."""
    deadline = time.monotonic() + 10
    while True:
        events = gateway.key_usage(key_id)["events"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


# ------------------------------------------------------------------ GET /v1/models/{id}
def test_openai_model_retrieve(oai: openai.OpenAI) -> None:
    model = oai.models.retrieve("test-gpt")
    assert (model.id, model.object, model.owned_by) == ("test-gpt", "model", "fake-openai")
    assert isinstance(model.created, int) and model.created > 1_700_000_000
    assert oai.models.retrieve("org/test:gpt").id == "org/test:gpt"  # the SDK sends org%2Ftest:gpt
    assert oai.models.retrieve("test-embed").id == "test-embed"
    assert model.id in {m.id for m in oai.models.list()}
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_anthropic_model_retrieve(claude: anthropic.Anthropic, gateway: Gateway) -> None:
    model = claude.models.retrieve("test-claude")
    assert (model.type, model.id, model.display_name) == ("model", "test-claude", "test-claude")
    assert claude.models.retrieve("org/test:gpt").id == "org/test:gpt"
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.models.retrieve("no-such-model")
    assert caught.value.body["error"]["type"] == "not_found_error"
    denied = anthropic.Anthropic(api_key="tw_live_nope", base_url=gateway.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        denied.models.retrieve("test-claude")
    assert caught.value.body["error"]["type"] == "authentication_error"  # the Anthropic shape
    with pytest.raises(anthropic.AuthenticationError):
        denied.models.list()


def test_model_path_unencoded_and_errors(gateway: Gateway, user) -> None:
    r = gateway.request("GET", "/v1/models/org/test:gpt", user[1])
    assert r.status_code == 200 and r.json()["id"] == "org/test:gpt"
    r = gateway.request("GET", "/v1/models/a/b/c/d/e/f", user[1])
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = gateway.request("GET", "/v1/models/test-gpt")
    assert r.status_code == 401 and "error" in r.json()
    r = gateway.request("POST", "/v1/models/org/test:gpt", user[1])
    assert r.status_code == 405 and "error" in r.json()
    r = gateway.request("GET", "/v1/models/test-claude", "tw_live_nope", headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_unroutable_model_is_not_found(fake, tmp_data_dir, server: str) -> None:
    """A catalog model of the environment's anthropic provider, which has no key here."""
    env = gateway_env(
        fake, tmp_data_dir, f"sqlite:///{tmp_data_dir / 'tollway.db'}", ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL=""
    )
    gw = start_gateway(env, server=server)
    try:
        _, secret = gw.mint()
        client = anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0)
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("claude-sonnet-4-5")
        assert client.models.retrieve("test-claude").id == "test-claude"  # its own provider has a key
        assert "claude-sonnet-4-5" not in {m.id for m in client.models.list()}
    finally:
        stop_gateway(gw)


async def test_async_model_retrieve(gateway: Gateway, user) -> None:
    async with openai.AsyncOpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0) as oai:
        assert (await oai.models.retrieve("test-gpt")).owned_by == "fake-openai"
        with pytest.raises(openai.NotFoundError):
            await oai.models.retrieve("nope")
    async with anthropic.AsyncAnthropic(api_key=user[1], base_url=gateway.url, max_retries=0) as claude:
        assert (await claude.models.retrieve("test-claude")).type == "model"
        with pytest.raises(anthropic.NotFoundError):
            await claude.models.retrieve("nope")


# ------------------------------------------------------------------ POST /v1/messages/count_tokens
MESSAGES = [{"role": "user", "content": "how many tokens is this"}, {"role": "assistant", "content": "some"},
            {"role": "user", "content": [{"type": "text", "text": "and this?"}]}]  # fmt: skip


def test_count_tokens_passes_through_for_anthropic_models(
    claude: anthropic.Anthropic, gateway: Gateway, user, fake
) -> None:
    spent = gateway.key(user[0])["spent_micros"]
    raw = claude.messages.with_raw_response.count_tokens(model="test-claude", system="be brief", messages=MESSAGES)
    counted = raw.parse()
    used = claude.messages.create(model="test-claude", max_tokens=3, system="be brief", messages=MESSAGES).usage
    assert counted.input_tokens == used.input_tokens  # the provider's own count
    assert "x-tollway-estimated" not in raw.headers
    sent = [q for q in fake_requests(fake) if q["path"] == "/v1/messages/count_tokens"][-1]
    assert sent["body"]["model"] == "claude-test-upstream"
    assert sent["headers"]["x-api-key"] == FAKE_ANTHROPIC_KEY  # ours, not the caller's key
    assert user[1] not in str(sent["headers"])
    events = wait_events(gateway, user[0], 1)
    assert [e["model"] for e in events] == ["test-claude"]  # the message call only: counting is free
    assert gateway.key(user[0])["spent_micros"] > spent


def test_count_tokens_estimated_for_other_models(claude: anthropic.Anthropic, gateway: Gateway, user) -> None:
    raw = claude.messages.with_raw_response.count_tokens(model="test-gpt", system="be brief", messages=MESSAGES)
    assert raw.headers["x-tollway-estimated"] == "true"
    estimate = raw.parse().input_tokens
    assert 10 <= estimate <= 40  # 55 bytes of text and three messages
    tools = [{"name": "lookup", "description": "find a thing", "input_schema": {"type": "object"}}]
    with_tools = claude.messages.count_tokens(model="test-gpt", messages=MESSAGES, tools=tools).input_tokens
    assert with_tools > estimate - 2  # tool definitions count, the system prompt is gone
    assert gateway.key_usage(user[0])["events"] == []


def test_count_tokens_errors(claude: anthropic.Anthropic, gateway: Gateway) -> None:
    for bad in ([], [1], "hi"):
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.count_tokens(model="test-claude", messages=bad)
        assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.count_tokens(model="test-embed", messages=MESSAGES)
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=MESSAGES)
    with pytest.raises(anthropic.InternalServerError):  # the provider's error, passed through
        claude.messages.count_tokens(model="test-claude", messages=[{"role": "user", "content": "x #status=500"}])
    denied = anthropic.Anthropic(api_key="tw_live_nope", base_url=gateway.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        denied.messages.count_tokens(model="test-claude", messages=MESSAGES)
    r = gateway.request("POST", "/v1/messages/count_tokens", gateway.admin, content=b"{nope")
    assert r.status_code == 400 and r.json()["type"] == "error"


async def test_count_tokens_async(gateway: Gateway, user) -> None:
    async with anthropic.AsyncAnthropic(api_key=user[1], base_url=gateway.url, max_retries=0) as claude:
        assert (await claude.messages.count_tokens(model="test-claude", messages=MESSAGES)).input_tokens > 0
        assert (await claude.messages.count_tokens(model="test-gpt", messages=MESSAGES)).input_tokens > 0


def test_langchain_anthropic_num_tokens(gateway: Gateway, user) -> None:
    chat = ChatAnthropic(model="test-claude", api_key=user[1], base_url=gateway.url, max_retries=0)
    messages = [HumanMessage("how many tokens is this"), AIMessage("some"), HumanMessage("and this?")]
    assert chat.get_num_tokens_from_messages(messages) == 6 + 1 + 3 + 3 * 3  # the fake's rules


# ------------------------------------------------------------------ POST /v1/embeddings
def test_embeddings_metered(oai: openai.OpenAI, gateway: Gateway, user, fake) -> None:
    result = oai.embeddings.create(model="test-embed", input="hello world")  # the SDK asks for base64
    assert result.usage.prompt_tokens == 3 and result.model == SMALL
    assert result.data[0].embedding == fake_extras.vector(SMALL, "hello world", 1536)
    sent = [q for q in fake_requests(fake) if q["path"] == "/v1/embeddings"][-1]
    assert sent["body"]["model"] == SMALL and sent["headers"]["authorization"] == "Bearer sk-fake-openai"
    floats = oai.embeddings.create(model="test-embed", input=["a", "bb"], encoding_format="float", dimensions=4)
    assert [len(d.embedding) for d in floats.data] == [4, 4] and floats.usage.prompt_tokens == 2
    tokens = oai.embeddings.create(model="test-embed", input=[[1, 2, 3], [4, 5]])
    assert tokens.usage.prompt_tokens == 5
    events = wait_events(gateway, user[0], 3)
    assert [(e["model"], e["input_tokens"], e["output_tokens"], e["cost_micros"], e["estimated"]) for e in events] == [
        ("test-embed", 5, 0, 5, False),
        ("test-embed", 2, 0, 2, False),
        ("test-embed", 3, 0, 3, False),
    ]
    info = gateway.wait_settled(user[0])
    assert (info["spent_micros"], info["reserved_micros"]) == (10, 0)
    usage = gateway.request("GET", "/v1/usage", gateway.admin).json()
    mine = next(k for k in usage["by_key"] if k["key_id"] == user[0])
    assert mine["by_model"] == [
        {
            "model": "test-embed",
            "cost_micros": 10,
            "request_count": 3,
            "input_tokens": 10,
            "output_tokens": 0,
            "avg_latency_ms": mine["by_model"][0]["avg_latency_ms"],
        }
    ]


def test_embeddings_default_catalog_price(oai: openai.OpenAI, gateway: Gateway, user) -> None:
    text = "x" * 4000  # 1000 tokens at $0.02 per million: 20 micro-USD
    oai.embeddings.create(model=SMALL, input=[text] * 5)
    events = wait_events(gateway, user[0], 1)
    assert (events[0]["model"], events[0]["input_tokens"], events[0]["cost_micros"]) == (SMALL, 5000, 100)


def test_embeddings_errors(oai: openai.OpenAI, gateway: Gateway, user) -> None:
    cases = [
        ({"model": "test-claude", "input": "x"}, 400, "model"),  # a chat model
        ({"model": "claude-embed", "input": "x"}, 400, "model"),  # an Anthropic provider: no embeddings API
        ({"model": "no-such-model", "input": "x"}, 404, "model"),
        ({"model": "test-embed", "input": ""}, 400, "input"),
        ({"model": "test-embed", "input": []}, 400, "input"),
        ({"model": "test-embed", "input": ["a", 1]}, 400, "input"),
        ({"model": "test-embed", "input": [-1]}, 400, "input"),
        ({"model": "test-embed", "input": ["a"] * 2049}, 400, "input"),
        ({"model": "test-embed", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": "test-embed", "input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"model": "test-embed"}, 400, "input"),
        ({"input": "x"}, 400, "model"),
    ]
    for body, status, param in cases:
        r = gateway.request("POST", "/v1/embeddings", user[1], json=body)
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), (body, r.text)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="test-embed", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):  # the provider's own 400, passed through
        oai.embeddings.create(model="test-embed", input="x", dimensions=5000)
    with pytest.raises(openai.InternalServerError):
        oai.embeddings.create(model="test-embed", input=f"x #status=500 #id={uuid.uuid4().hex}")
    assert gateway.wait_settled(user[0])["reserved_micros"] == 0
    assert gateway.key(user[0])["spent_micros"] == 0
    assert httpx.post(gateway.url + "/v1/embeddings", json={"model": "test-embed", "input": "x"}).status_code == 401


def test_embeddings_capped(gateway: Gateway) -> None:
    key_id, secret = gateway.mint(max_spend_usd=0.00001)  # 10 micro-USD: 10 tokens of test-embed
    client = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.embeddings.create(model="test-embed", input="x" * 300)  # 100 tokens held
    assert caught.value.status_code == 402 and caught.value.code == "spend_cap_reached"
    client.embeddings.create(model="test-embed", input="abcd")
    assert gateway.wait_settled(key_id)["spent_micros"] == 1


async def test_embeddings_async(gateway: Gateway, user) -> None:
    async with openai.AsyncOpenAI(api_key=user[1], base_url=gateway.url + "/v1", max_retries=0) as oai:
        result = await oai.embeddings.create(model="test-embed", input=["one", "two"], encoding_format="base64")
        assert len(result.data) == 2 and isinstance(result.data[0].embedding, str)
        with pytest.raises(openai.BadRequestError):
            await oai.embeddings.create(model="test-gpt", input="x")
    assert wait_events(gateway, user[0], 1)[0]["input_tokens"] == 2


def test_langchain_openai_embeddings(gateway: Gateway, user) -> None:
    embedder = OpenAIEmbeddings(
        model="test-embed",
        api_key=user[1],
        base_url=gateway.url + "/v1",
        check_embedding_ctx_length=False,
        max_retries=0,
    )  # no tiktoken download
    documents = embedder.embed_documents(["first doc", "second doc"])
    assert [len(v) for v in documents] == [1536, 1536]
    assert embedder.embed_query("first doc") == documents[0]
    assert len(wait_events(gateway, user[0], 2)) == 2
