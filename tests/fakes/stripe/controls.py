"""``/_fake/...``: the test controls over HTTP (JSON in, JSON out; no auth), for a process that
does not hold the :class:`FakeStripe` object. Same semantics as its methods."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .errors import StripeError, invalid

if TYPE_CHECKING:
    from .fake import FakeStripe


def _deliveries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r, payload=r["payload"].decode()) for r in records]


def handle_control(fake: "FakeStripe", method: str, path: str, query: str, raw: bytes) -> tuple[int, Any]:
    try:
        body = json.loads(raw) if raw else {}
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
    except ValueError as exc:
        return 400, invalid(f"control body: {exc}").body()
    args = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        return 200, _route(fake, method, path, body, args)
    except StripeError as exc:
        return exc.status, exc.body()
    except (LookupError, ValueError, TypeError) as exc:
        return 400, invalid(f"control: {exc}").body()


def _route(fake: "FakeStripe", method: str, path: str, body: dict[str, Any], args: dict[str, str]) -> Any:
    m = re.fullmatch(r"/_fake/checkout/([A-Za-z0-9_]+)/(complete|expire)", path)
    if m and method == "POST":
        if m.group(2) == "complete":
            return fake.complete_checkout(m.group(1), email=body.get("email"), wait=body.get("wait", True))
        return fake.expire_checkout(m.group(1), wait=body.get("wait", True))
    m = re.fullmatch(r"/_fake/events/([A-Za-z0-9_]+)/(replay|duplicate|forged|stale)", path)
    if m and method == "POST":
        eid, action = m.groups()
        if action == "replay":
            return _deliveries(fake.replay(eid))
        if action == "duplicate":
            return _deliveries(fake.duplicate(eid, int(body.get("copies", 2))))
        if action == "forged":
            return _deliveries(fake.forged(eid, body.get("mode", "tampered")))
        return _deliveries(fake.stale(eid, int(body.get("age_s", 600))))
    simple = {
        ("POST", "/_fake/webhook_endpoints"): lambda: {
            "secret": fake.add_webhook_endpoint(body["url"], body.get("secret"), body.get("enabled_events", ["*"]))
        },
        ("GET", "/_fake/deliveries"): lambda: _deliveries(fake.deliveries(args.get("event_id"))),
        ("POST", "/_fake/flush"): lambda: {"flushed": fake.flush()},
        ("POST", "/_fake/hold_deliveries"): lambda: fake.hold_deliveries(bool(body.get("hold", True))),
        ("GET", "/_fake/events"): lambda: fake.events(args.get("type")),
        ("POST", "/_fake/decline_next"): lambda: fake.decline_next(
            int(body.get("count", 1)), body.get("decline_code", "generic_decline"), body.get("customer")
        ),
        ("POST", "/_fake/refund"): lambda: fake.refund(
            body.get("charge"), body.get("payment_intent"), body.get("amount"), body.get("wait", True)
        ),
        ("POST", "/_fake/fail_next"): lambda: fake.fail_next(
            body["path"],
            int(body.get("count", 1)),
            int(body.get("status", 500)),
            bool(body.get("drop", False)),
            body.get("method", "POST"),
        ),
        ("GET", "/_fake/meter_events"): lambda: fake.meter_events(args.get("event_name"), args.get("customer")),
        ("GET", "/_fake/meter_totals"): lambda: fake.meter_totals(args.get("event_name")),
        ("GET", "/_fake/meter_rejected"): fake.meter_rejected,
        ("POST", "/_fake/meter_duplicates"): lambda: fake.set_meter_duplicates(body.get("mode", "error")),
        ("POST", "/_fake/meter_sessions/expire"): fake.expire_meter_sessions,
        ("GET", "/_fake/requests"): lambda: fake.requests(args.get("path")),
        ("POST", "/_fake/reset"): fake.reset,
    }
    fn = simple.get((method, path))
    if fn is None:
        raise LookupError(f"no control {method} {path}")
    result = fn()
    return {} if result is None else result
