"""Run the fake upstream (tests.fakes.upstream:app) under granian in a subprocess."""

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_TARGET = "tests.fakes.upstream:app"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def granian_command(host: str, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable, "-m", "granian",
        "--interface", "asgi",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--backpressure", "16384",
        "--backlog", "4096",
        "--no-ws",
        "--log-level", "warning",
        APP_TARGET,
    ]  # fmt: skip


class FakeServer:
    """A running fake upstream; stop() it or use it as a context manager."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int):
        self.proc = proc
        self.port = port
        self.url = f"http://{host}:{port}"
        self.openai_base_url = self.url + "/v1"
        self.anthropic_base_url = self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_fake(host: str = "127.0.0.1", port: int = 0, workers: int = 1, env: dict | None = None) -> FakeServer:
    """Start granian serving the fake and return once it answers HTTP."""
    port = port or free_port(host)
    proc = subprocess.Popen(
        granian_command(host, port, workers),
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )
    server = FakeServer(proc, host, port)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _answers(host, port):
        if proc.poll() is not None:
            raise RuntimeError(f"fake upstream exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"fake upstream did not answer on {server.url} within {STARTUP_TIMEOUT} s")
        time.sleep(0.05)
    return server


def _answers(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", "/_fake/stats")  # not /v1/models: probes must not show up in /_fake/requests
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()
