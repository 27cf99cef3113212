"""Webhook delivery as Stripe does it: POST the Event's JSON to each endpoint with
``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>``.

One delivery thread sends events in the order they were emitted (no automatic retries:
use :meth:`Deliverer.replay`). Controls send an event again (``replay``), several times at
once (``duplicate``: concurrent deliveries, as Stripe may), with a bad signature (``forged``)
or with an old, correctly signed timestamp (``stale``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import queue
import threading
import time
from typing import Any, Optional

import httpx

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()  # Stripe sends pretty-printed JSON


class Deliverer:
    def __init__(self, timeout: float = 10.0) -> None:
        self.endpoints: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[tuple[dict[str, Any], threading.Event]]]" = queue.Queue()
        self._held: list[tuple[dict[str, Any], threading.Event]] = []
        self._holding = False
        self._client = httpx.Client(timeout=timeout)
        self._thread = threading.Thread(target=self._run, name="fake-stripe-webhooks", daemon=True)
        self._thread.start()

    # ---- configuration --------------------------------------------------------------
    def add_endpoint(self, url: str, secret: Optional[str] = None, enabled_events: tuple[str, ...] = ("*",)) -> str:
        secret = secret or "whsec_" + os.urandom(24).hex()
        with self._lock:
            self.endpoints.append({"url": url, "secret": secret, "enabled_events": list(enabled_events)})
        return secret

    def _targets(self, event_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.endpoints if "*" in e["enabled_events"] or event_type in e["enabled_events"]]

    # ---- the normal path -------------------------------------------------------------
    def enqueue(self, events: list[dict[str, Any]]) -> threading.Event:
        """Queue events for delivery; the returned flag is set once the last one was sent."""
        done = threading.Event()
        if not events:
            done.set()
            return done
        for i, event in enumerate(events):
            flag = done if i == len(events) - 1 else threading.Event()
            event["pending_webhooks"] = len(self._targets(event["type"]))
            item = (copy.deepcopy(event), flag)
            with self._lock:
                if self._holding:
                    self._held.append(item)
                    continue
            self._queue.put(item)
        return done

    def hold(self, holding: bool) -> None:
        """Hold deliveries (events are queued, not sent) until ``hold(False)``."""
        with self._lock:
            self._holding = holding
            if not holding:
                for item in self._held:  # under the lock: nothing new overtakes them
                    self._queue.put(item)
                self._held.clear()

    @property
    def holding(self) -> bool:
        with self._lock:
            return self._holding

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far has been delivered."""
        done = threading.Event()
        self._queue.put(({"type": "_flush", "id": "_flush"}, done))  # not held by hold()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, flag = item
            try:
                if event["type"] != "_flush":
                    for endpoint in self._targets(event["type"]):
                        self._post(endpoint, event, encode_event(event), "normal")
            finally:
                flag.set()

    def _post(
        self,
        endpoint: dict[str, Any],
        event: dict[str, Any],
        payload: bytes,
        kind: str,
        header: Optional[str] = None,
        age_s: int = 0,
    ) -> dict[str, Any]:
        t = int(time.time()) - age_s
        if header is None:
            header = sign(payload, endpoint["secret"], t)
        headers = {"content-type": "application/json; charset=utf-8", "user-agent": USER_AGENT}
        if header != "":
            headers["stripe-signature"] = header
        record: dict[str, Any] = {
            "event_id": event["id"],
            "type": event["type"],
            "url": endpoint["url"],
            "kind": kind,
            "signature": header,
            "payload": payload,
            "sent_at": time.time(),
            "status": None,
            "response": None,
            "error": None,
        }
        try:
            resp = self._client.post(endpoint["url"], content=payload, headers=headers)
            record["status"] = resp.status_code
            record["response"] = resp.text[:2000]
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.deliveries.append(record)
        return record

    # ---- controls ---------------------------------------------------------------------
    def replay(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Send the event again, as Stripe's retries and "Resend" do: same body, fresh signature."""
        self.flush()
        return [self._post(e, event, encode_event(event), "replay") for e in self._targets(event["type"])]

    def duplicate(self, event: dict[str, Any], copies: int = 2) -> list[dict[str, Any]]:
        """Deliver ``copies`` identical, validly signed deliveries at the same time."""
        self.flush()
        out: list[dict[str, Any]] = []
        lock = threading.Lock()
        start = threading.Barrier(copies)

        def one(endpoint: dict[str, Any]) -> None:
            start.wait()
            rec = self._post(endpoint, event, encode_event(event), "duplicate")
            with lock:
                out.append(rec)

        for endpoint in self._targets(event["type"]):
            threads = [threading.Thread(target=one, args=(endpoint,)) for _ in range(copies)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        return out

    def forged(self, event: dict[str, Any], mode: str = "tampered") -> list[dict[str, Any]]:
        """``tampered``: the body changed (amounts x100) under the original body's signature;
        ``wrong_secret``: signed with another secret; ``unsigned``: no Stripe-Signature header."""
        self.flush()
        out = []
        for endpoint in self._targets(event["type"]):
            body = encode_event(event)
            t = int(time.time())
            if mode == "tampered":
                header = sign(body, endpoint["secret"], t)
                body = encode_event(_tamper(copy.deepcopy(event)))
            elif mode == "wrong_secret":
                header = sign(body, "whsec_" + os.urandom(24).hex(), t)
            elif mode == "unsigned":
                header = ""
            else:
                raise ValueError(f"forged mode is tampered, wrong_secret or unsigned, not {mode!r}")
            out.append(self._post(endpoint, event, body, f"forged:{mode}", header=header))
        return out

    def stale(self, event: dict[str, Any], age_s: int = 600) -> list[dict[str, Any]]:
        """Correctly signed, with a timestamp ``age_s`` seconds old (beyond the 300 s tolerance)."""
        self.flush()
        body = encode_event(event)
        return [self._post(e, event, body, "stale", age_s=age_s) for e in self._targets(event["type"])]

    def records(self, event_id: Optional[str] = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.deliveries if event_id in (None, r["event_id"])]

    def reset(self) -> None:
        self.flush()
        with self._lock:
            self.deliveries.clear()
            self._held.clear()
            self._holding = False

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._client.close()


def _tamper(event: dict[str, Any]) -> dict[str, Any]:
    obj = event.get("data", {}).get("object", {})
    for key in ("amount", "amount_total", "amount_received", "amount_refunded"):
        if isinstance(obj.get(key), int):
            obj[key] *= 100
    event.setdefault("data", {}).setdefault("object", obj)["metadata"] = {"forged": "true"}
    return event
