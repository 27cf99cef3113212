"""The fake's state: objects by id, the Event log, list pages, ``expand[]`` and idempotency.

One :class:`Store` per fake. Every handler runs under ``store.lock``; a state change calls
:meth:`Store.emit`, which records an Event (a snapshot of the object) and queues it for the
webhook endpoints (see webhooks.py) once the request has finished.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import time
from typing import Any, Callable, Optional

from .errors import invalid, no_such
from .forms import Params

API_VERSION = "2026-10-28.endive"  # what stripe-python 16.1 sends as Stripe-Version

_KINDS = {  # id prefix -> (object name, name in "No such ..." errors)
    "cus_": "customer",
    "cs_test_": "checkout session",
    "pi_": "payment_intent",
    "ch_": "charge",
    "pm_": "payment_method",
    "re_": "refund",
    "ii_": "invoiceitem",
    "mtr_": "billing meter",
    "evt_": "event",
    "txn_": "balance transaction",
}


class Store:
    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url  # where the hosted Checkout pages (``session.url``) live
        self.lock = threading.RLock()
        self._tag = os.urandom(3).hex()
        self._serial = itertools.count(1)
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # oldest first
        self.idempotent: dict[tuple[str, str], dict[str, Any]] = {}
        self.pending_events: list[dict[str, Any]] = []  # emitted by the running request, not yet delivered
        self.request_context: dict[str, Any] = {}
        # test controls
        self.faults: list[dict[str, Any]] = []  # the next requests to a path that fail (fail_next)
        self.declines: list[dict[str, Any]] = []  # the next off-session/confirmed charges that fail
        self.meter_duplicates = "error"  # or "accept"
        self.meter_events: list[dict[str, Any]] = []  # accepted, oldest first
        self.meter_rejected: list[dict[str, Any]] = []  # what the async stream validation dropped
        self.meter_sessions: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.checkout_pi_data: dict[str, dict[str, Any]] = {}  # session id -> its payment_intent_data
        self.line_items: dict[str, list[dict[str, Any]]] = {}  # checkout session id -> its line items

    # ---- ids and objects ---------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        n = next(self._serial)
        return f"{prefix}{self._tag}{n:08d}{os.urandom(4).hex()}"

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        return obj

    def get(self, oid: Any, kind_prefix: str, param: str = "id") -> dict[str, Any]:
        if not isinstance(oid, str) or not oid:
            raise invalid(f"Invalid {param}: must be an id string", param, "parameter_invalid_string")
        obj = self.objects.get(oid)
        if obj is None or not oid.startswith(kind_prefix):
            raise no_such(_KINDS.get(kind_prefix, "object"), oid, param)
        return obj

    def find(self, prefix: str, pred: Callable[[dict[str, Any]], bool] = lambda o: True) -> list[dict[str, Any]]:
        """Objects of one kind, newest first (Stripe's list order)."""
        found = [o for oid, o in self.objects.items() if oid.startswith(prefix) and pred(o)]
        found.reverse()
        return found

    # ---- events --------------------------------------------------------------------
    def emit(self, type: str, obj: dict[str, Any], previous: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        ctx = self.request_context
        event = {
            "id": self.new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": ctx.get("request_id"), "idempotency_key": ctx.get("idempotency_key")},
            "type": type,
        }
        self.events.append(event)
        self.objects[event["id"]] = event
        self.pending_events.append(event)
        return event

    def take_pending(self) -> list[dict[str, Any]]:
        pending, self.pending_events = self.pending_events, []
        return pending

    # ---- lists and expansion ---------------------------------------------------------
    def page(self, items: list[dict[str, Any]], q: Params, url: str) -> dict[str, Any]:
        """Stripe's list object over ``items`` (newest first): limit 1..100 (default 10),
        starting_after / ending_before an id of the list."""
        limit = q.int("limit", min=1, max=100)
        limit = 10 if limit is None else limit
        after = q.str("starting_after")
        before = q.str("ending_before")
        ids = [o["id"] for o in items]
        if after is not None:
            if after not in ids:
                raise no_such(_kind_of(after), after, "starting_after")
            start = ids.index(after) + 1
            chunk = items[start : start + limit]
            more = start + limit < len(items)
        elif before is not None:
            if before not in ids:
                raise no_such(_kind_of(before), before, "ending_before")
            end = ids.index(before)
            chunk = items[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            chunk = items[:limit]
            more = len(items) > limit
        return {"object": "list", "data": copy.deepcopy(chunk), "has_more": more, "url": url}

    def expand(self, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        """``obj`` with the ids at ``paths`` replaced by their objects (paths checked by
        :func:`check_expand` before the request ran; a path the object lacks is left alone)."""
        out = copy.deepcopy(obj)
        for path in paths:
            self._expand_path(out, path.split("."))
        return out

    def _expand_path(self, node: Any, parts: list[str]) -> None:
        if not parts or not isinstance(node, dict):
            return
        if node.get("object") == "list" and parts[0] == "data":
            for item in node.get("data", []):
                self._expand_path(item, parts[1:])
            return
        value = node.get(parts[0])
        if isinstance(value, str) and value in self.objects:
            node[parts[0]] = value = copy.deepcopy(self.objects[value])
        self._expand_path(value, parts[1:])


EXPANDABLE = frozenset(
    ("balance_transaction", "charge", "customer", "data", "default_payment_method", "invoice_settings")
    + ("latest_charge", "line_items", "payment_intent", "payment_method")
)


def check_expand(paths: Any) -> list[str]:
    """Stripe's check of ``expand[]``, done before anything runs: a list of at most 20
    dotted paths (at most 4 levels) through expandable fields."""
    if paths is None:
        return []
    if not isinstance(paths, list) or len(paths) > 20:
        raise invalid("Invalid expand: must be a list of at most 20 paths", "expand", "parameter_invalid_array")
    for path in paths:
        parts = path.split(".") if isinstance(path, str) else []
        if not parts or len(parts) > 4 or any(p not in EXPANDABLE for p in parts):
            raise invalid(f"This property cannot be expanded ({path}).", "expand", "parameter_invalid_string")
    return paths


def _kind_of(oid: str) -> str:
    for prefix, kind in _KINDS.items():
        if oid.startswith(prefix):
            return kind
    return "object"
