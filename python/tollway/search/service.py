"""Search: the query (hybrid, scoped inside both engines), the status, and the wiring of embedder, index and indexer.

A query runs twice, with the same filters inside each engine: nearest neighbours of
the query's embedding (the vector index) and lexical matches of its terms (FTS5 /
PostgreSQL full-text search). The two rankings are fused by reciprocal rank fusion
(score = sum of 1 / (60 + rank) over the rankings a chunk is in), so a chunk found by
one side only keeps its place: an order code the embedding misses still comes back.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import orjson
from sqlalchemy import Connection

from tollway.http.core import HTTPError, new_request_id
from tollway.http.params import time_ms
from tollway.search.config import SearchSettings
from tollway.search.embedder import Embedder, EmbedderError, LocalEmbedder, ProviderEmbedder
from tollway.search.indexer import Indexer
from tollway.search.store import SearchStore, Space, scope_of
from tollway.search.text import highlight, lexical_terms, terms
from tollway.search.vectors import SqliteVecIndex, VectorIndex, VectorQuery, sqlite_engine
from tollway.store import Database

if TYPE_CHECKING:
    from tollway.keys import ApiKey, KeyStore
    from tollway.proxy.handler import Proxy

log = logging.getLogger("tollway.search")

RRF_K = 60
MAX_QUERY_CHARS = 2000
# How far down the fused ranking pages go. Every page of a query fuses the same two
# rankings of this depth, so pages are slices of one ranking (no repeats, no gaps).
MAX_DEPTH = 100
PROVIDER_PREFIX = "provider:"
SPACES_TTL_S = 1.0


def make_index(cfg: SearchSettings, db: Database, data_dir: Path) -> tuple[VectorIndex, bool]:
    """The configured vector index, and whether its vectors live in the store's own database."""
    if cfg.backend == "qdrant":
        if not cfg.qdrant_url:
            raise EmbedderError("TOLLWAY_QDRANT_URL is not set")
        from tollway.search.vectors_qdrant import QdrantIndex, qdrant_from_url

        return QdrantIndex(qdrant_from_url(cfg.qdrant_url or "")), False
    if db.is_sqlite:
        return SqliteVecIndex(db.engine), True
    # PostgreSQL store on one machine: the vectors in their own SQLite file in the data dir.
    return SqliteVecIndex(sqlite_engine(data_dir / "search-vectors.db")), False


def configured_embedder(cfg: SearchSettings) -> str:
    return LocalEmbedder.id if cfg.embedder == "local" else PROVIDER_PREFIX + cfg.embedder


def request_rebuild(store: SearchStore, cfg: SearchSettings) -> Space:
    """A new generation for the configured embedder and index, built in the background by the
    running gateway (``tollway search reindex``); queries use the current one until it is done."""
    wanted = configured_embedder(cfg)
    dim = LocalEmbedder.dim if wanted == LocalEmbedder.id else cfg.dim
    if dim is None:
        current = next((s for s in store.spaces() if s.embedder == wanted), None)
        if current is None:
            raise EmbedderError("set TOLLWAY_SEARCH_EMBEDDING_DIM for a provider embedder's first rebuild")
        dim = current.dim
    return store.add_space(wanted, dim, cfg.backend, _new_space_state(store, store.spaces()))


def _new_space_state(store: SearchStore, spaces: list[Space]) -> str:
    """A new generation is built from the stored chunks ("building") unless there are none yet."""
    if any(s.state == "active" for s in spaces) or store.counts()["max_chunk_id"] > 0:
        return "building"
    return "active"


def _cursor(offset: int) -> str:
    return "srch_" + base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(after: Optional[str]) -> int:
    if not after:
        return 0
    try:
        raw = after.removeprefix("srch_")
        offset = int(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        offset = -1
    if not 0 < offset <= MAX_DEPTH or not after.startswith("srch_"):
        raise HTTPError(400, "'after' must be the 'next' cursor of a previous page", param="after")
    return offset


def _ms(query: dict[str, str], name: str) -> Optional[int]:
    raw = query.get(name)
    return None if raw is None or raw == "" else time_ms(raw, name)


def _text_param(query: dict[str, str], name: str, maximum: int = 200) -> Optional[str]:
    value = query.get(name)
    if value is None or value == "":
        return None
    if len(value) > maximum:
        raise HTTPError(400, f"'{name}' is longer than {maximum} characters", param=name)
    return value


class Search:
    def __init__(
        self,
        cfg: SearchSettings,
        db: Database,
        data_dir: Path,
        keys: "KeyStore",
        proxy: "Proxy",
    ) -> None:
        self.cfg = cfg
        self.db = db
        self.keys = keys
        self.proxy = proxy
        self.data_dir = data_dir
        self.store = SearchStore(db)
        self.index, self.in_store = make_index(cfg, db, data_dir)
        self.local = LocalEmbedder(data_dir / "models" / "all-MiniLM-L6-v2-int8", threads=cfg.threads)
        self._providers: dict[tuple[str, str], ProviderEmbedder] = {}
        self.indexer = Indexer(self.store, self.index, self.in_store, self._embed_for_account, cfg.batch)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._active: Optional[Space] = None
        self._spaces_at = -SPACES_TTL_S
        self._started: Optional[asyncio.Task[None]] = None

    # ---- embedders --------------------------------------------------------
    def configured_embedder(self) -> str:
        return configured_embedder(self.cfg)

    def _embedder(self, embedder_id: str, key: "ApiKey") -> Embedder:
        if embedder_id == self.local.id:
            return self.local
        if not embedder_id.startswith(PROVIDER_PREFIX):
            raise EmbedderError(f"unknown embedder {embedder_id!r}")
        model = embedder_id.removeprefix(PROVIDER_PREFIX)
        found = self._providers.get((model, key.id))
        if found is None:
            found = ProviderEmbedder(self._creator(key), model, self.cfg.dim)
            self._providers[(model, key.id)] = found
        return found

    def _creator(self, key: "ApiKey") -> Callable[[dict[str, Any]], Any]:
        from tollway.proxy.extras import create_embeddings

        async def create(payload: dict[str, Any]) -> dict[str, Any]:
            done = await create_embeddings(self.proxy, key, payload, None, {}, new_request_id(), time.monotonic())
            if not done.ok:
                raise EmbedderError(f"the embeddings call answered {done.status}: {done.body[:300]!r}")
            return orjson.loads(done.body)

        return create

    async def _embed_for_account(self, space: Space, account_id: str, texts: list[str]) -> np.ndarray:
        """Indexing: a provider embedder is metered to the account (its first admin key)."""
        if space.embedder == self.local.id:
            return await self.local.embed(texts)
        key = await asyncio.to_thread(self.keys.first_admin, account_id)
        if key is None:
            raise EmbedderError(f"account {account_id} has no active admin key to meter its indexing to")
        return await self._embedder(space.embedder, key).embed(texts)

    # ---- lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_task(self._prepare(), name="tollway-search-prepare")

    async def _prepare(self) -> None:
        """The generation for the configured embedder and index (a rebuild when they changed), then the indexer."""
        while True:
            try:
                await self._ensure_spaces()
                break
            except Exception as exc:
                log.warning("search cannot start its index yet (retrying in 5 s): %s", exc)
                await asyncio.sleep(5)
        self.indexer.start()

    async def _ensure_spaces(self) -> None:
        spaces = await asyncio.to_thread(self.store.spaces)
        wanted, backend = self.configured_embedder(), self.cfg.backend
        for s in spaces:
            if s.backend != backend:  # the index was switched: the old one's vectors go (erasure)
                await asyncio.to_thread(self._drop_elsewhere, s)
        spaces = [s for s in spaces if s.backend == backend]
        active = next((s for s in spaces if s.state == "active"), None)
        if active is not None and active.embedder == wanted:  # a rebuild to another embedder was given up
            for s in spaces:
                if s.state == "building" and s.embedder != wanted:
                    await asyncio.to_thread(self.store.retire, s.space)
            spaces = [s for s in spaces if s.state == "active" or s.embedder == wanted]
        if any(s.embedder == wanted for s in spaces):
            for s in spaces:
                await asyncio.to_thread(self.index.ensure, s.space, s.dim)
            return
        dim = await self._dimension(wanted)
        state = await asyncio.to_thread(_new_space_state, self.store, spaces)
        space = await asyncio.to_thread(self.store.add_space, wanted, dim, backend, state)
        await asyncio.to_thread(self.index.ensure, space.space, dim)
        for s in spaces:
            await asyncio.to_thread(self.index.ensure, s.space, s.dim)
        log.info("search: generation %s (%s, %d dimensions, %s) %s", space.space, wanted, dim, backend, state)

    def _drop_elsewhere(self, space: Space) -> None:
        try:
            other, _ = make_index(replace(self.cfg, backend=space.backend), self.db, self.data_dir)
        except Exception as exc:  # e.g. Qdrant no longer configured
            log.warning(
                "search: cannot reach the %s index of generation %s to drop it: %s", space.backend, space.space, exc
            )
        else:
            other.drop(space.space)
            if other is not self.index and not (isinstance(other, SqliteVecIndex) and other.engine is self.db.engine):
                other.close()
        self.store.mark_dropped(space.space)

    async def _dimension(self, embedder_id: str) -> int:
        if embedder_id == self.local.id:
            return self.local.dim
        if self.cfg.dim:
            return self.cfg.dim
        account = await asyncio.to_thread(self.keys.first_account)
        key = await asyncio.to_thread(self.keys.first_admin, account) if account else None
        if key is None:
            raise EmbedderError(
                "a provider embedder's dimension: set TOLLWAY_SEARCH_EMBEDDING_DIM or mint an admin key"
            )
        return (await self._embedder(embedder_id, key).embed(["dimension probe"])).shape[1]

    async def stop(self) -> None:
        if self._started is not None:
            self._started.cancel()
        await self.indexer.stop()
        await asyncio.to_thread(self.local.close)
        if not self.in_store:  # (in the store, the gateway closes its own engine)
            await asyncio.to_thread(self.index.close)

    # ---- hooks -------------------------------------------------------------
    def on_stored(self, conn: Connection, thread_id: str, messages: Any) -> None:
        self.store.enqueue(conn, thread_id, messages)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.indexer.wake.set)

    def on_deleted(self, conn: Connection, thread_id: str) -> None:
        # Vectors a batch in flight wrote for this thread before its chunks were stored are
        # removed by that batch (Indexer._index): its queue rows go here.
        spaces = self.store.spaces_in(conn)
        if isinstance(self.index, SqliteVecIndex):  # by id: a vec0 delete by thread_id scans the whole table
            ids = self.store.thread_chunk_ids(conn, thread_id)
            for s in spaces:
                self.index.delete_chunks(s.space, ids, conn if self.in_store else None)
        else:
            for s in spaces:
                self.index.delete_thread(s.space, thread_id)
        self.store.erase_thread(conn, thread_id)

    # ---- the query ------------------------------------------------------------
    def _filters(self, key: "ApiKey", query: dict[str, str]) -> VectorQuery:
        if key.is_admin:
            end_user = _text_param(query, "end_user_id")
            scope = scope_of(end_user, "") if end_user is not None else None
        else:  # whatever it passes: its own end user, or the threads it created
            scope = scope_of(key.end_user_id, key.id)
        role = _text_param(query, "role", 20)
        if role is not None and role not in ("user", "assistant", "tool"):
            raise HTTPError(400, "'role' must be one of user, assistant, tool", param="role")
        from_ms, to_ms = _ms(query, "from_ms"), _ms(query, "to_ms")
        return VectorQuery(
            key.account_id,
            scope,
            _text_param(query, "thread_id", 40),
            role,
            _text_param(query, "model"),
            from_ms,
            to_ms,
        )

    async def query(self, key: "ApiKey", query: dict[str, str], limit: int) -> dict[str, Any]:
        q = (query.get("q") or "").strip()
        if not q:
            raise HTTPError(400, "'q' (what to search for) is required", param="q")
        if len(q) > MAX_QUERY_CHARS:
            raise HTTPError(400, f"'q' is longer than {MAX_QUERY_CHARS} characters", param="q")
        filters = self._filters(key, query)
        offset = _offset(query.get("after"))
        depth = MAX_DEPTH + 1
        words = terms(q)
        space = await self._active_space()
        lexical = asyncio.create_task(asyncio.to_thread(self.store.lexical, lexical_terms(words), filters, depth))
        nearest: list[tuple[int, float]] = []
        if space is not None:
            try:
                vector = await self._embedder(space.embedder, key).embed_query(q)
            except EmbedderError as exc:
                lexical.cancel()
                raise HTTPError(502, f"the search embedder failed: {exc}", code="embedder_error") from None
            nearest = await asyncio.to_thread(self.index.search, space.space, vector, filters, depth)
        fused = _fuse([[cid for cid, _ in nearest], await lexical])
        window = fused[offset : offset + limit]
        found = await asyncio.to_thread(self.store.chunks_by_id, [cid for cid, _ in window])
        data = []
        for cid, score in window:
            chunk = found.get(cid)
            if chunk is None:  # a vector written for a batch that never committed
                continue
            snippet, marks = highlight(chunk.text, words)
            data.append(
                {
                    "object": "search.result",
                    "thread_id": chunk.thread_id,
                    "message_id": chunk.message_id,
                    "role": chunk.role,
                    "snippet": snippet,
                    "highlights": marks,
                    "score": round(score, 6),
                    "created_at": chunk.created_at,
                    "model": chunk.model,
                }
            )
        more = len(fused) > offset + limit and offset + limit < MAX_DEPTH
        return {"object": "list", "data": data, "has_more": more, "next": _cursor(offset + limit) if more else None}

    async def _active_space(self) -> Optional[Space]:
        """The generation queries use (re-read at most every SPACES_TTL_S: a rebuild's switch shows within it)."""
        now = time.monotonic()
        if now - self._spaces_at > SPACES_TTL_S:
            spaces = await asyncio.to_thread(self.store.spaces)
            self._active = next((s for s in spaces if s.state == "active"), None)
            self._spaces_at = now
        return self._active

    async def status(self, key: "ApiKey") -> dict[str, Any]:
        spaces = await asyncio.to_thread(self.store.spaces)
        counts = await asyncio.to_thread(self.store.counts, key.account_id)
        active = next((s for s in spaces if s.state == "active"), None)
        building = next((s for s in spaces if s.state == "building"), None)

        def describe(s: Space) -> dict[str, Any]:
            return {"generation": s.space, "embedder": s.embedder, "dimensions": s.dim, "index": s.backend}

        return {
            "object": "search.status",
            "backlog": counts["backlog"],
            "indexed_messages": counts["messages"],
            "indexed_chunks": counts["chunks"],
            "embedder": describe(active)["embedder"] if active else self.configured_embedder(),
            "index": self.cfg.backend,
            "active": describe(active) if active else None,
            "rebuild": (
                {**describe(building), "done_upto_chunk": building.built_upto, "of_chunks_upto": counts["max_chunk_id"]}
                if building
                else None
            ),
            "indexer": {"running": self.indexer.running, "consecutive_failures": self.indexer.failures},
        }


def _fuse(rankings: list[list[int]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: every chunk of any ranking, by the sum of 1 / (RRF_K + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], -item[0]))
