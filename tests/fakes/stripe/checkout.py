"""Customers, PaymentMethods and Checkout Sessions (mode=payment), and the control that pays a session."""

from __future__ import annotations

import time
from typing import Any, Optional

from . import payments
from .errors import invalid
from .forms import Params, merge_metadata
from .payments import CURRENCIES, MAX_AMOUNT, MIN_AMOUNT
from .store import Store


# ---- customers ---------------------------------------------------------------------
def customer_create(store: Store, q: Params) -> dict[str, Any]:
    now = int(time.time())
    cus = {
        "id": store.new_id("cus_"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": now,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": q.str("description"),
        "email": q.str("email", max_len=512),
        "invoice_prefix": store.new_id("")[:8].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": merge_metadata({}, q.metadata()),
        "name": q.str("name", max_len=256),
        "phone": q.str("phone", max_len=20),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
    _invoice_settings(store, q, None)  # a new customer has no payment method yet
    q.done()
    store.add(cus)
    store.emit("customer.created", cus)
    return cus


def customer_update(store: Store, q: Params, cid: str) -> dict[str, Any]:
    cus = store.get(cid, "cus_")
    changes: dict[str, Any] = {}
    for key, max_len in (("description", 5000), ("email", 512), ("name", 256), ("phone", 20)):
        if q.has(key):
            changes[key] = q.str(key, max_len=max_len)
    metadata = q.metadata()
    pm = _invoice_settings(store, q, cid)
    q.done()  # everything checked before anything changes
    before = {"metadata": dict(cus["metadata"]), **{k: cus[k] for k in changes}}
    cus.update(changes)
    cus["metadata"] = merge_metadata(cus["metadata"], metadata)
    if pm is not None:
        before["invoice_settings"] = dict(cus["invoice_settings"])
        cus["invoice_settings"]["default_payment_method"] = pm or None
    store.emit("customer.updated", cus, before)
    return cus


def _invoice_settings(store: Store, q: Params, cid: Optional[str]) -> Optional[str]:
    """The new default payment method ("" clears it), or None when not given."""
    settings = q.hash("invoice_settings")
    if settings is None:
        return None
    pm = settings.str("default_payment_method")
    settings.done()
    if pm is None:
        return ""
    method = store.get(pm, "pm_", "invoice_settings[default_payment_method]")
    if cid is None or method["customer"] != cid:
        raise invalid(
            f"No such PaymentMethod: '{pm}'; it is not attached to this customer.",
            "invoice_settings[default_payment_method]",
            "resource_missing",
        )
    return pm


def customer_payment_methods(store: Store, q: Params, cid: str) -> dict[str, Any]:
    store.get(cid, "cus_")
    kind = q.str("type")
    items = store.find("pm_", lambda pm: pm["customer"] == cid and kind in (None, pm["type"]))
    page = store.page(items, q, f"/v1/customers/{cid}/payment_methods")
    q.done()
    return page


def new_payment_method(store: Store, customer: Optional[str], email: Optional[str]) -> dict[str, Any]:
    pm = {
        "id": store.new_id("pm_"),
        "object": "payment_method",
        "allow_redisplay": "always",
        "billing_details": {"address": None, "email": email, "name": None, "phone": None},
        "card": {
            "brand": "visa",
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US",
            "exp_month": 12,
            "exp_year": time.gmtime().tm_year + 3,
            "fingerprint": "fakeFingerprint42",
            "funding": "credit",
            "last4": "4242",
        },
        "created": int(time.time()),
        "customer": None,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }
    store.add(pm)
    if customer is not None:
        pm["customer"] = customer
        store.emit("payment_method.attached", pm)
    return pm


# ---- checkout sessions -------------------------------------------------------------
def session_create(store: Store, q: Params) -> dict[str, Any]:
    mode = q.str("mode", required=True, choices=("payment", "setup", "subscription"))
    if mode != "payment":
        raise invalid("This fake Stripe implements only mode=payment Checkout Sessions.", "mode")
    items = q.array("line_items", required=True)
    lines, currency = _line_items(store, items)
    amount = sum(li["amount_total"] for li in lines)
    if amount > MAX_AMOUNT:
        raise invalid("Amount must be no more than $999,999.99", "line_items", "amount_too_large")
    customer = q.str("customer")
    if customer is not None:
        store.get(customer, "cus_", "customer")
    creation = q.str("customer_creation", choices=("always", "if_required"))
    if creation is not None and customer is not None:
        raise invalid("You may only specify one of these parameters: customer, customer_creation.", "customer_creation")
    email = q.str("customer_email", max_len=512)
    if email is not None and customer is not None:
        raise invalid("You may only specify one of these parameters: customer, customer_email.", "customer_email")
    pid = q.hash("payment_intent_data")
    pi_data: dict[str, Any] = {"setup_future_usage": None, "metadata": {}, "description": None}
    if pid is not None:
        pi_data["setup_future_usage"] = pid.str("setup_future_usage", choices=("off_session", "on_session"))
        pi_data["metadata"] = merge_metadata({}, pid.metadata())
        pi_data["description"] = pid.str("description")
        pid.done()
    now = int(time.time())
    expires_at = q.int("expires_at", min=now + 1800, max=now + 86400) or now + 86400
    methods = q.array("payment_method_types")
    if any(m != "card" for m in methods):
        raise invalid("This fake Stripe implements only card payments.", "payment_method_types")
    sid = store.new_id("cs_test_")
    session = {
        "id": sid,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": q.str("cancel_url", max_len=5000),
        "client_reference_id": q.str("client_reference_id", max_len=200),
        "created": now,
        "currency": currency,
        "customer": customer,
        "customer_creation": None if customer is not None else (creation or "if_required"),
        "customer_details": None,
        "customer_email": email,
        "expires_at": expires_at,
        "livemode": False,
        "metadata": merge_metadata({}, q.metadata()),
        "mode": "payment",
        "payment_intent": None,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "status": "open",
        "success_url": q.str("success_url", max_len=5000),
        "ui_mode": q.str("ui_mode", choices=("hosted",)) or "hosted",
        "url": f"{store.base_url}/pay/{sid}",
    }
    q.done()
    store.add(session)
    store.line_items[sid] = lines
    store.checkout_pi_data[sid] = pi_data
    return session


def _line_items(store: Store, items: list[Any]) -> tuple[list[dict[str, Any]], str]:
    lines: list[dict[str, Any]] = []
    currency: Optional[str] = None
    for i, raw in enumerate(items):
        li = Params(raw, f"line_items[{i}]")
        if li.has("price"):
            price = li.str("price")
            raise invalid(f"No such price: '{price}'", f"line_items[{i}][price]", "resource_missing")
        quantity = li.int("quantity", required=True, min=1, max=999_999)
        pd = li.hash("price_data", required=True)
        cur = pd.str("currency", required=True, choices=CURRENCIES)
        unit = pd.int("unit_amount", required=True, min=0, max=MAX_AMOUNT)
        product = pd.hash("product_data", required=True)
        name = product.str("name", required=True, max_len=250)
        description = product.str("description", max_len=5000)
        product.done()
        pd.done()
        li.done()
        if currency is not None and cur != currency:
            raise invalid("All line items must use the same currency.", f"line_items[{i}][price_data][currency]")
        currency = cur
        lines.append(
            {
                "id": store.new_id("li_"),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": unit * quantity,
                "amount_tax": 0,
                "amount_total": unit * quantity,
                "currency": cur,
                "description": description or name,
                "price": {"object": "price", "currency": cur, "unit_amount": unit, "product_data_name": name},
                "quantity": quantity,
            }
        )
    if not lines:
        raise invalid("Missing required param: line_items.", "line_items", "parameter_missing")
    total = sum(li["amount_total"] for li in lines)
    if total < MIN_AMOUNT:
        raise invalid(
            "The Checkout Session's total amount due must add up to at least $0.50 usd",
            "line_items",
            "amount_too_small",
        )
    assert currency is not None
    return lines, currency


def session_view(store: Store, session: dict[str, Any], expand: list[str]) -> dict[str, Any]:
    out = dict(session)
    if "line_items" in expand:
        lines = store.line_items.get(session["id"], [])
        out["line_items"] = {
            "object": "list",
            "data": lines,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session['id']}/line_items",
        }
    return store.expand(out, [p for p in expand if p != "line_items"])


def session_expire(store: Store, sid: str) -> dict[str, Any]:
    session = store.get(sid, "cs_test_")
    if session["status"] != "open":
        raise invalid(
            f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status '
            f'of "{session["status"]}".'
        )
    session["status"] = "expired"
    store.emit("checkout.session.expired", session)
    return session


def session_complete(store: Store, sid: str, email: Optional[str] = None, name: str = "Test Buyer") -> dict[str, Any]:
    """What a buyer paying on the hosted page causes: the PaymentIntent and its Charge (a
    saved card on the customer when ``setup_future_usage`` was asked), then the events."""
    session = store.get(sid, "cs_test_")
    if session["status"] != "open":
        raise invalid(f"Checkout Session {sid} is {session['status']}, not open.", "id")
    pi_data = store.checkout_pi_data[sid]
    email = email or session["customer_email"] or "buyer@example.com"
    customer = session["customer"]
    wants_customer = session["customer_creation"] == "always" or pi_data["setup_future_usage"] is not None
    if customer is None and wants_customer:
        cus = customer_create(store, Params({"email": email, "name": name}))
        customer = cus["id"]
    saved = pi_data["setup_future_usage"] is not None
    pm = new_payment_method(store, customer if saved else None, email)
    pi = payments.new_intent(
        store,
        amount=session["amount_total"],
        currency=session["currency"],
        customer=customer,
        payment_method=pm["id"],
        metadata=pi_data["metadata"],
        description=pi_data["description"],
        setup_future_usage=pi_data["setup_future_usage"],
        off_session=False,
    )
    payments.charge_intent(store, pi, decline=None)
    session.update(
        {
            "customer": customer,
            "customer_details": {"email": email, "name": name, "phone": None, "address": None, "tax_exempt": "none"},
            "payment_intent": pi["id"],
            "payment_status": "paid",
            "status": "complete",
        }
    )
    store.emit("checkout.session.completed", session)
    return session
