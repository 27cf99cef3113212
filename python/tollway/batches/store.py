"""The files and batches tables, and a batch's jobs read back (its counts, its lines in order).

A batch's end is recorded once: ``finish`` counts its jobs and, when none is queued or
running, one conditional ``UPDATE ... WHERE ended_at IS NULL`` writes ``ended_at`` and the
final counts; whatever runs it twice (the job's end, a read, the sweep), one of them ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from sqlalchemy import Connection, delete, func, insert, select, update

from tollway.keys.secrets import new_id
from tollway.store import Database, batches, files, jobs, now_ms

ACTIVE = ("queued", "running")


@dataclass(slots=True)
class Batch:
    id: str
    seq: int
    kind: str
    account_id: str
    key_id: str
    endpoint: str
    input_file_id: Optional[str]
    completion_window: Optional[str]
    metadata: Optional[dict[str, Any]]
    total: int
    created_at: int
    expires_at: int
    cancel_initiated_at: Optional[int]
    ended_at: Optional[int]
    counts: Optional[dict[str, int]]
    output_file_id: Optional[str]
    error_file_id: Optional[str]

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "Batch":
        return cls(**{name: row[name] for name in cls.__slots__})


@dataclass(slots=True)
class StoredFile:
    id: str
    seq: int
    account_id: str
    key_id: str
    purpose: str
    filename: str
    bytes: int
    batch_id: Optional[str]
    kind: Optional[str]
    created_at: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "StoredFile":
        return cls(**{name: row[name] for name in cls.__slots__})


@dataclass(slots=True)
class Line:
    """One job of a batch, as its results file shows it."""

    job_id: str
    custom_id: str
    status: str
    status_code: Optional[int]
    result: Any
    error: Any
    request_id: Optional[str]


_FILE_COLUMNS = [files.c[name] for name in StoredFile.__slots__]
BatchEnded = Callable[[Connection, Batch], None]


def _owned(table: Any, account_id: str, key_id: Optional[str]) -> list[Any]:
    where = [table.c.account_id == account_id]
    if key_id is not None:
        where.append(table.c.key_id == key_id)
    return where


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- files -------------------------------------------------------------------
    def insert_file(self, values: dict[str, Any]) -> StoredFile:
        with self.db.engine.begin() as conn:
            conn.execute(insert(files).values(**values))
        found = self.file(values["id"])
        assert found is not None
        return found

    def file(self, file_id: str) -> Optional[StoredFile]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(*_FILE_COLUMNS).where(files.c.id == file_id)).first()
        return StoredFile.of(row._mapping) if row is not None else None

    def content(self, file_id: str) -> Optional[bytes]:
        with self.db.engine.connect() as conn:
            return conn.execute(select(files.c.content).where(files.c.id == file_id)).scalar()

    def files_page(
        self,
        account_id: str,
        key_id: Optional[str],
        purpose: Optional[str],
        limit: int,
        after: Optional[str],
        ascending: bool,
    ) -> tuple[list[StoredFile], bool]:
        query = select(*_FILE_COLUMNS).where(*_owned(files, account_id, key_id))
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        with self.db.engine.connect() as conn:
            if after is not None:
                seq = conn.execute(select(files.c.seq).where(files.c.id == after)).scalar()
                if seq is None:
                    return [], False
                query = query.where(files.c.seq > seq if ascending else files.c.seq < seq)
            order = files.c.seq.asc() if ascending else files.c.seq.desc()
            rows = conn.execute(query.order_by(order).limit(limit + 1)).all()
        found = [StoredFile.of(r._mapping) for r in rows]
        return found[:limit], len(found) > limit

    def delete_file(self, file_id: str) -> bool:
        with self.db.engine.begin() as conn:
            return bool(conn.execute(delete(files).where(files.c.id == file_id)).rowcount)

    # ---- batches -----------------------------------------------------------------
    @staticmethod
    def insert_batch(conn: Connection, values: dict[str, Any]) -> None:
        conn.execute(insert(batches).values(**values))

    def get(self, batch_id: str) -> Optional[Batch]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        return Batch.of(row._mapping) if row is not None else None

    def page(
        self,
        account_id: str,
        key_id: Optional[str],
        kind: str,
        limit: int,
        after: Optional[str] = None,
        before: Optional[str] = None,
    ) -> tuple[list[Batch], bool]:
        """Newest first. ``after``: the batches older than that one (the next page);
        ``before``: those newer than it (the previous page, still newest first)."""
        query = select(batches).where(*_owned(batches, account_id, key_id), batches.c.kind == kind)
        newer = False
        with self.db.engine.connect() as conn:
            cursor = after if after is not None else before
            if cursor is not None:
                seq = conn.execute(
                    select(batches.c.seq).where(batches.c.id == cursor, batches.c.account_id == account_id)
                ).scalar()
                if seq is None:
                    return [], False
                newer = after is None
                query = query.where(batches.c.seq > seq if newer else batches.c.seq < seq)
            order = batches.c.seq.asc() if newer else batches.c.seq.desc()
            rows = conn.execute(query.order_by(order).limit(limit + 1)).all()
        found = [Batch.of(r._mapping) for r in rows]
        more = len(found) > limit
        found = found[:limit]
        if newer:
            found.reverse()
        return found, more

    def counts(self, batch_id: str, conn: Optional[Connection] = None) -> dict[str, int]:
        """The batch's jobs by status."""
        query = select(jobs.c.status, func.count()).where(jobs.c.batch_id == batch_id).group_by(jobs.c.status)
        if conn is not None:
            return {status: n for status, n in conn.execute(query).all()}
        with self.db.engine.connect() as own:
            return {status: n for status, n in own.execute(query).all()}

    def cancel_initiated(self, batch_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.cancel_initiated_at.is_(None), batches.c.ended_at.is_(None))
                .values(cancel_initiated_at=now_ms())
            )

    def finish(self, batch_id: str, ended: BatchEnded, conn: Optional[Connection] = None) -> bool:
        """Record the batch's end if none of its jobs is queued or running (once: True for the
        call that recorded it, which ran ``ended(conn, batch)`` in the same transaction)."""
        if conn is not None:
            return self._finish(conn, batch_id, ended)
        with self.db.engine.begin() as own:
            return self._finish(own, batch_id, ended)

    def _finish(self, conn: Connection, batch_id: str, ended: BatchEnded) -> bool:
        counts = self.counts(batch_id, conn)
        if any(counts.get(status) for status in ACTIVE):
            return False
        row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        if row is None or row._mapping["ended_at"] is not None:
            return False
        batch = Batch.of(row._mapping)
        now = now_ms()
        # The end is claimed first: a finisher that lost the race (PostgreSQL: it waited on the
        # row, then found ended_at set) writes nothing else.
        if not conn.execute(
            update(batches)
            .where(batches.c.id == batch_id, batches.c.ended_at.is_(None))
            .values(ended_at=now, counts=counts)
        ).rowcount:
            return False
        outputs: dict[str, Optional[str]] = {"output_file_id": None, "error_file_id": None}
        if batch.kind == "openai":  # the output and error files, built from the jobs when read
            unsucceeded = sum(n for status, n in counts.items() if status != "succeeded")
            for kind, needed in (("output", counts.get("succeeded", 0)), ("error", unsucceeded)):
                if needed:
                    file_id = new_id("file-")
                    conn.execute(
                        insert(files).values(
                            id=file_id,
                            account_id=batch.account_id,
                            key_id=batch.key_id,
                            purpose="batch_output",
                            filename=f"{batch.id}_{kind}.jsonl",
                            bytes=0,
                            content=None,
                            batch_id=batch.id,
                            kind=kind,
                            created_at=now,
                        )
                    )
                    outputs[f"{kind}_file_id"] = file_id
            conn.execute(update(batches).where(batches.c.id == batch_id).values(**outputs))
        batch.ended_at, batch.counts = now, counts
        batch.output_file_id, batch.error_file_id = outputs["output_file_id"], outputs["error_file_id"]
        ended(conn, batch)
        return True

    def delete_ended(self, batch_id: str) -> bool:
        """Delete an ended batch and its jobs (their results); False if it has not ended."""
        with self.db.engine.begin() as conn:
            done = conn.execute(
                delete(batches).where(batches.c.id == batch_id, batches.c.ended_at.is_not(None))
            ).rowcount
            if done:
                conn.execute(delete(jobs).where(jobs.c.batch_id == batch_id))
                conn.execute(delete(files).where(files.c.batch_id == batch_id))
        return bool(done)

    def open_ids(self) -> list[str]:
        """The batches not ended yet whose jobs have all ended (the sweep ends them)."""
        active = select(jobs.c.id).where(jobs.c.batch_id == batches.c.id, jobs.c.status.in_(ACTIVE)).exists()
        with self.db.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(batches.c.id).where(batches.c.ended_at.is_(None), ~active))]

    def lines(self, batch_id: str, statuses: Optional[tuple[str, ...]] = None) -> list[Line]:
        """The batch's jobs in line order (custom_id, status, stored result or error)."""
        query = select(
            jobs.c.id,
            jobs.c.custom_id,
            jobs.c.status,
            jobs.c.status_code,
            jobs.c.result,
            jobs.c.error,
            jobs.c.request_id,
        ).where(jobs.c.batch_id == batch_id)
        if statuses is not None:
            query = query.where(jobs.c.status.in_(statuses))
        with self.db.engine.connect() as conn:
            return [Line(*row) for row in conn.execute(query.order_by(jobs.c.seq))]
