"""The background indexer: queued messages to chunks, lexical entries and vectors, in batches.

It runs on the gateway's event loop; embedding runs on the embedder's own thread
(a lower scheduling priority, so that indexing does not take the request path's CPU)
or is a provider call, and database work runs in worker threads. Each batch is one
transaction (``SearchStore.write``): SIGKILL at any moment leaves every message
either still queued or indexed once. With vectors outside the database (Qdrant, or
the SQLite vector file beside a PostgreSQL store) they are written first (their ids
are fixed, so a repeat overwrites) and removed again for a message whose thread was
erased before the batch committed.

A rebuild (a "building" generation, after ``tollway search reindex`` or a change of
embedder) walks the stored chunks in id order and embeds them again, while new
messages go to both generations; queries use the active one until the rebuild has
caught up, then it becomes active and the old generation is dropped.

With nothing else to do it fills, in small batches, the int8 copy of a sqlite-vec space made
before those copies existed (``SqliteVecIndex.backfill``, no embedding needed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np
from sqlalchemy import Connection

from tollway.search.store import Chunk, Pending, SearchStore, Space
from tollway.search.vectors import VectorIndex, VectorRow

log = logging.getLogger("tollway.search")

# Between two batches of filling an int8 copy (SqliteVecIndex.backfill, ~10 ms each).
BACKFILL_PAUSE_S = 0.05
# space, account, texts -> one unit vector per text
Embed = Callable[[Space, str, list[str]], Awaitable[np.ndarray]]


def _rows(chunks: Sequence[Chunk], vectors: dict[int, np.ndarray]) -> list[VectorRow]:
    return [
        VectorRow(c.id, c.account_id, c.scope, c.thread_id, c.role, c.model, c.created_at, vectors[c.id])
        for c in chunks
        if c.id in vectors
    ]


class Indexer:
    def __init__(
        self,
        store: SearchStore,
        index: VectorIndex,
        in_store: bool,
        embed: Embed,
        batch: int = 32,
        idle_s: float = 5.0,
    ) -> None:
        self.store = store
        self.index = index
        self.in_store = in_store  # the vectors live in the store's database (sqlite-vec in the SQLite store)
        self.embed = embed
        self.batch = batch
        # With nothing queued it sleeps until woken (the message_stored hook wakes it once its
        # transaction is done) or for idle_s at most (a rebuild asked for from the CLI).
        self.idle_s = idle_s
        self.wake = asyncio.Event()
        self.indexed = 0  # messages written since start (this process)
        self.failures = 0
        self._task: Optional[asyncio.Task[None]] = None
        self._stopping = False
        self._ensured: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tollway-search-indexer")

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        delay = self.idle_s
        retry = 0
        while not self._stopping:
            try:
                busy = await self.step()
                self.failures = 0
                # Woken by a hook, which runs before its transaction commits: look again shortly.
                delay = self.idle_s if busy or retry >= 3 else 0.1
                retry = 0 if busy else retry + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                delay = min(30.0, 0.5 * 2 ** min(self.failures, 6))
                log.warning("search indexing failed (retrying in %.1f s): %s", delay, exc)
                busy = False
            if not busy:
                self.wake.clear()
                try:
                    async with asyncio.timeout(delay):  # (3.11's wait_for can swallow a cancel)
                        await self.wake.wait()
                    retry = 0  # woken: a few short looks until the new messages are committed
                except TimeoutError:
                    pass

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _spaces_in(self) -> list[Space]:
        with self.store.db.engine.connect() as conn:
            return self.store.spaces_in(conn)

    async def step(self) -> bool:
        """One batch of queued messages, else one batch of a rebuild; False when there was nothing to do."""
        every = await asyncio.to_thread(self._spaces_in)
        for old in every:
            if old.state == "retired":  # replaced: its vectors go
                await asyncio.to_thread(self.index.drop, old.space)
                await asyncio.to_thread(self.store.mark_dropped, old.space)
        spaces = [s for s in every if s.state in ("active", "building")]
        if not spaces:
            return False
        for s in spaces:
            if s.space not in self._ensured:  # e.g. a rebuild `tollway search reindex` asked for
                await asyncio.to_thread(self.index.ensure, s.space, s.dim)
                self._ensured.add(s.space)
        pending = await asyncio.to_thread(self.store.claim, self.batch)
        if pending:
            await self._index(spaces, pending)
            return True
        building = next((s for s in spaces if s.state == "building"), None)
        if building is not None:
            return await self._rebuild(building, spaces)
        return await self._backfill(spaces)

    async def _backfill(self, spaces: list[Space]) -> bool:
        """Nothing else to do: a step of filling an older space's int8 copy (sqlite-vec), then a pause so
        that the batches leave the database's writers their turns."""
        backfill = getattr(self.index, "backfill", None)
        if backfill is None:
            return False
        for s in spaces:
            if await asyncio.to_thread(backfill, s.space):
                await asyncio.sleep(BACKFILL_PAUSE_S)
                return True
        return False

    async def _vectors(self, space: Space, chunks: Sequence[Chunk]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        by_account: dict[str, list[Chunk]] = {}
        for c in chunks:
            by_account.setdefault(c.account_id, []).append(c)
        for account_id, group in by_account.items():
            vectors = await self.embed(space, account_id, [c.text for c in group])
            out.update((c.id, v) for c, v in zip(group, vectors, strict=True))
        return out

    async def _index(self, spaces: list[Space], pending: list[Pending]) -> None:
        chunks = [c for p in pending for c in p.chunks]
        vectors = {s.space: await self._vectors(s, chunks) for s in spaces} if chunks else {}
        if not self.in_store:
            for s in spaces:
                await asyncio.to_thread(self.index.add, s.space, _rows(chunks, vectors[s.space]))

        def with_vectors(conn: Connection, live: list[Chunk]) -> None:
            if self.in_store:
                for s in spaces:
                    self.index.add(s.space, _rows(live, vectors[s.space]), conn)

        taken = await asyncio.to_thread(self.store.write, pending, with_vectors)
        gone = [c.id for p in pending if p.queue_id not in taken for c in p.chunks]
        if gone and not self.in_store:  # erased while we embedded: its vectors must not outlive it
            for s in spaces:
                await asyncio.to_thread(self.index.delete_chunks, s.space, gone)
        self.indexed += len(taken)

    async def _rebuild(self, space: Space, spaces: list[Space]) -> bool:
        chunks = await asyncio.to_thread(self.store.chunks_after, space.built_upto, self.batch)
        if not chunks:
            await asyncio.to_thread(self.store.promote, space.space)  # the old one is dropped next step
            log.info("search: generation %s (%s) is complete and now serves queries", space.space, space.embedder)
            return True
        vectors = await self._vectors(space, chunks)
        rows = _rows(chunks, vectors)
        upto = chunks[-1].id
        if self.in_store:

            def write() -> None:
                with self.store.db.engine.begin() as conn:
                    # Only chunks still stored: a thread erased since chunks_after leaves no vector.
                    kept = self.store.existing(conn, [r.chunk_id for r in rows])
                    self.index.add(space.space, [r for r in rows if r.chunk_id in kept], conn)
                    self.store.advance(space.space, upto, conn)

            await asyncio.to_thread(write)
        else:
            await asyncio.to_thread(self.index.add, space.space, rows)

            def sweep() -> None:
                with self.store.db.engine.connect() as conn:
                    kept = self.store.existing(conn, [r.chunk_id for r in rows])
                gone = [r.chunk_id for r in rows if r.chunk_id not in kept]
                if gone:
                    self.index.delete_chunks(space.space, gone)
                self.store.advance(space.space, upto)

            await asyncio.to_thread(sweep)
        return True
