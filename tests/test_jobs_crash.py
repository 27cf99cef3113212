"""200 jobs through 4 workers, the gateway SIGKILLed twice mid-run and restarted (both
databases): every job ends once, succeeded, with one result; each attempt is billed at most
once; the bill matches what the upstream itself counts; no hold is left."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import DATABASES, Gateway, fake_stats, gateway_env, stop_gateway
from tests.test_crash import spawn
from tollway.store import Database, jobs, usage_events

JOBS = 200
KEYS = 4
# out-gpt: output-only price ($10/Mtok): each answer of 6 words costs a known amount.
BODY = {"model": "out-gpt", "max_tokens": 20, "messages": [{"role": "user", "content": "go #words=6 #delay_ms=60"}]}


def _statuses(database_url: str) -> Counter[str]:
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            return Counter(r[0] for r in conn.execute(select(jobs.c.status)))
    finally:
        db.dispose()


def _rows(database_url: str) -> tuple[list[Any], list[Any]]:
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            return list(conn.execute(select(jobs))), list(conn.execute(select(usage_events)))
    finally:
        db.dispose()


def _wait_succeeded(database_url: str, at_least: int, gw: Gateway, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _statuses(database_url)["succeeded"] < at_least:
        assert time.monotonic() < deadline, (_statuses(database_url), gw.log()[-3000:])
        time.sleep(0.05)


def _kill(gw: Gateway) -> None:
    os.killpg(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(10)


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_200_jobs_through_two_sigkills_end_once_and_bill_once(fake, tmp_data_dir, fresh_database) -> None:
    env = gateway_env(
        fake, tmp_data_dir, fresh_database,
        TOLLWAY_JOBS_WORKERS="4", TOLLWAY_JOBS_PER_KEY_CONCURRENCY="2", TOLLWAY_JOBS_POLL_INTERVAL="0.02",
    )  # fmt: skip
    completed_before = fake_stats(fake)["completed_calls"]
    gw = spawn(env)
    try:
        keys = [gw.mint(max_spend_usd=1) for _ in range(KEYS)]
        submitted = []
        for i in range(JOBS):
            r = gw.request(
                "POST", "/v1/jobs", keys[i % KEYS][1], json={"endpoint": "/v1/chat/completions", "body": BODY}
            )
            assert r.status_code == 202, r.text
            submitted.append(r.json()["id"])
        _wait_succeeded(fresh_database, 40, gw)
        _kill(gw)
        gw = spawn(env)
        _wait_succeeded(fresh_database, 120, gw)
        _kill(gw)
        gw = spawn(env)
        _wait_succeeded(fresh_database, JOBS, gw, timeout=120)
        # Nothing held once every job ended (the keys' reserved money, from the live ledger).
        spent = {}
        for key_id, _ in keys:
            info = gw.wait_settled(key_id)
            assert info["reserved_micros"] == 0
            spent[key_id] = info["spent_micros"]
        gw.request("GET", f"/v1/keys/{keys[0][0]}/usage", gw.admin)  # (the writer flushes on reads too)
        time.sleep(0.3)
        stop_gateway(gw)  # a clean stop: every usage event is written
        rows, events = _rows(fresh_database)
    finally:
        if gw.proc.poll() is None:
            _kill(gw)
    completed = fake_stats(fake)["completed_calls"] - completed_before

    # Every job ended once: succeeded, with one result, recorded by one attempt.
    assert sorted(r.id for r in rows) == sorted(submitted)
    assert Counter(r.status for r in rows) == {"succeeded": JOBS}
    assert all(r.result["object"] == "chat.completion" and r.status_code == 200 for r in rows)
    assert any(r.attempts > 1 for r in rows)  # the kills did interrupt attempts

    # Billed once: no attempt has two events; the recorded attempt of each job has its "ok" event.
    by_request = Counter(e.request_id for e in events)
    assert max(by_request.values()) == 1
    ok = {e.request_id: e for e in events if e.outcome == "ok"}
    interrupted = [e for e in events if e.outcome == "interrupted"]
    assert {e.outcome for e in events} <= {"ok", "interrupted"}
    for r in rows:
        assert r.request_id in ok and r.request_id.startswith(f"{r.id}."), r.id
    assert {e.request_id.rsplit(".", 1)[0] for e in events} <= set(submitted)
    per_answer = {e.cost_micros for e in ok.values()}
    assert len(per_answer) == 1  # every answer is the same six words

    # The bill matches the upstream's own count: every call it answered whole is billed, "ok"
    # when the gateway settled it, or as an interrupted attempt (billed its hold) when the
    # gateway died with the answer on its way. Nothing is billed twice.
    assert len(ok) <= completed <= len(ok) + len(interrupted), (len(ok), completed, len(interrupted))
    assert len(interrupted) <= 2 * 4  # at most the attempts in flight at each kill
    # The keys' spend (the ledger the gateway rebuilt after each kill) is exactly these events.
    for key_id, _ in keys:
        assert spent[key_id] == sum(e.cost_micros for e in events if e.key_id == key_id)
