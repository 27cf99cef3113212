"""Batches in one process (the routes through App.handle), on both databases: lines that expire
(their holds released, the batch ended with them as expired); a batch's holds taken again at a
restart and its lines run by the next gateway; a batch's end recorded once (batch_ended) however
many readers race the sweep to it; a batch past the wallet's balance refused whole (402, nothing held)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import update

from tests.conftest import DATABASES
from tests.fakes.runner import FakeServer
from tests.test_jobs import _mint, _reserved, _start, call
from tollway.batches.store import Batch
from tollway.http.core import Request, Response
from tollway.store import jobs

LINE = {"model": "out-claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi #words=2"}]}
HOLD = 100


def _requests(n: int) -> dict[str, Any]:
    return {"requests": [{"custom_id": f"r{i}", "params": LINE} for i in range(n)]}


async def _until_ended(gw: Any, secret: str, path: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, batch = await call(gw, "GET", path, secret)
        assert status == 200, batch
        if batch.get("processing_status", batch.get("status")) in ("ended", "completed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.05)


async def _raw(gw: Any, path: str, secret: str) -> bytes:
    response = await gw.app.handle(Request("GET", path, "", {"authorization": f"Bearer {secret}"}, b"", "req_t"))
    assert isinstance(response, Response) and response.status == 200, response
    return response.body


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_lines_past_their_window_expire_and_release_their_holds(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")  # nothing runs
    try:
        key_id, secret = _mint(gw)
        status, batch = await call(gw, "POST", "/v1/messages/batches", secret, _requests(3))
        assert status == 200 and batch["request_counts"]["processing"] == 3, batch
        assert _reserved(gw, key_id) == 3 * HOLD
        with gw.db.engine.begin() as conn:  # the 24 hours are over
            conn.execute(update(jobs).where(jobs.c.batch_id == batch["id"]).values(expires_at=1))
        ended = await _until_ended(gw, secret, f"/v1/messages/batches/{batch['id']}")
        assert ended["request_counts"] == {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 3}
        assert _reserved(gw, key_id) == 0
        lines = [orjson.loads(x) for x in (await _raw(gw, f"/v1/messages/batches/{batch['id']}/results", secret)).splitlines()]  # fmt: skip
        assert lines == [{"custom_id": f"r{i}", "result": {"type": "expired"}} for i in range(3)]
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_an_openai_batch_past_its_window_is_expired(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")
    try:
        key_id, secret = _mint(gw)
        line = {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {**LINE, "model": "out-gpt"}}
        file = await gw.batches.upload(await gw.auth.key_by_id(key_id), "in.jsonl", "batch", orjson.dumps(line))
        status, batch = await call(
            gw, "POST", "/v1/batches", secret,
            {"input_file_id": file.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )  # fmt: skip
        assert status == 200, batch
        with gw.db.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.batch_id == batch["id"]).values(expires_at=1))
        ended = await _until_ended(gw, secret, f"/v1/batches/{batch['id']}")
        assert ended["status"] == "expired" and ended["expired_at"] is not None and ended["output_file_id"] is None
        assert ended["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
        error = orjson.loads(await _raw(gw, f"/v1/files/{ended['error_file_id']}/content", secret))
        assert error["custom_id"] == "x" and error["response"] is None and error["error"]["code"] == "batch_expired"
        assert _reserved(gw, key_id) == 0
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_batch_holds_again_at_restart_and_the_next_gateway_runs_it(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")
    try:
        key_id, secret = _mint(gw)
        status, batch = await call(gw, "POST", "/v1/messages/batches", secret, _requests(4))
        assert status == 200 and _reserved(gw, key_id) == 4 * HOLD
    finally:
        await gw.app.shutdown()
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")
    try:
        assert _reserved(gw, key_id) == 4 * HOLD  # the queued lines hold their money again
    finally:
        await gw.app.shutdown()
    gw = await _start(fake, tmp_data_dir, fresh_database)
    try:
        ended = await _until_ended(gw, secret, f"/v1/messages/batches/{batch['id']}")
        assert ended["request_counts"]["succeeded"] == 4
        assert _reserved(gw, key_id) == 0
        assert gw.ledger.snapshot(key_id)[0] == 4 * 10 * 2  # each line billed once: 2 output tokens at $10/Mtok
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_batch_ends_once_however_many_see_it_end(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database)
    try:
        batches = gw.batches
        seen: list[Batch] = []
        batches.ended = lambda conn, batch: seen.append(batch)
        key_id, secret = _mint(gw)
        status, batch = await call(gw, "POST", "/v1/messages/batches", secret, _requests(5))
        assert status == 200
        path = f"/v1/messages/batches/{batch['id']}"
        for _ in range(300):  # readers race the sweep to the end
            answers = await asyncio.gather(*(call(gw, "GET", path, secret) for _ in range(4)))
            if all(body["processing_status"] == "ended" for _, body in answers):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)  # a sweep more
        assert [b.id for b in seen] == [batch["id"]]
        assert seen[0].counts == {"succeeded": 5} and seen[0].ended_at is not None
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_batch_past_the_wallets_balance_is_refused_whole(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    from tests.policy_helpers import local_gateway

    async with local_gateway(fake, tmp_data_dir, fresh_database, TOLLWAY_WALLET="on") as gw:
        r = await gw.request("POST", "/v1/wallet/adjustments", json={"amount_usd": 0.00025, "reason": "t"})
        assert r.status_code == 201, r.text  # 250 micro-USD: two lines of 100, not three
        _, secret = await gw.mint()
        r = await gw.request("POST", "/v1/messages/batches", secret, json=_requests(3))
        assert r.status_code == 402, r.text
        assert r.json()["type"] == "error" and "balance" in r.json()["error"]["message"]
        wallet = (await gw.request("GET", "/v1/wallet")).json()
        assert wallet["reserved_micros"] == 0  # nothing held, nothing queued
        r = await gw.request("GET", "/v1/jobs", secret)
        assert r.json()["data"] == []
        r = await gw.request("POST", "/v1/messages/batches", secret, json=_requests(2))
        assert r.status_code == 200, r.text
