"""Clients that stop reading a stream (issue 12, item 12).

A client that never reads must cost the gateway a bounded amount of memory (the
stream reads its upstream only a window ahead of the client), must not slow the
others down, and is closed after TOLLWAY_CLIENT_STALL_TIMEOUT with its hold
released and what the upstream generated until then billed ("client_stalled").
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import Gateway, gateway_env, start_gateway, stop_gateway
from tests.fakes.runner import FakeServer, start_fake

STALL_TIMEOUT = 2.0
WORDS = 100_000  # an OpenAI stream of about 20 MB
STALLED = int(os.environ.get("SLOW_TEST_STALLED", 10))
# What the gateway's processes may grow by with STALLED clients holding a stream
# each: per stream a 256 KiB window, the server's write buffer and the scanner's
# state, plus the allocator's slack. Unbounded, each client cost ~59 MB (~590 MB).
RSS_MARGIN_MB = 80

# The big streams come from a fake upstream of their own: generating them keeps it
# busy, and the other clients' upstream must not be.
BIG_MODEL = """
[[providers]]
name = "big-fake"
kind = "openai"
base_url = "{url}/v1"
api_key_env = "FAKE_OPENAI_KEY"

[[models]]
name = "big-gpt"
provider = "big-fake"
input_usd_per_mtok = 0
output_usd_per_mtok = 1.0
max_output_tokens = 1000000
"""


def tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants (the server's workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


@pytest.fixture(scope="module")
def big_fake() -> Iterator[FakeServer]:
    server = start_fake()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["granian", "robyn"])
def slow_gateway(request, fake, big_fake, fresh_database) -> Iterator[Gateway]:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-slow-"))
    env = gateway_env(
        fake,
        data_dir,
        fresh_database,
        TOLLWAY_CLIENT_STALL_TIMEOUT=str(STALL_TIMEOUT),
        TOLLWAY_READ_TIMEOUT="30",
        TOLLWAY_STREAM_WINDOW_KB=os.environ.get("SLOW_TEST_WINDOW_KB", "256"),
    )
    with (data_dir / "tollway.toml").open("a") as f:
        f.write(BIG_MODEL.format(url=big_fake.url))
    gw = start_gateway(env, server=request.param)
    try:
        yield gw
    finally:
        stop_gateway(gw)
        shutil.rmtree(data_dir, ignore_errors=True)


def open_unread_stream(gw: Gateway, secret: str) -> socket.socket:
    """Ask for a big stream and never read it."""
    host, port = gw.url.removeprefix("http://").split(":")
    body = json.dumps(
        {
            "model": "big-gpt",
            "stream": True,
            "max_tokens": WORDS,
            "messages": [{"role": "user", "content": f"go #words={WORDS}"}],
        }
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {secret}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def read_to_end(sock: socket.socket, timeout: float) -> tuple[int, str]:
    """Read what the client left unread; (bytes, how it ended: "eof", "reset" or "open")."""
    sock.settimeout(timeout)
    n = 0
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return n, "eof"
            n += len(data)
    except ConnectionResetError:
        return n, "reset"
    except socket.timeout:
        return n, "open"


def test_clients_that_never_read(slow_gateway: Gateway):
    gw = slow_gateway
    key_id, secret = gw.mint(name="stalls", max_spend_usd=100)
    other_id, other = gw.mint(name="others", max_spend_usd=100)
    assert gw.proc is not None
    before = tree_rss_kb(gw.proc.pid)

    socks = [open_unread_stream(gw, secret) for _ in range(STALLED)]
    opened = time.monotonic()
    peak = before
    served = 0
    # While the streams are held (and then stalled), everyone else is served as usual.
    while time.monotonic() - opened < STALL_TIMEOUT + 1.5:
        r = gw.request(
            "POST",
            "/v1/chat/completions",
            other,
            json={"model": "test-gpt", "messages": [{"role": "user", "content": "hi #words=5"}]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
        with gw._client.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {other}"},
            json={"model": "test-gpt", "stream": True, "messages": [{"role": "user", "content": "hi #words=3"}]},
        ) as s:
            assert s.status_code == 200
            assert b"data: [DONE]" in s.read()
        served += 1
        peak = max(peak, tree_rss_kb(gw.proc.pid))
    assert served >= 3
    grown_mb = (peak - before) / 1024
    print(
        f"\n{gw.server}: RSS {before // 1024} MB -> peak {peak // 1024} MB with {STALLED} stalled streams; {served} rounds served"
    )
    assert grown_mb < RSS_MARGIN_MB, f"RSS grew by {grown_mb:.0f} MB with {STALLED} stalled streams"

    # Stalled: the streams settled, holds released, what was generated billed.
    info = gw.wait_settled(key_id, timeout=15)
    assert info["reserved_micros"] == 0
    deadline = time.monotonic() + 15
    while True:
        events = [e for e in gw.key_usage(key_id)["events"] if e["stream"]]
        if len(events) == STALLED or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(events) == STALLED, events
    for e in events:
        assert e["outcome"] == "client_stalled", e
        assert 0 < e["output_tokens"] < WORDS, e
        assert e["cost_micros"] > 0, e

    assert gw.key_usage(other_id)["events"][0]["outcome"] == "ok"
    if gw.server == "robyn":
        # Robyn 0.88 keeps the connection open after the body generator raised (README, Robyn limits).
        return
    # The connections are closed too: what is left to read ends (never the whole stream).
    for sock in socks:
        n, how = read_to_end(sock, timeout=10)
        assert how in ("eof", "reset"), (n, how)
        assert n < WORDS * 150
        sock.close()
