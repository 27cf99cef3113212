"""One contract for both vector indexes (sqlite-vec and Qdrant local mode), plus sqlite-only transaction and erasure.

Filters are checked with crowding: the rows a filter excludes are all closer to the query than the rows it keeps,
so an engine that filtered after its KNN would come back short or wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from tollway.search.vectors import SqliteVecIndex, VectorQuery, VectorRow, sqlite_engine
from tollway.search.vectors_qdrant import QdrantIndex, qdrant_from_url

DIM = 16


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rand(rng, n, dim=DIM) -> np.ndarray:
    return unit(rng.standard_normal((n, dim)).astype(np.float32))


def near(rng, q, n, eps) -> np.ndarray:
    return unit(q[None, :] + eps * rng.standard_normal((n, q.shape[0])).astype(np.float32))


def row(cid, vec, *, account="acct_1", scope="u:alice", thread="t1", role="user", model="gpt", at=1_000):
    return VectorRow(cid, account, scope, thread, role, model, at, vec)


@pytest.fixture(params=["sqlite-vec", "qdrant"])
def index(request, tmp_path):
    if request.param == "sqlite-vec":
        idx = SqliteVecIndex(sqlite_engine(str(tmp_path / "vec.db")))
    else:
        idx = QdrantIndex(qdrant_from_url(":memory:"))
    yield idx
    idx.close()


def exact(rows: list[VectorRow], q: np.ndarray, k: int) -> list[tuple[int, float]]:
    sims = [(r.chunk_id, float(np.dot(r.vector, q))) for r in rows]
    return sorted(sims, key=lambda s: -s[1])[:k]


def assert_same(got, want):
    assert [c for c, _ in got] == [c for c, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


def test_name(index):
    assert index.name in ("sqlite-vec", "qdrant")


def test_ensure_is_idempotent(index):
    index.ensure("g1", DIM)
    index.ensure("g1", DIM)
    index.add("g1", [row(1, rand(np.random.default_rng(0), 1)[0])])
    index.ensure("g1", DIM)
    assert index.count("g1") == 1


def test_add_is_idempotent_on_chunk_id(index):
    rng = np.random.default_rng(1)
    index.ensure("g1", DIM)
    vecs = rand(rng, 20)
    rows = [row(i, vecs[i]) for i in range(20)]
    index.add("g1", rows)
    index.add("g1", rows)
    assert index.count("g1") == 20
    # Re-adding a chunk with a new vector replaces it.
    new = rand(rng, 1)[0]
    index.add("g1", [row(5, new, thread="t9")])
    assert index.count("g1") == 20
    got = index.search("g1", new, VectorQuery("acct_1"), 1)
    assert got[0][0] == 5 and got[0][1] == pytest.approx(1.0, abs=1e-4)
    assert index.search("g1", new, VectorQuery("acct_1", thread_id="t1"), 30)[0][0] != 5


def test_search_returns_nearest_by_cosine(index):
    rng = np.random.default_rng(2)
    index.ensure("g1", DIM)
    vecs = rand(rng, 300)
    rows = [row(i, vecs[i]) for i in range(300)]
    index.add("g1", rows)
    for q in rand(rng, 5):
        assert_same(index.search("g1", q, VectorQuery("acct_1"), 10), exact(rows, q, 10))
        assert_same(index.search("g1", q, VectorQuery("acct_1", scope="u:alice"), 10), exact(rows, q, 10))
    assert index.search("g1", vecs[0], VectorQuery("acct_1"), 0) == []
    assert len(index.search("g1", vecs[0], VectorQuery("acct_1"), 1000)) == 300


FILTERS = {
    "scope": (VectorQuery("acct_1", scope="u:bob"), {"scope": "u:bob"}),
    "thread_id": (VectorQuery("acct_1", thread_id="t2"), {"thread": "t2"}),
    "role": (VectorQuery("acct_1", role="assistant"), {"role": "assistant"}),
    "model": (VectorQuery("acct_1", model="claude"), {"model": "claude"}),
    "from_ms": (VectorQuery("acct_1", from_ms=5_000), {"at": 5_000}),
    "to_ms": (VectorQuery("acct_1", to_ms=1_000), {"at": 999}),
    "combined": (
        VectorQuery("acct_1", scope="u:bob", thread_id="t2", role="tool", model="claude", from_ms=10, to_ms=20),
        {"scope": "u:bob", "thread": "t2", "role": "tool", "model": "claude", "at": 19},
    ),
}


@pytest.mark.parametrize("field", list(FILTERS))
def test_every_filter_runs_inside_the_knn(index, field):
    query, keep = FILTERS[field]
    rng = np.random.default_rng(3)
    q = rand(rng, 1)[0]
    index.ensure("g1", DIM)
    # 200 excluded rows, all nearer to q than any kept row; each differs from `keep` in every filtered field.
    excluded = [
        row(i, v, scope="u:alice", thread="t1", role="user", model=None if i % 2 else "gpt", at=1_000 + (i % 3))
        for i, v in enumerate(near(rng, q, 200, 0.05))
    ]
    kept = [row(1000 + i, v, **keep) for i, v in enumerate(rand(rng, 30))]
    index.add("g1", excluded + kept)
    got = index.search("g1", q, query, 10)
    assert_same(got, exact(kept, q, 10))
    # The time bounds: from_ms inclusive, to_ms exclusive.
    if field == "from_ms":
        assert index.search("g1", q, VectorQuery("acct_1", from_ms=5_001), 10) == []
    if field == "to_ms":
        assert index.search("g1", q, VectorQuery("acct_1", to_ms=999), 10) == []


def test_crowding_scoped_query_gets_k_hits_from_its_scope(index):
    rng = np.random.default_rng(4)
    q = rand(rng, 1)[0]
    index.ensure("g1", DIM)
    crowd = [row(i, v, scope=f"u:other{i % 7}") for i, v in enumerate(near(rng, q, 2_000, 0.01))]
    mine = [row(10_000 + i, v, scope="u:me") for i, v in enumerate(rand(rng, 40))]
    index.add("g1", crowd + mine)
    got = index.search("g1", q, VectorQuery("acct_1", scope="u:me"), 10)
    assert len(got) == 10
    assert_same(got, exact(mine, q, 10))
    # Account-wide, the crowd wins.
    assert all(c < 10_000 for c, _ in index.search("g1", q, VectorQuery("acct_1"), 10))


def test_accounts_are_isolated_even_with_the_same_scope(index):
    rng = np.random.default_rng(5)
    q = rand(rng, 1)[0]
    index.ensure("g1", DIM)
    a = [row(i, v, account="acct_a", scope="u:x") for i, v in enumerate(near(rng, q, 50, 0.01))]
    b = [row(100 + i, v, account="acct_b", scope="u:x") for i, v in enumerate(rand(rng, 20))]
    index.add("g1", a + b)
    assert_same(index.search("g1", q, VectorQuery("acct_b", scope="u:x"), 10), exact(b, q, 10))
    assert_same(index.search("g1", q, VectorQuery("acct_b"), 50), exact(b, q, 50))
    assert index.search("g1", q, VectorQuery("acct_c", scope="u:x"), 10) == []


def test_delete_chunks_thread_count_and_drop(index):
    rng = np.random.default_rng(6)
    index.ensure("g1", DIM)
    vecs = rand(rng, 60)
    rows = [row(i, vecs[i], thread=f"t{i % 3}") for i in range(60)]
    index.add("g1", rows)
    assert index.count("g1") == 60
    index.delete_chunks("g1", [0, 1, 2, 999])
    assert index.count("g1") == 57
    index.delete_chunks("g1", [])
    index.delete_thread("g1", "t1")
    assert index.count("g1") == 57 - 19
    left = [r for r in rows if r.chunk_id > 2 and r.thread_id != "t1"]
    q = rand(rng, 1)[0]
    assert_same(index.search("g1", q, VectorQuery("acct_1"), 100), exact(left, q, 100))
    assert index.search("g1", q, VectorQuery("acct_1", thread_id="t1"), 10) == []
    index.delete_thread("g1", "no-such-thread")
    index.drop("g1")
    index.drop("g1")
    index.ensure("g1", DIM)
    assert index.count("g1") == 0


def test_two_spaces_are_independent(index):
    rng = np.random.default_rng(7)
    index.ensure("g1", 384)
    index.ensure("g2", 8)
    big = [row(i, v) for i, v in enumerate(rand(rng, 30, 384))]
    small = [row(i, v) for i, v in enumerate(rand(rng, 10, 8))]
    index.add("g1", big)
    index.add("g2", small)
    assert (index.count("g1"), index.count("g2")) == (30, 10)
    q = rand(rng, 1, 8)[0]
    assert_same(index.search("g2", q, VectorQuery("acct_1"), 5), exact(small, q, 5))
    index.delete_chunks("g2", [0])
    assert (index.count("g1"), index.count("g2")) == (30, 9)
    index.drop("g2")
    assert index.count("g1") == 30
    with pytest.raises(ValueError):
        index.ensure("g1", 8)
    with pytest.raises(ValueError):
        index.ensure("bad-name", 8)


# -- sqlite-vec only ------------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_index(tmp_path):
    idx = SqliteVecIndex(sqlite_engine(str(tmp_path / "vec.db")))
    yield idx, tmp_path / "vec.db"
    idx.close()


def int8_ids(idx, space="g1", conn=None) -> list[int]:
    """The chunk ids the space's int8 copy holds (its vec0 rowids table)."""
    sql = f"SELECT rowid FROM search_vecq_{space}_rowids ORDER BY rowid"
    if conn is not None:
        return [r[0] for r in conn.exec_driver_sql(sql)]
    with idx.engine.connect() as c:
        return [r[0] for r in c.exec_driver_sql(sql)]


def float_ids(idx, space="g1") -> list[int]:
    with idx.engine.connect() as c:
        return [r[0] for r in c.exec_driver_sql(f"SELECT rowid FROM search_vec_{space}_rowids ORDER BY rowid")]


def test_vectors_share_the_callers_transaction(sqlite_index):
    idx, _ = sqlite_index
    rng = np.random.default_rng(8)
    idx.ensure("g1", DIM)
    with idx.engine.begin() as conn:
        conn.execute(text("CREATE TABLE messages (id integer primary key, body text)"))
    vecs = rand(rng, 10)
    with pytest.raises(RuntimeError):
        with idx.engine.begin() as conn:
            conn.execute(text("INSERT INTO messages VALUES (1, 'hello')"))
            idx.add("g1", [row(i, vecs[i]) for i in range(10)], conn=conn)
            assert idx.count("g1", conn=conn) == 10
            assert int8_ids(idx, conn=conn) == list(range(10))
            assert len(idx.search("g1", vecs[0], VectorQuery("acct_1"), 20, conn=conn)) == 10
            raise RuntimeError("rollback")
    assert idx.count("g1") == 0
    assert int8_ids(idx) == []  # the int8 copies went with the rollback too
    assert idx.search("g1", vecs[0], VectorQuery("acct_1"), 20) == []
    with idx.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar_one() == 0
        idx.add("g1", [row(i, vecs[i]) for i in range(10)], conn=conn)
        idx.delete_thread("g1", "t1", conn=conn)
        idx.add("g1", [row(1, vecs[1])], conn=conn)
    assert idx.count("g1") == 1
    assert int8_ids(idx) == [1]


def test_deleted_vectors_leave_no_bytes_in_the_files(sqlite_index):
    idx, path = sqlite_index
    dim = 384
    idx.ensure("g1", dim)
    # A distinctive pattern per vector: its bytes (and its int8 codes') cannot appear by chance.
    steps = np.arange(1, dim + 1, dtype=np.float32)
    doomed = [unit(np.sin(steps * np.float32(0.37) + np.float32(i) * np.float32(0.5))) for i in range(20)]
    keep = rand(np.random.default_rng(9), 20, dim)
    idx.add("g1", [row(i, v, thread="secret") for i, v in enumerate(doomed)])
    idx.add("g1", [row(100 + i, v, thread="kept") for i, v in enumerate(keep)])
    with idx.engine.connect() as conn:  # the int8 copies, as stored
        codes = {cid: bytes(e) for cid, e in conn.exec_driver_sql("SELECT chunk_id, emb FROM search_vecq_g1")}
    assert len(codes) == 40 and all(len(c) == dim for c in codes.values())
    doomed_codes, kept_codes = [codes[i] for i in range(20)], [codes[100 + i] for i in range(20)]

    def files() -> bytes:
        with idx.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        out = path.read_bytes()
        wal = path.with_name(path.name + "-wal")
        return out + (wal.read_bytes() if wal.exists() else b"")

    def present(blob: bytes, vecs) -> list[bool]:
        return [v.tobytes()[:64] in blob for v in vecs]

    def pieces(blob: bytes, codes: list[bytes]) -> int:
        """How many 32-byte pieces of the int8 codes the files hold (a code may straddle two pages)."""
        return sum(c[i : i + 32] in blob for c in codes for i in range(0, len(c), 32))

    before = files()
    assert all(present(before, doomed)) and all(present(before, keep))
    assert pieces(before, doomed_codes) >= 0.9 * 20 * 12 and pieces(before, kept_codes) >= 0.9 * 20 * 12
    idx.delete_thread("g1", "secret")
    after = files()
    assert not any(present(after, doomed))
    assert all(present(after, keep))
    assert pieces(after, doomed_codes) == 0
    assert pieces(after, kept_codes) >= 0.9 * 20 * 12
    assert idx.count("g1") == 20 and int8_ids(idx) == list(range(100, 120))


def test_bounded_crowding_at_20k(sqlite_index):
    idx, _ = sqlite_index
    rng = np.random.default_rng(10)
    q = rand(rng, 1, 384)[0]
    idx.ensure("g1", 384)
    crowd = near(rng, q, 20_000, 0.02)
    idx.add("g1", [row(i, v, scope=f"u:c{i % 20}") for i, v in enumerate(crowd)])
    mine = [row(50_000 + i, v, scope="u:me") for i, v in enumerate(rand(rng, 30, 384))]
    idx.add("g1", mine)
    assert idx.count("g1") == 20_030
    assert_same(idx.search("g1", q, VectorQuery("acct_1", scope="u:me"), 10), exact(mine, q, 10))
