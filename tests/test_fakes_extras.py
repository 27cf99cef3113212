"""The fake upstream's extra routes (tests/fakes/extras.py), driven by the official SDKs."""

import base64
import math
import struct

import anthropic
import httpx
import openai
import pytest

from tests.fakes import extras
from tests.fakes.runner import start_fake

OPENAI_KEY = "sk-fake-openai"
ANTHROPIC_KEY = "sk-ant-fake"


@pytest.fixture(scope="module")
def fake():
    with start_fake() as server:
        yield server


@pytest.fixture
def oai(fake):
    with openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0) as client:
        yield client


@pytest.fixture
def ant(fake):
    with anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, max_retries=0) as client:
        yield client


def test_openai_model_retrieve(oai) -> None:
    model = oai.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "system")
    assert isinstance(model.created, int)
    assert oai.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"
    with pytest.raises(openai.NotFoundError) as caught:
        oai.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sk-wrong", base_url=oai.base_url, max_retries=0).models.retrieve("gpt-4o")


def test_anthropic_model_retrieve(ant) -> None:
    model = ant.models.retrieve("claude-haiku-4-5-20251001")
    assert (model.type, model.id, model.display_name) == ("model", "claude-haiku-4-5-20251001", "Claude Haiku 4.5")
    assert model.created_at.year == 2025
    with pytest.raises(anthropic.NotFoundError) as caught:
        ant.models.retrieve("claude-nope")
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_count_tokens_matches_the_messages_usage(ant) -> None:
    messages = [{"role": "user", "content": "count these words please"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "and these"}]}]  # fmt: skip
    counted = ant.messages.count_tokens(model="claude-x", system="be brief", messages=messages)
    used = ant.messages.create(model="claude-x", max_tokens=5, system="be brief", messages=messages).usage
    assert counted.input_tokens == used.input_tokens == 2 + 6 + 1 + 3 + 3 * 3
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.count_tokens(model="claude-x", messages=[])
    with pytest.raises(anthropic.InternalServerError):
        ant.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "x #status=500"}])


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_embeddings_shapes(oai, encoding) -> None:
    kwargs = {} if encoding is None else {"encoding_format": encoding}
    one = oai.embeddings.create(model="text-embedding-3-small", input="hello world", **kwargs)
    assert one.object == "list" and one.model == "text-embedding-3-small"
    assert one.usage.prompt_tokens == one.usage.total_tokens == 3
    vector = one.data[0].embedding
    if encoding == "base64":
        vector = extras_decode(vector)
    assert len(vector) == 1536 and math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)
    assert vector == extras.vector("text-embedding-3-small", "hello world", 1536)  # float and base64 agree
    many = oai.embeddings.create(model="text-embedding-3-large", input=["a", "bb", "a"], dimensions=8, **kwargs)
    assert [d.index for d in many.data] == [0, 1, 2]
    first, second, third = (d.embedding if encoding != "base64" else extras_decode(d.embedding) for d in many.data)
    assert len(first) == 8 and first == third != second
    tokens = oai.embeddings.create(model="text-embedding-ada-002", input=[[1, 2, 3], [4]], **kwargs)
    assert tokens.usage.prompt_tokens == 4 and len(tokens.data) == 2
    assert oai.embeddings.create(model="text-embedding-ada-002", input=[5, 6, 7]).usage.prompt_tokens == 3


def extras_decode(value: str) -> list:
    raw = base64.b64decode(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embeddings_errors(oai, fake) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-3-small", input="")
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-3-small", input="x", dimensions=5000)
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="gpt-4o", input="x")
    with pytest.raises(openai.RateLimitError):
        oai.embeddings.create(model="text-embedding-3-small", input="x #status=429")
    r = httpx.post(fake.openai_base_url + "/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
