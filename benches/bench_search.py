"""Search at size through ``Search.query`` (embed + vector + lexical + fusion + snippets), and the indexing rate.

``pytest benches/bench_search.py --benchmark-enable -s``; sizes from the environment, small by default:

- TOLLWAY_BENCH_SEARCH_MESSAGES (default 5,000; the issue's figure is 1,000,000) over
  TOLLWAY_BENCH_SEARCH_USERS end users (default 50; the issue's 1,000), all in one account: end-user-scoped queries;
- TOLLWAY_BENCH_SEARCH_ACCOUNT (default 5,000; the issue's 100,000) over the same number of users: account-wide
  (admin) queries;
- TOLLWAY_BENCH_SEARCH_INDEX (default 200): messages the indexer drains, per setting (threads 1/2, batch 32/64).

The query databases are synthetic, built once and cached under /tmp/tollway-bench-search/ by size: chunk rows,
FTS rows and vec0 rows inserted directly in big transactions, texts from the support-chat generator (search_texts.py),
vectors random unit vectors around 2,000 centres, plus REAL_MESSAGES really embedded messages mixed in. Queries
are real: each embeds its text with the default local embedder. ``python benches/bench_search.py build N USERS``
builds a cache ahead of a run.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from benches.load import CpuMeter
from benches.search_texts import QUERIES, message_text

from tollway.keys.store import ApiKey
from tollway.search.config import SearchSettings
from tollway.search.embedder import LOCAL_DIM, LocalEmbedder
from tollway.search.service import Search
from tollway.search.store import SearchStore
from tollway.search.text import MAX_CHUNKS, fts_rowid, scope_tokens
from tollway.search.vectors import SqliteVecIndex, VectorQuery
from tollway.store import Database

ROOT = Path(os.environ.get("TOLLWAY_BENCH_SEARCH_DIR", "/tmp/tollway-bench-search"))
ACCOUNT = "acct_bench"
REAL_MESSAGES = 300
THREADS_PER_USER = 10
LAYOUT = "v3"  # bump when the builder changes, so an old cache is not reused


# ---------------------------------------------------------------------------------------------- the database
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def cached_db(messages: int, users: int, log=print) -> Path:
    """The synthetic search database of ``messages`` over ``users`` end users (built once, then reused)."""
    path = ROOT / f"{LAYOUT}-{messages}x{users}" / "tollway.db"
    done = path.with_suffix(".complete")
    if done.exists():
        return path
    for old in path.parent.glob("tollway.db*"):
        old.unlink()
    started = time.perf_counter()
    db = Database(f"sqlite:///{path}")
    db.migrate()
    store = SearchStore(db)
    space = store.add_space(LocalEmbedder.id, LOCAL_DIM, "sqlite-vec", "active")
    index = SqliteVecIndex(db.engine)
    index.ensure(space.space, LOCAL_DIM)
    rng = np.random.default_rng(messages)
    real = min(REAL_MESSAGES, messages)
    embedder = LocalEmbedder(ROOT / "models")
    real_texts = [message_text(rng, "user" if i % 2 == 0 else "assistant") for i in range(real)]
    real_vectors = embedder.embed_sync(real_texts)
    embedder.close()
    centres = _unit(rng.standard_normal((2_000, LOCAL_DIM)))
    raw = db.engine.raw_connection()
    raw.driver_connection.isolation_level = None  # our own BEGIN / COMMIT
    cur = raw.cursor()
    cur.execute("INSERT INTO accounts (id, name, created_at) VALUES (?, 'bench', 0)", (ACCOUNT,))
    base_ms = 1_700_000_000_000
    block = 20_000
    table = index.table(space.space)
    for start in range(0, messages, block):
        n = min(block, messages - start)
        user = rng.integers(0, users, n)
        thread = rng.integers(0, THREADS_PER_USER, n)
        vecs = _unit(centres[rng.integers(0, len(centres), n)] + 0.25 * rng.standard_normal((n, LOCAL_DIM)))
        chunk_rows, fts_rows, vec_rows = [], [], []
        for i in range(n):
            seq = start + i + 1
            role = "user" if seq % 2 else "assistant"
            if seq <= real:
                text, vec = real_texts[seq - 1], real_vectors[seq - 1]
                u = seq % min(users, 10)  # the real messages sit in the first ten users' scopes
            else:
                text, vec, u = message_text(rng, role), vecs[i], int(user[i])
            cid, tid, scope = seq * MAX_CHUNKS, f"thr_{u}_{int(thread[i])}", f"u:user_{u}"
            created = base_ms + seq * 30_000
            model = "gpt-4o-mini" if role == "assistant" else None
            tokens = scope_tokens(ACCOUNT, scope)
            chunk_rows.append((cid, f"msg_{seq}", tid, ACCOUNT, scope, role, model, created, text, tokens))
            fts_rows.append((fts_rowid(ACCOUNT, scope, cid), text, tokens))
            vec_rows.append((cid, ACCOUNT, scope, tid, role, model or "", created, vec.tobytes()))
        cur.execute("BEGIN")
        cur.executemany(
            "INSERT INTO search_chunks (id, message_id, thread_id, account_id, scope, role, model, created_at, text, "
            "tokens) VALUES (?,?,?,?,?,?,?,?,?,?)",
            chunk_rows,
        )
        cur.executemany("INSERT INTO search_fts (rowid, text, scope) VALUES (?, ?, ?)", fts_rows)
        cur.executemany(
            f"INSERT INTO {table} (chunk_id, account_id, scope, thread_id, role, model, created_at, emb) "
            "VALUES (?,?,?,?,?,?,?,?)",
            vec_rows,
        )
        cur.executemany(index.int8.insert_sql(space.space), index.int8.rows(vec_rows))  # (what index.add writes)
        cur.execute("COMMIT")
        done_n = start + n
        elapsed = time.perf_counter() - started
        log(f"  built {done_n:,}/{messages:,} ({done_n / elapsed:,.0f} rows/s, {elapsed:.0f} s)")
    cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cur.execute("ANALYZE")
    raw.close()
    db.dispose()
    done.write_text(f"{messages} messages, {users} users, {time.perf_counter() - started:.0f} s\n")
    return path


# ---------------------------------------------------------------------------------------------- the service
def bench_key(end_user: str | None, admin: bool = False) -> ApiKey:
    return ApiKey(
        id="key_admin" if admin else "key_app", account_id=ACCOUNT, name="bench", scope="admin" if admin else "user",
        max_spend_micros=None, end_user_id=end_user, metadata={}, created_at=0, revoked_at=None, secret_hint="",
    )  # fmt: skip


def open_search(path: Path, threads: int = 1, batch: int = 32) -> tuple[Search, Database]:
    db = Database(f"sqlite:///{path}")
    search = Search(SearchSettings(threads=threads, batch=batch), db, ROOT / "data", None, None)  # type: ignore[arg-type]
    for space in search.store.spaces():  # what the gateway's start does (Search._ensure_spaces)
        search.index.ensure(space.space, space.dim)
        started = time.perf_counter()
        while search.index.backfill(space.space, 5_000):  # (once, for a cache built before the int8 copies)
            pass
        if time.perf_counter() - started > 1:
            print(f"  filled the int8 copy of {space.space} in {time.perf_counter() - started:.1f} s")
    search.local.load()
    return search, db


def cpu_s() -> float:
    """CPU time of this process (every thread: the event loop, the embedder's, the database workers)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_queries(
    search: Search, keys: list[ApiKey], rounds: int, loop: asyncio.AbstractEventLoop, queries: list[str] = QUERIES
) -> dict[str, Any]:
    """``rounds`` queries, cycling over QUERIES and ``keys``; latency in ms of each whole ``Search.query``."""
    times, hits = [], 0
    for i in range(rounds + 5):
        if i == 5:
            meter, cpu = CpuMeter(), cpu_s()
        q, key = queries[i % len(queries)], keys[(i * 7) % len(keys)]
        t = time.perf_counter()
        page = loop.run_until_complete(search.query(key, {"q": q}, 10))
        if i >= 5:  # the first few warm the caches
            times.append((time.perf_counter() - t) * 1000)
            hits += len(page["data"])
    return {"p50_ms": round(pct(times, 0.5), 2), "p99_ms": round(pct(times, 0.99), 2),
            "mean_ms": round(sum(times) / len(times), 2), "cpu_ms_per_query": round((cpu_s() - cpu) * 1000 / rounds, 2),
            "queries": rounds, "hits_per_query": hits / rounds, "others_cpu_pct": round(meter.foreign_pct(), 1)}  # fmt: skip


# ---------------------------------------------------------------------------------------------- indexing
def fill_backlog(db: Database, n: int, rng: np.random.Generator, users: int = 50, account: str = ACCOUNT) -> None:
    """``n`` messages in threads of ``users`` end users, queued for the indexer (what append_messages stores)."""
    raw = db.engine.raw_connection()
    raw.driver_connection.isolation_level = None
    cur = raw.cursor()
    cur.execute("INSERT OR IGNORE INTO accounts (id, name, created_at) VALUES (?, 'bench', 0)", (account,))
    first = cur.execute("SELECT coalesce(max(seq), 0) FROM thread_messages").fetchone()[0]
    now = int(time.time() * 1000)
    cur.execute("BEGIN")
    cur.executemany(
        "INSERT OR IGNORE INTO threads (id, account_id, end_user_id, key_id, metadata, created_at, updated_at) "
        "VALUES (?, ?, ?, 'key_app', '{}', ?, ?)",
        [(f"thr_q{u}", account, f"user_{u}", now, now) for u in range(users)],
    )
    rows = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        content = orjson.dumps([{"type": "text", "text": message_text(rng, role)}]).decode()
        model = "gpt-4o-mini" if role == "assistant" else None
        rows.append((first + i + 1, f"msg_q{first + i + 1}", f"thr_q{i % users}", role, content, model, now))
    cur.executemany(
        "INSERT INTO thread_messages (seq, id, thread_id, role, content, model, created_at) VALUES (?,?,?,?,?,?,?)",
        rows,
    )
    cur.executemany(
        "INSERT INTO search_queue (message_seq, thread_id, created_at) VALUES (?, ?, ?)",
        [(r[0], r[2], now) for r in rows],
    )
    cur.execute("COMMIT")
    raw.close()


def _timed(totals: dict[str, float], name: str, fn):
    if asyncio.iscoroutinefunction(fn):

        async def timed_async(*args):
            t = time.perf_counter()
            try:
                return await fn(*args)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t

        return timed_async

    def timed(*args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t

    return timed


def index_rate(workdir: Path, n: int, threads: int, batch: int) -> dict[str, Any]:
    """Drain ``n`` queued messages with ``Indexer.step()``; messages/s and where the time went."""
    path = workdir / f"index-{threads}-{batch}.db"
    for old in workdir.glob(path.name + "*"):
        old.unlink()
    db = Database(f"sqlite:///{path}")
    db.migrate()
    search, _ = open_search(path, threads, batch)
    space = search.store.add_space(search.local.id, LOCAL_DIM, "sqlite-vec", "active")
    search.index.ensure(space.space, LOCAL_DIM)
    fill_backlog(db, n, np.random.default_rng(3))
    totals: dict[str, float] = {}
    indexer = search.indexer
    indexer.embed = _timed(totals, "embed", indexer.embed)
    search.store.claim = _timed(totals, "claim", search.store.claim)  # type: ignore[method-assign]
    search.store.write = _timed(totals, "write", search.store.write)  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    meter, cpu, t = CpuMeter(), cpu_s(), time.perf_counter()
    while loop.run_until_complete(indexer.step()):
        pass
    elapsed, cpu = time.perf_counter() - t, cpu_s() - cpu
    left = search.store.counts()["backlog"]
    loop.close()
    search.local.close()
    db.dispose()
    return {"threads": threads, "batch": batch, "messages": n, "left": left, "per_s": round(n / elapsed, 1),
            "seconds": round(elapsed, 2), "cpu_ms_per_msg": round(cpu * 1000 / n, 2),
            **{f"{k}_s": round(v, 2) for k, v in totals.items()}, "others_cpu_pct": round(meter.foreign_pct(), 1)}  # fmt: skip


# ---------------------------------------------------------------------------------------------- pytest
N = int(os.environ.get("TOLLWAY_BENCH_SEARCH_MESSAGES", "5000"))
USERS = int(os.environ.get("TOLLWAY_BENCH_SEARCH_USERS", "50"))
N_ACCOUNT = int(os.environ.get("TOLLWAY_BENCH_SEARCH_ACCOUNT", "5000"))
N_INDEX = int(os.environ.get("TOLLWAY_BENCH_SEARCH_INDEX", "200"))
ROUNDS = int(os.environ.get("TOLLWAY_BENCH_SEARCH_ROUNDS", "200"))


@pytest.fixture
def enabled(request):
    config = request.config
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        pytest.skip("a benchmark: run with --benchmark-enable")


def _report(benchmark, figures: dict[str, Any]) -> None:
    benchmark.extra_info.update(figures)
    print("\n   ", orjson.dumps(figures).decode())
    benchmark.pedantic(lambda: None, rounds=1)


# "unmatched": words no message has, so the lexical side is empty: what embedding + vectors + fusion cost alone.
@pytest.mark.parametrize("queries", ["support", "unmatched"])
def test_scoped_query(benchmark, enabled, queries):
    search, db = open_search(cached_db(N, USERS))
    loop = asyncio.new_event_loop()
    keys = [bench_key(f"user_{u}") for u in range(0, USERS, max(1, USERS // 50))]
    figures = time_queries(search, keys, ROUNDS, loop, QUERIES if queries == "support" else ["zqxv kwyjibo"])
    loop.close()
    search.local.close()
    db.dispose()
    _report(benchmark, {"messages": N, "users": USERS, "query_set": queries, **figures})
    assert figures["hits_per_query"] > 0


def account_recall(search: Search) -> dict[str, Any]:
    """Recall@10 / @100 of the account-wide vector query (int8 pass + re-rank) vs the exact float scan, k = 101."""
    space, index = search.store.spaces()[0].space, search.index
    sql = (
        f"SELECT chunk_id FROM {index.table(space)} WHERE emb MATCH ? AND k = 101 AND account_id = ? ORDER BY distance"
    )
    at10, at100 = [], []
    for v in search.local.embed_sync(QUERIES):
        got = [c for c, _ in index.search(space, v, VectorQuery(ACCOUNT), 101)]
        with search.db.engine.connect() as conn:
            exact = [r[0] for r in conn.exec_driver_sql(sql, (v.tobytes(), ACCOUNT))]
        at10.append(len(set(got[:10]) & set(exact[:10])) / 10)
        at100.append(len(set(got[:100]) & set(exact[:100])) / 100)
    return {"int8_pass": index.quantised(space), "recall_at_10": round(sum(at10) / len(at10), 3),
            "recall_at_100": round(sum(at100) / len(at100), 3), "recall_at_100_min": min(at100)}  # fmt: skip


def test_account_wide_query(benchmark, enabled):
    search, db = open_search(cached_db(N_ACCOUNT, USERS))
    loop = asyncio.new_event_loop()
    figures = time_queries(search, [bench_key(None, admin=True)], max(20, ROUNDS // 4), loop)
    figures.update(account_recall(search))
    loop.close()
    search.local.close()
    db.dispose()
    _report(benchmark, {"messages": N_ACCOUNT, "users": USERS, **figures})
    assert figures["hits_per_query"] == 10


@pytest.mark.parametrize("threads,batch", [(1, 32), (1, 64), (2, 32), (2, 64)])
def test_indexing_rate(benchmark, enabled, tmp_path, threads, batch):
    figures = index_rate(tmp_path, N_INDEX, threads, batch)
    _report(benchmark, figures)
    assert figures["left"] == 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "build":
        sys.exit("usage: python benches/bench_search.py build MESSAGES USERS")
    print(cached_db(int(sys.argv[2]), int(sys.argv[3])))
