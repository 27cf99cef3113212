"""Search at size through ``Search.query`` (embed + vector + lexical + fusion + snippets), and the indexing rate.

``pytest benches/bench_search.py --benchmark-enable -s``; sizes from the environment, small by default:

- TOLLWAY_BENCH_SEARCH_MESSAGES (default 5,000; the issue's figure is 1,000,000) over
  TOLLWAY_BENCH_SEARCH_USERS end users (default 50; the issue's 1,000), all in one account: end-user-scoped queries;
- TOLLWAY_BENCH_SEARCH_ACCOUNT (default 5,000; the issue's 100,000) over the same number of users: account-wide
  (admin) queries;
- TOLLWAY_BENCH_SEARCH_INDEX (default 200): messages the indexer drains, per setting (threads 1/2, batch 32/64).

The query databases are synthetic, built once and cached under /tmp/tollway-bench-search/ by size: chunk rows,
FTS rows and vec0 rows inserted directly in big transactions, texts from the support-chat generator below,
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

from tollway.keys.store import ApiKey
from tollway.search.config import SearchSettings
from tollway.search.embedder import LOCAL_DIM, LocalEmbedder
from tollway.search.service import Search
from tollway.search.store import SearchStore
from tollway.search.text import MAX_CHUNKS, fts_rowid, scope_tokens
from tollway.search.vectors import SqliteVecIndex
from tollway.store import Database

ROOT = Path(os.environ.get("TOLLWAY_BENCH_SEARCH_DIR", "/tmp/tollway-bench-search"))
ACCOUNT = "acct_bench"
REAL_MESSAGES = 300
THREADS_PER_USER = 10
LAYOUT = "v3"  # bump when the builder changes, so an old cache is not reused

# ---------------------------------------------------------------------------------------------- texts
_OPEN = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Thanks for getting back to me.", "Quick question:", ""]
_ASK = [
    "I was charged twice for order {code} and would like a refund",
    "my package for order {code} still has not arrived after {n} days",
    "I cannot log in to my account since I reset my password yesterday",
    "the {product} I bought stopped working after {n} days",
    "can you change the delivery address on order {code} to my office",
    "how do I cancel my {plan} subscription before the next billing date",
    "the invoice for {month} shows the wrong VAT number for our company",
    "I would like to upgrade from the {plan} plan to the annual one",
    "the tracking page says delivered but nothing was left at the door",
    "my discount code {promo} is rejected at checkout",
    "the app crashes every time I open the settings page on my {device}",
    "I received the wrong colour of the {product} in my last order",
    "is it possible to return the {product} without the original box",
    "two-factor authentication codes never reach my phone",
    "our team needs {n} more seats on the {plan} plan this month",
]
_ANSWER = [
    "I am sorry about that, I have issued a refund of {amount} to your card",
    "I checked order {code} and the courier expects to deliver it within {n} days",
    "I have sent a password reset link to the email address on your account",
    "please try restarting the {product} and holding the power button for ten seconds",
    "the delivery address on order {code} has been updated",
    "your {plan} subscription is cancelled and you will not be billed again",
    "I have corrected the invoice for {month} and attached the new copy",
    "you can upgrade any time from the billing page, the difference is prorated",
    "I have opened an investigation with the courier, reference {code}",
    "the code {promo} expired last week, but I applied a ten percent discount instead",
    "a fix for the crash on {device} is in the next app update",
    "we will ship the right colour today and send a prepaid label for the return",
    "returns without the box are fine within thirty days of delivery",
    "I have switched your two-factor codes to the authenticator app",
    "I have added {n} seats, the invoice will follow at the end of the month",
]
_CLOSE = ["Thanks!", "Let me know if anything else comes up.", "Is there anything else I can help with?",
          "Have a nice day.", "Thank you for your patience.", ""]  # fmt: skip
_FILL = {
    "product": ["wireless headphones", "smart kettle", "standing desk", "espresso machine", "robot vacuum",
                "fitness tracker", "e-reader", "bluetooth speaker", "office chair", "air purifier"],
    "plan": ["Starter", "Team", "Business", "Enterprise", "Pro"],
    "device": ["iPhone", "Android tablet", "Pixel phone", "Windows laptop", "Mac"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"],
    "promo": ["SPRING10", "WELCOME5", "BLACKFRIDAY", "LOYAL20", "FREESHIP"],
}  # fmt: skip
QUERIES = [
    "refund charged twice", "package not arrived", "cannot log in after password reset", "cancel subscription",
    "wrong VAT number on invoice", "discount code rejected", "app crashes on settings page", "return without box",
    "two-factor codes not received", "add more seats", "change delivery address", "espresso machine stopped working",
    "upgrade to annual plan", "courier investigation", "wrong colour shipped", "order A-10234",
]  # fmt: skip


def message_text(rng: np.random.Generator, role: str) -> str:
    """A support-chat message of about 10-40 words (a customer's question, or an agent's answer)."""

    def fill(template: str) -> str:
        slots = {k: v[int(rng.integers(len(v)))] for k, v in _FILL.items()}
        return template.format(
            code=f"A-{int(rng.integers(10_000, 99_999))}", n=int(rng.integers(2, 15)),
            amount=f"${int(rng.integers(5, 400))}.{int(rng.integers(0, 99)):02d}", **slots,
        )  # fmt: skip

    pool = _ASK if role == "user" else _ANSWER
    parts = [_OPEN[int(rng.integers(len(_OPEN)))], fill(pool[int(rng.integers(len(pool)))]) + "."]
    while len(" ".join(parts).split()) < 18 and rng.random() < 0.7:
        more = fill(pool[int(rng.integers(len(pool)))])
        parts.append(more[0].upper() + more[1:] + ".")
    parts.append(_CLOSE[int(rng.integers(len(_CLOSE)))])
    return " ".join(p for p in parts if p)


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


def test_account_wide_query(benchmark, enabled):
    search, db = open_search(cached_db(N_ACCOUNT, USERS))
    loop = asyncio.new_event_loop()
    figures = time_queries(search, [bench_key(None, admin=True)], max(20, ROUNDS // 4), loop)
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
