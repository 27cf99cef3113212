"""Crashes must not forget money: SIGKILL under load, a killed worker, a second gateway on the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import httpx
import pytest
from sqlalchemy import create_engine, select

from tests.conftest import DATABASES, REPO, Gateway, free_port, gateway_env, start_gateway, stop_gateway
from tollway.config.settings import normalize_database_url
from tollway.ledger.owner import AnotherGateway, GatewayLock, check_free
from tollway.store import usage_events

CAP_USD = "0.05"
CAP_MICROS = 50_000
# out-gpt: output only, 10 micro-USD a token: every request holds and costs 100.
PLAIN = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}
STREAM = {**PLAIN, "stream": True, "messages": [{"role": "user", "content": "x #words=10 #chunk_delay_ms=15"}]}


def spawn(env: dict[str, str], server: str = "granian", timeout: float = 30.0) -> Gateway:
    """start_gateway, in a process group of its own (to SIGKILL supervisor and worker at one instant)."""
    port = free_port()
    data_dir = Path(env["TOLLWAY_DATA_DIR"])
    log_path = data_dir / f"serve-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway", "serve", "--host", "127.0.0.1", "--port", str(port), "--server", server],
        env=env, cwd=str(REPO), stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    gw = Gateway(url=f"http://127.0.0.1:{port}", admin=env["TOLLWAY_ADMIN_KEY"], database_url=env["TOLLWAY_DATABASE_URL"],
                 data_dir=data_dir, env=env, proc=proc, log_path=log_path, server=server)  # fmt: skip
    wait_ready(gw, timeout)
    return gw


def wait_ready(gw: Gateway, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"tollway serve exited with {gw.proc.returncode}:\n{gw.log()}")
        try:
            if gw.request("GET", "/v1/models", gw.admin, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"tollway serve did not become ready:\n{gw.log()}")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):  # (reaped between the open and the read: ESRCH)
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def events(database_url: str) -> list[tuple[str, str, int]]:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as conn:
            q = select(usage_events.c.request_id, usage_events.c.outcome, usage_events.c.cost_micros)
            return [tuple(r) for r in conn.execute(q)]
    finally:
        engine.dispose()


class Load:
    """Clients sending plain and stream requests on one key until stopped; the request ids
    of responses they saw complete with 200 (a stream: to its [DONE])."""

    def __init__(self, url: str, secret: str, clients: int = 16) -> None:
        self.url, self.secret = url, secret
        self.completed: list[str] = []
        self.refused = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, i: int) -> None:
        headers = {"authorization": f"Bearer {self.secret}"}
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    if (i + n) % 2:
                        with client.stream(
                            "POST", self.url + "/v1/chat/completions", json=STREAM, headers=headers
                        ) as r:
                            body = r.read()
                            ok = r.status_code == 200 and body.rstrip().endswith(b"data: [DONE]")
                    else:
                        r = client.post(self.url + "/v1/chat/completions", json=PLAIN, headers=headers)
                        ok = r.status_code == 200 and b'"choices"' in r.content
                except httpx.HTTPError:
                    time.sleep(0.02)  # the gateway is down: try again
                    continue
                if ok:
                    self.completed.append(r.headers["x-request-id"])
                elif r.status_code == 402:
                    self.refused += 1
                    time.sleep(0.01)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def assert_all_accounted(database_url: str, completed: list[str], wait: float = 5.0) -> list[tuple[str, str, int]]:
    """Every completed request has its usage event (a running gateway writes them within ~50 ms)."""
    deadline = time.monotonic() + wait
    while True:
        rows = events(database_url)
        ok = {r[0] for r in rows if r[1] == "ok"}
        lost = [rid for rid in completed if rid not in ok]
        if not lost or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not lost, f"{len(lost)} of {len(completed)} requests served with 200 are missing from usage_events"
    return rows


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_sigkill_under_load_forgets_no_settled_usage_and_keeps_the_cap(
    fake, tmp_data_dir, fresh_database, server
) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    gw = spawn(env, server)
    day_started = time.time() // 86_400
    # The cap is both the key's lifetime cap and its day window: the window is rebuilt after the kill too.
    key_id, secret = gw.mint(
        limits=[{"period": "total", "max_spend_usd": CAP_USD}, {"period": "day", "max_spend_usd": CAP_USD}]
    )
    load = Load(gw.url, secret).start()
    try:
        # Killed mid-load: half the cap spent, streams and plain requests in flight.
        assert wait_for(lambda: len(load.completed) >= 200, 30), gw.log()
        os.killpg(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
        killed_at = len(load.completed)
        journal = list((tmp_data_dir / "journal").glob("*.jsonl"))
        assert journal, "the crash left no journal"

        restarted = spawn(env, server)
        try:
            # The settled usage is all there before any new request is counted.
            rows = assert_all_accounted(fresh_database, load.completed[:killed_at], wait=0)
            assert sum(r[2] for r in rows) <= CAP_MICROS
            assert "crash journal replayed" in restarted.log()
            # The same clients go on against the new gateway until the cap refuses everything.
            load.url = restarted.url
            assert wait_for(lambda: load.refused >= 100, 60), restarted.log()
            load.join()
            info = restarted.wait_settled(key_id)
            rows = assert_all_accounted(fresh_database, load.completed)
            spent = sum(r[2] for r in rows)
            assert spent <= CAP_MICROS, (spent, [r for r in rows if r[1] == "interrupted"])
            assert info["spent_micros"] == spent and info["reserved_micros"] == 0
            day = next(w for w in info["limits"] if w["period"] == "day")
            if time.time() // 86_400 == day_started:  # (not across midnight UTC)
                assert day["spent_micros"] == spent and day["reserved_micros"] == 0
            # Every request served is billed once; what was in flight at the kill is billed its
            # hold (100 at most), which the cap covered.
            assert 100 * len(load.completed) <= spent
            interrupted = [r for r in rows if r[1] == "interrupted"]
            assert all(0 < r[2] <= 100 for r in interrupted)
        finally:
            stop_gateway(restarted)
    finally:
        load.join()
        if gw.proc.poll() is None:
            os.killpg(gw.proc.pid, signal.SIGKILL)


def _worker(gw: Gateway, timeout: float = 10.0) -> int:
    assert wait_for(lambda: len(children(gw.proc.pid)) == 1, timeout), children(gw.proc.pid)
    return children(gw.proc.pid)[0]


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_a_killed_worker_is_respawned_with_its_usage(fake, tmp_data_dir, fresh_database, server) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    gw = start_gateway(env, server=server)
    try:
        key_id, secret = gw.mint(max_spend_usd=CAP_USD)
        worker = _worker(gw)
        load = Load(gw.url, secret, clients=6).start()
        assert wait_for(lambda: len(load.completed) >= 50, 30), gw.log()
        os.kill(worker, signal.SIGKILL)
        assert wait_gone(worker, 5)
        count = len(load.completed)
        # The supervisor starts a new worker, which replays the journal, and the gateway answers again.
        assert wait_for(lambda: len(load.completed) >= count + 50, 30), gw.log()
        load.join()
        assert gw.proc.poll() is None
        assert _worker(gw) != worker
        assert (
            "Respawning worker-1" if server == "granian" else "was killed by SIGKILL; starting it again"
        ) in gw.log()
        info = gw.wait_settled(key_id)
        rows = assert_all_accounted(fresh_database, load.completed)
        assert info["spent_micros"] == sum(r[2] for r in rows) <= CAP_MICROS
    finally:
        stop_gateway(gw)


def _second(env: dict[str, str], server: str) -> subprocess.CompletedProcess:
    port = free_port()
    return subprocess.run(
        [sys.executable, "-m", "tollway", "serve", "--host", "127.0.0.1", "--port", str(port), "--server", server],
        env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_a_second_gateway_on_the_same_data_refuses_to_start(
    fake, tmp_data_dir, tmp_path, fresh_database, server
) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    gw = start_gateway(env, server=server)
    try:
        pid = _worker(gw)  # granian's worker, or the Robyn child of the supervisor
        second = _second(env, server)
        assert second.returncode != 0
        assert "another Tollway gateway" in second.stderr and f"pid {pid}" in second.stderr, second.stderr
        assert str(tmp_data_dir.resolve()) in second.stderr
        assert "shared ledger" in second.stderr
        # Its own data directory, the same database: refused too.
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        other = _second(gateway_env(fake, other_dir, fresh_database), server)
        assert other.returncode != 0 and f"pid {pid}" in other.stderr, other.stderr
        assert ("PostgreSQL database" if fresh_database.startswith("postgresql") else "SQLite database") in other.stderr
        # The first one keeps serving.
        assert gw.request("GET", "/v1/models", gw.admin).status_code == 200
    finally:
        stop_gateway(gw)
    # Once it is gone, a new one starts on the same data.
    again = start_gateway(env, server=server)
    stop_gateway(again)


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_the_worker_dies_with_its_supervisor(fake, tmp_data_dir, fresh_database, server) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database)
    gw = start_gateway(env, server=server)
    worker: Optional[int] = None
    try:
        worker = _worker(gw)
        key_id, secret = gw.mint(max_spend_usd=CAP_USD)
        assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(10)
        assert wait_gone(worker, 5), "the worker outlived its supervisor"
        # It stopped cleanly (SIGTERM): its usage written, the journal left empty.
        assert list((tmp_data_dir / "journal").glob("*.jsonl")) == []
        assert [r[2] for r in events(fresh_database)] == [100]
        gw = start_gateway(env, server=server)  # and the data is free for the next gateway
        assert gw.request("GET", "/v1/models", gw.admin).status_code == 200
    finally:
        stop_gateway(gw)
        if worker is not None and alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_the_gateway_lock_is_exclusive_until_released(tmp_data_dir, tmp_path, fresh_database) -> None:
    url = normalize_database_url(fresh_database)
    first = GatewayLock(tmp_data_dir, url)
    first.acquire()
    try:
        refused = check_free(tmp_data_dir, url)
        assert refused and f"pid {os.getpid()}" in refused and "shared ledger" in refused
        with pytest.raises(AnotherGateway):
            GatewayLock(tmp_path, url).acquire(wait=0.3)  # another data dir, the same database
    finally:
        first.release()
    assert check_free(tmp_data_dir, url) is None
