"""Jobs in one process (the routes through App.handle, the engine's Python functions), on both
databases: a job per endpoint, the Idempotency-Key, 402 at submission, cancel and expiry
releasing the hold, the hold handed to the call, a thread turn stored once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import orjson
import pytest
from sqlalchemy import select, update

from tests.conftest import ADMIN_SECRET, DATABASES, gateway_env
from tests.fakes.runner import FakeServer
from tollway.config import load_settings
from tollway.gateway import Gateway
from tollway.http.core import Request, Response
from tollway.store import jobs, thread_messages, usage_events

CHAT = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "hi #words=4"}]}
HOLD = 100  # out-gpt: $10/Mtok output, no input price: max_tokens 10 hold 100 micro-USD


async def _start(fake: FakeServer, data_dir: Path, database_url: str, **env: str) -> Gateway:
    gw = Gateway(load_settings(gateway_env(fake, data_dir, database_url, TOLLWAY_JOBS_POLL_INTERVAL="0.02", **env)))
    await gw.app.startup()
    return gw


@pytest.fixture
async def gateway(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> AsyncIterator[Gateway]:
    gw = await _start(fake, tmp_data_dir, fresh_database)
    try:
        yield gw
    finally:
        await gw.app.shutdown()


def _mint(gw: Gateway, cap_micros: Optional[int] = 1_000_000, end_user_id: Optional[str] = None) -> tuple[str, str]:
    admin, _ = gw.store.ensure_admin(ADMIN_SECRET)
    account = admin.account_id if admin is not None else gw.store.first_account()
    key, secret = gw.store.mint(account, "jobs", "standard", cap_micros, end_user_id, {})
    gw.auth.preload()
    return key.id, secret


async def call(
    gw: Gateway, method: str, path: str, secret: str, body: Any = None, headers: Optional[dict[str, str]] = None
) -> tuple[int, Any]:
    path, _, query = path.partition("?")
    request = Request(
        method,
        path,
        query,
        {"authorization": f"Bearer {secret}", **(headers or {})},
        orjson.dumps(body) if body is not None else b"",
        "req_test",
    )
    response = await gw.app.handle(request)
    assert isinstance(response, Response)
    return response.status, orjson.loads(response.body)


async def wait_ended(gw: Gateway, secret: str, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, job = await call(gw, "GET", f"/v1/jobs/{job_id}", secret)
        assert status == 200, job
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.02)


async def _until(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _reserved(gw: Gateway, key_id: str) -> int:
    return gw.ledger.snapshot(key_id)[1]


async def _events(gw: Gateway, key_id: str) -> list[Any]:
    await asyncio.to_thread(gw.writer.flush)
    with gw.db.engine.connect() as conn:
        return list(conn.execute(select(usage_events).where(usage_events.c.key_id == key_id)))


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_job_per_endpoint_gives_the_synchronous_result(gateway: Gateway) -> None:
    key_id, secret = _mint(gateway, end_user_id="u1")
    thread = gateway.threads.create_thread(gateway.store.first_account(), key_id, "u1", None, None)
    submissions = {
        "/v1/chat/completions": CHAT,
        "/v1/messages": {
            "model": "test-claude",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "x #words=3"}],
        },
        "/v1/responses": {"model": "test-gpt", "max_output_tokens": 16, "input": "hello #words=3"},
        f"/v1/threads/{thread.id}/messages": {"model": "test-claude", "max_tokens": 20, "content": "hi #words=2"},
    }
    submitted = {}
    for endpoint, body in submissions.items():
        status, job = await call(gateway, "POST", "/v1/jobs", secret, {"endpoint": endpoint, "body": body})
        assert status == 202, job
        assert job["status"] in ("queued", "running") and job["object"] == "job" and job["endpoint"] == endpoint
        submitted[endpoint] = job["id"]
    ended = {e: await wait_ended(gateway, secret, i) for e, i in submitted.items()}
    assert {e: j["status"] for e, j in ended.items()} == {e: "succeeded" for e in submissions}, ended
    assert ended["/v1/chat/completions"]["result"]["object"] == "chat.completion"
    assert ended["/v1/messages"]["result"]["type"] == "message"
    assert ended["/v1/responses"]["result"]["object"] == "response"
    reply = ended[f"/v1/threads/{thread.id}/messages"]["result"]
    assert reply["object"] == "thread.message" and reply["thread_id"] == thread.id and reply["role"] == "assistant"
    messages, _ = gateway.threads.list_messages(thread.id, order="asc", limit=10)
    assert [m.role for m in messages] == ["user", "assistant"] and messages[1].id == reply["id"]
    # The same synchronous call gives the same shape: exactly what the route answers.
    status, direct = await call(gateway, "POST", "/v1/chat/completions", secret, CHAT)
    assert status == 200 and set(direct) == set(ended["/v1/chat/completions"]["result"])
    # Billed once each, with the attempt's request id; nothing left held.
    events = await _events(gateway, key_id)
    by_request = {e.request_id: e for e in events}
    for job_id in submitted.values():
        assert by_request[f"{job_id}.1"].outcome == "ok"
    assert len(events) == 5 and _reserved(gateway, key_id) == 0
    # The list, newest first, filtered by status, in pages.
    status, listed = await call(gateway, "GET", "/v1/jobs?status=succeeded&limit=3", secret)
    assert status == 200 and len(listed["data"]) == 3 and listed["has_more"] is True
    assert [j["id"] for j in listed["data"]] == list(submitted.values())[::-1][:3]
    status, rest = await call(gateway, "GET", f"/v1/jobs?status=succeeded&after={listed['last_id']}", secret)
    assert [j["id"] for j in rest["data"]] == [list(submitted.values())[0]] and rest["has_more"] is False


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_the_idempotency_key_gives_the_same_job(gateway: Gateway) -> None:
    key_id, secret = _mint(gateway)
    headers = {"idempotency-key": "order-42"}
    status, first = await call(
        gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT}, headers
    )
    assert status == 202
    status, again = await call(
        gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT}, headers
    )
    assert status == 202 and again["id"] == first["id"]
    await wait_ended(gateway, secret, first["id"])
    status, after = await call(
        gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT}, headers
    )
    assert after["id"] == first["id"] and after["status"] == "succeeded"
    with gateway.db.engine.connect() as conn:
        assert len(conn.execute(select(jobs.c.id).where(jobs.c.key_id == key_id)).all()) == 1
    assert len(await _events(gateway, key_id)) == 1  # run (and billed) once
    # Another key's same Idempotency-Key is its own.
    _, other = _mint(gateway)
    status, theirs = await call(
        gateway, "POST", "/v1/jobs", other, {"endpoint": "/v1/chat/completions", "body": CHAT}, headers
    )
    assert status == 202 and theirs["id"] != first["id"]


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_402_at_submission_and_the_hold_counts_against_the_cap(gateway: Gateway, fake: FakeServer) -> None:
    key_id, secret = _mint(gateway, cap_micros=250)
    hang = {**CHAT, "messages": [{"role": "user", "content": "x #hang"}]}
    status, first = await call(gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": hang})
    status2, second = await call(
        gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": hang}
    )
    assert status == status2 == 202 and first["held_micros"] == second["held_micros"] == HOLD
    assert _reserved(gateway, key_id) == 2 * HOLD
    # 50 micros left: not enough for the input and one token? It is (output-only price), so the
    # third is clamped like a synchronous call; a fourth finds nothing left: 402, nothing queued.
    status, third = await call(gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": hang})
    assert status == 202 and third["held_micros"] == 50
    status, refused = await call(
        gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT}
    )
    assert status == 402 and refused["error"]["code"] == "spend_cap_reached", refused
    # A synchronous call is refused as well: the queued jobs hold the cap.
    status, sync = await call(gateway, "POST", "/v1/chat/completions", secret, CHAT)
    assert status == 402
    status, listed = await call(gateway, "GET", "/v1/jobs", secret)
    assert len(listed["data"]) == 3
    for job in (first, second, third):
        status, cancelled = await call(gateway, "POST", f"/v1/jobs/{job['id']}/cancel", secret)
        assert status == 200 and cancelled["status"] == "cancelled" and cancelled["held_micros"] == 0
    assert await _until(lambda: _reserved(gateway, key_id) == 0)


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_cancel_releases_a_queued_jobs_hold(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")  # nothing runs
    try:
        key_id, secret = _mint(gw)
        status, job = await call(gw, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT})
        assert status == 202 and job["status"] == "queued" and _reserved(gw, key_id) == HOLD
        status, cancelled = await call(gw, "POST", f"/v1/jobs/{job['id']}/cancel", secret)
        assert status == 200 and cancelled["status"] == "cancelled" and _reserved(gw, key_id) == 0
        status, again = await call(gw, "POST", f"/v1/jobs/{job['id']}/cancel", secret)
        assert status == 200 and again["status"] == "cancelled" and _reserved(gw, key_id) == 0
        _, stranger = _mint(gw)
        status, hidden = await call(gw, "GET", f"/v1/jobs/{job['id']}", stranger)
        assert status == 404 and hidden["error"]["code"] == "job_not_found"
        status, admin_view = await call(gw, "GET", f"/v1/jobs/{job['id']}", ADMIN_SECRET)
        assert status == 200 and admin_view["id"] == job["id"]
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_running_job_cancelled_stops_its_call_and_releases_everything(gateway: Gateway) -> None:
    key_id, secret = _mint(gateway)
    hang = {**CHAT, "messages": [{"role": "user", "content": "x #hang"}]}
    status, job = await call(gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": hang})
    for _ in range(200):
        status, seen = await call(gateway, "GET", f"/v1/jobs/{job['id']}", secret)
        if seen["status"] == "running" and job["id"] in gateway.jobs.running:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # its call is upstream now, under the call's own hold
    assert _reserved(gateway, key_id) == HOLD  # one hold: the job's was handed to the call, not added
    status, cancelled = await call(gateway, "POST", f"/v1/jobs/{job['id']}/cancel", secret)
    assert cancelled["status"] == "cancelled"
    assert await _until(lambda: _reserved(gateway, key_id) == 0 and job["id"] not in gateway.jobs.running)
    final = await wait_ended(gateway, secret, job["id"])
    assert final["status"] == "cancelled" and final["result"] is None


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_expiry_releases_the_hold(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0", TOLLWAY_JOBS_EXPIRES_AFTER="1")
    try:
        key_id, secret = _mint(gw)
        status, job = await call(gw, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT})
        assert status == 202 and job["expires_at"] - job["created_at"] == 1000
        assert _reserved(gw, key_id) == HOLD
        ended = await wait_ended(gw, secret, job["id"], timeout=5)
        assert ended["status"] == "expired" and ended["held_micros"] == 0
        assert _reserved(gw, key_id) == 0
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_holds_come_back_at_start_and_a_lapsed_job_runs_once(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")
    key_id, secret = _mint(gw)
    status, job = await call(gw, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": CHAT})
    await gw.app.shutdown()
    # As a killed gateway leaves it: claimed, its lease in the future.
    with gw.db.engine.begin() as conn:
        conn.execute(update(jobs).values(status="running", claimed_by="dead/0", attempts=1, lease_until=2**52))
    stopped = await _start(fake, tmp_data_dir, fresh_database, TOLLWAY_JOBS_WORKERS="0")
    try:
        assert _reserved(stopped, key_id) == HOLD  # held again before anything runs
    finally:
        await stopped.app.shutdown()
    gw = await _start(fake, tmp_data_dir, fresh_database)
    try:
        ended = await wait_ended(gw, secret, job["id"])
        assert ended["status"] == "succeeded" and ended["attempts"] == 2
        events = await _events(gw, key_id)
        assert [e.request_id for e in events] == [f"{job['id']}.2"]
        assert _reserved(gw, key_id) == 0
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_thread_turn_stored_by_a_crashed_attempt_is_not_stored_again(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    gw = await _start(fake, tmp_data_dir, fresh_database)
    key_id, secret = _mint(gw)
    thread = gw.threads.create_thread(gw.store.first_account(), key_id, None, None, None)
    body = {
        "endpoint": f"/v1/threads/{thread.id}/messages",
        "body": {"model": "test-claude", "max_tokens": 9, "content": "a #words=2"},
    }
    status, job = await call(gw, "POST", "/v1/jobs", secret, body)
    first = await wait_ended(gw, secret, job["id"])
    assert first["status"] == "succeeded"
    await gw.app.shutdown()
    # As if the gateway died after the turn's commit and before the job's: running again.
    with gw.db.engine.begin() as conn:
        conn.execute(update(jobs).values(status="running", lease_until=0, result=None, finished_at=None))
    gw = await _start(fake, tmp_data_dir, fresh_database)
    try:
        again = await wait_ended(gw, secret, job["id"])
        assert again["status"] == "succeeded" and again["attempts"] == 2
        assert again["result"]["id"] == first["result"]["id"]  # the stored reply, not a new call
        with gw.db.engine.connect() as conn:
            stored = conn.execute(select(thread_messages.c.role).where(thread_messages.c.thread_id == thread.id)).all()
        assert [r[0] for r in stored] == ["user", "assistant"]
        assert len(await _events(gw, key_id)) == 1
    finally:
        await gw.app.shutdown()


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
async def test_bad_submissions_are_400s_and_failures_keep_the_error_body(gateway: Gateway) -> None:
    key_id, secret = _mint(gateway)
    bad = [
        {"body": CHAT},
        {"endpoint": "/v1/embeddings", "body": CHAT},
        {"endpoint": "/v1/chat/completions", "body": [1]},
        {"endpoint": "/v1/chat/completions", "body": {**CHAT, "stream": True}},
        {"endpoint": "/v1/chat/completions", "body": {**CHAT, "max_tokens": -1}},
        {"endpoint": "/v1/chat/completions", "body": CHAT, "extra": 1},
        {"endpoint": "/v1/chat/completions", "body": CHAT, "metadata": "x"},
        {"endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": "file:///etc/passwd"},
        {"endpoint": 7, "body": CHAT},
    ]
    for body in bad:
        status, error = await call(gateway, "POST", "/v1/jobs", secret, body)
        assert status == 400 and error["error"]["type"] == "invalid_request_error", (body, error)
    status, missing = await call(
        gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": {**CHAT, "model": "nope"}}
    )
    assert status == 404
    status, thread = await call(
        gateway,
        "POST",
        "/v1/jobs",
        secret,
        {"endpoint": "/v1/threads/thr_nope/messages", "body": {"model": "test-claude", "content": "x"}},
    )
    assert status == 404
    for query in ("status=done", "limit=0", "limit=x"):
        status, _ = await call(gateway, "GET", f"/v1/jobs?{query}", secret)
        assert status == 400, query
    # An upstream error is the job's failure, with the body the synchronous call answers.
    failing = {**CHAT, "messages": [{"role": "user", "content": "x #status=400"}]}
    status, job = await call(gateway, "POST", "/v1/jobs", secret, {"endpoint": "/v1/chat/completions", "body": failing})
    ended = await wait_ended(gateway, secret, job["id"])
    status, direct = await call(gateway, "POST", "/v1/chat/completions", secret, failing)
    assert ended["status"] == "failed" and ended["status_code"] == status == 400 and ended["error"] == direct
    assert await _until(lambda: _reserved(gateway, key_id) == 0)


@pytest.mark.parametrize("kind", DATABASES)
def test_the_migration_makes_the_jobs_table_of_the_schema(kind: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tests.conftest import migrated_database
    from tollway.store import metadata

    with migrated_database(kind) as db, db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(context, metadata) if "jobs" in repr(d)]
    assert diffs == []


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
async def test_per_key_concurrency_and_retention(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    gw = await _start(
        fake, tmp_data_dir, fresh_database,
        TOLLWAY_JOBS_WORKERS="4", TOLLWAY_JOBS_PER_KEY_CONCURRENCY="2", TOLLWAY_JOBS_RETENTION="1",
    )  # fmt: skip
    try:
        key_id, secret = _mint(gw)
        other_id, other = _mint(gw)
        slow = {**CHAT, "messages": [{"role": "user", "content": "x #delay_ms=150"}]}
        ids = []
        for s in (secret,) * 6 + (other,) * 2:
            status, job = await call(gw, "POST", "/v1/jobs", s, {"endpoint": "/v1/chat/completions", "body": slow})
            ids.append((s, job["id"]))
        peak: Counter[str] = Counter()
        while True:
            with gw.db.engine.connect() as conn:
                running = Counter(r[0] for r in conn.execute(select(jobs.c.key_id).where(jobs.c.status == "running")))
            for k, n in running.items():
                peak[k] = max(peak[k], n)
            with gw.db.engine.connect() as conn:
                left = conn.execute(select(jobs.c.id).where(jobs.c.status.in_(("queued", "running")))).all()
            if not left:
                break
            await asyncio.sleep(0.01)
        assert peak[key_id] == 2 and peak[other_id] >= 1  # the other key ran beside the first one's two

        # Retention: ended jobs are deleted once it is over.
        def none_left() -> bool:
            with gw.db.engine.connect() as conn:
                return not conn.execute(select(jobs.c.id)).all()

        assert await _until(none_left, timeout=5)
        status, gone = await call(gw, "GET", f"/v1/jobs/{ids[0][1]}", secret)
        assert status == 404
    finally:
        await gw.app.shutdown()
