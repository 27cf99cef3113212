"""Usage into the app's Stripe (keys with metadata.stripe_customer_id), against a running gateway
and the fake Stripe: invoice items idempotent per key and period (route and CLI), meter events
deduplicated on a retried or cut-short export, the continuous export. Both databases."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
import stripe as stripe_python
from sqlalchemy import update

from tests.conftest import DATABASES, REPO, Gateway, gateway_env, start_gateway, stop_gateway
from tollway.store import Database, billing_cursors

pytestmark = pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
# out-gpt: 1,000 output tokens at $10/Mtok = 10,000 micros = 1 cent a call.
CENT_CALL = {"model": "out-gpt", "max_tokens": 1000, "messages": [{"role": "user", "content": "x #words=1000"}]}


def _env(fake, fake_stripe, tmp_data_dir, fresh_database, **extra: str) -> dict[str, str]:
    return gateway_env(
        fake, tmp_data_dir, fresh_database,
        TOLLWAY_STRIPE_SECRET_KEY=fake_stripe.api_key, TOLLWAY_STRIPE_API_BASE=fake_stripe.url, **extra,
    )  # fmt: skip


@pytest.fixture
def customers(fake_stripe) -> dict[str, str]:
    client = stripe_python.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.url})
    return {name: client.v1.customers.create(params={"name": name}).id for name in ("alice", "bob")}


def _spend(gw: Gateway, customers: dict[str, str]) -> dict[str, str]:
    """alice 3 calls, bob 2, a key without a customer 1: the key ids."""
    keys = {}
    for name, calls in (("alice", 3), ("bob", 2), ("nobody", 1)):
        metadata = {"stripe_customer_id": customers[name]} if name in customers else {"team": "x"}
        key_id, secret = gw.mint(name=name, metadata=metadata)
        keys[name] = key_id
        for _ in range(calls):
            assert gw.request("POST", "/v1/chat/completions", secret, json=CENT_CALL).status_code == 200
    return keys


def _invoice(gw: Gateway, **body: Any):
    return gw.request("POST", "/v1/billing/invoice-items", gw.admin, json=body)


def test_invoice_items_once_per_key_and_period(fake, fake_stripe, tmp_data_dir, fresh_database, customers) -> None:
    env = _env(fake, fake_stripe, tmp_data_dir, fresh_database)
    gw = start_gateway(env)
    try:
        start = int(time.time() * 1000) - 60_000
        keys = _spend(gw, customers)
        end = int(time.time() * 1000) + 60_000
        r = _invoice(gw, from_ms=start, to_ms=end, margin_percent=20)
        assert r.status_code == 200, r.text
        items = {i["key_id"]: i for i in r.json()["data"]}
        assert set(items) == {keys["alice"], keys["bob"]}
        assert (items[keys["alice"]]["amount_cents"], items[keys["alice"]]["requests"]) == (4, 3)  # 3.6 -> 4
        assert (items[keys["bob"]]["amount_cents"], items[keys["bob"]]["requests"]) == (2, 2)  # 2.4 -> 2
        assert all(i["created"] for i in items.values())
        made = fake_stripe.object(items[keys["alice"]]["invoice_item_id"])
        assert made["customer"] == customers["alice"] and made["amount"] == 4 and "3 requests" in made["description"]
        assert made["period"]["start"] == start // 1000 and made["metadata"]["tollway_key_id"] == keys["alice"]
        # Again (the route, then the CLI): nothing new at Stripe.
        again = _invoice(gw, from_ms=start, to_ms=end, margin_percent=20).json()["data"]
        assert [i["created"] for i in again] == [False, False]
        assert {i["invoice_item_id"] for i in again} == {i["invoice_item_id"] for i in items.values()}
        cli = subprocess.run(
            [sys.executable, "-m", "tollway", "billing", "invoice-items", "--from", str(start), "--to", str(end),
             "--margin-percent", "20"],
            env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0 and "0 invoice item(s) created, 2 already there" in cli.stdout, (
            cli.stdout + cli.stderr
        )
        posts = [q for q in fake_stripe.requests("/v1/invoiceitems") if q["method"] == "POST"]
        assert len(posts) == 2
        # Another period is another item; a bad period or margin is a 400.
        assert [i["created"] for i in _invoice(gw, from_ms=start, to_ms=end + 1).json()["data"]] == [True, True]
        for body in ({"from_ms": end, "to_ms": start}, {"from_ms": 0}, {"from_ms": 0, "to_ms": 1, "margin_percent": -1},
                     {"from_ms": "0", "to_ms": 1}, {"from_ms": 0, "to_ms": 1, "x": 1}):  # fmt: skip
            assert _invoice(gw, **body).status_code == 400, body
        _, standard = gw.mint()
        assert (
            gw.request("POST", "/v1/billing/invoice-items", standard, json={"from_ms": 0, "to_ms": 1}).status_code
            == 403
        )
    finally:
        stop_gateway(gw)


def test_meter_events_are_never_counted_twice(fake, fake_stripe, tmp_data_dir, fresh_database, customers) -> None:
    gw = start_gateway(_env(fake, fake_stripe, tmp_data_dir, fresh_database))
    try:
        keys = _spend(gw, customers)
        # The first export is cut by a Stripe error halfway: 502, and what was sent stays sent.
        fake_stripe.fail_next("/v2/billing/meter_events", count=1, status=500)
        fake_stripe.fail_next("/v2/billing/meter_events", count=1, status=500)  # (stripe-python retries once)
        r = gw.request("POST", "/v1/billing/meter-events", gw.admin)
        assert r.status_code in (200, 502), r.text
        r = gw.request("POST", "/v1/billing/meter-events", gw.admin)
        assert r.status_code == 200, r.text
        totals = fake_stripe.meter_totals("tollway_usage")
        assert totals == {customers["alice"]: 30_000, customers["bob"]: 20_000}
        events = fake_stripe.meter_events("tollway_usage")
        assert len(events) == 5 and len({e["identifier"] for e in events}) == 5
        assert gw.request("POST", "/v1/billing/meter-events", gw.admin).json()["sent"] == 0
        # A run that died before saving its cursor sends it all again: Stripe keeps one per identifier.
        db = Database(gw.database_url)
        try:
            with db.engine.begin() as conn:
                conn.execute(update(billing_cursors).values(last_usage_id=0))
        finally:
            db.dispose()
        r = gw.request("POST", "/v1/billing/meter-events", gw.admin).json()
        assert (r["sent"], r["already"]) == (0, 5), r
        assert fake_stripe.meter_totals("tollway_usage") == totals
        assert keys["nobody"] not in {e["identifier"] for e in events}
    finally:
        stop_gateway(gw)


def test_meter_events_are_exported_continuously(fake, fake_stripe, tmp_data_dir, fresh_database, customers) -> None:
    env = _env(fake, fake_stripe, tmp_data_dir, fresh_database, TOLLWAY_STRIPE_METER_EXPORT_INTERVAL="1")
    gw = start_gateway(env)
    try:
        _spend(gw, customers)
        deadline = time.monotonic() + 15
        while len(fake_stripe.meter_events("tollway_usage")) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake_stripe.meter_totals("tollway_usage") == {customers["alice"]: 30_000, customers["bob"]: 20_000}
    finally:
        stop_gateway(gw)


def test_billing_without_stripe_is_a_clear_error(fake, tmp_data_dir, fresh_database) -> None:
    gw = start_gateway(gateway_env(fake, tmp_data_dir, fresh_database))
    try:
        for path in ("/v1/billing/meter-events", "/v1/billing/invoice-items"):
            r = gw.request("POST", path, gw.admin, json={"from_ms": 0, "to_ms": 1})
            assert r.status_code == 400 and r.json()["error"]["code"] == "stripe_not_configured", r.text
    finally:
        stop_gateway(gw)
