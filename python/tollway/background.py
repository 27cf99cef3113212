"""Work counted for the drain: streams in flight, and blocking work handed off from any thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

log = logging.getLogger("tollway")


class OpenCounter:
    """Streams in flight: counted up on the event loop, down from the Rust runtime's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class BackgroundWork:
    """Blocking work handed off from any thread (a stream's settlement), counted for the drain."""

    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tollway-bg")
        self.pending = OpenCounter()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.pending.add(1)
        try:
            self._pool.submit(self._run, fn, args)
        except RuntimeError:  # the pool is shut down: run it here
            self._run(fn, args)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("background work failed")
        finally:
            self.pending.add(-1)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


async def cancel_task(task: Optional[asyncio.Task[Any]]) -> None:
    """Cancel a background task and wait for it to end, cancelling it again each second until
    it does (a cancel can be lost: Python 3.11's ``asyncio.wait_for`` swallows one that comes
    as its awaitable completes)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s ended with %r", task.get_name(), task.exception())
