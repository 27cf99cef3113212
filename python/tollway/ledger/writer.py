"""Usage events are written in batches by one background thread.

``submit`` is a list append: safe from any thread (the Rust stream hands its
outcome over from a runtime thread, holding the GIL) and cheap on the hot path:
no lock, no wake-up. The thread swaps the list out every ``interval_s`` and
writes it in one transaction. ``flush`` wakes it and waits until everything
submitted before the call is committed. Nothing is dropped: a failing database
is retried. With a crash journal (tollway.ledger.journal) every row is also
journaled as it is submitted, and rows still unwritten when the process must stop
stay in the journal for the next start; without one they are saved to a JSON-lines
file in the data directory (replayed at the next start too).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

import orjson

from tollway.hooks import Hooks
from tollway.ledger.journal import Journal, Rotation, new_event_id
from tollway.ledger.rollups import DuplicateEvents, insert_events
from tollway.store import Database

log = logging.getLogger("tollway.usage")


class UsageWriter:
    def __init__(
        self,
        db: Database,
        spill_dir: Path,
        interval_s: float = 0.05,
        journal: Optional[Journal] = None,
        hooks: Optional[Hooks] = None,
    ) -> None:
        self.db = db
        self.hooks = hooks
        self.journal = journal
        self.spill_dir = spill_dir
        self.interval_s = interval_s
        self._buffer: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []  # swapped out, not yet committed
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._passes = 0  # completed write passes
        self._stop = False
        self._give_up = False
        self._thread = threading.Thread(target=self._run, name="tollway-usage-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        journal = self.journal
        if journal is None:
            self._buffer.append(row)
            return
        with journal.lock:  # one step with respect to _swap (see there)
            journal.row_locked(row)
            self._buffer.append(row)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event submitted so far is in the database.

        A pass already under way may have swapped its batch out before our last
        submit, so wait for the pass after it to finish too.
        """
        deadline = time.monotonic() + timeout
        with self._done:
            target = self._passes + 2
            self._wake.set()
            while self._passes < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(min(left, self.interval_s))
                self._wake.set()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write everything submitted, stop the thread; spill to a file what could not be written."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._give_up = True
            self._thread.join(5)
        leftover = self._pending + self._buffer
        if self.journal is not None:
            self.journal.close(committed=not leftover)
            if leftover:
                log.error(
                    "could not write %d usage events to the database; they stay in the crash journal %s "
                    "and are written at the next start",
                    len(leftover),
                    self.journal.directory,
                )
        elif leftover:
            self._spill(leftover)

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"unwritten-usage-{time.time_ns()}.jsonl"
        with path.open("wb") as fh:
            for row in rows:
                fh.write(orjson.dumps(row) + b"\n")
        log.error("could not write %d usage events to the database; saved them to %s", len(rows), path)

    def _run(self) -> None:
        while True:
            stopping = self._stop
            self._wake.wait(self.interval_s)
            self._wake.clear()
            rotation = self._swap()
            carried = rotation is not None and self.journal.carry(rotation)
            if self._pending and not self._write_pending():
                return
            if carried:  # everything the old segments hold is committed or carried forward
                Journal.remove(rotation.old)
            with self._done:
                self._passes += 1
                self._done.notify_all()
            if stopping and not self._buffer:
                return

    def _swap(self) -> Optional[Rotation]:
        """Take the buffer for this pass (appends go to a new list); rotate the journal if due.

        Under the journal's lock, so a row is journaled in a segment older than the
        new one only if it is in this pass's batch: once the batch is committed, the
        old segments hold nothing the database lacks but the holds carried forward.
        """
        journal = self.journal
        if journal is None:
            self._pending, self._buffer = self._buffer, []  # atomic under the GIL
            return None
        segment = journal.next_segment() if journal.rotate_due() else None
        with journal.lock:
            self._pending, self._buffer = self._buffer, []
            return journal.rotate_locked(segment) if segment is not None else None

    def _write_pending(self) -> bool:
        """One transaction, one driver-level executemany (no per-row SQLAlchemy processing),
        with the rollups of the rows inserted (tollway.ledger.rollups)."""
        delay = 0.2
        check_first = False
        while not self._give_up:
            try:
                rows = self._pending
                with self.db.engine.begin() as conn:
                    inserted = insert_events(conn, self.db, rows, check_first=check_first)
                    if self.hooks is not None and inserted:
                        self.hooks.settled(conn, inserted)  # only the rows this commit writes
            except DuplicateEvents:
                check_first = True  # a commit whose acknowledgement was lost: skip what it wrote
                continue
            except Exception:
                log.exception("writing %d usage events failed; retrying in %.1fs", len(self._pending), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._pending = []
            return True
        return False


def usage_row(
    *,
    event_id: Optional[str] = None,
    request_id: str,
    account_id: str,
    key_id: str,
    model: str,
    provider: str,
    http_status: int,
    outcome: str,
    stream: bool,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    estimated: bool = False,
    cost_micros: int = 0,
    latency_ms: int = 0,
    created_at: Optional[int] = None,
    started_at: Optional[int] = None,
) -> dict[str, Any]:
    created = created_at if created_at is not None else time.time_ns() // 1_000_000
    return {
        "event_id": event_id or new_event_id(),
        "request_id": request_id,
        "account_id": account_id,
        "key_id": key_id,
        "model": model,
        "provider": provider,
        "http_status": http_status,
        "outcome": outcome,
        "stream": stream,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
        "estimated": estimated,
        "cost_micros": cost_micros,
        "latency_ms": latency_ms,
        "created_at": created,
        # The spend windows a call is charged to are the ones it started in (tollway.policy.budgets).
        "started_at": started_at if started_at is not None else created,
    }
