"""A message batch of 40 requests through a gateway SIGKILLed mid-run and restarted (both
databases): the batch ends once with 40 succeeded results in request order, each request's
recorded attempt billed once, the key's spend exactly its events, nothing left held."""

from __future__ import annotations

import time
from collections import Counter

import anthropic
import pytest
from sqlalchemy import select

from tests.conftest import DATABASES, gateway_env, stop_gateway
from tests.test_crash import spawn
from tests.test_jobs_crash import _kill, _rows, _wait_succeeded
from tollway.store import Database, batches

REQUESTS = 40
PARAMS = {
    "model": "out-claude",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "go #words=4 #delay_ms=80"}],
}


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_a_batch_through_a_sigkill_ends_once_and_bills_once(fake, tmp_data_dir, fresh_database) -> None:
    env = gateway_env(
        fake, tmp_data_dir, fresh_database,
        TOLLWAY_JOBS_WORKERS="4", TOLLWAY_JOBS_PER_KEY_CONCURRENCY="4", TOLLWAY_JOBS_POLL_INTERVAL="0.02",
    )  # fmt: skip
    gw = spawn(env)
    try:
        key_id, secret = gw.mint(max_spend_usd=1)
        client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        batch = client.messages.batches.create(
            requests=[{"custom_id": f"r{i:02d}", "params": PARAMS} for i in range(REQUESTS)]
        )
        _wait_succeeded(fresh_database, 10, gw)
        _kill(gw)
        gw = spawn(env)
        client = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
        deadline = time.monotonic() + 60
        while (ended := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
            assert time.monotonic() < deadline, gw.log()[-3000:]
            time.sleep(0.1)
        results = list(client.messages.batches.results(batch.id))
        info = gw.wait_settled(key_id)
        gw.request("GET", f"/v1/keys/{key_id}/usage", gw.admin)  # (the writer flushes on reads too)
        time.sleep(0.3)
        stop_gateway(gw)
        rows, events = _rows(fresh_database)
    finally:
        if gw.proc.poll() is None:
            _kill(gw)
    assert ended.request_counts.succeeded == REQUESTS and ended.request_counts.processing == 0
    assert [r.custom_id for r in results] == [f"r{i:02d}" for i in range(REQUESTS)]
    assert {r.result.type for r in results} == {"succeeded"}
    assert Counter(r.status for r in rows if r.batch_id == batch.id) == {"succeeded": REQUESTS}
    assert any(r.attempts > 1 for r in rows)  # the kill did interrupt attempts
    assert max(Counter(e.request_id for e in events).values()) == 1  # no attempt billed twice
    ok = {e.request_id for e in events if e.outcome == "ok"}
    assert all(r.request_id in ok for r in rows)
    assert info["reserved_micros"] == 0 and info["spent_micros"] == sum(e.cost_micros for e in events)
    db = Database(fresh_database)
    try:
        with db.engine.connect() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch.id)).one()
    finally:
        db.dispose()
    assert row.ended_at is not None and row.counts == {"succeeded": REQUESTS}
