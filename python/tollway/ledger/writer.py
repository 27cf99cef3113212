"""Usage events are written in batches by one background thread.

``submit`` is a list append: safe from any thread (the Rust stream hands its
outcome over from a runtime thread, holding the GIL) and cheap on the hot path:
no lock, no wake-up. The thread swaps the list out every ``interval_s`` and
writes it in one transaction. ``flush`` wakes it and waits until everything
submitted before the call is committed. Nothing is dropped: a failing database
is retried, and rows still unwritten when the process must stop are saved to a
JSON-lines file in the data directory.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

import orjson
from sqlalchemy import insert

from tollway.store import Database, usage_events

log = logging.getLogger("tollway.usage")

USAGE_COLUMNS = (
    "request_id", "account_id", "key_id", "model", "provider", "http_status", "outcome", "stream",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "estimated",
    "cost_micros", "latency_ms", "created_at",
)  # fmt: skip


class UsageWriter:
    def __init__(self, db: Database, spill_dir: Path, interval_s: float = 0.05) -> None:
        self.db = db
        self.spill_dir = spill_dir
        self.interval_s = interval_s
        self._buffer: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []  # swapped out, not yet committed
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._passes = 0  # completed write passes
        self._stop = False
        self._give_up = False
        self._compiled: Optional[tuple[str, Optional[tuple[str, ...]]]] = None
        self._thread = threading.Thread(target=self._run, name="tollway-usage-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
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
        if leftover:
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
            # Swap the buffer out (atomic under the GIL: appends go to the new list).
            self._pending, self._buffer = self._buffer, []
            if self._pending and not self._write_pending():
                return
            with self._done:
                self._passes += 1
                self._done.notify_all()
            if stopping and not self._buffer:
                return

    def _statement(self) -> tuple[str, Optional[tuple[str, ...]]]:
        """The INSERT compiled once for this database, and the parameter order if positional."""
        if self._compiled is None:
            compiled = insert(usage_events).compile(dialect=self.db.engine.dialect, column_keys=USAGE_COLUMNS)
            order = tuple(compiled.positiontup) if compiled.positional else None
            self._compiled = (compiled.string, order)
        return self._compiled

    def _write_pending(self) -> bool:
        """One transaction, one driver-level executemany (no per-row SQLAlchemy processing)."""
        sql, order = self._statement()
        delay = 0.2
        while not self._give_up:
            try:
                rows = self._pending
                params = [tuple(row[k] for k in order) for row in rows] if order else rows
                with self.db.engine.begin() as conn:
                    conn.exec_driver_sql(sql, params)
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
) -> dict[str, Any]:
    return {
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
        "created_at": created_at if created_at is not None else time.time_ns() // 1_000_000,
    }
