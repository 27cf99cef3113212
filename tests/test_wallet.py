"""The prepaid wallet through the HTTP routes of an in-process gateway, on both databases:
holds on the wallet with the key's budgets, 402 insufficient_balance before the upstream,
debits written with the usage events, the ledger, adjustments, restart, verify."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import DATABASES, REPO, fake_requests, gateway_env
from tests.fakes.runner import FakeServer
from tests.policy_helpers import Local, local_gateway
from tollway.store import Database, usage_events, wallet_entries
from tollway.wallet.store import WalletStore

pytestmark = pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
ON = {"TOLLWAY_WALLET": "on"}
CALL_MICROS = 100  # out-gpt: 10 output tokens at $10/Mtok, input free


async def adjust(gw: Local, usd: Any, reason: str = "test credit", **headers: str) -> httpx.Response:
    return await gw.request(
        "POST", "/v1/wallet/adjustments", json={"amount_usd": usd, "reason": reason}, headers=headers
    )


async def wallet(gw: Local) -> dict[str, Any]:
    r = await gw.request("GET", "/v1/wallet")
    assert r.status_code == 200, r.text
    return r.json()


async def ledger(gw: Local, **query: Any) -> dict[str, Any]:
    r = await gw.request("GET", "/v1/wallet/ledger", params=query)
    assert r.status_code == 200, r.text
    return r.json()


def verify(database_url: str) -> list[str]:
    db = Database(database_url)
    try:
        return WalletStore(db).verify()
    finally:
        db.dispose()


def entries_sum(database_url: str) -> int:
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(wallet_entries.c.amount_micros), 0))).scalar_one())
    finally:
        db.dispose()


async def test_off_by_default(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database) as gw:
        r = await gw.request("GET", "/v1/wallet")
        assert r.status_code == 400 and r.json()["error"]["code"] == "wallet_disabled"
        _, secret = await gw.mint(max_spend_usd=1)
        assert (await gw.chat(secret)).status_code == 200  # no wallet to hold on
        await gw.settled()
    assert entries_sum(fresh_database) == 0


async def test_an_empty_wallet_refuses_every_key_before_the_upstream(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        w = await wallet(gw)
        assert (w["balance_micros"], w["reserved_micros"], w["available_micros"]) == (0, 0, 0)
        assert w["auto_recharge"] is None and w["last_topups"] == []
        _, capped = await gw.mint(max_spend_usd=5)
        _, uncapped = await gw.mint()
        before = len(fake_requests(fake))
        for secret in (capped, uncapped):
            r = await gw.chat(secret)
            assert r.status_code == 402, r.text
            assert r.json()["error"]["code"] == "insufficient_balance"
            assert "top up the wallet" in r.json()["error"]["message"]
        # The Anthropic route answers in its own shape.
        r = await gw.request(
            "POST", "/v1/messages", capped,
            json={"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
        )  # fmt: skip
        assert r.status_code == 402 and r.json()["type"] == "error", r.text
        assert r.json()["error"]["type"] == "billing_error" and "top up the wallet" in r.json()["error"]["message"]
        assert len(fake_requests(fake)) == before  # nothing went upstream


async def test_spend_is_held_on_the_wallet_and_the_key_and_debited_per_event(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        r = await adjust(gw, "0.0003")
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "adjustment" and r.json()["amount_micros"] == 300
        assert r.json()["wallet"]["balance_micros"] == 300
        key_a, a = await gw.mint(max_spend_usd=5)
        key_b, b = await gw.mint()
        assert (await gw.chat(a)).status_code == 200
        assert (await gw.chat(b)).status_code == 200
        assert (await gw.chat(a)).status_code == 200
        for secret in (a, b):  # empty now: both keys refused
            r = await gw.chat(secret)
            assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_balance"
        await gw.settled()
        assert (await gw.key(key_a))["spent_micros"] == 2 * CALL_MICROS
        assert (await gw.key(key_b))["spent_micros"] == CALL_MICROS
        w = await wallet(gw)
        assert (w["balance_micros"], w["reserved_micros"]) == (0, 0)
        page = await ledger(gw)
        kinds = [(e["kind"], e["amount_micros"], e["key_id"]) for e in page["data"]]
        assert kinds[0][:2] == ("adjustment", 300)
        assert sorted(kinds[1:]) == sorted([("debit", -100, key_a), ("debit", -100, key_b), ("debit", -100, key_a)])
        assert all(e["usage_event_id"] for e in page["data"][1:])
        # A top-up (here an adjustment) lets them through again, at once.
        assert (await adjust(gw, 0.0001)).status_code == 201
        assert (await gw.chat(b)).status_code == 200
        await gw.settled()
    assert verify(fresh_database) == []
    assert entries_sum(fresh_database) == 0


async def test_a_low_balance_clamps_max_tokens_like_a_cap(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        assert (await adjust(gw, "0.00005")).status_code == 201  # 5 output tokens' worth
        _, secret = await gw.mint(max_spend_usd=5)
        r = await gw.chat(secret, words=10)
        assert r.status_code == 200, r.text
        assert fake_requests(fake)[-1]["body"]["max_tokens"] == 5
        await gw.settled()
        assert (await wallet(gw))["balance_micros"] == 0
    assert verify(fresh_database) == []


async def test_fifty_parallel_requests_never_take_the_wallet_below_zero(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        assert (await adjust(gw, "0.00125")).status_code == 201  # 12.5 calls' worth
        keys = [(await gw.mint(max_spend_usd=1))[1] for _ in range(5)]
        results = await asyncio.gather(*(gw.chat(keys[i % 5]) for i in range(50)))
        statuses = sorted(r.status_code for r in results)
        assert set(statuses) <= {200, 402}, statuses
        refused = [r for r in results if r.status_code == 402]
        assert refused and all(r.json()["error"]["code"] == "insufficient_balance" for r in refused)
        await gw.settled()
        w = await wallet(gw)
        assert w["reserved_micros"] == 0
        assert w["balance_micros"] == 0  # the last call was clamped to what was left: exactly spent out
        assert statuses.count(200) == 13
    db = Database(fresh_database)
    try:
        with db.engine.connect() as conn:
            assert conn.execute(select(func.sum(usage_events.c.cost_micros))).scalar_one() == 1250
    finally:
        db.dispose()
    assert verify(fresh_database) == [] and entries_sum(fresh_database) == 0


async def test_adjustments_are_idempotent_and_validated(
    fake: FakeServer, tmp_data_dir: Path, fresh_database: str
) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        first = await adjust(gw, 2, **{"Idempotency-Key": "grant-1"})
        again = await adjust(gw, 2, **{"Idempotency-Key": "grant-1"})
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        other = await adjust(gw, 3, **{"Idempotency-Key": "grant-1"})
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
        assert (await wallet(gw))["balance_micros"] == 2_000_000
        taken = await adjust(gw, "-0.5", "chargeback")
        assert taken.status_code == 201 and taken.json()["wallet"]["balance_micros"] == 1_500_000
        for bad in (0, "abc", True, None, "1e400", 10**9, "0.0000001", [1]):
            r = await adjust(gw, bad)
            assert r.status_code == 400 and r.json()["error"]["param"] == "amount_usd", (bad, r.text)
        for reason in ("", " ", None, "x" * 401, "a\x00b", 5):
            r = await gw.request("POST", "/v1/wallet/adjustments", json={"amount_usd": 1, "reason": reason})
            assert r.status_code == 400, (reason, r.text)
        r = await gw.request("POST", "/v1/wallet/adjustments", json={"amount_usd": 1, "reason": "x", "extra": 1})
        assert r.status_code == 400
        _, standard = await gw.mint()
        for method, path in (("GET", "/v1/wallet"), ("GET", "/v1/wallet/ledger")):
            assert (await gw.request(method, path, standard)).status_code == 403
        r = await gw.request("POST", "/v1/wallet/adjustments", standard, json={"amount_usd": 1, "reason": "me"})
        assert r.status_code == 403
        assert (await wallet(gw))["balance_micros"] == 1_500_000
    assert verify(fresh_database) == []


async def test_the_ledger_pages_and_filters(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        for i in range(5):
            assert (await adjust(gw, i + 1, f"grant {i}")).status_code == 201
        _, secret = await gw.mint()
        assert (await gw.chat(secret)).status_code == 200
        seen = []
        page = await ledger(gw, limit=2)
        while True:
            seen += page["data"]
            if not page["has_more"]:
                break
            page = await ledger(gw, limit=2, after=page["next"])
        assert [e["kind"] for e in seen] == ["adjustment"] * 5 + ["debit"]
        assert len({e["id"] for e in seen}) == 6
        debits = await ledger(gw, kind="debit")
        assert [e["amount_micros"] for e in debits["data"]] == [-CALL_MICROS]
        assert (await ledger(gw, from_ms=seen[-1]["created_at"] + 10**7))["data"] == []
        for query in (
            {"after": "x"}, {"after": "wle_99999999999999999999"}, {"kind": "nope"}, {"limit": 0}, {"from_ms": -1},
            {"bogus": 1},
        ):  # fmt: skip
            r = await gw.request("GET", "/v1/wallet/ledger", params=query)
            assert r.status_code == 400, (query, r.text)


async def test_the_balance_survives_a_restart(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        assert (await adjust(gw, "0.00035")).status_code == 201
        _, secret = await gw.mint()
        for _ in range(2):
            assert (await gw.chat(secret)).status_code == 200
    async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
        w = await wallet(gw)
        assert (w["balance_micros"], w["reserved_micros"]) == (150, 0)
        r = await gw.request("POST", "/v1/keys", json={"name": "again"})
        secret = r.json()["secret"]
        assert (await gw.chat(secret)).status_code == 200  # 100 of the 150
        r = await gw.chat(secret)  # 50 left: clamped to 5 tokens
        assert r.status_code == 200 and fake_requests(fake)[-1]["body"]["max_tokens"] == 5
        assert (await gw.chat(secret)).json()["error"]["code"] == "insufficient_balance"
    assert verify(fresh_database) == [] and entries_sum(fresh_database) == 0


def test_verify_command_finds_a_tampered_balance(fake: FakeServer, tmp_data_dir: Path, fresh_database: str) -> None:
    async def spend() -> None:
        async with local_gateway(fake, tmp_data_dir, fresh_database, **ON) as gw:
            assert (await adjust(gw, 1)).status_code == 201
            _, secret = await gw.mint()
            assert (await gw.chat(secret)).status_code == 200

    asyncio.run(spend())
    env = gateway_env(fake, tmp_data_dir, fresh_database, **ON)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tollway", "wallet", "verify"],
            env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    ok = run()
    assert ok.returncode == 0 and "wallet verify: ok (1 wallet(s)" in ok.stdout, ok.stdout + ok.stderr
    db = Database(fresh_database)
    try:
        with db.engine.begin() as conn:
            conn.execute(wallet_entries.update().where(wallet_entries.c.kind == "debit").values(amount_micros=-99))
    finally:
        db.dispose()
    bad = run()
    assert bad.returncode == 1
    assert "entries sum to" in bad.stderr and "for usage event" in bad.stderr, bad.stderr
