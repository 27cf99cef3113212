"""Shared fixtures: the fake upstream, throwaway databases and running gateways.

PostgreSQL tests need TOLLWAY_TEST_DATABASE_URL (a server URL whose user may
create databases, e.g. postgresql://postgres@127.0.0.1:5432/postgres): each run
creates its own randomly named database and drops it at the end. Without it they
are skipped, with that reason. `.ci/run` always sets it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import httpx
import pytest

from tests.fakes.runner import FakeServer, start_fake

if TYPE_CHECKING:
    from tests.fakes.stripe import FakeStripe
    from tollway.store import Database

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("TOLLWAY_TEST_DATABASE_URL")
FAKE_OPENAI_KEY = "sk-fake-openai"
FAKE_ANTHROPIC_KEY = "sk-ant-fake"

DATABASES = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not PG_URL,
            reason="TOLLWAY_TEST_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/postgres); .ci/run sets it",
        ),
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- databases
def _pg_admin_conn():
    import psycopg

    url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True)


def create_pg_database() -> str:
    name = "tollway_test_" + secrets.token_hex(6)
    with _pg_admin_conn() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _pg_admin_conn() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fake_stripe() -> Iterator["FakeStripe"]:
    """A fake Stripe of the test's own (tests/fakes/stripe), driven through stripe-python."""
    from tests.fakes.stripe import start_fake_stripe

    stripe = start_fake_stripe()
    try:
        yield stripe
    finally:
        stripe.stop()


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeServer]:
    server = start_fake()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- gateways
TEST_CONFIG = """
markup_percent = {markup}

[[providers]]
name = "fake-openai"
kind = "openai"
base_url = "{fake}/v1"
api_key_env = "FAKE_OPENAI_KEY"
responses = true  # the fake serves POST /v1/responses (tests/fakes/responses.py)

[[providers]]
name = "fake-anthropic"
kind = "anthropic"
base_url = "{fake}"
api_key_env = "FAKE_ANTHROPIC_KEY"

[[providers]]
name = "nowhere"
kind = "openai"
base_url = "http://127.0.0.1:{dead_port}/v1"
api_key = "sk-nowhere"

# Prices chosen so that costs are easy to check by hand (USD per million tokens).
[[models]]
name = "test-gpt"
provider = "fake-openai"
upstream_model = "gpt-test-upstream"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 10.0
cache_read_usd_per_mtok = 0.1
max_output_tokens = 1000
context_window = 100000

# The same model called through chat completions (an OpenAI-compatible provider without Responses).
[[models]]
name = "chat-gpt"
provider = "fake-openai"
upstream_model = "gpt-test-upstream"
responses = false
input_usd_per_mtok = 1.0
output_usd_per_mtok = 10.0
cache_read_usd_per_mtok = 0.1
max_output_tokens = 1000
context_window = 100000

# A model that exists only on the Responses API: every route calls it in that format.
[[models]]
name = "resp-only-gpt"
provider = "fake-openai"
upstream_model = "gpt-resp-only"
responses_only = true
input_usd_per_mtok = 1.0
output_usd_per_mtok = 10.0
max_output_tokens = 1000
context_window = 100000

[[models]]
name = "test-claude"
provider = "fake-anthropic"
upstream_model = "claude-test-upstream"
input_usd_per_mtok = 3.0
output_usd_per_mtok = 15.0
cache_read_usd_per_mtok = 0.3
cache_write_usd_per_mtok = 3.75
max_output_tokens = 64000
context_window = 200000

# Output-only prices make a request's cost independent of the input estimate.
[[models]]
name = "out-gpt"
provider = "fake-openai"
input_usd_per_mtok = 0
output_usd_per_mtok = 10.0
max_output_tokens = 1000

[[models]]
name = "out-claude"
provider = "fake-anthropic"
input_usd_per_mtok = 0
output_usd_per_mtok = 10.0
max_output_tokens = 1000

# A tiny context window, for history truncation.
[[models]]
name = "tiny-claude"
provider = "fake-anthropic"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 1.0
max_output_tokens = 100
context_window = 400

[[models]]
name = "unpriced-gpt"
provider = "fake-openai"

# POST /v1/embeddings: 1 micro-USD per input token; a model id with "/" and ":".
[[models]]
name = "test-embed"
provider = "fake-openai"
upstream_model = "text-embedding-3-small"
mode = "embedding"
input_usd_per_mtok = 1.0

[[models]]
name = "claude-embed"
provider = "fake-anthropic"
mode = "embedding"
input_usd_per_mtok = 1.0

[[models]]
name = "org/test:gpt"
provider = "fake-openai"
upstream_model = "gpt-test-upstream"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 10.0

[[models]]
name = "dead-gpt"
provider = "nowhere"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 1.0
"""

ADMIN_SECRET = "tw_live_test_admin_" + "x" * 32


@dataclass
class Gateway:
    """A running `tollway serve` and a small client for it."""

    url: str
    admin: str
    database_url: str
    data_dir: Path
    env: dict[str, str]
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None
    server: str = "granian"
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def request(self, method: str, path: str, key: Optional[str] = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        return self._client.request(method, self.url + path, headers=headers, **kw)

    def mint(self, admin: Optional[str] = None, **fields: Any) -> tuple[str, str]:
        body = {"name": fields.pop("name", "user-" + secrets.token_hex(3)), **fields}
        r = self.request("POST", "/v1/keys", admin or self.admin, json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["secret"]

    def key_usage(self, key_id: str, admin: Optional[str] = None) -> dict[str, Any]:
        r = self.request("GET", f"/v1/keys/{key_id}/usage", admin or self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def key(self, key_id: str) -> dict[str, Any]:
        r = self.request("GET", f"/v1/keys/{key_id}", self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_settled(self, key_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until no money is held on the key (every stream settled), then return it."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.key(key_id)
            if info["reserved_micros"] == 0 or time.monotonic() > deadline:
                return info
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def gateway_env(fake: FakeServer, data_dir: Path, database_url: str, markup: str = "0", **extra: str) -> dict[str, str]:
    config = data_dir / "tollway.toml"
    config.write_text(TEST_CONFIG.format(fake=fake.url, dead_port=free_port(), markup=markup))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLWAY_", "OPENAI_", "ANTHROPIC_"))}
    env.update(
        TOLLWAY_DATA_DIR=str(data_dir),
        TOLLWAY_DATABASE_URL=database_url,
        TOLLWAY_CONFIG=str(config),
        TOLLWAY_ADMIN_KEY=ADMIN_SECRET,
        TOLLWAY_MAX_BODY_MB="2",
        TOLLWAY_FIRST_BYTE_TIMEOUT="3",
        TOLLWAY_READ_TIMEOUT="3",
        TOLLWAY_DRAIN_TIMEOUT="15",
        TOLLWAY_THREAD_BUSY_WAIT="1",
        # The test receivers (webhook tools, event endpoints) listen on 127.0.0.1.
        TOLLWAY_OUTBOUND_ALLOW_PRIVATE="on",
        FAKE_OPENAI_KEY=FAKE_OPENAI_KEY,
        FAKE_ANTHROPIC_KEY=FAKE_ANTHROPIC_KEY,
        OPENAI_API_KEY=FAKE_OPENAI_KEY,
        OPENAI_BASE_URL=fake.openai_base_url,
        ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY,
        ANTHROPIC_BASE_URL=fake.anthropic_base_url,
    )
    env.update(extra)
    return env


def start_gateway(env: dict[str, str], server: str = "granian", timeout: float = 30.0) -> Gateway:
    port = free_port()
    data_dir = Path(env["TOLLWAY_DATA_DIR"])
    log_path = data_dir / f"serve-{port}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway", "serve", "--host", "127.0.0.1", "--port", str(port), "--server", server],
        env=env,
        cwd=str(REPO),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gw = Gateway(
        url=f"http://127.0.0.1:{port}",
        admin=env["TOLLWAY_ADMIN_KEY"],
        database_url=env["TOLLWAY_DATABASE_URL"],
        data_dir=data_dir,
        env=env,
        proc=proc,
        log_path=log_path,
        server=server,
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"tollway serve exited with {proc.returncode}:\n{gw.log()}")
        try:
            if gw.request("GET", "/v1/models", gw.admin).status_code == 200:
                return gw
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_gateway(gw)
            raise RuntimeError(f"tollway serve did not become ready:\n{gw.log()}")
        time.sleep(0.1)


def stop_gateway(gw: Gateway, sig: int = signal.SIGTERM, timeout: float = 30.0) -> Optional[int]:
    if gw.proc is None:
        return None
    if gw.proc.poll() is None:
        gw.proc.send_signal(sig)
        try:
            gw.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait()
    gw._client.close()
    return gw.proc.returncode


@contextlib.contextmanager
def throwaway_database(kind: str) -> Iterator[str]:
    """A new, empty database of ``kind``, removed afterwards."""
    if kind == "postgresql":
        url = create_pg_database()
        try:
            yield url
        finally:
            drop_pg_database(url)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="tollway-db-"))
        try:
            yield f"sqlite:///{tmp / 'tollway.db'}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def migrated_database(kind: str) -> Iterator["Database"]:
    """A throwaway database of ``kind`` at the newest schema, as a ``Database``."""
    from tollway.store import Database

    with throwaway_database(kind) as url:
        database = Database(url)
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()


@contextlib.contextmanager
def gateway_on(kind: str, fake: FakeServer, prefix: str) -> Iterator[Gateway]:
    """A granian gateway on a throwaway database of ``kind`` and a data directory of its own
    (for a module's tests that leave data the others must not see)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    with throwaway_database(kind) as url:
        gw = start_gateway(gateway_env(fake, data_dir, url), server="granian")
        try:
            yield gw
        finally:
            stop_gateway(gw)
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request) -> Iterator[str]:
    """A fresh database of each kind, for the session's gateway."""
    with throwaway_database(request.param) as url:
        yield url


SERVERS = ["granian", "robyn"]


@pytest.fixture(scope="session", params=SERVERS)
def server(request) -> str:
    """Every HTTP-level test runs against both server adapters."""
    return request.param


@pytest.fixture(scope="session")
def gateway(fake: FakeServer, database_url: str, server: str) -> Iterator[Gateway]:
    data_dir = Path(tempfile.mkdtemp(prefix="tollway-data-"))
    gw = start_gateway(gateway_env(fake, data_dir, database_url), server=server)
    try:
        yield gw
    finally:
        stop_gateway(gw)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module", params=DATABASES)
def fuzz_gateway(request, fake: FakeServer) -> Iterator[Gateway]:
    """A granian gateway on a fresh database of each kind for one fuzz test module (tests/fuzzing.py):
    the odd data a fuzz leaves behind must not reach other tests."""
    with gateway_on(request.param, fake, "tollway-fuzz-") as gw:
        yield gw


@pytest.fixture
def fresh_database(request) -> Iterator[str]:
    """A database of its own for a test that starts and stops gateways itself."""
    with throwaway_database(getattr(request, "param", "sqlite")) as url:
        yield url


@pytest.fixture
def tmp_data_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="tollway-data-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def user(gateway: Gateway) -> tuple[str, str]:
    """A standard key with a comfortable cap: (id, secret)."""
    return gateway.mint(max_spend_usd=100)


def fake_requests(fake: FakeServer) -> list[dict[str, Any]]:
    return httpx.get(fake.url + "/_fake/requests").json()


def fake_stats(fake: FakeServer) -> dict[str, Any]:
    return httpx.get(fake.url + "/_fake/stats").json()
