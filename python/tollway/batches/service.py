"""Batches on the jobs engine: each request line is a job (``jobs.batch_id`` / ``custom_id``),
submitted all or none through ``JobEngine.submit_many`` (every line's worst case held at
creation, 402 when the key cannot afford them all), so holds, policy, leases, exactly-once
ends and crash safety are the engine's. A batch's status and counts are read from its jobs;
its end is recorded once (``BatchStore.finish``) by whichever of a read, a cancel or the
sweep sees its last job ended, and ``batch_ended`` runs in that transaction.

Used by the Anthropic-shaped routes (anthropic.py) and the OpenAI-shaped ones (openai.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import Connection

from tollway.batches.config import BatchSettings
from tollway.batches.store import Batch, BatchStore, Line, StoredFile
from tollway.events import emit
from tollway.http.core import HTTPError
from tollway.jobs.engine import JobEngine
from tollway.keys import ApiKey
from tollway.keys.secrets import new_id
from tollway.store import now_ms

log = logging.getLogger("tollway.batches")

WINDOW_S = 86_400  # a batch's lines run within 24 hours ("24h"), else they expire
SWEEP_EVERY_S = 1.0


def batch_ended(conn: Connection, batch: Batch) -> None:
    """A batch's end, detected once, in the transaction that records it (``ended_at`` and the
    final ``counts`` set on ``batch``): the ``batch.completed`` account event is written here
    (tollway.events), so it commits exactly with the end, once per batch."""
    log.info("batch %s ended: %s", batch.id, batch.counts)
    data = {
        "id": batch.id,
        "kind": batch.kind,  # "anthropic" (a message batch) or "openai" (a batch)
        "key_id": batch.key_id,
        "endpoint": batch.endpoint,
        "metadata": batch.metadata,
        "request_counts": batch.counts,
        "total": batch.total,
        "cancelled": batch.cancel_initiated_at is not None,
        "created_at": batch.created_at,
        "ended_at": batch.ended_at,
    }
    emit(conn, batch.account_id, "batch.completed", data, dedup_key=f"batch.completed:{batch.id}")


def not_found(batch_id: str) -> HTTPError:
    return HTTPError(404, f"no batch {batch_id!r}", code="not_found", param="batch_id")


def file_not_found(file_id: str) -> HTTPError:
    return HTTPError(404, f"no file {file_id!r}", code="not_found", param="file_id")


def visible(key: ApiKey, account_id: str, key_id: str) -> bool:
    """A standard key sees its own batches and files, an admin key its account's."""
    return account_id == key.account_id and (key.is_admin or key_id == key.id)


class Batches:
    def __init__(self, settings: BatchSettings, store: BatchStore, engine: JobEngine) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.ended = batch_ended

    async def create(
        self,
        key: ApiKey,
        kind: str,
        prefix: str,
        endpoint: str,
        lines: Sequence[tuple[str, dict[str, Any]]],
        label: Callable[[int], str],
        *,
        input_file_id: Optional[str] = None,
        completion_window: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
    ) -> Batch:
        """Queue the lines ``(custom_id, body)`` as jobs of a new batch, all or none."""
        now = now_ms()
        values = {
            "id": new_id(prefix),
            "kind": kind,
            "account_id": key.account_id,
            "key_id": key.id,
            "endpoint": endpoint,
            "input_file_id": input_file_id,
            "completion_window": completion_window,
            "metadata": metadata,
            "total": len(lines),
            "created_at": now,
            "expires_at": now + WINDOW_S * 1000,
        }
        await self.engine.submit_many(
            key,
            [(endpoint, body, custom_id) for custom_id, body in lines],
            batch_id=values["id"],
            label=label,
            then=lambda conn: self.store.insert_batch(conn, values),
            expires_after=WINDOW_S,
        )
        batch = await asyncio.to_thread(self.store.get, values["id"])
        assert batch is not None
        return batch

    async def get(self, key: ApiKey, kind: str, batch_id: str) -> Batch:
        batch = await asyncio.to_thread(self.store.get, batch_id) if len(batch_id) <= 40 else None
        if batch is None or batch.kind != kind or not visible(key, batch.account_id, batch.key_id):
            raise not_found(batch_id)
        return await self.refresh(batch)

    async def refresh(self, batch: Batch) -> Batch:
        """The batch, its end recorded first if its last job has ended."""
        if batch.ended_at is None and await asyncio.to_thread(self.store.finish, batch.id, self.ended):
            found = await asyncio.to_thread(self.store.get, batch.id)
            assert found is not None
            return found
        return batch

    async def page(
        self, key: ApiKey, kind: str, limit: int, after: Optional[str] = None, before: Optional[str] = None
    ) -> tuple[list[Batch], bool]:
        own = None if key.is_admin else key.id
        found, more = await asyncio.to_thread(self.store.page, key.account_id, own, kind, limit, after, before)
        return [await self.refresh(b) for b in found], more

    async def cancel(self, key: ApiKey, kind: str, batch_id: str) -> Batch:
        """Cancel the batch's queued lines (their holds released); running ones finish."""
        batch = await self.get(key, kind, batch_id)
        if batch.ended_at is None:
            await asyncio.to_thread(self.store.cancel_initiated, batch.id)
            await self.engine.cancel_batch(batch.id)
            batch = await self.get(key, kind, batch_id)
        return batch

    async def delete(self, key: ApiKey, kind: str, batch_id: str) -> Batch:
        """Delete an ended batch with its results (400 while it is processing: cancel it first)."""
        batch = await self.get(key, kind, batch_id)
        if batch.ended_at is None or not await asyncio.to_thread(self.store.delete_ended, batch.id):
            raise HTTPError(
                400,
                f"batch {batch.id!r} is still processing: cancel it, and delete it once it has ended",
                param="batch_id",
            )
        return batch

    async def counts(self, batch: Batch) -> dict[str, int]:
        """The batch's jobs by status (the final ones once it ended)."""
        if batch.counts is not None:
            return batch.counts
        return await asyncio.to_thread(self.store.counts, batch.id)

    async def lines(self, batch: Batch, statuses: Optional[tuple[str, ...]] = None) -> list[Line]:
        return await asyncio.to_thread(self.store.lines, batch.id, statuses)

    # ---- files -------------------------------------------------------------------
    async def upload(self, key: ApiKey, filename: str, purpose: str, content: bytes) -> StoredFile:
        values = {
            "id": new_id("file-"),
            "account_id": key.account_id,
            "key_id": key.id,
            "purpose": purpose,
            "filename": filename,
            "bytes": len(content),
            "content": content,
            "batch_id": None,
            "kind": None,
            "created_at": now_ms(),
        }
        return await asyncio.to_thread(self.store.insert_file, values)

    async def file(self, key: ApiKey, file_id: str) -> StoredFile:
        found = await asyncio.to_thread(self.store.file, file_id) if len(file_id) <= 40 else None
        if found is None or not visible(key, found.account_id, found.key_id):
            raise file_not_found(file_id)
        return found

    async def files_page(
        self,
        account_id: str,
        key_id: Optional[str],
        purpose: Optional[str],
        limit: int,
        after: Optional[str],
        asc: bool,
    ) -> tuple[list[StoredFile], bool]:
        return await asyncio.to_thread(self.store.files_page, account_id, key_id, purpose, limit, after, asc)

    async def delete_file(self, file_id: str) -> bool:
        return await asyncio.to_thread(self.store.delete_file, file_id)

    async def store_batch(self, batch_id: str) -> Optional[Batch]:
        return await asyncio.to_thread(self.store.get, batch_id)

    async def stored_content(self, stored: StoredFile) -> bytes:
        return await asyncio.to_thread(self.store.content, stored.id) or b""

    # ---- the sweep ---------------------------------------------------------------
    async def sweep(self) -> None:
        """End the batches whose last job ended without anyone reading them (expiry, a worker)."""
        while True:
            try:
                for batch_id in await asyncio.to_thread(self.store.open_ids):
                    await asyncio.to_thread(self.store.finish, batch_id, self.ended)
            except Exception:
                log.exception("batches: the sweep failed")
            await asyncio.sleep(SWEEP_EVERY_S)
