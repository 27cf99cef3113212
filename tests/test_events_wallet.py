"""The wallet's events, end to end (gateway, fake Stripe, a local receiver, verified with the
``standardwebhooks`` package): wallet.topup.succeeded once per payment, wallet.low_balance once
per crossing of the threshold, wallet.topup.failed for a declined auto-recharge. Both databases."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from tests.conftest import DATABASES, Gateway, gateway_env, start_gateway, stop_gateway
from tests.events_support import EVENTS_ENV, endpoint, verified
from tests.fakes.receiver import Receiver
from tests.fakes.stripe import FakeStripe
from tests.test_wallet_stripe import PLAIN, WEBHOOK_SECRET, top_up, wait_until, wallet

pytestmark = pytest.mark.parametrize("fresh_database", DATABASES, indirect=True)


@pytest.fixture
def billing(fake, fake_stripe, tmp_data_dir, fresh_database) -> Iterator[tuple[Gateway, FakeStripe]]:
    env = gateway_env(
        fake, tmp_data_dir, fresh_database, **EVENTS_ENV,
        TOLLWAY_WALLET="on", TOLLWAY_STRIPE_SECRET_KEY=fake_stripe.api_key,
        TOLLWAY_STRIPE_API_BASE=fake_stripe.url, TOLLWAY_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )  # fmt: skip
    gw = start_gateway(env)
    fake_stripe.add_webhook_endpoint(gw.url + "/v1/stripe/webhook", WEBHOOK_SECRET)
    try:
        yield gw, fake_stripe
    finally:
        stop_gateway(gw)


def test_wallet_events(billing) -> None:
    gw, stripe = billing
    receiver = Receiver().start()
    try:
        made = endpoint(
            gw, receiver.url + "/wallet", ["wallet.topup.succeeded", "wallet.topup.failed", "wallet.low_balance"]
        )
        top_up(gw, stripe, "1.00")
        [got] = receiver.wait_for("/wallet", 1)
        first = verified(made["secret"], got)
        assert first["type"] == "wallet.topup.succeeded"
        assert first["data"]["amount_micros"] == 1_000_000 and first["data"]["entry_id"].startswith("wle_")

        # Auto-recharge just under the balance: the first call crosses it; the card declines once.
        stripe.decline_next(count=1, decline_code="insufficient_funds")
        settings = {"threshold_usd": "0.99995", "recharge_to_usd": "2", "monthly_max_usd": "10"}
        assert gw.request("PUT", "/v1/wallet/auto_recharge", gw.admin, json=settings).status_code == 200
        _, secret = gw.mint()
        assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200
        assert wait_until(lambda: wallet(gw)["auto_recharge"]["consecutive_failures"] == 1)
        assert gw.request("POST", "/v1/chat/completions", secret, json=PLAIN).status_code == 200  # recharged now
        assert wait_until(lambda: wallet(gw)["balance_micros"] >= 1_999_000)
        got = receiver.wait_for("/wallet", 4)
        time.sleep(0.5)
        payloads = [verified(made["secret"], g) for g in receiver.at("/wallet")]
        types = [p["type"] for p in payloads]
        assert sorted(types[1:]) == ["wallet.low_balance", "wallet.topup.failed", "wallet.topup.succeeded"], types
        data: dict[str, Any] = {p["type"]: p["data"] for p in payloads[1:]}
        low = data["wallet.low_balance"]
        assert low["threshold_micros"] == 999_950 and low["balance_micros"] == 999_900
        failed = data["wallet.topup.failed"]
        assert failed["kind"] == "auto_recharge" and failed["consecutive_failures"] == 1
        assert "auto-recharge" in data["wallet.topup.succeeded"]["cause"]
    finally:
        receiver.stop()
