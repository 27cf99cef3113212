"""The sqlite-vec vector index at size: scoped and account-wide top-10, insert rate, and recall vs brute force.

`pytest benches/bench_search_vectors.py --benchmark-enable`. Sizes come from the environment so CI stays fast:
TOLLWAY_BENCH_VECTORS (default 10,000; the issue's figure is 100,000), TOLLWAY_BENCH_SCOPES (default 1,000),
TOLLWAY_BENCH_DIM (default 384). One account holds every vector, spread over the scopes, so the account-wide
query is an admin's search over the whole account. Every query is exact, so recall@10 is checked to be 1.0
against numpy on random and on clustered vectors.
"""

from __future__ import annotations

import os
import time

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


def test_account_wide_recall_at_10(benchmark, built):
    kind, idx, vecs, queries, _ = built
    found = 0
    for q in queries[:10]:
        want = set(np.argsort(-(vecs @ q))[:K].tolist())
        found += len(want & {c for c, _ in idx.search("g1", q, VectorQuery("acct_1"), K)})
    recall = found / (10 * K)
    benchmark.extra_info.update(recall_at_10=recall, data=kind)
    benchmark.pedantic(lambda: None, rounds=1)
    assert recall >= 0.99


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
