"""Usage events are written in batches by one background thread.

``submit`` is safe from any thread (the Rust stream hands its outcome over from a
runtime thread). ``flush`` waits until everything submitted before it is committed.
Nothing is dropped: a failing database is retried, and rows still unwritten when
the process must stop are saved to a JSON-lines file in the data directory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Optional

import orjson
from sqlalchemy import insert

from tollway.store import Database, usage_events

log = logging.getLogger("tollway.usage")

_STOP = object()


class UsageWriter:
    def __init__(self, db: Database, spill_dir: Path, batch_size: int = 500, linger_s: float = 0.02) -> None:
        self.db = db
        self.spill_dir = spill_dir
        self.batch_size = batch_size
        self.linger_s = linger_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._pending: list[dict[str, Any]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tollway-usage-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        with self._cond:
            self._submitted += 1
        self._queue.put(row)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event submitted so far is in the database."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, stop the thread; spill to a file what could not be written."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stopping = True
            self._thread.join(5)
        leftover = list(self._pending)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftover.append(item)
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
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                stop = True
            else:
                self._pending.append(item)
            # Collect a batch: whatever is queued, lingering briefly for more.
            deadline = time.monotonic() + self.linger_s
            while not stop and len(self._pending) < self.batch_size:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    self._pending.append(item)
            if self._pending:
                self._write_pending()

    def _write_pending(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(insert(usage_events), self._pending)
            except Exception:
                log.exception("writing %d usage events failed; retrying in %.1fs", len(self._pending), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            with self._cond:
                self._written += len(self._pending)
                self._pending = []
                self._cond.notify_all()
            return


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
