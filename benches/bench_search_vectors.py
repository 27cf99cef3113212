"""The sqlite-vec vector index at size: scoped and account-wide top-10, insert rate, and recall vs brute force.

`pytest benches/bench_search_vectors.py --benchmark-enable`. Sizes come from the environment so CI stays fast:
TOLLWAY_BENCH_VECTORS (default 10,000; the issue's figure is 100,000), TOLLWAY_BENCH_SCOPES (default 1,000),
TOLLWAY_BENCH_DIM (default 384). One account holds every vector, spread over the scopes, so the account-wide
query is an admin's search over the whole account. Scoped queries are exact; account-wide ones take the int8
first pass and re-rank its candidates exactly, so their recall@10 and @100 against numpy are measured (random and
clustered vectors). TOLLWAY_BENCH_EMBEDDED=N (off by default) measures that recall on N support messages really
embedded with the local model (search_texts.py; embedded once, cached under /tmp/tollway-bench-search/).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tollway.search.vectors import SqliteVecIndex, VectorQuery, VectorRow, sqlite_engine

N = int(os.environ.get("TOLLWAY_BENCH_VECTORS", "10000"))
SCOPES = int(os.environ.get("TOLLWAY_BENCH_SCOPES", "1000"))
DIM = int(os.environ.get("TOLLWAY_BENCH_DIM", "384"))
K = 10


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _vectors(kind: str, n: int, rng) -> np.ndarray:
    if kind == "random":
        return _unit(rng.standard_normal((n, DIM)))
    centres = _unit(rng.standard_normal((max(1, n // 500), DIM)))
    return _unit(centres[rng.integers(0, len(centres), n)] + 0.15 * rng.standard_normal((n, DIM)))


def _rows(vecs: np.ndarray, start: int = 0) -> list[VectorRow]:
    return [
        VectorRow(start + i, "acct_1", f"u:{i % SCOPES}", f"t{i % (SCOPES * 5)}", "user", "m", 1_000 + i, v)
        for i, v in enumerate(vecs)
    ]


@pytest.fixture(scope="module", params=["random", "clustered"])
def built(request, tmp_path_factory):
    rng = np.random.default_rng(0)
    vecs = _vectors(request.param, N, rng)
    idx = SqliteVecIndex(sqlite_engine(str(tmp_path_factory.mktemp("vec") / "bench.db")))
    idx.ensure("g1", DIM)
    rows = _rows(vecs)
    t = time.perf_counter()
    for start in range(0, N, 10_000):
        idx.add("g1", rows[start : start + 10_000])
    build_s = time.perf_counter() - t
    queries = _vectors(request.param, 50, np.random.default_rng(1))
    yield request.param, idx, vecs, queries, build_s
    idx.close()


def _cycle(items):
    state = {"i": 0}

    def nxt():
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]

    return nxt


def test_scoped_top10(benchmark, built):
    kind, idx, _, queries, build_s = built
    nq = _cycle(queries)
    scopes = _cycle([f"u:{s}" for s in range(0, SCOPES, max(1, SCOPES // 50))])
    benchmark.extra_info.update(vectors=N, scopes=SCOPES, data=kind, insert_per_s=round(N / build_s))
    hits = benchmark(lambda: idx.search("g1", nq(), VectorQuery("acct_1", scope=scopes()), K))
    assert len(hits) == min(K, N // SCOPES)


def test_account_wide_top10(benchmark, built):
    kind, idx, _, queries, _ = built
    nq = _cycle(queries)
    benchmark.extra_info.update(vectors=N, scopes=SCOPES, data=kind)
    hits = benchmark.pedantic(lambda: idx.search("g1", nq(), VectorQuery("acct_1"), K), rounds=20, warmup_rounds=1)
    assert len(hits) == K


def recall(idx: SqliteVecIndex, vecs: np.ndarray, queries: np.ndarray, k: int) -> float:
    """The share of the exact top k (numpy) that the account-wide query returns."""
    found = 0
    for q in queries:
        want = set(np.argsort(-(vecs @ q))[:k].tolist())
        found += len(want & {c for c, _ in idx.search("g1", q, VectorQuery("acct_1"), k)})
    return found / (len(queries) * k)


def test_account_wide_recall(benchmark, built):
    kind, idx, vecs, queries, _ = built
    figures = {
        "recall_at_10": recall(idx, vecs, queries[:10], 10),
        "recall_at_100": recall(idx, vecs, queries[:10], 100),
    }
    benchmark.extra_info.update(data=kind, int8_pass=idx.quantised("g1"), **figures)
    print("\n   ", kind, figures)
    benchmark.pedantic(lambda: None, rounds=1)
    assert figures["recall_at_10"] >= 0.99 and figures["recall_at_100"] >= 0.95


EMBEDDED = int(os.environ.get("TOLLWAY_BENCH_EMBEDDED", "0"))


@pytest.mark.skipif(not EMBEDDED, reason="TOLLWAY_BENCH_EMBEDDED=N: recall on N really embedded messages")
def test_account_wide_recall_embedded(benchmark, tmp_path):
    from benches.search_texts import QUERIES, message_text

    from tollway.search.embedder import LocalEmbedder

    root = Path("/tmp/tollway-bench-search")
    cache = root / f"embedded-{EMBEDDED}.npy"
    embedder = LocalEmbedder(root / "models", threads=2)
    if not cache.exists():
        rng = np.random.default_rng(42)
        texts = [message_text(rng, "user" if i % 2 == 0 else "assistant") for i in range(EMBEDDED)]
        np.save(cache, embedder.embed_sync(texts))
    vecs, queries = np.load(cache), embedder.embed_sync(QUERIES)
    embedder.close()
    idx = SqliteVecIndex(sqlite_engine(str(tmp_path / "embedded.db")))
    idx.ensure("g1", vecs.shape[1])
    for start in range(0, len(vecs), 10_000):
        idx.add("g1", _rows(vecs[start : start + 10_000], start))
    figures = {"recall_at_10": recall(idx, vecs, queries, 10), "recall_at_100": recall(idx, vecs, queries, 100)}
    idx.close()
    benchmark.extra_info.update(messages=EMBEDDED, **figures)
    print("\n    embedded", EMBEDDED, figures)
    benchmark.pedantic(lambda: None, rounds=1)
    assert figures["recall_at_100"] >= 0.95


def test_insert_batch_of_1000(benchmark, tmp_path):
    rng = np.random.default_rng(2)
    idx = SqliteVecIndex(sqlite_engine(str(tmp_path / "ins.db")))
    idx.ensure("g1", DIM)
    batches = iter(range(0, 10**9, 1_000))

    def once():
        start = next(batches)
        idx.add("g1", _rows(_vectors("random", 1_000, rng), start))

    benchmark.pedantic(once, rounds=5)
    benchmark.extra_info.update(rows_per_round=1_000, scopes=SCOPES)
    idx.close()
