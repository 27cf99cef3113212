"""The call path with no HTTP objects (what jobs will call), and the three hooks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from tests.conftest import ADMIN_SECRET, DATABASES, gateway_env
from tests.fakes.runner import FakeServer
from tollway.config import load_settings
from tollway.gateway import Gateway
from tollway.hooks import CallIntent
from tollway.http.core import HTTPError, Response, StreamResponse
from tollway.store import thread_messages, usage_events


@pytest.fixture
async def gateway(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> AsyncIterator[Gateway]:
    gw = Gateway(load_settings(gateway_env(fake, tmp_data_dir, fresh_database)))
    await gw.app.startup()
    try:
        yield gw
    finally:
        await gw.app.shutdown()


def _mint(gw: Gateway, cap_micros: int | None = 1_000_000, end_user_id: str | None = None) -> str:
    admin, _ = gw.store.ensure_admin(ADMIN_SECRET)
    account = admin.account_id if admin is not None else gw.store.first_account()
    key, _ = gw.store.mint(account, "job", "standard", cap_micros, end_user_id, {})
    return key.id


def _account(gw: Gateway) -> str:
    return gw.store.first_account()


async def _body(response: Any) -> bytes:
    if isinstance(response, StreamResponse):
        try:
            return b"".join([chunk async for chunk in response.chunks])
        finally:
            response.close()
    assert isinstance(response, Response)
    return response.body


def _fake_requests(fake: FakeServer) -> int:
    return len(httpx.get(fake.url + "/_fake/requests").json())


async def _settled(gw: Gateway, key_id: str) -> list[Any]:
    await asyncio.to_thread(gw.writer.flush)
    with gw.db.engine.connect() as conn:
        return list(conn.execute(select(usage_events).where(usage_events.c.key_id == key_id)))


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_plain_calls_with_no_http_objects(gateway: Gateway) -> None:
    key_id = _mint(gateway)
    chat = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}
    done = await gateway.calls.model(key_id, chat, "openai")
    assert done.status == 200 and orjson.loads(done.body)["object"] == "chat.completion"
    # Translated (Anthropic format, an OpenAI model) and streamed, through the same path.
    streamed = await gateway.calls.model(key_id, {**chat, "stream": True}, "anthropic")
    assert streamed.status == 200 and isinstance(streamed, StreamResponse)
    body = await _body(streamed)
    assert b"event: message_stop" in body
    rows = await _settled(gateway, key_id)
    assert [r.outcome for r in rows] == ["ok", "ok"] and all(r.request_id.startswith("req_") for r in rows)
    assert sum(r.cost_micros for r in rows) == 200  # 2 x 10 output tokens at $10/Mtok
    assert gateway.ledger.snapshot(key_id)[:2] == (200, 0)  # spent, reserved


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_a_thread_turn_with_no_http_objects(gateway: Gateway) -> None:
    key_id = _mint(gateway, end_user_id="user_42")
    thread = gateway.threads.create_thread(_account(gateway), key_id, "user_42", None, None)
    done = await gateway.calls.turn(key_id, thread.id, "hello #words=3", model="test-claude", max_tokens=20)
    assert done.status == 200
    reply = orjson.loads(done.body)
    assert reply["object"] == "thread.message" and reply["role"] == "assistant" and reply["thread_id"] == thread.id
    streamed = await gateway.calls.turn(
        key_id, thread.id, "again #words=2", model="test-gpt", max_tokens=20, stream=True
    )
    assert b"event: message_stop" in await _body(streamed)
    for _ in range(200):  # a stream's turn is persisted when it settles, off the event loop
        messages, _ = gateway.threads.list_messages(thread.id, order="asc", limit=10)
        if len(messages) == 4:
            break
        await asyncio.sleep(0.02)
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert len(await _settled(gateway, key_id)) == 2
    # The same rules as the route: another end user's key does not see the thread.
    other = _mint(gateway, end_user_id="user_7")
    with pytest.raises(HTTPError) as refused:
        await gateway.calls.turn(other, thread.id, "hi", model="test-claude")
    assert refused.value.status == 404


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
async def test_an_unknown_or_revoked_key_is_refused(gateway: Gateway) -> None:
    chat = {"model": "out-gpt", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(HTTPError) as unknown:
        await gateway.calls.model("key_nonexistent", chat, "openai")
    assert unknown.value.status == 401
    key_id = _mint(gateway)
    gateway.store.revoke(_account(gateway), key_id)
    with pytest.raises(HTTPError) as revoked:
        await gateway.calls.model(key_id, chat, "openai")
    assert revoked.value.status == 401


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_before_call_sees_every_kind_of_call_and_can_refuse_it(gateway: Gateway, fake: FakeServer) -> None:
    seen: list[CallIntent] = []

    def policy(intent: CallIntent) -> None:
        seen.append(intent)
        if intent.route.name == "test-claude":
            raise HTTPError(403, "this key may not use test-claude", code="model_not_allowed")

    gateway.hooks.before_call.append(policy)
    key_id = _mint(gateway)
    thread = gateway.threads.create_thread(_account(gateway), key_id, None, None, None)
    before = _fake_requests(fake)
    messages = [{"role": "user", "content": "x"}]
    calls = [
        gateway.calls.model(key_id, {"model": "test-claude", "max_tokens": 5, "messages": messages}, "anthropic"),
        gateway.calls.model(key_id, {"model": "test-claude", "max_tokens": 5, "messages": messages}, "openai"),
        gateway.calls.turn(key_id, thread.id, "x", model="test-claude", max_tokens=5, stream=True),
    ]
    for call in calls:
        with pytest.raises(HTTPError) as refused:
            await call
        assert refused.value.status == 403 and refused.value.code == "model_not_allowed"
    assert _fake_requests(fake) == before  # nothing went upstream
    assert gateway.ledger.snapshot(key_id)[:2] == (0, 0)
    assert [(i.route.name, i.stream) for i in seen] == [
        ("test-claude", False),
        ("test-claude", False),
        ("test-claude", True),
    ]
    assert seen[1].payload["model"] == "claude-test-upstream"  # translated: the provider's body
    assert all(i.key.id == key_id for i in seen)
    # A refused turn stored nothing and freed the thread.
    assert gateway.threads.count_messages(thread.id) == 0
    done = await gateway.calls.turn(key_id, thread.id, "x #words=1", model="test-gpt", max_tokens=5)
    assert done.status == 200 and seen[-1].route.name == "test-gpt"


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_message_stored_runs_in_the_append_transaction(gateway: Gateway) -> None:
    seen: list[tuple[str, list[str], int]] = []

    def index(conn: Any, thread_id: str, messages: Any) -> None:
        # Inside the transaction: the new rows are visible on this connection.
        count = conn.execute(
            select(func.count()).select_from(thread_messages).where(thread_messages.c.thread_id == thread_id)
        ).scalar()
        seen.append((thread_id, [m.role for m in messages], count))
        if any(block.get("text") == "poison" for m in messages for block in m.content):
            raise RuntimeError("the index refused it")

    gateway.hooks.message_stored.append(index)
    key_id = _mint(gateway)
    thread = gateway.threads.create_thread(_account(gateway), key_id, None, None, None)
    done = await gateway.calls.turn(key_id, thread.id, "hello #words=2", model="test-claude", max_tokens=20)
    assert done.status == 200
    assert seen == [(thread.id, ["user", "assistant"], 2)]
    assert all(m.id for m in gateway.threads.list_messages(thread.id, order="asc", limit=10)[0])
    # A hook that fails rolls the messages back with it: stored and indexed, or neither.
    from tollway.threads.store import NewMessage

    with pytest.raises(RuntimeError):
        gateway.threads.append_messages(thread.id, [NewMessage("user", [{"type": "text", "text": "poison"}])])
    assert gateway.threads.count_messages(thread.id) == 2


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
async def test_call_settled_gets_every_event_in_the_writer_transaction(gateway: Gateway) -> None:
    seen: list[tuple[str, str, int]] = []

    def outbox(conn: Any, rows: Any) -> None:
        for row in rows:
            present = conn.execute(
                select(func.count()).select_from(usage_events).where(usage_events.c.event_id == row["event_id"])
            ).scalar()
            seen.append((row["key_id"], row["outcome"], present))

    gateway.hooks.call_settled.append(outbox)
    key_id = _mint(gateway)
    chat = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}
    assert (await gateway.calls.model(key_id, chat, "openai")).status == 200
    assert (await _body(await gateway.calls.model(key_id, {**chat, "stream": True}, "openai"))).endswith(
        b"data: [DONE]\n\n"
    )
    failed = await gateway.calls.model(
        key_id, {**chat, "messages": [{"role": "user", "content": "x #status=400"}]}, "openai"
    )
    assert failed.status == 400
    rows = await _settled(gateway, key_id)
    assert len(rows) == 3
    assert sorted(seen) == sorted([(key_id, "ok", 1), (key_id, "ok", 1), (key_id, "upstream_error", 1)])
