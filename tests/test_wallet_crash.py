"""The wallet under load: after a SIGKILL every debit is there exactly once, the balance is the
sum of the ledger and never went below zero (both servers and databases); the same after a
mixed load with streams the clients cut midway."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import DATABASES, gateway_env, start_gateway, stop_gateway
from tests.test_crash import STREAM as STREAM_SLOW
from tests.test_crash import Load, assert_all_accounted, spawn, wait_for
from tollway.store import Database, usage_events, wallet_entries
from tollway.wallet.store import WalletStore

BALANCE_USD = "0.03"
BALANCE_MICROS = 30_000


def ledger_state(database_url: str) -> tuple[list[str], int, int, int]:
    """(verify's problems, the entries' sum, debits, priced usage events)."""
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            total = conn.execute(select(func.coalesce(func.sum(wallet_entries.c.amount_micros), 0))).scalar_one()
            debits = conn.execute(select(func.count()).where(wallet_entries.c.kind == "debit")).scalar_one()
            priced = conn.execute(select(func.count()).where(usage_events.c.cost_micros > 0)).scalar_one()
        return WalletStore(db).verify(), int(total), int(debits), int(priced)
    finally:
        db.dispose()


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_sigkill_under_load_keeps_every_debit_once(fake, tmp_data_dir, fresh_database, server) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database, TOLLWAY_WALLET="on")
    gw = spawn(env, server)
    r = gw.request("POST", "/v1/wallet/adjustments", gw.admin, json={"amount_usd": BALANCE_USD, "reason": "seed"})
    assert r.status_code == 201, r.text
    _, secret = gw.mint()  # no cap of its own: the wallet is what binds
    load = Load(gw.url, secret).start()
    try:
        assert wait_for(lambda: len(load.completed) >= 100, 30), gw.log()
        os.killpg(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
        killed_at = len(load.completed)
        restarted = spawn(env, server)
        try:
            assert_all_accounted(fresh_database, load.completed[:killed_at], wait=0)
            problems, total, debits, priced = ledger_state(fresh_database)
            assert problems == [] and debits == priced, (problems, debits, priced)  # replayed events debited too
            assert 0 <= total <= BALANCE_MICROS
            load.url = restarted.url
            assert wait_for(lambda: load.refused >= 100, 60), restarted.log()
            load.join()
            assert_all_accounted(fresh_database, load.completed)
            wallet = restarted.request("GET", "/v1/wallet", restarted.admin).json()
            assert wallet["reserved_micros"] == 0
            problems, total, debits, priced = ledger_state(fresh_database)
            assert problems == [] and debits == priced
            assert total == wallet["balance_micros"] and 0 <= total < 100  # spent out, never below zero
            assert 100 * len(load.completed) <= BALANCE_MICROS - total
        finally:
            stop_gateway(restarted)
    finally:
        load.join()
        if gw.proc.poll() is None:
            os.killpg(gw.proc.pid, signal.SIGKILL)


def _cut_stream(url: str, secret: str, after_chunks: int) -> None:
    body = {**STREAM_SLOW, "messages": [{"role": "user", "content": "x #words=10 #chunk_delay_ms=20"}]}
    with httpx.Client(timeout=10) as client:
        with client.stream(
            "POST", url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {secret}"}
        ) as r:
            for i, _ in enumerate(r.iter_raw()):
                if i >= after_chunks:
                    break  # the client leaves mid-stream


@pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
def test_the_balance_is_the_ledger_after_a_mixed_load_with_streams_cut(fake, tmp_data_dir, fresh_database) -> None:
    env = gateway_env(fake, tmp_data_dir, fresh_database, TOLLWAY_WALLET="on")
    gw = start_gateway(env)
    try:
        r = gw.request("POST", "/v1/wallet/adjustments", gw.admin, json={"amount_usd": "0.01", "reason": "seed"})
        assert r.status_code == 201, r.text
        secrets = [gw.mint(max_spend_usd="0.004")[1] for _ in range(3)]
        load = Load(gw.url, secrets[0], clients=6).start()
        try:
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda i: _cut_stream(gw.url, secrets[1 + i % 2], i % 4), range(30)))
        finally:
            load.join()
        assert wait_for(lambda: gw.request("GET", "/v1/wallet", gw.admin).json()["reserved_micros"] == 0, 15)
        gw.request("GET", "/v1/wallet/ledger", gw.admin)  # (flushes the writer)
        wallet = gw.request("GET", "/v1/wallet", gw.admin).json()
        problems, total, debits, priced = ledger_state(fresh_database)
        assert problems == [] and debits == priced > 0
        assert total == wallet["balance_micros"] >= 0
        spent = sum(gw.key(k["id"])["spent_micros"] for k in gw.request("GET", "/v1/keys", gw.admin).json()["data"])
        assert 10_000 - total == spent  # every micro the keys spent left the wallet, no more
    finally:
        stop_gateway(gw)
