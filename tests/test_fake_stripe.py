"""The fake Stripe (tests/fakes/stripe) driven by stripe-python itself: if the official client
accepts every request and response, raises the right error classes and verifies the webhooks
with its own ``construct_event``, the fake speaks Stripe's wire format."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import stripe

from tests.fakes.stripe import FakeStripe, StripeError, start_fake_stripe
from tests.fakes.webhooks import WebhookServer, start_webhook_server

SECRET = "whsec_tollway_fake_test_secret"
LINE = {"quantity": 1, "price_data": {"currency": "usd", "unit_amount": 2500, "product_data": {"name": "Top-up"}}}


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with start_fake_stripe() as server:
        yield server


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url, "meter_events": fake.url})


@pytest.fixture
def hooks(fake: FakeStripe) -> Iterator[WebhookServer]:
    with start_webhook_server() as server:
        fake.add_webhook_endpoint(server.url("/stripe"), SECRET)
        yield server


def verified(record: dict[str, Any], secret: str = SECRET, tolerance: int = 300) -> stripe.Event:
    return stripe.Webhook.construct_event(record["body"], record["headers"].get("stripe-signature"), secret, tolerance)


def paid_session(client: stripe.StripeClient, fake: FakeStripe, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {"mode": "payment", "line_items": [LINE], "success_url": "https://app.test/ok", **extra}
    session = client.v1.checkout.sessions.create(params)
    fake.complete_checkout(session.id)
    return client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})


def raw(fake: FakeStripe, method: str, path: str, key: str | None = "default", **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", {})
    if key is not None:
        headers["authorization"] = f"Bearer {fake.api_key if key == 'default' else key}"
    return httpx.request(method, fake.url + path, headers=headers, **kw)


def test_customers_create_retrieve_update(client: stripe.StripeClient, fake: FakeStripe) -> None:
    cus = client.v1.customers.create({"email": "a@app.test", "name": "A", "metadata": {"account": "acc_1", "x": "1"}})
    assert cus.id.startswith("cus_") and cus.object == "customer" and cus.livemode is False
    got = client.v1.customers.retrieve(cus.id)
    assert got.email == "a@app.test" and got.metadata.to_dict() == {"account": "acc_1", "x": "1"}
    upd = client.v1.customers.update(cus.id, {"metadata": {"x": "", "plan": "pro"}})
    assert upd.metadata.to_dict() == {"account": "acc_1", "plan": "pro"}  # "" unsets a key
    with pytest.raises(stripe.InvalidRequestError) as bad:  # refused whole: nothing changes
        client.v1.customers.update(cus.id, {"name": "B", "nonsense": "1"})  # type: ignore[typeddict-unknown-key]
    assert bad.value.code == "parameter_unknown" and bad.value.param == "nonsense" and bad.value.http_status == 400
    assert client.v1.customers.retrieve(cus.id).name == "A"
    assert [e["type"] for e in fake.events()] == ["customer.created", "customer.updated"]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_missing")
    assert (missing.value.http_status, missing.value.code, missing.value.param) == (404, "resource_missing", "id")


def test_auth_and_error_shape(client: stripe.StripeClient, fake: FakeStripe) -> None:
    with pytest.raises(stripe.AuthenticationError) as wrong:
        stripe.StripeClient("sk_test_wrong_key_000", base_addresses={"api": fake.url}).v1.customers.list()
    assert wrong.value.http_status == 401
    assert wrong.value.json_body["error"]["type"] == "invalid_request_error"  # Stripe's type for a bad key
    assert raw(fake, "GET", "/v1/customers", key=None).status_code == 401
    assert raw(fake, "GET", "/v1/customers", key="sk_live_real").status_code == 401
    basic = httpx.get(fake.url + "/v1/customers", auth=(fake.api_key, ""))  # curl -u sk_test_...:
    assert basic.status_code == 200 and basic.json()["object"] == "list"
    r = raw(fake, "POST", "/v1/payment_intents", data={"amount": "12x", "currency": "usd"})
    err = r.json()["error"]
    assert r.status_code == 400 and r.headers["request-id"].startswith("req_")
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "parameter_invalid_integer", "amount")
    assert err["message"] == "Invalid integer: 12x"
    r = raw(fake, "POST", "/v1/refunds", data={"charge": "ch_nope"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "No such charge: 'ch_nope'"
    r = raw(fake, "GET", "/v1/nothing/here")
    assert r.status_code == 404 and "Unrecognized request URL (GET: /v1/nothing/here)" in r.json()["error"]["message"]
    assert raw(fake, "POST", "/v1/customers", json={"email": "x"}).status_code == 400  # v1 takes forms only


def test_bracket_encoding_on_the_wire(client: stripe.StripeClient, fake: FakeStripe) -> None:
    cus = client.v1.customers.create({"email": "b@app.test"})
    body = (
        "mode=payment&success_url=https://app.test/ok&customer=" + cus.id + "&metadata[topup]=t1"
        "&line_items[0][quantity]=2&line_items[0][price_data][currency]=usd"
        "&line_items[0][price_data][unit_amount]=700&line_items[0][price_data][product_data][name]=Credit"
        "&payment_intent_data[setup_future_usage]=off_session&expand[]=customer&expand[]=line_items"
    )
    r = raw(
        fake,
        "POST",
        "/v1/checkout/sessions",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    s = r.json()
    assert r.status_code == 200 and s["amount_total"] == 1400 and s["metadata"] == {"topup": "t1"}
    assert s["customer"]["id"] == cus.id and s["line_items"]["data"][0]["quantity"] == 2
    # what stripe-python itself sent for a nested create is decoded the same way
    client.v1.checkout.sessions.create({"mode": "payment", "line_items": [LINE, LINE], "metadata": {"k": "v"}})
    sent = fake.requests("/v1/checkout/sessions")[-1]
    assert sent["params"]["line_items"][1]["price_data"]["unit_amount"] == "2500" and sent["params"]["metadata"] == {
        "k": "v"
    }
    assert sent["stripe_version"] == stripe._api_version._ApiVersion.CURRENT and sent["idempotency_key"]


def test_idempotency(client: stripe.StripeClient, fake: FakeStripe) -> None:
    a = client.v1.customers.create({"email": "i@app.test"}, {"idempotency_key": "key-1"})
    b = client.v1.customers.create({"email": "i@app.test"}, {"idempotency_key": "key-1"})
    assert a.id == b.id and len(fake.events("customer.created")) == 1
    assert b.last_response.headers["idempotent-replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.customers.create({"email": "other@app.test"}, {"idempotency_key": "key-1"})
    assert mismatch.value.http_status == 400 and "key-1" in str(mismatch.value)
    # a request refused by validation stores nothing: the same key may then carry good params
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create({"amount": 10, "currency": "usd"}, {"idempotency_key": "key-2"})
    assert (
        client.v1.payment_intents.create({"amount": 900, "currency": "usd"}, {"idempotency_key": "key-2"}).amount == 900
    )
    # a declined charge ran: the same key replays the same 402, no second attempt
    pi = paid_session(
        client, fake, customer_creation="always", payment_intent_data={"setup_future_usage": "off_session"}
    ).payment_intent
    fake.decline_next(1)
    params: dict[str, Any] = dict(
        amount=1000,
        currency="usd",
        customer=pi.customer,
        payment_method=pi.payment_method,
        off_session=True,
        confirm=True,
    )
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            client.v1.payment_intents.create(params, {"idempotency_key": "recharge-1"})  # type: ignore[arg-type]
        errors.append(declined.value.json_body["error"]["payment_intent"]["id"])
    assert errors[0] == errors[1] and len(fake.events("payment_intent.payment_failed")) == 1


def test_checkout_topup_saves_the_card(client: stripe.StripeClient, fake: FakeStripe, hooks: WebhookServer) -> None:
    cus = client.v1.customers.create({"email": "buyer@app.test", "metadata": {"account": "acc_9"}})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "customer": cus.id,
            "client_reference_id": "acc_9",
            "line_items": [LINE],
            "success_url": "https://app.test/ok",
            "cancel_url": "https://app.test/cancel",
            "metadata": {"topup_id": "tp_1"},
            "payment_intent_data": {"setup_future_usage": "off_session", "metadata": {"topup_id": "tp_1"}},
        }
    )
    assert session.id.startswith("cs_test_") and session.status == "open" and session.payment_status == "unpaid"
    assert session.url.startswith(fake.url + "/pay/") and httpx.get(session.url).status_code == 200
    done = fake.complete_checkout(session.id)
    assert done["status"] == "complete" and done["payment_status"] == "paid"
    got = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent.latest_charge"]})
    pi = got.payment_intent
    assert (
        pi.status == "succeeded" and pi.amount == 2500 and pi.customer == cus.id and pi.metadata["topup_id"] == "tp_1"
    )
    assert pi.latest_charge.paid and pi.latest_charge.amount_captured == 2500
    methods = client.v1.customers.payment_methods.list(cus.id)
    assert [m.id for m in methods.data] == [pi.payment_method] and methods.data[0].card.last4 == "4242"
    types = [e["type"] for e in fake.events()][1:]
    assert types == [
        "payment_method.attached",
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    hooks.wait_for("/stripe", len(types) + 1)
    events = [verified(r) for r in hooks.requests("/stripe")]
    completed = events[-1]
    assert completed.type == "checkout.session.completed" and completed.id == fake.last_event(completed.type)["id"]
    obj = completed.data.object
    assert obj.client_reference_id == "acc_9" and obj.metadata["topup_id"] == "tp_1" and obj.amount_total == 2500
    assert completed.api_version == fake.event(completed.id)["api_version"] and completed.livemode is False
    assert hooks.requests("/stripe")[-1]["headers"]["user-agent"].startswith("Stripe/1.0")


def test_checkout_variants_and_validation(client: stripe.StripeClient, fake: FakeStripe) -> None:
    plain = paid_session(client, fake, customer_creation="if_required")  # one-off: no customer, no saved card
    assert (
        plain.customer is None
        and client.v1.payment_methods.retrieve(plain.payment_intent.payment_method).customer is None
    )
    made = paid_session(client, fake, customer_creation="always", customer_email="new@app.test")
    assert client.v1.customers.retrieve(made.customer).email == "new@app.test"
    open_one = client.v1.checkout.sessions.create({"mode": "payment", "line_items": [LINE]})
    assert client.v1.checkout.sessions.expire(open_one.id).status == "expired"
    with pytest.raises(StripeError, match="is expired, not open"):  # a control refuses in Stripe's shape too
        fake.complete_checkout(open_one.id)
    small = dict(LINE, price_data=dict(LINE["price_data"], unit_amount=20))
    cases = [
        ({"mode": "payment", "line_items": [small]}, "amount_too_small"),
        ({"mode": "payment"}, "parameter_missing"),
        ({"mode": "payment", "line_items": [LINE], "customer": "cus_x"}, "resource_missing"),
        ({"mode": "payment", "line_items": [{"quantity": 1, "price": "price_123"}]}, "resource_missing"),
        ({"mode": "payment", "line_items": [{"quantity": 1}]}, "parameter_missing"),
    ]
    for params, code in cases:
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.checkout.sessions.create(params)  # type: ignore[arg-type]
        assert err.value.code == code, params
    cus = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError, match="customer_creation"):
        client.v1.checkout.sessions.create(
            {"mode": "payment", "line_items": [LINE], "customer": cus.id, "customer_creation": "always"}
        )


def test_off_session_recharge_and_declines(client: stripe.StripeClient, fake: FakeStripe) -> None:
    pi0 = paid_session(
        client, fake, customer_creation="always", payment_intent_data={"setup_future_usage": "off_session"}
    ).payment_intent
    charge = dict(
        amount=2000,
        currency="usd",
        customer=pi0.customer,
        payment_method=pi0.payment_method,
        off_session=True,
        confirm=True,
    )
    fake.decline_next(2, decline_code="insufficient_funds")
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            client.v1.payment_intents.create(dict(charge, metadata={"reason": "auto_recharge"}))  # type: ignore[arg-type]
        e = declined.value
        assert (e.http_status, e.code, e.error.type, e.error.decline_code) == (
            402,
            "card_declined",
            "card_error",
            "insufficient_funds",
        )
        failed = client.v1.payment_intents.retrieve(e.error.payment_intent.id)
        assert failed.status == "requires_payment_method" and failed.last_payment_error.code == "card_declined"
        assert failed.metadata["reason"] == "auto_recharge"
    ok = client.v1.payment_intents.create(charge)  # type: ignore[arg-type]
    assert ok.status == "succeeded" and ok.amount_received == 2000 and ok.id.startswith("pi_")
    assert len(fake.events("payment_intent.payment_failed")) == 2 and len(fake.events("charge.failed")) == 2
    with pytest.raises(stripe.InvalidRequestError, match="off_session"):
        client.v1.payment_intents.create(dict(charge, confirm=False))  # type: ignore[arg-type]
    other = client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError, match="different Customer"):
        client.v1.payment_intents.create(dict(charge, customer=other.id))  # type: ignore[arg-type]


def test_refunds(client: stripe.StripeClient, fake: FakeStripe, hooks: WebhookServer) -> None:
    pi = paid_session(client, fake).payment_intent
    part = client.v1.refunds.create({"payment_intent": pi.id, "amount": 1000, "reason": "requested_by_customer"})
    assert part.id.startswith("re_") and part.status == "succeeded" and part.charge == pi.latest_charge
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create({"charge": pi.latest_charge, "amount": 1600})
    assert too_much.value.code == "amount_too_large"
    rest = fake.refund(charge=pi.latest_charge)  # a Dashboard refund of the rest
    assert rest["amount"] == 1500
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create({"payment_intent": pi.id})
    assert again.value.code == "charge_already_refunded"
    hooks.wait_for("/stripe", len(fake.events()))
    refunded = [verified(r) for r in hooks.requests("/stripe") if json.loads(r["body"])["type"] == "charge.refunded"]
    assert [ev.data.object.amount_refunded for ev in refunded] == [1000, 2500]
    assert refunded[-1].data.object.refunded is True and refunded[-1].data.previous_attributes.amount_refunded == 1000
    assert [r.amount for r in refunded[-1].data.object.refunds.data] == [1500, 1000]
    assert [r.id for r in client.v1.refunds.list({"payment_intent": pi.id}).data] == [rest["id"], part.id]
    assert len(fake.events("refund.created")) == 2


def test_invoice_items(client: stripe.StripeClient, fake: FakeStripe) -> None:
    cus = client.v1.customers.create({})
    made = [
        client.v1.invoice_items.create(
            {"customer": cus.id, "amount": 100 * i, "currency": "usd", "description": f"{i} requests",
             "metadata": {"period": "2026-11"}, "period": {"start": 1_700_000_000, "end": 1_702_000_000}},
            {"idempotency_key": f"ii-{i}"},
        )
        for i in range(1, 6)
    ]  # fmt: skip
    assert made[0].id.startswith("ii_") and made[0].period.end == 1_702_000_000 and made[0].invoice is None
    page = client.v1.invoice_items.list({"customer": cus.id, "limit": 2})
    assert len(page.data) == 2 and page.has_more and page.data[0].id == made[-1].id  # newest first
    assert [i.id for i in page.auto_paging_iter()] == [m.id for m in reversed(made)]
    credit = client.v1.invoice_items.create({"customer": cus.id, "amount": -50, "currency": "usd"})
    assert credit.amount == -50 and client.v1.invoice_items.retrieve(credit.id).customer == cus.id
    for params, code in [
        ({"customer": cus.id, "amount": 1}, "parameter_missing"),
        ({"customer": "cus_gone", "amount": 1, "currency": "usd"}, "resource_missing"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.invoice_items.create(params)  # type: ignore[arg-type]
        assert err.value.code == code
    with pytest.raises(stripe.InvalidRequestError, match="period end"):
        client.v1.invoice_items.create(
            {"customer": cus.id, "amount": 1, "currency": "usd", "period": {"start": 5, "end": 4}}
        )
    assert len(fake.events("invoiceitem.created")) == 6


def test_meters_and_meter_events(client: stripe.StripeClient, fake: FakeStripe) -> None:
    meter = client.v1.billing.meters.create(
        {"display_name": "Tokens", "event_name": "tollway_usage", "default_aggregation": {"formula": "sum"},
         "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"}, "value_settings": {"event_payload_key": "value"}}
    )  # fmt: skip
    assert meter.id.startswith("mtr_") and [m.id for m in client.v1.billing.meters.list().data] == [meter.id]
    with pytest.raises(stripe.InvalidRequestError, match="already exists"):
        client.v1.billing.meters.create(
            {"display_name": "x", "event_name": "tollway_usage", "default_aggregation": {"formula": "sum"}}
        )
    a, b = client.v1.customers.create({}), client.v1.customers.create({})
    ev = client.v2.billing.meter_events.create(
        {"event_name": "tollway_usage", "identifier": "use_1", "payload": {"stripe_customer_id": a.id, "value": "250"}}
    )
    assert ev.object == "v2.billing.meter_event" and ev.identifier == "use_1" and ev.timestamp.endswith("Z")
    yesterday = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 86400))
    client.v2.billing.meter_events.create(
        {
            "event_name": "tollway_usage",
            "identifier": "use_2",
            "timestamp": yesterday,
            "payload": {"stripe_customer_id": b.id, "value": "7"},
        }
    )
    client.v1.billing.meter_events.create(
        {"event_name": "tollway_usage", "identifier": "use_3", "payload": {"stripe_customer_id": a.id, "value": "50"}}
    )
    with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier use_1"):  # a retried export
        client.v2.billing.meter_events.create(
            {
                "event_name": "tollway_usage",
                "identifier": "use_1",
                "payload": {"stripe_customer_id": a.id, "value": "250"},
            }
        )
    with pytest.raises(stripe.InvalidRequestError, match="already exists"):
        client.v1.billing.meter_events.create(
            {
                "event_name": "tollway_usage",
                "identifier": "use_2",
                "payload": {"stripe_customer_id": b.id, "value": "7"},
            }
        )
    fake.set_meter_duplicates("accept")  # the other behaviour a client should survive: 200, counted once
    again = client.v2.billing.meter_events.create(
        {"event_name": "tollway_usage", "identifier": "use_1", "payload": {"stripe_customer_id": a.id, "value": "250"}}
    )
    assert again.identifier == "use_1" and again.created == ev.created
    assert fake.meter_totals("tollway_usage") == {a.id: 300, b.id: 7}
    assert [(m["identifier"], m["via"]) for m in fake.meter_events(customer=a.id)] == [("use_1", "v2"), ("use_3", "v1")]
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 40 * 86400))
    for payload, ts in [
        ({"stripe_customer_id": a.id, "value": "1.5"}, None),
        ({"value": "1"}, None),
        ({"stripe_customer_id": a.id, "value": "1"}, old),
    ]:
        with pytest.raises(stripe.InvalidRequestError):
            client.v2.billing.meter_events.create(
                {"event_name": "tollway_usage", "payload": payload, **({"timestamp": ts} if ts else {})}
            )
    assert fake.meter_totals() == {a.id: 300, b.id: 7}


def test_meter_event_stream(client: stripe.StripeClient, fake: FakeStripe) -> None:
    cus = client.v1.customers.create({})
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session" and session.authentication_token
    stream = stripe.StripeClient(session.authentication_token, base_addresses={"meter_events": fake.url})
    events = [
        {"event_name": "tok", "identifier": f"s{i % 3}", "payload": {"stripe_customer_id": cus.id, "value": "10"}}
        for i in range(5)
    ]
    events.append({"event_name": "tok", "payload": {"value": "10"}})  # no customer: dropped asynchronously
    stream.v2.billing.meter_event_stream.create({"events": events})  # type: ignore[typeddict-item]
    assert fake.meter_totals("tok") == {cus.id: 30}  # s0, s1, s2 once each
    assert len(fake.meter_rejected()) == 3
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient(
            fake.api_key, base_addresses={"meter_events": fake.url}
        ).v2.billing.meter_event_stream.create({"events": events[:1]})  # type: ignore[typeddict-item]
    fake.expire_meter_sessions()
    with pytest.raises(stripe.TemporarySessionExpiredError):
        stream.v2.billing.meter_event_stream.create({"events": events[:1]})  # type: ignore[typeddict-item]


def test_events_api(client: stripe.StripeClient, fake: FakeStripe) -> None:
    paid_session(client, fake, customer_creation="always")
    everything = fake.events()
    listed = client.v1.events.list({"limit": 3})
    assert [e.id for e in listed.data] == [e["id"] for e in reversed(everything)][:3] and listed.has_more
    assert [e.id for e in listed.auto_paging_iter()] == [e["id"] for e in reversed(everything)]
    one = client.v1.events.retrieve(everything[0]["id"])
    assert one.type == "customer.created" and one.object == "event" and one.data.object.object == "customer"
    assert [e.type for e in client.v1.events.list({"type": "payment_intent.*"}).data] == [
        "payment_intent.succeeded",
        "payment_intent.created",
    ]
    assert all(e["livemode"] is False and e["id"].startswith("evt_") for e in everything)


def test_webhook_controls(client: stripe.StripeClient, fake: FakeStripe, hooks: WebhookServer) -> None:
    paid_session(client, fake)
    completed = fake.last_event("checkout.session.completed")
    hooks.wait_for("/stripe", len(fake.events()))
    hooks.reset()
    hooks.program("/stripe")
    replayed = fake.replay(completed["id"])
    assert replayed[0]["status"] == 200 and replayed[0]["kind"] == "replay"
    assert verified(hooks.requests("/stripe")[0]).id == completed["id"]
    hooks.program("/stripe", default={"delay_ms": 200})
    dups = fake.duplicate(completed["id"], copies=3)
    got = hooks.requests("/stripe")[1:]
    assert len(dups) == 3 and {verified(r).id for r in got} == {completed["id"]}
    assert max(r["start"] for r in got) < min(r["end"] for r in got)  # they overlapped
    hooks.program("/stripe", default={"status": 400})
    for mode in ("tampered", "wrong_secret", "unsigned"):
        rec = fake.forged(completed["id"], mode)[0]
        with pytest.raises((stripe.SignatureVerificationError, ValueError)):
            stripe.Webhook.construct_event(rec["payload"], rec["signature"] or None, SECRET)
    stale = fake.stale(completed["id"], age_s=600)[0]
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(stale["payload"], stale["signature"], SECRET)
    assert (
        stripe.Webhook.construct_event(stale["payload"], stale["signature"], SECRET, tolerance=3600).id
        == completed["id"]
    )
    assert [r["kind"] for r in fake.deliveries(completed["id"])][-4:] == [
        "forged:tampered",
        "forged:wrong_secret",
        "forged:unsigned",
        "stale",
    ]
    # held deliveries go out, in order, when released
    hooks.program("/stripe")
    fake.hold_deliveries(True)
    before = len(fake.events())
    session = client.v1.checkout.sessions.create({"mode": "payment", "line_items": [LINE]})
    started = time.monotonic()
    fake.complete_checkout(session.id)  # does not wait for held deliveries
    assert time.monotonic() - started < 2
    assert fake.flush() and fake.deliveries()[-1]["kind"] == "stale"
    fake.hold_deliveries(False)
    assert fake.flush()
    held = [e["id"] for e in fake.events()[before:]]
    assert [d["event_id"] for d in fake.deliveries()][-len(held) :] == held and len(held) == 4


def test_http_controls(client: stripe.StripeClient, fake: FakeStripe, hooks: WebhookServer) -> None:
    session = client.v1.checkout.sessions.create({"mode": "payment", "line_items": [LINE]})
    r = httpx.post(f"{fake.url}/_fake/checkout/{session.id}/complete", json={"email": "h@app.test"})
    assert r.status_code == 200 and r.json()["status"] == "complete"
    assert httpx.post(f"{fake.url}/_fake/checkout/{session.id}/complete").status_code == 400
    assert httpx.post(f"{fake.url}/_fake/decline_next", json={"count": 1}).status_code == 200
    evt = fake.last_event("checkout.session.completed")["id"]
    stale = httpx.post(f"{fake.url}/_fake/events/{evt}/stale", json={"age_s": 900}).json()[0]
    signed_at = int(stale["signature"].split(",")[0][2:])
    assert stale["kind"] == "stale" and abs(time.time() - 900 - signed_at) < 5
    cus = client.v1.customers.create({})
    client.v2.billing.meter_events.create({"event_name": "e", "payload": {"stripe_customer_id": cus.id, "value": "3"}})
    assert httpx.get(f"{fake.url}/_fake/meter_totals", params={"event_name": "e"}).json() == {cus.id: 3}
    assert httpx.get(f"{fake.url}/_fake/nope").status_code == 400
    assert httpx.post(f"{fake.url}/_fake/reset").status_code == 200 and fake.events() == []


async def test_async_client(fake: FakeStripe) -> None:
    client = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url}, http_client=stripe.HTTPXClient())
    cus = await client.v1.customers.create_async({"metadata": {"a": "1"}})
    assert (await client.v1.customers.retrieve_async(cus.id)).metadata["a"] == "1"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.create_async({"amount": 1, "currency": "usd"})


@pytest.mark.parametrize(
    "method,path,body,ctype",
    [
        ("POST", "/v1/customers", "email=a&email[x]=b", "form"),
        ("POST", "/v1/customers", "metadata=notahash&x[0]=1&x[]=2", "form"),
        ("POST", "/v1/customers", "metadata[" + "k" * 41 + "]=v", "form"),
        ("POST", "/v1/checkout/sessions", "mode=payment&line_items=oops", "form"),
        ("POST", "/v1/checkout/sessions", "mode=payment&line_items[0][quantity]=-1", "form"),
        ("POST", "/v1/customers", "expand=customer", "form"),
        ("POST", "/v1/customers", "expand[]=nonexistent", "form"),
        ("GET", "/v1/invoiceitems?limit=1000", "", "form"),
        ("GET", "/v1/events?starting_after=evt_unknown", "", "form"),
        ("POST", "/v1/payment_intents", "amount=99999999999999999999&currency=usd", "form"),
        ("POST", "/v2/billing/meter_events", "{not json", "json"),
        ("POST", "/v2/billing/meter_events", "[1, 2]", "json"),
        ("POST", "/v2/billing/meter_events", '{"event_name": "e", "payload": {"stripe_customer_id": 5}}', "json"),
        (
            "POST",
            "/v2/billing/meter_events",
            '{"event_name": "e", "payload": {"stripe_customer_id": "c"}, "x": 1}',
            "json",
        ),
        (
            "POST",
            "/v2/billing/meter_events",
            '{"event_name": "e", "payload": {"stripe_customer_id": "c"}, "timestamp": 5}',
            "json",
        ),
        ("POST", "/v2/billing/meter_event_stream", '{"events": "x"}', "json"),
    ],
)
def test_bad_input_is_a_4xx_in_stripes_shape(fake: FakeStripe, method: str, path: str, body: str, ctype: str) -> None:
    content_type = "application/json" if ctype == "json" else "application/x-www-form-urlencoded"
    key = fake.api_key
    if path.endswith("meter_event_stream"):
        key = stripe.StripeClient(
            fake.api_key, base_addresses={"api": fake.url}
        ).v2.billing.meter_event_session.create()
        key = key.authentication_token
    r = raw(fake, method, path, key=key, content=body, headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert fake.events() == []  # nothing half-written


def test_oversized_body_is_refused(fake: FakeStripe) -> None:
    r = raw(
        fake,
        "POST",
        "/v1/customers",
        content="description=" + "x" * (1 << 20),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_foreground_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.stripe", "--api-key", "sk_test_fg"],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        url = line.split(" on ")[1].split()[0]
        client = stripe.StripeClient("sk_test_fg", base_addresses={"api": url})
        cus = client.v1.customers.create({"email": "fg@app.test"})
        assert httpx.get(f"{url}/_fake/events").json()[0]["data"]["object"]["id"] == cus.id
    finally:
        proc.terminate()
        proc.wait(5)


def test_concurrent_retries_with_one_key_make_one_object(client: stripe.StripeClient, fake: FakeStripe) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        same = list(
            pool.map(
                lambda _: client.v1.customers.create({"email": "c@app.test"}, {"idempotency_key": "burst"}).id,
                range(16),
            )
        )
        distinct = list(pool.map(lambda i: client.v1.customers.create({"email": f"{i}@app.test"}).id, range(16)))
    assert len(set(same)) == 1 and len(set(distinct)) == 16
    assert len(fake.events("customer.created")) == 17


def test_injected_faults_and_a_retried_meter_export(client: stripe.StripeClient, fake: FakeStripe) -> None:
    cus = client.v1.customers.create({})
    retrying = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url}, max_network_retries=2)
    event = {"event_name": "tok", "identifier": "use_42", "payload": {"stripe_customer_id": cus.id, "value": "9"}}
    # the response is lost; stripe-python retries with the same Idempotency-Key and gets the first answer
    fake.fail_next("/v2/billing/meter_events", drop=True)
    assert retrying.v2.billing.meter_events.create(event).identifier == "use_42"
    sent = fake.requests("/v2/billing/meter_events")
    assert [r.get("fault") for r in sent] == ["drop", None] and sent[1].get("replayed") is True
    assert sent[0]["idempotency_key"] == sent[1]["idempotency_key"]
    # an exporter's own retry (a new request, the same identifier) is refused and counts nothing
    once = client  # StripeClient's default: no retries
    fake.fail_next("/v2/billing/meter_events", drop=True)
    second = dict(event, identifier="use_43")
    with pytest.raises(stripe.APIConnectionError):
        once.v2.billing.meter_events.create(second)
    with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier use_43"):
        once.v2.billing.meter_events.create(second)
    assert fake.meter_totals("tok") == {cus.id: 18}
    fake.fail_next("/v1/customers", status=500)  # retried by stripe-python (Stripe-Should-Retry: true)
    assert retrying.v1.customers.create({}).id.startswith("cus_")
    fake.fail_next("/v1/customers", status=429)
    with pytest.raises(stripe.RateLimitError):
        once.v1.customers.create({})
    fake.fail_next("/v1/customers", status=503)
    with pytest.raises(stripe.APIError):
        once.v1.customers.create({})
    assert len(fake.events("customer.created")) == 2


def test_global_configuration_style(fake: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe, "api_key", fake.api_key)
    monkeypatch.setattr(stripe, "api_base", fake.url)
    cus = stripe.Customer.create(email="g@app.test", metadata={"k": "v"})
    assert stripe.Customer.retrieve(cus.id).metadata["k"] == "v"
    item = stripe.InvoiceItem.create(customer=cus.id, amount=300, currency="usd", idempotency_key="g-1")
    assert stripe.InvoiceItem.create(customer=cus.id, amount=300, currency="usd", idempotency_key="g-1").id == item.id
