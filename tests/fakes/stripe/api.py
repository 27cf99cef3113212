"""The API's routes: (method, path pattern) -> handler(store, params, *path ids) -> the response object."""

from __future__ import annotations

import re
from typing import Any, Callable

from . import billing, checkout, payments
from .forms import Params
from .store import Store


def _retrieve(prefix: str) -> Callable[..., dict[str, Any]]:
    def handler(store: Store, q: Params, oid: str) -> dict[str, Any]:
        q.done()
        return store.get(oid, prefix)

    return handler


def _list(prefix: str, url: str, *fields: str) -> Callable[..., dict[str, Any]]:
    def handler(store: Store, q: Params) -> dict[str, Any]:
        return payments.list_filtered(store, q, prefix, url, *fields)

    return handler


def _events_list(store: Store, q: Params) -> dict[str, Any]:
    one = q.str("type")
    many = q.array("types", max_items=20)
    wanted = ([one] if one else []) + [t for t in many if isinstance(t, str)]

    def match(event: dict[str, Any]) -> bool:
        if not wanted:
            return True
        return any(event["type"] == w or (w.endswith(".*") and event["type"].startswith(w[:-1])) for w in wanted)

    page = store.page([e for e in reversed(store.events) if match(e)], q, "/v1/events")
    q.done()
    return page


def _session_retrieve(store: Store, q: Params, sid: str) -> dict[str, Any]:
    q.done()
    return store.get(sid, "cs_test_")


def _session_expire(store: Store, q: Params, sid: str) -> dict[str, Any]:
    q.done()
    return checkout.session_expire(store, sid)


def _session_line_items(store: Store, q: Params, sid: str) -> dict[str, Any]:
    store.get(sid, "cs_test_")
    page = store.page(store.line_items.get(sid, []), q, f"/v1/checkout/sessions/{sid}/line_items")
    q.done()
    return page


_ID = r"([A-Za-z0-9_]+)"
ROUTES: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
    (m, re.compile(f"^{p}$"), h)
    for m, p, h in [
        ("POST", "/v1/customers", checkout.customer_create),
        ("GET", "/v1/customers", _list("cus_", "/v1/customers", "email")),
        ("GET", f"/v1/customers/{_ID}", _retrieve("cus_")),
        ("POST", f"/v1/customers/{_ID}", checkout.customer_update),
        ("GET", f"/v1/customers/{_ID}/payment_methods", checkout.customer_payment_methods),
        ("GET", f"/v1/payment_methods/{_ID}", _retrieve("pm_")),
        ("POST", "/v1/checkout/sessions", checkout.session_create),
        ("GET", "/v1/checkout/sessions", _list("cs_test_", "/v1/checkout/sessions", "customer", "payment_intent")),
        ("GET", f"/v1/checkout/sessions/{_ID}", _session_retrieve),
        ("POST", f"/v1/checkout/sessions/{_ID}/expire", _session_expire),
        ("GET", f"/v1/checkout/sessions/{_ID}/line_items", _session_line_items),
        ("POST", "/v1/payment_intents", payments.intent_create),
        ("GET", "/v1/payment_intents", _list("pi_", "/v1/payment_intents", "customer")),
        ("GET", f"/v1/payment_intents/{_ID}", _retrieve("pi_")),
        ("POST", f"/v1/payment_intents/{_ID}/confirm", payments.intent_confirm),
        ("GET", "/v1/charges", _list("ch_", "/v1/charges", "customer", "payment_intent")),
        ("GET", f"/v1/charges/{_ID}", _retrieve("ch_")),
        ("POST", "/v1/refunds", payments.refund_create),
        ("GET", "/v1/refunds", _list("re_", "/v1/refunds", "charge", "payment_intent")),
        ("GET", f"/v1/refunds/{_ID}", _retrieve("re_")),
        ("POST", "/v1/invoiceitems", billing.invoiceitem_create),
        ("GET", "/v1/invoiceitems", _list("ii_", "/v1/invoiceitems", "customer")),
        ("GET", f"/v1/invoiceitems/{_ID}", _retrieve("ii_")),
        ("POST", "/v1/billing/meters", billing.meter_create),
        ("GET", "/v1/billing/meters", _list("mtr_", "/v1/billing/meters", "status")),
        ("GET", f"/v1/billing/meters/{_ID}", _retrieve("mtr_")),
        ("POST", "/v1/billing/meter_events", billing.meter_event_v1),
        ("GET", "/v1/events", _events_list),
        ("GET", f"/v1/events/{_ID}", _retrieve("evt_")),
    ]
]

# v2: JSON bodies, handler(store, body) -> object
ROUTES_V2: dict[str, Callable[[Store, Any], dict[str, Any]]] = {
    "/v2/billing/meter_events": billing.meter_event_v2,
    "/v2/billing/meter_event_session": billing.meter_session_create,
    "/v2/billing/meter_event_stream": billing.meter_stream,
}


def route(method: str, path: str) -> tuple[Callable[..., Any], tuple[str, ...]]:
    for m, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match and m == method:
            return handler, match.groups()
    raise LookupError(path)
