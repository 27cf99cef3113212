"""InvoiceItems, billing Meters (v1), meter events (v1 form, v2 JSON) and the v2 meter event session + stream.

A meter event's ``identifier`` is unique for 24 hours: a second synchronous create with the
same identifier is refused (400 ``invalid_request_error``, "An event already exists with
identifier ...", as Stripe answers) unless ``store.meter_duplicates == "accept"`` (then it
answers the first event and counts nothing); the asynchronous stream drops duplicates and
invalid events silently (they land in ``store.meter_rejected``, as Stripe's error reports).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any, Optional

from .errors import StripeError, invalid
from .forms import Params, merge_metadata
from .payments import CURRENCIES, MAX_AMOUNT
from .store import Store

DEDUP_WINDOW_S = 24 * 3600
PAST_LIMIT_S = 35 * 86400
FUTURE_LIMIT_S = 300
SESSION_TTL_S = 15 * 60


# ---- invoice items ---------------------------------------------------------------------
def invoiceitem_create(store: Store, q: Params) -> dict[str, Any]:
    customer = q.str("customer", required=True)
    store.get(customer, "cus_", "customer")
    amount = q.int("amount", required=True, min=-MAX_AMOUNT, max=MAX_AMOUNT)
    currency = q.str("currency", required=True, choices=CURRENCIES)
    now = int(time.time())
    period = q.hash("period")
    start = end = now
    if period is not None:
        start = period.int("start", required=True, min=0)
        end = period.int("end", required=True, min=0)
        period.done()
        if end < start:
            raise invalid("The period end must be on or after its start.", "period[end]")
    item = {
        "id": store.new_id("ii_"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "date": now,
        "description": q.str("description", max_len=5000),
        "discountable": q.bool("discountable") is not False,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": merge_metadata({}, q.metadata()),
        "period": {"end": end, "start": start},
        "proration": False,
        "quantity": 1,
        "test_clock": None,
    }
    q.done()
    store.add(item)
    store.emit("invoiceitem.created", item)
    return item


# ---- meters (v1) ---------------------------------------------------------------------------
def meter_create(store: Store, q: Params) -> dict[str, Any]:
    display = q.str("display_name", required=True, max_len=250)
    event_name = q.str("event_name", required=True, max_len=100)
    agg = q.hash("default_aggregation", required=True)
    formula = agg.str("formula", required=True, choices=("count", "last", "sum"))
    agg.done()
    mapping = q.hash("customer_mapping")
    customer_key = "stripe_customer_id"
    if mapping is not None:
        customer_key = mapping.str("event_payload_key", required=True, max_len=100)
        mapping.str("type", required=True, choices=("by_id",))
        mapping.done()
    vs = q.hash("value_settings")
    value_key = "value"
    if vs is not None:
        value_key = vs.str("event_payload_key", required=True, max_len=100)
        vs.done()
    q.str("event_time_window", choices=("day", "hour"))
    q.done()
    if store.find("mtr_", lambda m: m["event_name"] == event_name and m["status"] == "active"):
        raise invalid(f"An active meter with event_name {event_name} already exists.", "event_name")
    now = int(time.time())
    meter = {
        "id": store.new_id("mtr_"),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
        "default_aggregation": {"formula": formula},
        "display_name": display,
        "event_name": event_name,
        "event_time_window": None,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": value_key},
    }
    store.add(meter)
    store.emit("billing.meter.created", meter)
    return meter


def _meter_keys(store: Store, event_name: str) -> tuple[str, str]:
    for m in store.find("mtr_", lambda m: m["event_name"] == event_name and m["status"] == "active"):
        return m["customer_mapping"]["event_payload_key"], m["value_settings"]["event_payload_key"]
    return "stripe_customer_id", "value"


# ---- meter events ---------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: Any, param: str) -> float:
    if not isinstance(value, str):
        raise invalid(f"Invalid timestamp: {value!r}", param, "parameter_invalid_string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid timestamp: {value!r}", param, "parameter_invalid_string") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _validate_event(store: Store, event: dict[str, Any], prefix: str, now: float) -> dict[str, Any]:
    """Checks shared by all three paths; returns the record (``value`` as an int)."""
    name = event.get("event_name")
    if not isinstance(name, str) or not name:
        raise invalid(f"Missing required param: {prefix}event_name.", f"{prefix}event_name", "parameter_missing")
    if len(name) > 100:
        raise invalid("event_name must be at most 100 characters", f"{prefix}event_name")
    payload = event.get("payload")
    if not isinstance(payload, dict) or not payload:
        raise invalid(f"Missing required param: {prefix}payload.", f"{prefix}payload", "parameter_missing")
    customer_key, value_key = _meter_keys(store, name)
    customer = payload.get(customer_key)
    if not isinstance(customer, str) or not customer:
        raise invalid(
            f"The payload must contain {customer_key}.", f"{prefix}payload[{customer_key}]", "parameter_missing"
        )
    value = payload.get(value_key, "1")
    if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,15}", value):
        raise invalid(f"The payload's {value_key} must be a whole number as a string.", f"{prefix}payload[{value_key}]")
    if any(not isinstance(v, str) for v in payload.values()):
        raise invalid("Payload values must be strings.", f"{prefix}payload")
    ts = event.get("timestamp")
    ts = now if ts is None else ts
    if ts < now - PAST_LIMIT_S or ts > now + FUTURE_LIMIT_S:
        raise invalid(
            "The timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
            f"{prefix}timestamp",
        )
    identifier = event.get("identifier") or store.new_id("mev_")
    if not isinstance(identifier, str) or len(identifier) > 100:
        raise invalid("identifier must be a string of at most 100 characters", f"{prefix}identifier")
    return {
        "event_name": name,
        "identifier": identifier,
        "payload": dict(payload),
        "customer": customer,
        "value": int(value),
        "timestamp": ts,
        "created": now,
    }


def _duplicate(store: Store, record: dict[str, Any]) -> Optional[dict[str, Any]]:
    horizon = record["created"] - DEDUP_WINDOW_S
    for seen in reversed(store.meter_events):
        if seen["created"] < horizon:
            return None
        if seen["identifier"] == record["identifier"]:
            return seen
    return None


def _record(store: Store, record: dict[str, Any], via: str) -> dict[str, Any]:
    seen = _duplicate(store, record)
    if seen is not None:
        if store.meter_duplicates == "accept":
            return seen
        raise invalid(f"An event already exists with identifier {record['identifier']}.", "identifier")
    record["via"] = via
    store.meter_events.append(record)
    return record


def meter_event_v1(store: Store, q: Params) -> dict[str, Any]:
    ts = q.int("timestamp", min=0)
    event = {
        "event_name": q.str("event_name"),
        "payload": q.raw("payload"),
        "identifier": q.str("identifier"),
        "timestamp": ts,
    }
    q.done()
    rec = _record(store, _validate_event(store, event, "", time.time()), "v1")
    return {
        "object": "billing.meter_event",
        "created": int(rec["created"]),
        "event_name": rec["event_name"],
        "identifier": rec["identifier"],
        "livemode": False,
        "payload": rec["payload"],
        "timestamp": int(rec["timestamp"]),
    }


def _v2_event(body: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    allowed = {"event_name", "payload", "identifier", "timestamp"}
    for key in body:
        if key not in allowed:
            raise invalid(f"Received unknown parameter: {prefix}{key}", f"{prefix}{key}", "parameter_unknown")
    event = dict(body)
    if body.get("timestamp") is not None:
        event["timestamp"] = _parse_iso(body["timestamp"], f"{prefix}timestamp")
    return event


def _v2_view(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "v2.billing.meter_event",
        "created": _iso(rec["created"]),
        "event_name": rec["event_name"],
        "identifier": rec["identifier"],
        "livemode": False,
        "payload": rec["payload"],
        "timestamp": _iso(rec["timestamp"]),
    }


def meter_event_v2(store: Store, body: Any) -> dict[str, Any]:
    rec = _record(store, _validate_event(store, _v2_event(body, ""), "", time.time()), "v2")
    return _v2_view(rec)


def meter_session_create(store: Store, body: Any) -> dict[str, Any]:
    if body not in (None, {}):
        raise invalid("This endpoint takes no parameters.")
    now = time.time()
    session = {
        "id": store.new_id("mes_"),
        "object": "v2.billing.meter_event_session",
        "authentication_token": "mes_token_" + store.new_id(""),
        "created": _iso(now),
        "expires_at": _iso(now + SESSION_TTL_S),
        "livemode": False,
    }
    store.meter_sessions[session["authentication_token"]] = {"expires": now + SESSION_TTL_S, "session": session}
    return session


def session_for(store: Store, token: str) -> None:
    """Auth of the stream: a live session token, else 401 (expired: ``temporary_session_expired``)."""
    entry = store.meter_sessions.get(token)
    if entry is None:
        raise invalid("Invalid or missing meter event session token.", code="api_key_invalid", status=401)
    if entry["expires"] <= time.time():
        raise StripeError(
            401,
            "temporary_session_expired",
            "The meter event session has expired. Create a new session with /v2/billing/meter_event_session.",
            code="billing_meter_event_session_expired",
        )


def meter_stream(store: Store, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) - {"events"}:
        raise invalid('The request body must be {"events": [...]}.', "events")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise invalid("Missing required param: events.", "events", "parameter_missing")
    if len(events) > 100:
        raise invalid("events supports up to 100 events per request.", "events")
    now = time.time()
    for i, raw in enumerate(events):  # validated "asynchronously": a bad event is dropped, not refused
        try:
            _record(store, _validate_event(store, _v2_event(raw, f"events[{i}]."), f"events[{i}].", now), "stream")
        except StripeError as exc:
            store.meter_rejected.append({"event": raw, "error": exc.body()["error"]})
    return {}


def meter_totals(store: Store, event_name: Optional[str] = None) -> dict[str, int]:
    totals: dict[str, int] = {}
    for rec in store.meter_events:
        if event_name in (None, rec["event_name"]):
            totals[rec["customer"]] = totals.get(rec["customer"], 0) + rec["value"]
    return totals
