"""The ASGI adapter's watch for a client leaving while a stream is sent (http/asgi.py)."""

from __future__ import annotations

import asyncio
from typing import Callable

from tollway.http.asgi import _DisconnectWatch


async def _until(cond, timeout: float = 1.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


def _future_receive() -> tuple[Callable[[], asyncio.Future], list[asyncio.Future]]:
    """A receive() like granian's: each call returns a new future (kept in the list)."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future] = []

    def receive() -> asyncio.Future:
        futures.append(loop.create_future())
        return futures[-1]

    return receive, futures


async def test_future_receive_needs_no_task() -> None:
    """granian's receive() returns a future: watched by a done-callback."""
    receive, futures = _future_receive()
    gone: list[bool] = []
    tasks_before = len(asyncio.all_tasks())
    watch = _DisconnectWatch(receive, lambda: gone.append(True))
    assert len(asyncio.all_tasks()) == tasks_before
    futures[0].set_result({"type": "http.request", "body": b"", "more_body": False})
    await _until(lambda: len(futures) == 2)  # not a disconnect: watching again
    assert not gone
    futures[1].set_result({"type": "http.disconnect"})
    await _until(lambda: gone == [True])
    watch.stop()


async def test_coroutine_receive_gets_a_task() -> None:
    messages: asyncio.Queue = asyncio.Queue()

    async def receive() -> dict:
        return await messages.get()

    gone: list[bool] = []
    watch = _DisconnectWatch(receive, lambda: gone.append(True))
    await messages.put({"type": "http.disconnect"})
    await _until(lambda: gone == [True])
    watch.stop()


async def test_stop_cancels_the_pending_receive_and_ignores_later_messages() -> None:
    receive, futures = _future_receive()
    gone: list[bool] = []
    watch = _DisconnectWatch(receive, lambda: gone.append(True))
    watch.stop()
    assert futures[0].cancelled()
    await asyncio.sleep(0.01)
    assert not gone


async def test_a_failing_receive_counts_as_gone() -> None:
    async def receive() -> dict:
        raise RuntimeError("transport closed")

    gone: list[bool] = []
    watch = _DisconnectWatch(receive, lambda: gone.append(True))
    await _until(lambda: gone == [True])
    watch.stop()
