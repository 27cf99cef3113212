"""The search tables: the queue the message_stored hook fills, the chunks, the lexical side and the index generations.

Nothing here embeds: the indexer (tollway.search.indexer) claims queued messages,
embeds their chunks and hands them back to ``write``, which stores chunks, lexical
entries and (when the vectors live in this database) vectors, and deletes the queue
rows, in one transaction: a crash before it leaves the messages queued, after it
leaves them indexed once (chunk ids are fixed by the message, so a repeat overwrites).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import Connection, delete, func, insert, select, text, update

from tollway.search.text import (
    FTS_CHUNK_MASK,
    MAX_CHUNKS,
    account_token,
    chunks,
    fts5_query,
    fts_range,
    fts_rowid,
    scope_token,
    scope_tokens,
    searchable,
)
from tollway.search.vectors import VectorQuery
from tollway.store import Database, now_ms
from tollway.store.schema import search_chunks, search_queue, search_spaces, thread_messages, threads


def scope_of(end_user_id: Optional[str], key_id: str) -> str:
    """The partition a thread's messages are searched in: its end user's, else its creating key's."""
    return f"u:{end_user_id}" if end_user_id is not None else f"k:{key_id}"


@dataclass(frozen=True, slots=True)
class Chunk:
    id: int
    message_id: str
    thread_id: str
    account_id: str
    scope: str
    role: str
    model: Optional[str]
    created_at: int
    text: str


@dataclass(frozen=True, slots=True)
class Pending:
    """A queued message, with what indexing it needs."""

    queue_id: int
    chunks: tuple[Chunk, ...]  # empty when the message has nothing searchable


@dataclass(frozen=True, slots=True)
class Space:
    space: str
    embedder: str
    dim: int
    backend: str
    state: str
    built_upto: int


def _chunks_of(row: Any) -> tuple[Chunk, ...]:
    found = searchable(row.role, row.content)
    if found is None:
        return ()
    scope = scope_of(row.end_user_id, row.key_id)
    base = row.seq * MAX_CHUNKS
    return tuple(
        Chunk(base + i, row.id, row.thread_id, row.account_id, scope, found.role, row.model, row.created_at, piece)
        for i, piece in enumerate(chunks(found.text))
    )


# SQLite's lexical side: at most this many matches of each query word (the newest first) are ranked.
LEXICAL_CANDIDATES = 200


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- hooks (inside the thread store's transactions) -------------------
    def enqueue(self, conn: Connection, thread_id: str, messages: Sequence[Any]) -> None:
        rows = [
            {"message_seq": m.seq, "thread_id": thread_id, "created_at": m.created_at}
            for m in messages
            if not (m.metadata or {}).get("copied")  # a stored response's copy of an earlier one
        ]
        if rows:
            conn.execute(insert(search_queue), rows)

    def erase_thread(self, conn: Connection, thread_id: str) -> None:
        """The thread's queue rows, chunks and lexical entries (vectors: the index's delete_thread)."""
        conn.execute(delete(search_queue).where(search_queue.c.thread_id == thread_id))
        if self.db.is_sqlite:
            rows = conn.execute(
                select(search_chunks.c.id, search_chunks.c.account_id, search_chunks.c.scope).where(
                    search_chunks.c.thread_id == thread_id
                )
            ).all()
            self._delete_fts(conn, [fts_rowid(r.account_id, r.scope, r.id) for r in rows])
        conn.execute(delete(search_chunks).where(search_chunks.c.thread_id == thread_id))

    @staticmethod
    def _delete_fts(conn: Connection, rowids: list[int]) -> None:
        if rowids:
            conn.execute(
                text("DELETE FROM search_fts WHERE rowid IN (SELECT value FROM json_each(:ids))"),
                {"ids": _json(rowids)},
            )

    # ---- the indexer ------------------------------------------------------
    def claim(self, limit: int) -> list[Pending]:
        """The oldest ``limit`` queued messages (not locked: ``write`` keeps only those still queued)."""
        m, t, q = thread_messages, threads, search_queue
        query = (
            select(q.c.id.label("queue_id"), m.c.seq, m.c.id, m.c.thread_id, m.c.role, m.c.content, m.c.model)
            .add_columns(m.c.created_at, t.c.account_id, t.c.end_user_id, t.c.key_id)
            .select_from(q.join(m, m.c.seq == q.c.message_seq).join(t, t.c.id == m.c.thread_id))
            .order_by(q.c.id)
            .limit(limit)
        )
        with self.db.engine.connect() as conn:
            return [Pending(row.queue_id, _chunks_of(row)) for row in conn.execute(query)]

    def write(self, pending: Sequence[Pending], in_transaction: Callable[[Connection, list[Chunk]], None]) -> set[int]:
        """Store the chunks of the ``pending`` messages still queued, and dequeue them, in one
        transaction; ``in_transaction(conn, chunks)`` adds what belongs with them (vectors kept
        in this database). Returns the queue ids written (a message whose thread was erased
        meanwhile is not: its queue row went with it)."""
        ids = [p.queue_id for p in pending]
        with self.db.engine.begin() as conn:
            taken = {
                r[0]
                for r in conn.execute(
                    delete(search_queue).where(search_queue.c.id.in_(ids)).returning(search_queue.c.id)
                )
            }
            live = [c for p in pending if p.queue_id in taken for c in p.chunks]
            self._replace_chunks(conn, live)
            in_transaction(conn, live)
        return taken

    def _replace_chunks(self, conn: Connection, rows: list[Chunk]) -> None:
        if not rows:
            return
        ids = [c.id for c in rows]
        if self.db.is_sqlite:  # a repeat of the same message (after a crash) replaces its entries
            self._delete_fts(conn, [fts_rowid(c.account_id, c.scope, c.id) for c in rows])
        conn.execute(delete(search_chunks).where(search_chunks.c.id.in_(ids)))
        conn.execute(
            insert(search_chunks),
            [
                {"id": c.id, "message_id": c.message_id, "thread_id": c.thread_id, "account_id": c.account_id,
                 "scope": c.scope, "role": c.role, "model": c.model, "created_at": c.created_at, "text": c.text,
                 "tokens": scope_tokens(c.account_id, c.scope)}
                for c in rows
            ],
        )  # fmt: skip
        if self.db.is_sqlite:
            conn.execute(
                text("INSERT INTO search_fts(rowid, text, scope) VALUES (:id, :text, :tokens)"),
                [
                    {
                        "id": fts_rowid(c.account_id, c.scope, c.id),
                        "text": c.text,
                        "tokens": scope_tokens(c.account_id, c.scope),
                    }
                    for c in rows
                ],
            )

    def chunks_after(self, after: int, limit: int) -> list[Chunk]:
        """Stored chunks with an id above ``after``, in id order (what a rebuild walks)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(search_chunks).where(search_chunks.c.id > after).order_by(search_chunks.c.id).limit(limit)
            )
            return [_chunk(r) for r in rows]

    def existing(self, conn: Connection, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        return set(conn.execute(select(search_chunks.c.id).where(search_chunks.c.id.in_(list(ids)))).scalars())

    def chunks_by_id(self, ids: Sequence[int]) -> dict[int, Chunk]:
        if not ids:
            return {}
        with self.db.engine.connect() as conn:
            return {
                r.id: _chunk(r) for r in conn.execute(select(search_chunks).where(search_chunks.c.id.in_(list(ids))))
            }

    # ---- the lexical side -------------------------------------------------
    def lexical(self, words: list[str], filters: VectorQuery, k: int) -> list[int]:
        """Chunk ids matching any of ``words``, best first, at most ``k``.

        The scope (or the account) is a token of each lexical entry, matched together with
        the words inside the index: the engine intersects the scope's short list with each
        word's, instead of ranking every account's matches and filtering them. The other
        filters are conditions of the same query. SQLite ranks a match by the summed IDF of
        the words its text holds, IDF taken over the searched scope (FTS5's bm25 counts each
        word over the whole table on every query: ~0.4 s at a million chunks); PostgreSQL
        by ts_rank_cd.
        """
        if not words:
            return []
        where, params = _where(filters)
        scope = (
            scope_token(filters.account_id, filters.scope)
            if filters.scope is not None
            else account_token(filters.account_id)
        )
        if not self.db.is_sqlite:
            return self._lexical_pg(words, scope, where, params, k)
        # One intersection of the scope's entries with any of the words; each match is then
        # scored by the words its text holds (the same inflection rule as the highlights).
        # A scope's entries are one rowid range (text.fts_rowid): FTS5 seeks to it in each list.
        # One match per word, each the scope's newest LEXICAL_CANDIDATES: a rare word (an order
        # code) keeps all its matches however many a common word of the same query has.
        in_range = ""
        if filters.scope is not None:
            params["low"], params["high"] = fts_range(filters.account_id, filters.scope)
            in_range = "AND search_fts.rowid BETWEEN :low AND :high "
        others = {"thread_id", "role", "model", "from_ms", "to_ms"} & set(params)
        join = f"JOIN search_chunks c ON c.id = (search_fts.rowid & {FTS_CHUNK_MASK}) " if others else ""
        condition = f"AND {where} " if others else ""
        sql = text(
            f"SELECT search_fts.rowid & {FTS_CHUNK_MASK} FROM search_fts {join}"
            f"WHERE search_fts MATCH :q {in_range}{condition}ORDER BY search_fts.rowid DESC LIMIT :cap"
        )
        found: list[set[int]] = []
        with self.db.engine.connect() as conn:
            for word in words:
                q = f'scope : "{scope}" AND text : {fts5_query([word])}'
                found.append({r[0] for r in conn.execute(sql, {**params, "q": q, "cap": LEXICAL_CANDIDATES})})
            if not any(found):
                return []
            total = conn.execute(text(f"SELECT count(*) FROM search_chunks c WHERE {where}"), params).scalar_one()
        # IDF over the searched scope: how many of its chunks hold each word (at least).
        scores: dict[int, float] = {}
        for ids in found:
            idf = math.log(1 + (max(total, len(ids)) - len(ids) + 0.5) / (len(ids) + 0.5))
            for cid in ids:
                scores[cid] = scores.get(cid, 0.0) + idf
        return [cid for cid, _ in sorted(scores.items(), key=lambda item: (-item[1], -item[0]))[:k]]

    def _lexical_pg(self, words: list[str], scope: str, where: str, params: dict[str, Any], k: int) -> list[int]:
        parts = []
        for i, w in enumerate(words):
            params[f"w{i}"] = w
            parts.append(f"plainto_tsquery('english', :w{i})")
        params.update(scope=scope, k=k)
        sql = (
            f"WITH q AS (SELECT to_tsquery('simple', :scope) && ({' || '.join(parts)}) AS query) "
            f"SELECT c.id FROM search_chunks c, q WHERE c.tsv @@ q.query AND {where} "
            "ORDER BY ts_rank_cd(c.tsv, q.query) DESC, c.id DESC LIMIT :k"
        )
        with self.db.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(sql), params)]

    # ---- generations and counts ------------------------------------------
    def spaces(self) -> list[Space]:
        """The generations in use (active, building)."""
        with self.db.engine.connect() as conn:
            return [s for s in self.spaces_in(conn) if s.state in ("active", "building")]

    def spaces_in(self, conn: Connection) -> list[Space]:
        """Every generation whose vectors may still exist (all but the dropped ones), oldest first."""
        rows = conn.execute(
            select(search_spaces)
            .where(search_spaces.c.state != "dropped")
            .order_by(search_spaces.c.created_at, search_spaces.c.space)
        )
        return [Space(r.space, r.embedder, r.dim, r.backend, r.state, r.built_upto) for r in rows]

    def thread_chunk_ids(self, conn: Connection, thread_id: str) -> list[int]:
        return list(conn.execute(select(search_chunks.c.id).where(search_chunks.c.thread_id == thread_id)).scalars())

    def retire(self, space: str) -> None:
        """The generation is no longer wanted (the indexer drops its vectors)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(search_spaces).where(search_spaces.c.space == space).values(state="retired"))

    def mark_dropped(self, space: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(update(search_spaces).where(search_spaces.c.space == space).values(state="dropped"))

    def add_space(self, embedder: str, dim: int, backend: str, state: str) -> Space:
        with self.db.engine.begin() as conn:
            n = conn.execute(select(func.count()).select_from(search_spaces)).scalar_one()
            space = Space(f"g{n + 1}", embedder, dim, backend, state, 0)
            conn.execute(
                insert(search_spaces).values(
                    space=space.space, embedder=embedder, dim=dim, backend=backend, state=state, built_upto=0,
                    created_at=now_ms(), completed_at=now_ms() if state == "active" else None,
                )
            )  # fmt: skip
            if state == "building":  # one rebuild at a time: a newer request replaces an older one
                conn.execute(
                    update(search_spaces)
                    .where(search_spaces.c.state == "building", search_spaces.c.space != space.space)
                    .values(state="retired")
                )
        return space

    def advance(self, space: str, built_upto: int, conn: Optional[Connection] = None) -> None:
        stmt = update(search_spaces).where(search_spaces.c.space == space).values(built_upto=built_upto)
        if conn is not None:
            conn.execute(stmt)
            return
        with self.db.engine.begin() as c:
            c.execute(stmt)

    def promote(self, space: str) -> None:
        """The rebuilt ``space`` becomes the one queries use; the previous active one is retired."""
        with self.db.engine.begin() as conn:
            conn.execute(update(search_spaces).where(search_spaces.c.state == "active").values(state="retired"))
            conn.execute(
                update(search_spaces)
                .where(search_spaces.c.space == space)
                .values(state="active", completed_at=now_ms())
            )

    def counts(self, account_id: Optional[str] = None) -> dict[str, int]:
        q, c, m, t = search_queue, search_chunks, thread_messages, threads
        with self.db.engine.connect() as conn:
            backlog = select(func.count()).select_from(q)
            chunk_count = select(func.count()).select_from(c)
            message_count = select(func.count(func.distinct(c.c.message_id))).select_from(c)
            if account_id is not None:
                backlog = (
                    backlog.join(m, m.c.seq == q.c.message_seq)
                    .join(t, t.c.id == m.c.thread_id)
                    .where(t.c.account_id == account_id)
                )
                chunk_count = chunk_count.where(c.c.account_id == account_id)
                message_count = message_count.where(c.c.account_id == account_id)
            return {
                "backlog": conn.execute(backlog).scalar_one(),
                "chunks": conn.execute(chunk_count).scalar_one(),
                "messages": conn.execute(message_count).scalar_one(),
                "max_chunk_id": conn.execute(select(func.coalesce(func.max(c.c.id), 0))).scalar_one(),
            }


def _json(ids: list[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _chunk(r: Any) -> Chunk:
    return Chunk(r.id, r.message_id, r.thread_id, r.account_id, r.scope, r.role, r.model, r.created_at, r.text)


def _where(f: VectorQuery) -> tuple[str, dict[str, Any]]:
    clauses = ["c.account_id = :account_id"]
    params: dict[str, Any] = {"account_id": f.account_id}
    for name, op in (("scope", "="), ("thread_id", "="), ("role", "="), ("model", "=")):
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"c.{name} {op} :{name}")
            params[name] = value
    if f.from_ms is not None:
        clauses.append("c.created_at >= :from_ms")
        params["from_ms"] = f.from_ms
    if f.to_ms is not None:
        clauses.append("c.created_at < :to_ms")
        params["to_ms"] = f.to_ms
    return " AND ".join(clauses), params
