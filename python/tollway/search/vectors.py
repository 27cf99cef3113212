"""The vector index of semantic search: one interface, two engines (sqlite-vec here, Qdrant in vectors_qdrant).

Every filter of a ``VectorQuery`` is part of the engine's own nearest-neighbour query, never applied to its
results afterwards, so a scoped query returns its k best from that scope however close other scopes' vectors are.

The sqlite-vec engine keeps one ``vec0`` table per index generation ("space") in the main SQLite file, so the
lead can write vectors in the same transaction as the messages. Its layout:

- ``account_id`` and ``scope`` are partition keys: a scoped query reads only that scope's chunks (exact, sub-ms);
- ``thread_id``, ``role``, ``model``, ``created_at`` are metadata columns, filtered inside the KNN scan;
- ``chunk_size=128`` (vec0's default is 1024): each partition allocates whole chunks, and with many small scopes
  1024-slot chunks make the file ~8x larger and an account-wide exact scan ~5x slower (measured: 100k vectors
  over 1,000 scopes, 1.7 GB and ~550 ms vs 220 MB and ~100 ms).

Scoped queries are exact. Account-wide (admin) queries take a first pass over an int8 copy of the vectors,
partitioned by account, and re-rank its candidates exactly (vectors_int8; ~2x faster at 100k, recall@100 ~1.0);
binary (``bit[]``) codes were faster still but had recall@100 0.6-0.9 at 1-20x oversampling on these embeddings.

Deletion: sqlite-vec 0.1.9's DELETE already clears the vector bytes in its chunk blobs; the index still overwrites
a vector with zeros before deleting it so erasure does not depend on that (the erasure test checks the files).
``delete_thread`` finds the thread's rows with a full vec0 scan (~220 ms at 100k); a caller that knows the
chunk ids should prefer ``delete_chunks``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy
import sqlite_vec
from pysqlite3 import dbapi2
from sqlalchemy import Connection, Engine, create_engine, event

from tollway.search.vectors_int8 import Int8Copy

__all__ = [
    "SqliteVecIndex",
    "VectorIndex",
    "VectorQuery",
    "VectorRow",
    "load_sqlite_vec",
    "sqlite_engine",
]


@dataclass(frozen=True, slots=True)
class VectorRow:
    chunk_id: int  # our id of a text chunk (a message may have several); the vector's identity
    account_id: str
    scope: str  # "u:<end_user_id>" or "k:<key_id>"
    thread_id: str
    role: str  # user | assistant | tool
    model: str | None
    created_at: int  # ms since epoch
    vector: numpy.ndarray  # float32, (dim,), L2-normalised


@dataclass(frozen=True, slots=True)
class VectorQuery:
    account_id: str
    scope: str | None = None  # None = account-wide (admin)
    thread_id: str | None = None
    role: str | None = None
    model: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None  # exclusive


class VectorIndex(Protocol):
    name: str

    def ensure(self, space: str, dim: int) -> None: ...
    def add(self, space: str, rows: Sequence[VectorRow], conn=None) -> None: ...
    def delete_chunks(self, space: str, chunk_ids: Sequence[int], conn=None) -> None: ...
    def delete_thread(self, space: str, thread_id: str, conn=None) -> None: ...
    def search(
        self, space: str, vector: numpy.ndarray, query: VectorQuery, k: int, conn=None
    ) -> list[tuple[int, float]]: ...
    def count(self, space: str, conn=None) -> int: ...
    def drop(self, space: str, conn=None) -> None: ...
    def close(self) -> None: ...


_SPACE = re.compile(r"^[A-Za-z0-9_]{1,40}$")
# vec0 refuses k above 4096 in one KNN query.
MAX_K = 4096
# Bound of host parameters per statement we use when deleting by id lists.
_ID_BATCH = 500


def check_space(space: str) -> str:
    """A space becomes part of a table / collection name: letters, digits and underscores only."""
    if not _SPACE.match(space):
        raise ValueError(f"invalid vector space name {space!r}")
    return space


def as_f32(vector: numpy.ndarray, dim: int | None = None) -> numpy.ndarray:
    v = numpy.ascontiguousarray(vector, dtype=numpy.float32).reshape(-1)
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"vector has {v.shape[0]} dimensions, the space has {dim}")
    return v


def load_sqlite_vec(dbapi_conn, _record=None) -> None:
    """A SQLAlchemy "connect" listener: load sqlite-vec into a pysqlite3 connection."""
    dbapi_conn.enable_load_extension(True)
    try:
        sqlite_vec.load(dbapi_conn)
    finally:
        dbapi_conn.enable_load_extension(False)


def _pragmas(dbapi_conn, _record=None) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def sqlite_engine(path: str) -> Engine:
    """An engine on pysqlite3 (the stdlib sqlite3 here cannot load extensions) with sqlite-vec on every connection."""
    engine = create_engine(f"sqlite:///{path}", module=dbapi2, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", load_sqlite_vec)
    event.listen(engine, "connect", _pragmas)
    return engine


class SqliteVecIndex:
    """Vectors in ``vec0`` tables ``search_vec_<space>`` (exact cosine KNN), and their int8 copies (vectors_int8)."""

    name = "sqlite-vec"

    def __init__(self, engine: Engine, *, chunk_size: int = 128) -> None:
        if chunk_size % 8:
            raise ValueError("vec0 chunk_size must be a multiple of 8")
        self.engine = engine
        self.chunk_size = chunk_size
        self._dims: dict[str, int] = {}
        self.int8 = Int8Copy()

    # -- plumbing ---------------------------------------------------------------------------------------------

    @staticmethod
    def table(space: str) -> str:
        return f"search_vec_{check_space(space)}"

    def _run(self, conn: Connection | None, fn):
        if conn is not None:
            return fn(conn)
        with self.engine.begin() as own:
            return fn(own)

    def _dim(self, conn: Connection, space: str) -> int:
        if space in self._dims:
            return self._dims[space]
        row = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table(space),)
        ).first()
        if row is None:
            raise LookupError(f"vector space {space!r} does not exist (call ensure first)")
        found = re.search(r"emb float\[(\d+)\]", row[0])
        if found is None:
            raise LookupError(f"{self.table(space)} is not a vector table of this index")
        self._dims[space] = int(found.group(1))
        return self._dims[space]

    # -- interface ----------------------------------------------------------------------------------------------

    def ensure(self, space: str, dim: int) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")

        def go(conn: Connection) -> None:
            try:
                have = self._dim(conn, space)
            except LookupError:
                have = None
            if have is not None and have != dim:
                raise ValueError(f"vector space {space!r} exists with dim {have}, not {dim}")
            if have is not None:
                self.int8.ensure(conn, space, dim, fresh=False)  # (made by an older version: filled in the background)
                return
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table(space)} USING vec0("
                "chunk_id integer primary key, account_id text partition key, scope text partition key, "
                "thread_id text, role text, model text, created_at integer, "
                f"emb float[{int(dim)}] distance_metric=cosine, chunk_size={self.chunk_size})"
            )
            self._dims[space] = dim
            self.int8.ensure(conn, space, dim, fresh=True)

        self._run(None, go)
        # vec0 finds a partition's chunks by (partition00, partition01), unindexed: a scan of every chunk row.
        ddl = f"CREATE INDEX IF NOT EXISTS {self.table(space)}_by_partition ON {self.table(space)}_chunks(partition00, partition01)"
        self._run(None, lambda c: c.exec_driver_sql(ddl))

    def add(self, space: str, rows: Sequence[VectorRow], conn: Connection | None = None) -> None:
        if not rows:
            return

        def go(c: Connection) -> None:
            dim = self._dim(c, space)
            latest: dict[int, VectorRow] = {r.chunk_id: r for r in rows}  # the last row of a repeated id wins
            self._delete_ids(c, space, list(latest))  # vec0 has no upsert: replace = erase + insert
            params = [
                (
                    int(r.chunk_id),
                    r.account_id,
                    r.scope,
                    r.thread_id,
                    r.role,
                    r.model or "",  # vec0 text metadata cannot hold NULL; "" never matches a model filter
                    int(r.created_at),
                    as_f32(r.vector, dim).tobytes(),
                )
                for r in latest.values()
            ]
            c.exec_driver_sql(
                f"INSERT INTO {self.table(space)}"
                "(chunk_id, account_id, scope, thread_id, role, model, created_at, emb) VALUES (?,?,?,?,?,?,?,?)",
                params,
            )
            self.int8.add(c, space, params)

        self._run(conn, go)

    def _delete_ids(self, c: Connection, space: str, ids: Sequence[int]) -> None:
        """Delete rows by id, first overwriting their vectors with zeros so no copy of them stays in the file
        (their int8 copies too)."""
        if not ids:
            return
        table = self.table(space)
        dim = self._dim(c, space)
        zero = bytes(4 * dim)
        for start in range(0, len(ids), _ID_BATCH):
            batch = [int(i) for i in ids[start : start + _ID_BATCH]]
            self.int8.delete(c, space, batch, dim)
            marks = ",".join("?" * len(batch))
            present = [
                r[0]
                for r in c.exec_driver_sql(f"SELECT chunk_id FROM {table} WHERE chunk_id IN ({marks})", tuple(batch))
            ]
            if not present:
                continue
            c.exec_driver_sql(f"UPDATE {table} SET emb = ? WHERE chunk_id = ?", [(zero, i) for i in present])
            c.exec_driver_sql(f"DELETE FROM {table} WHERE chunk_id = ?", [(i,) for i in present])

    def delete_chunks(self, space: str, chunk_ids: Sequence[int], conn: Connection | None = None) -> None:
        self._run(conn, lambda c: self._delete_ids(c, space, list(chunk_ids)))
        if conn is None and chunk_ids:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """A vector file of its own (beside a PostgreSQL store): no page image of deleted vectors left in its WAL."""
        self._run(None, lambda c: c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)"))

    def delete_thread(self, space: str, thread_id: str, conn: Connection | None = None) -> None:
        def go(c: Connection) -> None:
            ids = [
                r[0]
                for r in c.exec_driver_sql(
                    f"SELECT chunk_id FROM {self.table(space)} WHERE thread_id = ?", (thread_id,)
                )
            ]
            self._delete_ids(c, space, ids)

        self._run(conn, go)
        if conn is None:
            self._checkpoint()

    def search(
        self,
        space: str,
        vector: numpy.ndarray,
        query: VectorQuery,
        k: int,
        conn: Connection | None = None,
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []

        def go(c: Connection) -> list[tuple[int, float]]:
            q = as_f32(vector, self._dim(c, space)).tobytes()
            where, args = ["account_id = ?"], [query.account_id]
            for column, value in (
                ("thread_id", query.thread_id),
                ("role", query.role),
                ("model", query.model),
            ):
                if value is not None:
                    where.append(f"{column} = ?")
                    args.append(value)
            if query.from_ms is not None:
                where.append("created_at >= ?")
                args.append(int(query.from_ms))
            if query.to_ms is not None:
                where.append("created_at < ?")
                args.append(int(query.to_ms))
            n = min(int(k), MAX_K)
            if query.scope is None and self.int8.ready(c, space):  # account-wide: int8 first pass, exact re-rank
                found = self.int8.nearest(c, space, q, where, args, self.int8.candidates(n, MAX_K))
                return self.int8.rerank(c, self.table(space), q, found, n)
            if query.scope is not None:
                where.append("scope = ?")
                args.append(query.scope)
            sql = (
                f"SELECT chunk_id, distance FROM {self.table(space)} WHERE emb MATCH ? AND k = ? "
                f"AND {' AND '.join(where)} ORDER BY distance"
            )
            return [(int(cid), 1.0 - float(dist)) for cid, dist in c.exec_driver_sql(sql, (q, n, *args))]

        return self._run(conn, go)

    def count(self, space: str, conn: Connection | None = None) -> int:
        # The rowids shadow table holds one row per live vector; a COUNT over vec0 itself would read every chunk.
        return self._run(
            conn, lambda c: int(c.exec_driver_sql(f"SELECT count(*) FROM {self.table(space)}_rowids").scalar_one())
        )

    def drop(self, space: str, conn: Connection | None = None) -> None:
        def go(c: Connection) -> None:
            c.exec_driver_sql(f"DROP TABLE IF EXISTS {self.table(space)}")
            self.int8.drop(c, space)
            self._dims.pop(space, None)

        self._run(conn, go)

    def quantised(self, space: str) -> bool:
        """Whether account-wide queries of the space take the int8 first pass (its copy is complete)."""
        return self._run(None, lambda c: self.int8.ready(c, space))

    def backfill(self, space: str, batch: int = 500) -> bool:
        """One step of filling the int8 copy of a space made by an older version (its own transaction);
        False when there is nothing (left) to do. The indexer calls it when idle."""
        return self._run(None, lambda c: self.int8.fill(c, space, self.table(space), batch))

    def close(self) -> None:
        self.engine.dispose()
