"""The ASGI adapter (http/asgi.py): reading the request body, and the watch for a client
leaving while a stream is sent."""

from __future__ import annotations

import asyncio
from typing import Callable

from tollway.http.asgi import ASGIAdapter, _DisconnectWatch
from tollway.http.core import App, Request, json_response


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


# --- reading the request body -------------------------------------------------------


def _echo_app() -> App:
    app = App(max_body_bytes=1024)

    @app.route("POST", "/echo")
    async def echo(request: Request):
        return json_response(200, {"body": request.body.decode()})

    return app


async def _call(messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[list[dict], int]:
    """Run one POST /echo through the adapter; the server's receive() hangs once ``messages`` run out
    (as granian's does until the client sends more). Returns what was sent and how many receives were made."""
    queue = list(messages)
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # nothing more from this client
        raise AssertionError("unreachable")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/echo", "query_string": b"", "headers": headers}
    await asyncio.wait_for(ASGIAdapter(_echo_app())(scope, receive, send), 2)
    return sent, calls


async def test_a_body_with_its_declared_length_is_not_waited_on_further() -> None:
    """granian sends the body with more_body set, then an empty last message: with
    Content-Length bytes in hand the adapter answers without that extra receive."""
    sent, calls = await _call(
        [{"type": "http.request", "body": b"hello", "more_body": True}], [(b"content-length", b"5")]
    )
    assert calls == 1
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"body":"hello"}'


async def test_a_body_is_read_to_its_last_message_or_its_declared_length() -> None:
    messages = [
        {"type": "http.request", "body": b"hel", "more_body": True},
        {"type": "http.request", "body": b"lo", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]
    sent, calls = await _call(messages, [(b"transfer-encoding", b"chunked")])
    assert calls == 3 and sent[1]["body"] == b'{"body":"hello"}'
    # a declared length not reached by the first message: read on, until it is
    sent, calls = await _call(messages, [(b"content-length", b"5")])
    assert calls == 2 and sent[1]["body"] == b'{"body":"hello"}'
    sent, calls = await _call(messages, [(b"content-length", b"x5")])  # unparseable: read to the end
    assert calls == 3 and sent[1]["body"] == b'{"body":"hello"}'
