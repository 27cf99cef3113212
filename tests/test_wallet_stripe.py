"""The wallet with Stripe, end to end against a running gateway and the fake Stripe (driven by
stripe-python, tests/fakes/stripe): Checkout top-up -> signed webhook -> balance; replayed,
duplicated, forged and stale webhooks; refunds; auto-recharge once under a burst, and its stop
after 3 failures. Both databases."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway
from tests.fakes.stripe import FakeStripe
from tollway.store import Database
from tollway.wallet.store import WalletStore

pytestmark = pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)
WEBHOOK_SECRET = "whsec_test_tollway_wallet"
PLAIN = {"model": "out-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "x #words=10"}]}


@pytest.fixture
def billing(fake, fake_stripe, tmp_data_dir, fresh_database) -> Iterator[tuple[Gateway, FakeStripe]]:
    env = gateway_env(
        fake, tmp_data_dir, fresh_database,
        TOLLWAY_WALLET="on", TOLLWAY_STRIPE_SECRET_KEY=fake_stripe.api_key,
        TOLLWAY_STRIPE_API_BASE=fake_stripe.url, TOLLWAY_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )  # fmt: skip
    gw = start_gateway(env)
    fake_stripe.add_webhook_endpoint(gw.url + "/v1/stripe/webhook", WEBHOOK_SECRET)
    try:
        yield gw, fake_stripe
    finally:
        stop_gateway(gw)
    db = Database(fresh_database)
    try:
        assert WalletStore(db).verify() == []  # after every test: the balance is the ledger's sum
    finally:
        db.dispose()


def wallet(gw: Gateway) -> dict[str, Any]:
    r = gw.request("GET", "/v1/wallet", gw.admin)
    assert r.status_code == 200, r.text
    return r.json()


def ledger(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    r = gw.request("GET", "/v1/wallet/ledger", gw.admin, params={"kind": kind, "limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def top_up(gw: Gateway, stripe: FakeStripe, usd: Any) -> dict[str, Any]:
    """Checkout, paid: the session (its webhooks delivered)."""
    r = gw.request(
        "POST", "/v1/wallet/topups", gw.admin,
        json={"amount_usd": usd, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["url"].startswith("http") and r.json()["amount_micros"] == int(float(usd) * 1_000_000)
    session = stripe.complete_checkout(r.json()["checkout_session_id"])
    assert stripe.flush()
    return session


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_checkout_top_up_credits_once_and_refunds_take_it_out(billing, fresh_database) -> None:
    gw, stripe = billing
    _, secret = gw.mint()
    assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).json()["error"]["code"] == (
        "insufficient_balance"
    )
    session = top_up(gw, stripe, "5.00")
    w = wallet(gw)
    assert w["balance_micros"] == 5_000_000
    assert w["last_topups"][0]["stripe_object_id"] == session["payment_intent"]
    # Two events of the one payment (checkout.session.completed, payment_intent.succeeded): one credit.
    assert len(ledger(gw, "topup")) == 1
    statuses = {(d["type"], d["status"]) for d in stripe.deliveries()}
    assert ("checkout.session.completed", 200) in statuses and ("payment_intent.succeeded", 200) in statuses
    assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200

    # Replayed, and delivered twice at once: nothing more.
    completed = stripe.last_event("checkout.session.completed")
    succeeded = stripe.last_event("payment_intent.succeeded")
    for event in (completed, succeeded):
        assert all(d["status"] == 200 for d in stripe.replay(event["id"]))
        assert all(d["status"] == 200 for d in stripe.duplicate(event["id"], copies=4))
    # Forged (tampered amounts under the old signature, another secret, no signature) and stale: 400.
    for mode in ("tampered", "wrong_secret", "unsigned"):
        assert [d["status"] for d in stripe.forged(completed["id"], mode)] == [400]
    assert [d["status"] for d in stripe.stale(completed["id"], age_s=600)] == [400]
    assert len(ledger(gw, "topup")) == 1
    assert wallet(gw)["balance_micros"] == 5_000_000 - 100

    # A partial refund, then the rest: each takes out what was not taken out yet.
    stripe.refund(payment_intent=session["payment_intent"], amount=200)
    assert stripe.flush()
    assert wait_until(lambda: wallet(gw)["balance_micros"] == 3_000_000 - 100)
    refunded = stripe.last_event("charge.refunded")
    assert all(d["status"] == 200 for d in stripe.replay(refunded["id"]))
    stripe.refund(payment_intent=session["payment_intent"])
    assert stripe.flush()
    assert wait_until(lambda: wallet(gw)["balance_micros"] == -100)
    assert [e["amount_micros"] for e in ledger(gw, "refund")] == [-2_000_000, -3_000_000]
    r = gw.request("POST", "/v1/chat/completions", secret, json=PLAIN)
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_balance"


def test_bad_top_ups_and_webhooks_change_nothing(billing) -> None:
    gw, stripe = billing
    for body in (
        {"amount_usd": 0.49, "success_url": "https://a.example", "cancel_url": "https://a.example"},
        {"amount_usd": "1.001", "success_url": "https://a.example", "cancel_url": "https://a.example"},
        {"amount_usd": 10**7, "success_url": "https://a.example", "cancel_url": "https://a.example"},
        {"amount_usd": 5, "success_url": "ftp://a.example", "cancel_url": "https://a.example"},
        {"amount_usd": 5, "success_url": "https://a.example"},
        {"amount_usd": 5, "success_url": "https://a.example", "cancel_url": "https://a.example", "x": 1},
    ):
        r = gw.request("POST", "/v1/wallet/topups", gw.admin, json=body)
        assert r.status_code == 400, (body, r.text)
    assert stripe.requests("/v1/checkout/sessions") == []
    for payload, headers in (
        (b"{}", {}),
        (b"not json", {"stripe-signature": "t=1,v1=00"}),
        (b'{"id": "evt_1", "type": "charge.refunded"}', {"stripe-signature": "t=1,v1=deadbeef"}),
    ):
        r = httpx.post(gw.url + "/v1/stripe/webhook", content=payload, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text
    _, standard = gw.mint()
    r = gw.request("POST", "/v1/wallet/topups", standard, json={"amount_usd": 5})
    assert r.status_code == 403
    assert wallet(gw)["balance_micros"] == 0 and ledger(gw, "topup") == []


def _burst(gw: Gateway, secret: str, n: int) -> list[int]:
    with ThreadPoolExecutor(16) as pool:
        return list(
            pool.map(lambda _: gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code, range(n))
        )


def _recharges(stripe: FakeStripe) -> list[dict[str, Any]]:
    return [r for r in stripe.requests("/v1/payment_intents") if r["method"] == "POST" and not r.get("replayed")]


def test_auto_recharge_fires_once_under_a_burst(billing) -> None:
    gw, stripe = billing
    top_up(gw, stripe, "1.00")
    assert wallet(gw)["auto_recharge"] is None
    # Just above the threshold: the burst's first calls cross it, all at about the same time.
    r = gw.request("POST", "/v1/wallet/adjustments", gw.admin, json={"amount_usd": "-0.4995", "reason": "test"})
    assert r.status_code == 201
    r = gw.request(
        "PUT", "/v1/wallet/auto_recharge", gw.admin,
        json={"threshold_usd": "0.5", "recharge_to_usd": "2", "monthly_max_usd": "10"},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["enabled"] and r.json()["payment_method_saved"], r.text
    _, secret = gw.mint()
    assert set(_burst(gw, secret, 40)) == {200}
    assert wait_until(lambda: len(ledger(gw, "topup")) == 2), ledger(gw, "topup")
    time.sleep(0.5)  # (no second charge comes late)
    charges = _recharges(stripe)
    assert len(charges) == 1, charges
    params = charges[0]["params"]
    assert params["off_session"] in (True, "true") and params["confirm"] in (True, "true")
    assert params["metadata"]["tollway_kind"] == "auto_recharge"
    w = wallet(gw)
    # Charged up to $2 from the balance it saw (whole cents, rounded up), and then the burst went on.
    assert 2_000_000 - 40 * 100 <= w["balance_micros"] <= 2_010_000
    assert w["auto_recharge"]["consecutive_failures"] == 0
    # The payment_intent.succeeded webhook of the recharge credits nothing more.
    assert stripe.flush() and len(ledger(gw, "topup")) == 2


def test_auto_recharge_stops_after_three_failures_until_saved_again(billing) -> None:
    gw, stripe = billing
    top_up(gw, stripe, "1.00")
    settings = {"threshold_usd": "0.9999", "recharge_to_usd": "2", "monthly_max_usd": "10"}
    stripe.decline_next(count=3, decline_code="insufficient_funds")
    r = gw.request("PUT", "/v1/wallet/auto_recharge", gw.admin, json=settings)
    assert r.status_code == 200
    _, secret = gw.mint()
    for _ in range(8):  # each settled call below the threshold tries again, until the third failure
        assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200
        wait_until(lambda: len(_recharges(stripe)) >= 3, 0.5)
    assert wait_until(lambda: wallet(gw)["auto_recharge"]["consecutive_failures"] == 3)
    assert len(_recharges(stripe)) == 3
    for _ in range(3):
        assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200
    time.sleep(0.5)
    assert len(_recharges(stripe)) == 3 and len(ledger(gw, "topup")) == 1  # stopped
    # Saved again: the count resets and the next recharge (the card now works) goes through.
    r = gw.request("PUT", "/v1/wallet/auto_recharge", gw.admin, json=settings)
    assert r.status_code == 200 and r.json()["consecutive_failures"] == 0
    assert wait_until(lambda: len(ledger(gw, "topup")) == 2)
    assert len(_recharges(stripe)) == 4
    assert wallet(gw)["balance_micros"] >= 2_000_000 - 200
    r = gw.request("DELETE", "/v1/wallet/auto_recharge", gw.admin)
    assert r.status_code == 200 and wallet(gw)["auto_recharge"] is None


def test_the_monthly_maximum_caps_recharges(billing) -> None:
    gw, stripe = billing
    top_up(gw, stripe, "1.00")
    r = gw.request(
        "PUT", "/v1/wallet/auto_recharge", gw.admin,
        json={"threshold_usd": "0.9999", "recharge_to_usd": "1.5", "monthly_max_usd": "0.5"},
    )  # fmt: skip
    assert r.status_code == 200
    _, secret = gw.mint()
    for _ in range(3):
        assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200
    time.sleep(0.5)
    assert _recharges(stripe) == []  # $0.51 to reach $1.50 is more than the month's $0.50
    assert len(ledger(gw, "topup")) == 1
