"""The int8 copy of a sqlite-vec space: the first pass of account-wide (admin) queries.

An account-wide query has no scope partition to narrow it, so the exact float scan reads every vector of the
account (87-190 ms at 100k on this 2-core host, by the day: cosine over float[384] in vec0 is scalar C; the int8
pass ~40 ms, the re-rank ~2 ms, benches/README.md "Account-wide query"). Each space keeps, beside its
float ``vec0`` table, ``search_vecq_<space>``: the same rows with ``int8[dim]`` vectors
(``vec_quantize_int8(v, 'unit')``, a quarter of the bytes), partitioned by account only (its chunks are full) and
with small chunks (``chunk_size=32``: vec0 selects each chunk's top k by k passes over the chunk, so with the
~300 candidates we ask for, large chunks cost more than the distances). The query takes the ``candidates(k)``
nearest by L2 over the int8 codes (for unit vectors the order of cosine), with every filter inside that KNN,
then re-ranks them by their exact float cosine, which is the score it returns. Measured recall of the top 100 vs
the exact scan: 1.0 on the benchmark corpus, 0.996 on 20,000 really embedded support messages (every miss a tie).

The copy follows the float vectors' rules: written in the same statement batch and transaction, deleted with them,
overwritten with zeros first (vec0 cannot UPDATE an int8 vector, sqlite-vec issue #53: the slot is zeroed in its
chunk blob, then the row deleted), dropped with the space. A space created before the copy existed (its float
table without a ``search_vecq_`` table) gets an empty copy and a row in ``search_vecq_fill``; its account-wide
queries stay on the exact scan until ``backfill`` (the indexer, when idle) has copied every float vector.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

# Candidates of the int8 pass: CANDIDATES_PER_HIT times the k asked for, at least MIN_CANDIDATES.
CANDIDATES_PER_HIT = 3
MIN_CANDIDATES = 100
CHUNK_SIZE = 32
FILL = "search_vecq_fill"  # spaces whose copy is still being filled: (space, last chunk id copied)
_QUANTISE = "vec_int8(vec_quantize_int8(?, 'unit'))"  # (vec_int8: vec0 takes an untyped blob for float32)


def _ids_json(ids: Sequence[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


class Int8Copy:
    def __init__(self) -> None:
        self._exists: set[str] = set()
        self._ready: set[str] = set()

    @staticmethod
    def table(space: str) -> str:
        return f"search_vecq_{space}"

    def forget(self, space: str) -> None:
        self._exists.discard(space)
        self._ready.discard(space)

    def exists(self, c: Connection, space: str) -> bool:
        if space not in self._exists:
            found = c.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table(space),)
            ).first()
            if found is None:
                return False
            self._exists.add(space)
        return True

    def ready(self, c: Connection, space: str) -> bool:
        """Whether the copy holds every vector of the space (account-wide queries may use it)."""
        if space in self._ready:
            return True
        if not self.exists(c, space):
            return False
        filling = c.exec_driver_sql(f"SELECT 1 FROM {FILL} WHERE space = ?", (space,)).first()
        if filling is None:
            self._ready.add(space)
        return filling is None

    def ensure(self, c: Connection, space: str, dim: int, fresh: bool) -> None:
        """The copy of a space; ``fresh``: its float table was created just now (nothing to copy)."""
        if self.exists(c, space):
            return
        c.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {FILL} (space TEXT PRIMARY KEY, upto INTEGER NOT NULL)")
        if not fresh:  # first the mark, in the same transaction: never a copy taken for complete that is not
            c.exec_driver_sql(f"INSERT OR IGNORE INTO {FILL} (space, upto) VALUES (?, -1)", (space,))
        table = self.table(space)
        c.exec_driver_sql(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING vec0("
            "chunk_id integer primary key, account_id text partition key, "
            "thread_id text, role text, model text, created_at integer, "
            f"emb int8[{int(dim)}], chunk_size={CHUNK_SIZE})"
        )
        c.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {table}_by_partition ON {table}_chunks(partition00)")
        self._exists.add(space)

    def insert_sql(self, space: str) -> str:
        """The INSERT of :meth:`rows` (the benchmark's corpus builder writes with it too)."""
        return (
            f"INSERT INTO {self.table(space)} (chunk_id, account_id, thread_id, role, model, created_at, emb) "
            f"VALUES (?,?,?,?,?,?,{_QUANTISE})"
        )

    @staticmethod
    def rows(float_rows: Sequence[tuple]) -> list[tuple]:
        """The float table's rows (chunk_id, account_id, scope, thread, role, model, at, f32 bytes) without scope."""
        return [
            (cid, account, thread, role, model, at, emb) for cid, account, _, thread, role, model, at, emb in float_rows
        ]

    def add(self, c: Connection, space: str, float_rows: Sequence[tuple]) -> None:
        if float_rows and self.exists(c, space):
            c.exec_driver_sql(self.insert_sql(space), self.rows(float_rows))

    def zero(self, c: Connection, space: str, ids: Sequence[int], dim: int) -> list[int]:
        """Overwrite the rows' int8 vectors (``dim`` bytes each) with zeros in their chunk blobs; the ids found."""
        if not ids or not self.exists(c, space):
            return []
        table = self.table(space)
        slots: dict[int, list[int]] = {}
        found = []
        for rowid, chunk, offset in c.exec_driver_sql(
            f"SELECT rowid, chunk_id, chunk_offset FROM {table}_rowids WHERE rowid IN (SELECT value FROM json_each(?)) "
            "ORDER BY rowid",
            (_ids_json(ids),),
        ):
            slots.setdefault(int(chunk), []).append(int(offset))
            found.append(int(rowid))
        for chunk, offsets in slots.items():
            blob = bytearray(
                c.exec_driver_sql(f"SELECT vectors FROM {table}_vector_chunks00 WHERE rowid = ?", (chunk,)).scalar_one()
            )
            for offset in offsets:
                blob[offset * dim : (offset + 1) * dim] = bytes(dim)
            c.exec_driver_sql(f"UPDATE {table}_vector_chunks00 SET vectors = ? WHERE rowid = ?", (bytes(blob), chunk))
        return found

    def delete(self, c: Connection, space: str, ids: Sequence[int], dim: int) -> None:
        """Zero the rows' int8 vectors, then delete the rows (vec0 cannot UPDATE an int8 vector)."""
        found = self.zero(c, space, ids, dim)
        if found:
            c.exec_driver_sql(f"DELETE FROM {self.table(space)} WHERE chunk_id = ?", [(i,) for i in found])

    @staticmethod
    def candidates(k: int, max_k: int) -> int:
        return min(max_k, max(CANDIDATES_PER_HIT * k, MIN_CANDIDATES))

    def nearest(self, c: Connection, space: str, vector: bytes, where: list[str], args: list, n: int) -> list[int]:
        """The ``n`` nearest chunk ids by the int8 codes; ``where`` / ``args``: the query's filters (no scope)."""
        sql = (
            f"SELECT chunk_id FROM {self.table(space)} WHERE emb MATCH vec_quantize_int8(?, 'unit') AND k = ? "
            f"AND {' AND '.join(where)} ORDER BY distance"
        )
        return [int(r[0]) for r in c.exec_driver_sql(sql, (vector, n, *args))]

    @staticmethod
    def rerank(c: Connection, float_table: str, vector: bytes, ids: list[int], k: int) -> list[tuple[int, float]]:
        """The exact cosine of each candidate from the float table; the best ``k``."""
        if not ids:
            return []
        sql = (
            f"SELECT v.chunk_id, vec_distance_cosine(v.emb, ?) AS d FROM json_each(?) j "
            f"JOIN {float_table} v ON v.chunk_id = j.value ORDER BY d, v.chunk_id LIMIT ?"
        )
        return [(int(cid), 1.0 - float(d)) for cid, d in c.exec_driver_sql(sql, (vector, _ids_json(ids), k))]

    def fill(self, c: Connection, space: str, float_table: str, batch: int) -> bool:
        """Copy the next ``batch`` float vectors of a space being filled; False when nothing was left to do."""
        if space in self._ready or not self.exists(c, space):
            return False
        # A write first: the transaction holds the write lock before it reads, so no delete can come between
        # reading a float vector and writing its copy (a copy must never outlive its vector).
        if c.exec_driver_sql(f"UPDATE {FILL} SET upto = upto WHERE space = ?", (space,)).rowcount == 0:
            self._ready.add(space)
            return False
        upto = int(c.exec_driver_sql(f"SELECT upto FROM {FILL} WHERE space = ?", (space,)).scalar_one())
        ids = [
            int(r[0])
            for r in c.exec_driver_sql(
                f"SELECT rowid FROM {float_table}_rowids WHERE rowid > ? ORDER BY rowid LIMIT ?", (upto, batch)
            )
        ]
        if not ids:
            c.exec_driver_sql(f"DELETE FROM {FILL} WHERE space = ?", (space,))
            return True
        table = self.table(space)
        have = {
            int(r[0])
            for r in c.exec_driver_sql(
                f"SELECT rowid FROM {table}_rowids WHERE rowid IN (SELECT value FROM json_each(?))", (_ids_json(ids),)
            )
        }
        missing = [i for i in ids if i not in have]  # (rows added since the copy exists are there already)
        if missing:
            c.exec_driver_sql(
                f"INSERT INTO {table} (chunk_id, account_id, thread_id, role, model, created_at, emb) "
                "SELECT v.chunk_id, v.account_id, v.thread_id, v.role, v.model, v.created_at, "
                f"vec_int8(vec_quantize_int8(v.emb, 'unit')) FROM json_each(?) j "
                f"JOIN {float_table} v ON v.chunk_id = j.value",
                (_ids_json(missing),),
            )
        c.exec_driver_sql(f"UPDATE {FILL} SET upto = ? WHERE space = ?", (ids[-1], space))
        return True

    def drop(self, c: Connection, space: str) -> None:
        c.exec_driver_sql(f"DROP TABLE IF EXISTS {self.table(space)}")
        exists = c.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FILL,)).first()
        if exists is not None:
            c.exec_driver_sql(f"DELETE FROM {FILL} WHERE space = ?", (space,))
        self.forget(space)
