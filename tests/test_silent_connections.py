"""Connections that send nothing, or stop half-way (issue 12, item 13).

Header, body and keep-alive idle timeouts close them, and a flood of silent
connections is shed (the newest silent ones first) instead of stopping the gateway
from accepting anyone: see README, "Limits and timeouts".
"""

from __future__ import annotations

import multiprocessing
import selectors
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.conftest import Gateway, gateway_env, start_gateway, stop_gateway

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0


def _gateway(fake, database_url: str, server: str, **env: str) -> Iterator[Gateway]:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-silent-"))
    gw = start_gateway(gateway_env(fake, data_dir, database_url, **env), server=server)
    try:
        yield gw
    finally:
        stop_gateway(gw)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["granian", "robyn"])
def timed_gateway(request, fake, fresh_database) -> Iterator[Gateway]:
    yield from _gateway(
        fake,
        fresh_database,
        request.param,
        TOLLWAY_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        TOLLWAY_BODY_TIMEOUT=str(BODY_TIMEOUT),
    )


def address(gw: Gateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


def closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``sock`` (what it sent first); ``limit`` if it did not."""
    start = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except socket.timeout:
        return limit, received
    except ConnectionResetError:
        pass
    return time.monotonic() - start, received


LIMIT = HEADER_TIMEOUT + 3  # the timeout, the guard's pass interval and a loaded machine's slack


def test_connection_that_sends_nothing_is_closed(timed_gateway: Gateway):
    with socket.create_connection(address(timed_gateway)) as sock:
        waited, _ = closed_after(sock, LIMIT + 5)
    assert waited < LIMIT, f"a silent connection was still open after {waited:.1f} s"


ROBYN_NO_TIMEOUT = (
    "Robyn 0.88 sets no header, keep-alive or body timeout on actix, and Robyn.start drops its client_timeout / "
    "keep_alive_timeout before actix (measured: all still open after 50 s with both at 2 s; README, Robyn limits)"
)


def test_partial_headers_are_closed(timed_gateway: Gateway):
    if timed_gateway.server == "robyn":
        pytest.skip(ROBYN_NO_TIMEOUT)
    with socket.create_connection(address(timed_gateway)) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthor")
        waited, _ = closed_after(sock, LIMIT + 5)
    assert waited < LIMIT


def test_idle_keep_alive_is_closed(timed_gateway: Gateway):
    if timed_gateway.server == "robyn":
        pytest.skip(ROBYN_NO_TIMEOUT)
    with socket.create_connection(address(timed_gateway)) as sock:
        sock.sendall(
            f"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {timed_gateway.admin}\r\n\r\n".encode()
        )
        waited, received = closed_after(sock, LIMIT + 5)
    assert received.startswith(b"HTTP/1.1 200"), received[:100]
    assert waited < LIMIT


def test_stalled_body_gets_408(timed_gateway: Gateway):
    if timed_gateway.server == "robyn":
        pytest.skip(ROBYN_NO_TIMEOUT + "; Robyn reads the whole body before calling us")
    key_id, secret = timed_gateway.mint(max_spend_usd=1)
    with socket.create_connection(address(timed_gateway)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {secret}\r\ncontent-length: 500\r\n\r\n".encode()
            + b'{"model": "test-gpt", '
        )
        waited, received = closed_after(sock, BODY_TIMEOUT + 8)
    assert waited < BODY_TIMEOUT + 5
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b'"request_timeout"' in received
    assert timed_gateway.key(key_id)["reserved_micros"] == 0


# ------------------------------------------------------------ slow answers are not cut
SHORT_TIMEOUT = 1.0
SLOW_S = 3.0  # longer than the header / keep-alive timeout plus the guard's pass interval (1 s)


@pytest.fixture(params=["granian", "robyn"])
def short_timeout_gateway(request, fake, fresh_database) -> Iterator[Gateway]:
    yield from _gateway(
        fake,
        fresh_database,
        request.param,
        TOLLWAY_HEADER_TIMEOUT=str(SHORT_TIMEOUT),
        TOLLWAY_BODY_TIMEOUT=str(SHORT_TIMEOUT),
        TOLLWAY_FIRST_BYTE_TIMEOUT="30",
        TOLLWAY_READ_TIMEOUT="30",
    )


def test_slow_answers_outlive_the_connection_timeouts(short_timeout_gateway: Gateway):
    """A completion that takes longer than the header and keep-alive timeouts, and a stream
    silent for longer than them between events, are answered in full: those timeouts time
    the client, never our answer."""
    gw = short_timeout_gateway
    _, key = gw.mint(max_spend_usd=10)
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=60) as client:
        start = time.monotonic()
        slow = client.post(
            "/v1/chat/completions",
            json={
                "model": "test-gpt",
                "messages": [{"role": "user", "content": f"hi #words=3 #delay_ms={SLOW_S * 1000:.0f}"}],
            },
        )
        assert slow.status_code == 200, slow.text
        assert time.monotonic() - start >= SLOW_S
        assert slow.json()["choices"][0]["finish_reason"] == "stop"

        body = {
            "model": "test-gpt",
            "stream": True,
            "messages": [{"role": "user", "content": f"hi #words=1 #chunk_delay_ms={SLOW_S * 1000:.0f}"}],
        }
        gaps, last, text = [], time.monotonic(), ""
        with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            for chunk in stream.iter_text():
                now = time.monotonic()
                gaps.append(now - last)
                last, text = now, text + chunk
    assert max(gaps) >= SLOW_S * 0.9, gaps
    assert text.rstrip().endswith("data: [DONE]"), text[-200:]


# ------------------------------------------------------------ a flood of silent connections
FLOOD_PROCESSES = 4
FLOOD_PER_PROCESS = 5000  # 20,000 in all: the gateway's fd limit (ulimit -n) here


def _flood(source: str, target: tuple[str, int], count: int, hold: float, report) -> None:
    """Open ``count`` connections from ``source`` that never send a byte; hold them."""
    sel = selectors.DefaultSelector()
    socks = []
    connected = 0
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.bind((source, 0))
        s.connect_ex(target)
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 20
    pending = len(socks)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            sel.unregister(key.fileobj)
            pending -= 1
            if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected += 1
    report.put(connected)
    time.sleep(hold)
    for s in socks:
        s.close()


def _normal_latency(gw: Gateway, key: str, n: int = 20) -> list[float]:
    """Seconds each of ``n`` fresh-connection requests took (a new client each time)."""
    times = []
    for _ in range(n):
        start = time.monotonic()
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            timeout=5,
            json={"model": "test-gpt", "messages": [{"role": "user", "content": "hi #words=3"}]},
        )
        assert r.status_code == 200, r.text
        times.append(time.monotonic() - start)
    return sorted(times)


@pytest.fixture(params=["granian", "robyn"])
def flood_gateway(request, fake, fresh_database) -> Iterator[Gateway]:
    # A long header timeout: only shedding can make room here.
    yield from _gateway(fake, fresh_database, request.param, TOLLWAY_HEADER_TIMEOUT="60")


def test_twenty_thousand_silent_connections_do_not_stop_a_normal_client(flood_gateway: Gateway):
    gw = flood_gateway
    _, key = gw.mint(max_spend_usd=10)
    before = _normal_latency(gw, key)
    ctx = multiprocessing.get_context("fork")
    report = ctx.Queue()
    hold = 25.0
    procs = [
        ctx.Process(target=_flood, args=(f"127.0.0.{2 + i}", address(gw), FLOOD_PER_PROCESS, hold, report), daemon=True)
        for i in range(FLOOD_PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        connected = sum(report.get(timeout=60) for _ in procs)
        # Every silent connection is open on the client side (the kernel completed the handshakes).
        assert connected >= FLOOD_PROCESSES * FLOOD_PER_PROCESS * 0.95, connected
        during = _normal_latency(gw, key)
        print(
            f"\n{gw.server}: {connected} silent connections; a new client's request took "
            f"p50 {before[len(before) // 2] * 1000:.1f} ms / max {before[-1] * 1000:.1f} ms before, "
            f"p50 {during[len(during) // 2] * 1000:.1f} ms / max {during[-1] * 1000:.1f} ms during"
        )
        assert gw.proc is not None and gw.proc.poll() is None
    finally:
        for p in procs:
            p.terminate()
            p.join(10)
