"""SIGKILL under load with the wallet on: after the restart every debit is there exactly once,
the balance is the sum of the ledger and never went below zero (both servers and databases)."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import func, select

from tests.conftest import DATABASES, gateway_env, stop_gateway
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
