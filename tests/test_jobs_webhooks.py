"""A job's webhook (both databases): its end POSTed signed like the tool webhooks, retried on
schedule until a 2xx; an attempt cut by a stop is neither repeated early nor lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import standardwebhooks

from tests.conftest import DATABASES
from tests.fakes.runner import FakeServer
from tests.fakes.webhooks import WebhookServer, start_webhook_server
from tests.test_jobs import CHAT, _mint, _start, call, wait_ended


@pytest.fixture
def hooks() -> Iterator[WebhookServer]:
    with start_webhook_server() as server:
        yield server


async def _until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


async def _delivered(gw: Any, secret: str, job_id: str) -> dict[str, Any]:
    """The job once its delivery is recorded (or as it is after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        _, job = await call(gw, "GET", f"/v1/jobs/{job_id}", secret)
        if job["webhook"]["delivered_at"] is not None or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_the_result_is_delivered_signed_and_retried_until_accepted(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str, hooks: WebhookServer
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WEBHOOK_BACKOFF="0.1")
    try:
        _, secret = _mint(gw)
        body = {"endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": hooks.url("/done")}
        status, job = await call(gw, "POST", "/v1/jobs", secret, body, {"idempotency-key": "w1"})
        assert status == 202 and job["webhook_secret"].startswith("whsec_") and job["webhook"]["attempts"] == 0
        hooks.program(
            "/done", responses=[{"status": 500}, {"status": 503}], default={"status": 200}, secret=job["webhook_secret"]
        )
        status, again = await call(gw, "POST", "/v1/jobs", secret, body, {"idempotency-key": "w1"})
        assert again["id"] == job["id"] and "webhook_secret" not in again  # shown once
        ended = await wait_ended(gw, secret, job["id"])
        assert ended["status"] == "succeeded"
        assert await _until(lambda: len(hooks.requests("/done")) >= 3)
        delivered = hooks.requests("/done")
        assert len(delivered) == 3
        assert all(r["signature_ok"] for r in delivered)
        assert {r["headers"]["x-tollway-delivery"] for r in delivered} == {job["id"]}
        # The same request as a Standard Webhook, verified by the standardwebhooks package.
        hook = standardwebhooks.Webhook(job["webhook_secret"])
        assert {r["headers"]["webhook-id"] for r in delivered} == {job["id"]}
        assert all(hook.verify(r["body"], r["headers"])["type"] == "job.succeeded" for r in delivered)
        event = delivered[-1]["json"]
        assert event["type"] == "job.succeeded" and event["data"]["result"] == ended["result"]
        gaps = [delivered[i + 1]["start"] - delivered[i]["start"] for i in range(2)]
        # The schedule: 0.1 s after the first attempt's claim, then 6 x 0.1 s after the second's
        # (the first POST also opens the client's connection, so the first gap, measured at the
        # receiver, is shorter than its 0.1 s).
        assert 0.55 <= gaps[1] < 2, gaps
        final = await _delivered(gw, secret, job["id"])  # (recorded just after the receiver answered)
        assert final["webhook"]["attempts"] == 3 and final["webhook"]["last_status"] == 200
        assert final["webhook"]["delivered_at"] is not None and "webhook_secret" not in final
        await asyncio.sleep(1.0)
        assert len(hooks.requests("/done")) == 3  # nothing after the 2xx
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_an_attempt_cut_by_a_stop_keeps_the_schedule(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str, hooks: WebhookServer
) -> None:
    env = {"TOLLWAY_JOBS_WEBHOOK_BACKOFF": "1", "TOLLWAY_DRAIN_TIMEOUT": "1"}
    gw = await _start(fake, tmp_data_dir, fresh_database, **env)
    _, secret = _mint(gw)
    status, job = await call(
        gw,
        "POST",
        "/v1/jobs",
        secret,
        {"endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": hooks.url("/slow")},
    )
    hooks.program("/slow", responses=[{"delay_ms": 3000}], default={"status": 204}, secret=job["webhook_secret"])
    await wait_ended(gw, secret, job["id"])
    assert await _until(lambda: len(hooks.requests("/slow")) == 1)
    await gw.app.shutdown()  # the first attempt is still waiting for its answer
    gw = await _start(fake, tmp_data_dir, fresh_database, **env)
    try:
        status, seen = await call(gw, "GET", f"/v1/jobs/{job['id']}", secret)
        assert seen["webhook"]["attempts"] == 1 and seen["webhook"]["delivered_at"] is None
        delivered = await _until(lambda: len(hooks.requests("/slow")) >= 2)
        assert delivered
        requests = hooks.requests("/slow")
        assert requests[1]["start"] - requests[0]["start"] >= 0.95  # the second at its time, not at once
        assert all(r["signature_ok"] for r in requests)
        final = await _delivered(gw, secret, job["id"])
        assert final["webhook"]["attempts"] == 2 and final["webhook"]["last_status"] == 204
        await asyncio.sleep(0.5)
        assert len(hooks.requests("/slow")) == 2
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
async def test_a_cancelled_job_is_delivered_too(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str, hooks: WebhookServer
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")
    try:
        _, secret = _mint(gw)
        status, job = await call(
            gw,
            "POST",
            "/v1/jobs",
            secret,
            {"endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": hooks.url("/c")},
        )
        hooks.program("/c", responses=[], default={"status": 200}, secret=job["webhook_secret"])
        status, _ = await call(gw, "POST", f"/v1/jobs/{job['id']}/cancel", secret)
        assert await _until(lambda: len(hooks.requests("/c")) == 1)
        event = hooks.requests("/c")[0]["json"]
        assert event["type"] == "job.cancelled" and event["data"]["status"] == "cancelled"
        status, bad = await call(
            gw,
            "POST",
            "/v1/jobs",
            secret,
            {"endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": "ftp://x/y"},
        )
        assert status == 400 and bad["error"]["param"] == "webhook_url"
    finally:
        await gw.app.shutdown()
