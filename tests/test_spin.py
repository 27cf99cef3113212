"""Polling a fast upstream's answer instead of sleeping (proxy/spin.py, UpstreamClient.spin_wait)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from tests.conftest import ADMIN_SECRET, free_port, gateway_env
from tests.fakes.runner import FakeServer
from tollway._core import UpstreamClient, UpstreamConnectError
from tollway.config import ConfigError, load_settings
from tollway.gateway import Gateway
from tollway.http.core import Request
from tollway.proxy.spin import SpinWait


class _Reply(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.delay:
            time.sleep(self.delay)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def threaded_upstream() -> Iterator[str]:
    """An upstream on its own thread: it answers while the loop thread polls."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reply)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ UpstreamClient.spin_wait


async def test_spin_wait_resolves_the_finished_call(threaded_upstream: str) -> None:
    client = UpstreamClient()
    pending = client.send("POST", threaded_upstream, [("content-type", "application/json")], b"{}")
    assert client.spin_wait(5.0) is True
    assert pending.done()  # resolved by the poll, not by the loop's reader
    response = await pending
    assert response.status == 200 and response.body == b'{"ok":true}'
    assert client._pending == 0
    client.close()


async def test_spin_wait_gives_up_after_the_bound_and_the_call_still_completes(threaded_upstream: str) -> None:
    _Reply.delay = 0.2
    try:
        client = UpstreamClient()
        pending = client.send("POST", threaded_upstream, [], b"{}")
        began = time.perf_counter()
        assert client.spin_wait(0.02) is False
        waited = time.perf_counter() - began
        assert 0.02 <= waited < 0.15
        assert not pending.done()
        assert (await pending).status == 200  # the loop's reader resolves it as usual
        client.close()
    finally:
        _Reply.delay = 0.0


async def test_spin_wait_with_nothing_in_flight() -> None:
    client = UpstreamClient()
    assert client.spin_wait(0) is False
    assert client.spin_wait(-1) is False
    assert client.spin_wait(float("inf")) is False  # no bound: refused rather than spinning forever
    began = time.perf_counter()
    assert client.spin_wait(0.005) is False
    assert time.perf_counter() - began >= 0.005
    client.close()


async def test_spin_wait_delivers_errors() -> None:
    client = UpstreamClient(connect_timeout=2)
    pending = client.send("POST", f"http://127.0.0.1:{free_port()}/v1/x", [], b"{}")
    assert client.spin_wait(5.0) is True
    with pytest.raises(UpstreamConnectError):
        await pending
    client.close()


# ------------------------------------------------------------------ the policy


class _Client:
    def __init__(self) -> None:
        self.bounds: list[float] = []

    def spin_wait(self, max_seconds: float) -> bool:
        self.bounds.append(max_seconds)
        return True


def test_policy_polls_only_alone_and_for_fast_providers() -> None:
    spin = SpinWait(1000)
    client = _Client()
    spin.poll("p", client, lambda: True)
    assert client.bounds == []  # nothing known about p yet
    spin.observe("p", 0.0006)
    assert not spin.worth_it("p")  # more than half the bound: the poll would often miss
    spin.observe("p", 0.0001)
    assert spin.average("p") == pytest.approx(0.0006 + 0.2 * (0.0001 - 0.0006))
    spin.poll("p", client, lambda: False)
    assert client.bounds == []  # another request is in flight
    spin.poll("p", client, lambda: True)
    assert client.bounds == [pytest.approx(0.001)]
    for _ in range(10):
        spin.observe("p", 0.3)  # the provider became slow (a real LLM call)
    assert not spin.worth_it("p")
    spin.poll("p", client, lambda: True)
    assert len(client.bounds) == 1
    assert not spin.worth_it("other")


def test_policy_off() -> None:
    spin = SpinWait(0)
    client = _Client()
    spin.observe("p", 0.0)
    spin.poll("p", client, lambda: True)
    assert client.bounds == []


def test_setting_is_validated() -> None:
    base = {"TOLLWAY_DATA_DIR": "/tmp/unused-tollway"}
    assert load_settings(base).spin_wait_us == 2000
    assert load_settings({**base, "TOLLWAY_SPIN_WAIT_US": "0"}).spin_wait_us == 0
    for bad in ("-1", "abc", "1e3", "1000000"):
        with pytest.raises(ConfigError, match="TOLLWAY_SPIN_WAIT_US"):
            load_settings({**base, "TOLLWAY_SPIN_WAIT_US": bad})


# ------------------------------------------------------------------ in the gateway


def _request(method: str, path: str, key: str, body: object = None) -> Request:
    return Request(
        method=method,
        path=path,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        body=b"" if body is None else orjson.dumps(body),
    )


async def _call(gw: Gateway, method: str, path: str, key: str, body: object = None) -> tuple[int, dict]:
    response = await gw.app.handle(_request(method, path, key, body))
    return response.status, json.loads(response.body)


async def test_gateway_polls_a_fast_upstream_when_alone(fake: FakeServer, tmp_path: Path) -> None:
    # A generous bound, so that a busy test machine does not make every poll miss.
    env = gateway_env(fake, tmp_path, f"sqlite:///{tmp_path / 'tollway.db'}", TOLLWAY_SPIN_WAIT_US="100000")
    gw = Gateway(load_settings(env))
    await gw.app.startup()
    try:
        gw.store.ensure_admin(ADMIN_SECRET)
        status, key = await _call(gw, "POST", "/v1/keys", ADMIN_SECRET, {"name": "spin", "max_spend_usd": 5})
        assert status == 201
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        caught: list[bool] = []
        gw.client = _Watched(gw.client, caught)
        for _ in range(20):
            status, body = await _call(gw, "POST", "/v1/chat/completions", key["secret"], chat)
            assert status == 200 and body["object"] == "chat.completion"
        assert gw.spin.average("openai") is not None
        assert len(caught) >= 19 and all(caught)  # from the 2nd call on, the loop thread polled and caught the answer
        before = len(caught)
        # A stream in flight: the next call is not alone, so it does not poll.
        # (paced by the fake, so it is still open when the next call is made)
        slow = {**chat, "stream": True, "messages": [{"role": "user", "content": "hi #words=3 #chunk_delay_ms=300"}]}
        stream = await gw.app.handle(_request("POST", "/v1/chat/completions", key["secret"], slow))
        assert stream.status == 200 and gw.streams_open.value == 1
        status, _ = await _call(gw, "POST", "/v1/chat/completions", key["secret"], chat)
        assert status == 200
        assert len(caught) == before
        events = b"".join([chunk async for chunk in stream.chunks])
        stream.close()
        assert events.endswith(b"data: [DONE]\n\n")
    finally:
        gw.client = getattr(gw.client, "_inner", gw.client)
        await gw.app.shutdown()


class _Watched:
    """The real client, with what each spin_wait returned recorded (every other attribute is the client's own)."""

    def __init__(self, inner: UpstreamClient, caught: list[bool]) -> None:
        self._inner = inner
        self._caught = caught

    def spin_wait(self, max_seconds: float) -> bool:
        got = self._inner.spin_wait(max_seconds)
        self._caught.append(got)
        return got

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
