"""The int8 copy of a sqlite-vec space: the first pass of account-wide queries, its fill, zeroing and drop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.test_search_vectors import (  # noqa: F401 (sqlite_index: the fixture)
    FILTERS,
    assert_same,
    exact,
    float_ids,
    int8_ids,
    near,
    rand,
    row,
    sqlite_index,
)
from tollway.search import indexer as indexer_module
from tollway.search.indexer import Indexer
from tollway.search.store import SearchStore
from tollway.search.vectors import SqliteVecIndex, VectorQuery
from tollway.search.vectors_int8 import FILL
from tollway.store import Database

DIM = 16


def test_the_int8_slot_is_zeroed_before_its_row_goes(sqlite_index):
    """vec0 cannot UPDATE an int8 vector: the index writes zeros into the row's slot of its chunk blob itself."""
    idx, _ = sqlite_index
    idx.ensure("g1", DIM)
    vecs = rand(np.random.default_rng(11), 40)
    idx.add("g1", [row(i, v, account="acct_a" if i % 2 else "acct_b") for i, v in enumerate(vecs)])

    def codes(conn) -> dict[int, bytes]:
        return {cid: bytes(e) for cid, e in conn.exec_driver_sql("SELECT chunk_id, emb FROM search_vecq_g1")}

    with pytest.raises(RuntimeError):
        with idx.engine.begin() as conn:
            before = codes(conn)
            assert idx.int8.zero(conn, "g1", [3, 17, 18, 999], DIM) == [3, 17, 18]
            after = codes(conn)
            raise RuntimeError("look only")
    assert all(after[i] == bytes(DIM) for i in (3, 17, 18))
    assert all(after[i] == before[i] != bytes(DIM) for i in before if i not in (3, 17, 18))


def test_account_wide_query_reranks_int8_candidates_exactly(sqlite_index):
    idx, _ = sqlite_index
    rng = np.random.default_rng(12)
    idx.ensure("g1", 384)
    assert idx.quantised("g1")  # a new space has its int8 copy from the start
    vecs = rand(rng, 4_000, 384)
    rows = [row(i, v, scope=f"u:{i % 40}") for i, v in enumerate(vecs)]
    idx.add("g1", rows)
    hits_at_10 = hits_at_100 = 0
    for q in near(rng, vecs[0], 10, 2.0):  # queries with a few close rows and a long tail
        got = idx.search("g1", q, VectorQuery("acct_1"), 100)  # 300 candidates of 4,000 rows
        want = exact(rows, q, 100)
        # Whatever is returned is scored by its exact cosine and ordered by it.
        assert np.allclose([s for _, s in got], [float(np.dot(vecs[c], q)) for c, _ in got], atol=1e-5)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        hits_at_10 += len({c for c, _ in got[:10]} & {c for c, _ in want[:10]})
        hits_at_100 += len({c for c, _ in got} & {c for c, _ in want})
    assert hits_at_10 / 100 >= 0.99 and hits_at_100 / 1_000 >= 0.97
    # The candidates come from the int8 copy: a row missing there is missed account-wide, not in its scope.
    with idx.engine.begin() as conn:
        idx.int8.delete(conn, "g1", [0], 384)
    assert 0 not in {c for c, _ in idx.search("g1", vecs[0], VectorQuery("acct_1"), 10)}
    assert idx.search("g1", vecs[0], VectorQuery("acct_1", scope="u:0"), 1)[0][0] == 0


@pytest.mark.parametrize("field", ["thread_id", "role", "model", "from_ms", "to_ms"])
def test_every_filter_runs_inside_the_int8_pass(sqlite_index, field):
    """Far more excluded rows, all nearer to q, than the int8 pass takes candidates: the filter must be inside it."""
    idx, _ = sqlite_index
    query, keep = FILTERS[field]
    rng = np.random.default_rng(13)
    q = rand(rng, 1, 384)[0]
    idx.ensure("g1", 384)
    excluded = [
        row(i, v, scope=f"u:{i % 9}", thread="t1", role="user", model=None if i % 2 else "gpt", at=1_000 + (i % 3))
        for i, v in enumerate(near(rng, q, 1_500, 0.05))
    ]
    kept = [row(5_000 + i, v, scope=f"u:{i % 9}", **keep) for i, v in enumerate(rand(rng, 30, 384))]
    idx.add("g1", excluded + kept)
    assert_same(idx.search("g1", q, query, 10), exact(kept, q, 10))


def test_a_space_from_before_the_int8_copy_is_filled_in_the_background(sqlite_index):
    idx, _ = sqlite_index
    rng = np.random.default_rng(14)
    idx.ensure("g1", 384)
    vecs = rand(rng, 1_300, 384)
    rows = {i: row(i, v, scope=f"u:{i % 13}", thread=f"t{i % 50}") for i, v in enumerate(vecs)}
    idx.add("g1", list(rows.values()))
    with idx.engine.begin() as conn:  # what an older version left: the float table alone
        conn.exec_driver_sql("DROP TABLE search_vecq_g1")
    later = SqliteVecIndex(idx.engine)  # the next start
    later.ensure("g1", 384)
    later.ensure("g1", 384)
    assert not later.quantised("g1") and int8_ids(later) == []
    q = vecs[7]
    assert_same(later.search("g1", q, VectorQuery("acct_1"), 20), exact(list(rows.values()), q, 20))  # exact scan

    assert later.backfill("g1", batch=500)  # rows 0-499
    assert int8_ids(later) == list(range(500)) and not later.quantised("g1")
    # Meanwhile the copy follows every write: a new row, a replaced row on each side of the cursor, deletions.
    for r in (row(2_000, rand(rng, 1, 384)[0]), row(3, rand(rng, 1, 384)[0]), row(900, rand(rng, 1, 384)[0])):
        rows[r.chunk_id] = r
    later.add("g1", [rows[2_000], rows[3], rows[900]])
    gone = [0, 1, 2, 700, 701, 2_000]
    later.delete_chunks("g1", gone)
    later.delete_thread("g1", "t49")  # ids 49, 99, ... on both sides of the cursor
    gone += [i for i, r in rows.items() if r.thread_id == "t49"]
    live = {i: r for i, r in rows.items() if i not in gone}

    steps = 0
    while later.backfill("g1", batch=500):
        steps += 1
    assert steps == 3 and later.quantised("g1") and not later.backfill("g1")
    assert int8_ids(later) == float_ids(later) == sorted(live)  # no copy of a deleted row came back
    for q in (vecs[7], rows[3].vector, rows[900].vector):
        assert_same(later.search("g1", q, VectorQuery("acct_1"), 20), exact(list(live.values()), q, 20))
    with later.engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {FILL}").scalar_one() == 0
    assert SqliteVecIndex(idx.engine).quantised("g1")  # (and so for the next start)


def test_each_generation_has_its_own_int8_copy_and_drop_removes_it(sqlite_index):
    idx, _ = sqlite_index
    rng = np.random.default_rng(15)
    idx.ensure("g1", 384)
    idx.ensure("g2", 8)
    idx.add("g1", [row(i, v) for i, v in enumerate(rand(rng, 30, 384))])
    small = [row(i, v) for i, v in enumerate(rand(rng, 10, 8))]
    idx.add("g2", small)
    assert int8_ids(idx, "g1") == list(range(30)) and int8_ids(idx, "g2") == list(range(10))
    q = rand(rng, 1, 8)[0]
    assert_same(idx.search("g2", q, VectorQuery("acct_1"), 5), exact(small, q, 5))
    with idx.engine.begin() as conn:  # g2 made by an older version, then replaced before its copy was filled
        conn.exec_driver_sql("DROP TABLE search_vecq_g2")
    other = SqliteVecIndex(idx.engine)
    other.ensure("g2", 8)
    assert not other.quantised("g2")
    other.drop("g2")
    other.drop("g1")
    with idx.engine.connect() as conn:
        names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE name LIKE 'search_vec%'")]
        assert names == [FILL] and conn.exec_driver_sql(f"SELECT count(*) FROM {FILL}").scalar_one() == 0


def test_the_idle_indexer_fills_an_older_space(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 'tollway.db'}")
    db.migrate()
    store = SearchStore(db)
    space = store.add_space("test-embedder", 384, "sqlite-vec", "active").space
    SqliteVecIndex(db.engine).ensure(space, 384)
    vecs = rand(np.random.default_rng(16), 1_200, 384)
    SqliteVecIndex(db.engine).add(space, [row(i, v) for i, v in enumerate(vecs)])
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE search_vecq_{space}")
    index = SqliteVecIndex(db.engine)

    async def no_embedding(*_):
        raise AssertionError("filling the int8 copy embeds nothing")

    monkeypatch.setattr(indexer_module, "BACKFILL_PAUSE_S", 0.0)
    indexer = Indexer(store, index, True, no_embedding)
    index.ensure(space, 384)

    async def drain() -> int:
        steps = 0
        while await indexer.step():
            steps += 1
        return steps

    assert not index.quantised(space)
    assert asyncio.run(drain()) == 4  # 500 + 500 + 200, then the end of the copy
    assert index.quantised(space) and int8_ids(index, space) == list(range(1_200))
    db.dispose()
