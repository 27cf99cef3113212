"""Threads and their messages in the database (synchronous; call from a worker thread).

A thread holds one end user's conversation server-side. Every thread query is
scoped by account (and, for standard keys, by end user); the message methods take
a thread id only, so callers resolve the thread with ``get_thread`` first, which
is where ownership is checked.

Ordering and cursors use the autoincrement ``seq`` columns with the indexes
(account_id, seq), (account_id, end_user_id, seq) and (thread_id, seq): a page is
one index range scan, never an OFFSET.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional

from sqlalchemy import Connection, delete, func, insert, select, update

from tollway.hooks import Hooks
from tollway.keys.secrets import new_id
from tollway.store import Database, now_ms, thread_messages, threads

if TYPE_CHECKING:
    from tollway.keys import ApiKey

log = logging.getLogger("tollway.threads")

ROLES = ("user", "assistant")


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""``update_thread(system=UNSET)`` leaves the system prompt as it is (``None`` clears it)."""


@dataclass(slots=True)
class Thread:
    id: str
    account_id: str
    end_user_id: Optional[str]
    key_id: str
    metadata: dict[str, Any]
    system: Optional[str]
    created_at: int
    updated_at: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread",
            "end_user_id": self.end_user_id,
            "metadata": self.metadata,
            "system": self.system,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class StoredMessage:
    id: str
    thread_id: str
    role: str
    content: list[dict[str, Any]]
    model: Optional[str]
    usage: Optional[dict[str, Any]]
    stop_reason: Optional[str]
    metadata: Optional[dict[str, Any]]
    created_at: int
    seq: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "thread.message",
            "thread_id": self.thread_id,
            "role": self.role,
            "content": self.content,
            "model": self.model,
            "usage": self.usage,
            "stop_reason": self.stop_reason,
            "metadata": self.metadata,
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class NewMessage:
    role: str
    content: list[dict[str, Any]]
    model: Optional[str] = None
    usage: Optional[dict[str, Any]] = None
    stop_reason: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None


def _row_to_thread(row: Any) -> Thread:
    return Thread(
        id=row.id,
        account_id=row.account_id,
        end_user_id=row.end_user_id,
        key_id=row.key_id,
        metadata=row.metadata or {},
        system=row.system,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _row_to_message(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row.id,
        thread_id=row.thread_id,
        role=row.role,
        content=row.content,
        model=row.model,
        usage=row.usage,
        stop_reason=row.stop_reason,
        metadata=row.metadata,
        created_at=row.created_at,
        seq=row.seq,
    )


def visible(key: "ApiKey", thread: Optional[Thread]) -> Optional[Thread]:
    """The thread if ``key`` may see it, else None (callers answer 404, as if it did not
    exist): an admin key sees its account's threads, a key minted for an end user that
    end user's, any other key those it created."""
    if thread is None or key.is_admin:
        return thread
    own = thread.end_user_id == key.end_user_id if key.end_user_id is not None else thread.key_id == key.id
    return thread if own else None


def _check_messages(messages: list[NewMessage]) -> None:
    for m in messages:
        if m.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {m.role!r}")
        if not isinstance(m.content, list):
            raise ValueError("content must be a list of content blocks")


class ThreadStore:
    # How long delete_thread keeps trying to truncate SQLite's WAL while readers hold it.
    checkpoint_deadline_s = 30.0

    def __init__(self, db: Database, hooks: Optional[Hooks] = None) -> None:
        self.db = db
        self.hooks = hooks if hooks is not None else Hooks()

    # ---- threads ----------------------------------------------------------
    def create_thread(
        self,
        account_id: str,
        key_id: str,
        end_user_id: Optional[str],
        metadata: Optional[dict[str, Any]],
        system: Optional[str],
        thread_id: Optional[str] = None,
        messages: Optional[list[NewMessage]] = None,
    ) -> Thread:
        """A new thread; ``thread_id`` names it (a stored response's id), else a fresh
        ``thread_...`` id. ``messages`` are stored in it in the same transaction."""
        _check_messages(messages or [])
        now = now_ms()
        thread = Thread(
            id=thread_id or new_id("thread_"),
            account_id=account_id,
            end_user_id=end_user_id,
            key_id=key_id,
            metadata=dict(metadata or {}),
            system=system,
            created_at=now,
            updated_at=now,
        )
        with self.db.engine.begin() as conn:
            conn.execute(
                insert(threads).values(
                    id=thread.id,
                    account_id=account_id,
                    end_user_id=end_user_id,
                    key_id=key_id,
                    metadata=thread.metadata,
                    system=system,
                    created_at=now,
                    updated_at=now,
                )
            )
            if messages:
                self._insert_messages(conn, thread.id, messages, now)
        return thread

    def get_thread(self, account_id: str, thread_id: str, end_user_id: Optional[str] = None) -> Optional[Thread]:
        """The thread, if it is the account's (and, with ``end_user_id``, that end user's)."""
        query = select(threads).where(threads.c.id == thread_id, threads.c.account_id == account_id)
        if end_user_id is not None:
            query = query.where(threads.c.end_user_id == end_user_id)
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        return _row_to_thread(row) if row else None

    def list_threads(
        self,
        account_id: str,
        *,
        end_user_id: Optional[str] = None,
        key_id: Optional[str] = None,
        limit: int = 20,
        after: Optional[str] = None,
    ) -> tuple[list[Thread], bool]:
        """Newest first. ``after`` is a thread id from a previous page (the items after it in
        this order); one that is not among this listing's threads raises ValueError."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        scope = [threads.c.account_id == account_id]
        if end_user_id is not None:
            scope.append(threads.c.end_user_id == end_user_id)
        if key_id is not None:
            scope.append(threads.c.key_id == key_id)
        with self.db.engine.connect() as conn:
            query = select(threads).where(*scope)
            if after is not None:
                cursor = conn.execute(select(threads.c.seq).where(threads.c.id == after, *scope)).scalar()
                if cursor is None:
                    raise ValueError(f"unknown cursor: no thread {after!r} in this listing")
                query = query.where(threads.c.seq < cursor)
            rows = conn.execute(query.order_by(threads.c.seq.desc()).limit(limit + 1)).all()
        return [_row_to_thread(r) for r in rows[:limit]], len(rows) > limit

    def update_thread(
        self,
        account_id: str,
        thread_id: str,
        *,
        metadata: Optional[dict[str, Any]] = None,
        system: Any = UNSET,
    ) -> Optional[Thread]:
        """Replace the metadata (``None``: keep it) and/or the system prompt (``UNSET``: keep
        it, ``None``: clear it). None when the account has no such thread."""
        values: dict[str, Any] = {}
        if metadata is not None:
            values["metadata"] = dict(metadata)
        if system is not UNSET:
            values["system"] = system
        if values:
            values["updated_at"] = now_ms()
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(threads)
                    .where(threads.c.id == thread_id, threads.c.account_id == account_id)
                    .values(**values)
                )
        return self.get_thread(account_id, thread_id)

    def delete_thread(self, account_id: str, thread_id: str) -> bool:
        """Erase the thread: its messages, then its row (system prompt, metadata). False when
        the account has no such thread.

        SQLite: every connection runs with ``PRAGMA secure_delete=ON`` (store/db.py), so
        the deleted cells, their overflow pages and the pages freed by the delete are
        overwritten with zeros; after the commit a ``PRAGMA wal_checkpoint(TRUNCATE)``
        copies those zeroed pages over the database file and truncates the WAL to zero
        bytes, so no page image holding the old text remains in ``tollway.db``,
        ``tollway.db-wal`` or ``tollway.db-shm`` (the -shm file only ever holds the WAL
        index). The checkpoint needs a moment with no open read transaction; it is
        retried for up to ``checkpoint_deadline_s`` and a warning is logged if it never
        gets one (the text then stays in the WAL and the file's old pages until the
        next successful TRUNCATE checkpoint, e.g. the next delete). Tested by reading
        the raw files (tests/test_thread_store.py).

        PostgreSQL: the rows are deleted in one transaction and are gone for every SQL
        reader at commit, but PostgreSQL never overwrites a tuple in place. Measured on
        PostgreSQL 15 by reading the heap and TOAST files after CHECKPOINT: after DELETE
        the text is in the files unchanged; a plain ``VACUUM`` (one or two) prunes the
        tuples but leaves their bytes in the pages' free space (about half of the
        inline copies and every TOAST chunk were still readable), and overwriting
        the columns with empty values before the DELETE changes nothing (the old
        versions are pruned the same way). The text disappears from the table files
        only when the free space is reused by later writes (no guarantee) or when the
        table is rewritten: ``VACUUM FULL`` (``compact()``) left no copy anywhere in
        the database directory after a CHECKPOINT. It stays in
        ``pg_wal`` until those segments are recycled (after the next checkpoints), and
        in WAL archives, replicas' files and backups under their own retention. So
        on PostgreSQL this method does not run VACUUM (it would not erase and costs a
        scan of every index per call): run ``compact()`` (or pg_repack) on a schedule
        to meet an erasure deadline.
        """
        with self.db.engine.begin() as conn:
            # FOR UPDATE (PostgreSQL): no append to this thread runs meanwhile.
            found = conn.execute(
                select(threads.c.seq)
                .where(threads.c.id == thread_id, threads.c.account_id == account_id)
                .with_for_update()
            ).first()
            if found is None:
                return False
            self.hooks.deleted(conn, thread_id)
            conn.execute(delete(thread_messages).where(thread_messages.c.thread_id == thread_id))
            conn.execute(delete(threads).where(threads.c.id == thread_id, threads.c.account_id == account_id))
        if self.db.is_sqlite:
            self.checkpoint()
        return True

    def checkpoint(self) -> bool:
        """SQLite: ``wal_checkpoint(TRUNCATE)``, retried while readers hold the WAL; True once
        the WAL is empty. PostgreSQL: nothing to do (True)."""
        if not self.db.is_sqlite:
            return True
        deadline = time.monotonic() + self.checkpoint_deadline_s
        while True:
            with self.db.engine.connect() as conn:
                busy, _frames, _copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if busy == 0:
                return True
            if time.monotonic() >= deadline:
                log.warning("WAL checkpoint still blocked by readers; erased text stays in the WAL until the next one")
                return False
            time.sleep(0.05)

    def compact(self) -> None:
        """Rewrite the thread tables so that no deleted text remains in their files.

        PostgreSQL: ``VACUUM FULL`` of thread_messages and threads: takes an ACCESS
        EXCLUSIVE lock on each table while it is rewritten (every thread request waits),
        so run it off-peak. SQLite: delete_thread already erases; this runs ``VACUUM``
        (to give the freed pages back) and a TRUNCATE checkpoint.
        """
        with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if self.db.is_sqlite:
                conn.exec_driver_sql("VACUUM")
            else:
                conn.exec_driver_sql("VACUUM FULL thread_messages")
                conn.exec_driver_sql("VACUUM FULL threads")
        self.checkpoint()

    # ---- messages ---------------------------------------------------------
    def append_messages(self, thread_id: str, messages: list[NewMessage]) -> list[StoredMessage]:
        """Store ``messages`` in order, in one transaction, and bump the thread's updated_at.
        LookupError when there is no such thread."""
        _check_messages(messages)
        with self.db.engine.begin() as conn:
            now = now_ms()
            # First: the row lock serialises appends to one thread, so seq order is commit order.
            found = conn.execute(update(threads).where(threads.c.id == thread_id).values(updated_at=now)).rowcount
            if not found:
                raise LookupError(f"no thread {thread_id!r}")
            return self._insert_messages(conn, thread_id, messages, now)

    def _insert_messages(
        self, conn: Connection, thread_id: str, messages: list[NewMessage], now: int
    ) -> list[StoredMessage]:
        """Insert ``messages`` (in order) and run the message_stored hooks, in ``conn``'s transaction."""
        stored: list[StoredMessage] = []
        for m in messages:
            msg = StoredMessage(
                id=new_id("msg_"),
                thread_id=thread_id,
                role=m.role,
                content=m.content,
                model=m.model,
                usage=m.usage,
                stop_reason=m.stop_reason,
                metadata=m.metadata,
                created_at=now,
                seq=0,
            )
            result = conn.execute(
                insert(thread_messages).values(
                    id=msg.id,
                    thread_id=thread_id,
                    role=msg.role,
                    content=msg.content,
                    model=msg.model,
                    usage=msg.usage,
                    stop_reason=msg.stop_reason,
                    metadata=msg.metadata,
                    created_at=now,
                )
            )
            msg.seq = int(result.inserted_primary_key[0])
            stored.append(msg)
        self.hooks.stored(conn, thread_id, stored)
        return stored

    def _message_seq(self, conn: Connection, thread_id: str, message_id: str) -> int:
        seq = conn.execute(
            select(thread_messages.c.seq).where(
                thread_messages.c.id == message_id, thread_messages.c.thread_id == thread_id
            )
        ).scalar()
        if seq is None:
            raise ValueError(f"unknown cursor: no message {message_id!r} in this thread")
        return int(seq)

    def list_messages(
        self,
        thread_id: str,
        *,
        order: Literal["asc", "desc"] = "asc",
        limit: int = 30,
        before: Optional[str] = None,
        after: Optional[str] = None,
    ) -> tuple[list[StoredMessage], bool]:
        """One page of the thread's messages, in ``order`` of creation.

        ``before``/``after`` are message ids and mean chronologically older/newer than
        that message whatever the order. The page is the ``limit`` messages closest to
        the cursor: with only ``before`` the page is taken walking back in time from it,
        with only ``after`` walking forward; with both or neither, walking in ``order``
        (from the ``after`` end / the oldest for asc, from the ``before`` end / the newest
        for desc). ``has_more``: more messages lie beyond the page in that direction of
        travel (within the cursors). Unknown cursor: ValueError.
        """
        if order not in ("asc", "desc"):
            raise ValueError("order must be 'asc' or 'desc'")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if before is not None and after is None:
            backward = True
        elif after is not None and before is None:
            backward = False
        else:
            backward = order == "desc"
        seq = thread_messages.c.seq
        with self.db.engine.connect() as conn:
            query = select(thread_messages).where(thread_messages.c.thread_id == thread_id)
            if before is not None:
                query = query.where(seq < self._message_seq(conn, thread_id, before))
            if after is not None:
                query = query.where(seq > self._message_seq(conn, thread_id, after))
            query = query.order_by(seq.desc() if backward else seq.asc()).limit(limit + 1)
            rows = conn.execute(query).all()
        page = [_row_to_message(r) for r in rows[:limit]]
        if backward != (order == "desc"):
            page.reverse()
        return page, len(rows) > limit

    def all_messages(self, thread_id: str) -> list[StoredMessage]:
        """Every message, oldest first (for export)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(thread_messages).where(thread_messages.c.thread_id == thread_id).order_by(thread_messages.c.seq)
            ).all()
        return [_row_to_message(r) for r in rows]

    def count_messages(self, thread_id: str) -> int:
        with self.db.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(thread_messages).where(thread_messages.c.thread_id == thread_id)
                ).scalar()
                or 0
            )

    # ---- leases -----------------------------------------------------------
    def acquire_lease(self, thread_id: str, token: str, ttl_ms: int) -> bool:
        """Take the thread's lease for ``ttl_ms`` iff no unexpired lease is held (the holder
        too must wait for expiry or release). One conditional UPDATE: atomic across
        processes on both databases. Expiry uses this host's clock (now_ms)."""
        now = now_ms()
        with self.db.engine.begin() as conn:
            taken = conn.execute(
                update(threads)
                .where(
                    threads.c.id == thread_id,
                    (threads.c.lease_until.is_(None)) | (threads.c.lease_until < now),
                )
                .values(lease_token=token, lease_until=now + ttl_ms)
            ).rowcount
        return taken == 1

    def release_lease(self, thread_id: str, token: str) -> None:
        """Give the lease back, only if ``token`` still holds it."""
        with self.db.engine.begin() as conn:
            conn.execute(
                update(threads)
                .where(threads.c.id == thread_id, threads.c.lease_token == token)
                .values(lease_token=None, lease_until=None)
            )


__all__ = ["NewMessage", "StoredMessage", "Thread", "ThreadStore", "UNSET"]
