"""The HTTP side: a stdlib ThreadingHTTPServer on 127.0.0.1 (a free port), in a background thread.

Per request: auth (``Authorization: Bearer <key>`` or Basic with the key as user name;
the v2 meter event stream takes a meter event session token), decoding (v1: form bodies
and query strings in bracket notation; v2: JSON), ``Idempotency-Key`` (same key and
parameters: the first response again, with ``Idempotent-Replayed: true``; other
parameters: 400 ``idempotency_error``), ``expand[]``; the events the request emitted
go to the webhook deliverer (in order; sent asynchronously, as Stripe does). ``/_fake/...`` are the test controls (controls.py).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

from . import api, billing
from .checkout import session_view
from .controls import handle_control
from .errors import StripeError, auth_invalid, auth_missing, idempotency_mismatch, invalid, unrecognized_url
from .forms import Params, decode_form
from .store import check_expand

if TYPE_CHECKING:
    from .fake import FakeStripe

MAX_BODY = 1 << 20
MAX_IDEMPOTENCY_KEY = 255
MAX_LOGGED_REQUESTS = 2000


def make_server(fake: "FakeStripe", host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            _handle(fake, self)

        do_POST = do_GET
        do_DELETE = do_GET

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], ctype: str) -> None:
    try:
        h.send_response(status)
        h.send_header("content-type", ctype)
        h.send_header("content-length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()
    except OSError:
        h.close_connection = True


def _handle(fake: "FakeStripe", h: BaseHTTPRequestHandler) -> None:
    parts = urlsplit(h.path)
    path, query = parts.path, parts.query
    length = int(h.headers.get("content-length") or 0)
    if length > MAX_BODY:
        h.close_connection = True
        err = invalid(f"Request body too large (at most {MAX_BODY} bytes).", status=413)
        _send(h, 413, json.dumps(err.body()).encode(), {}, "application/json")
        return
    raw = h.rfile.read(length) if length else b""
    if path.startswith("/_fake/"):
        status, payload = handle_control(fake, h.command, path, query, raw)
        _send(h, status, json.dumps(payload).encode(), {}, "application/json")
        return
    if h.command == "GET" and path.startswith("/pay/"):
        _send(h, 200, _checkout_page(fake, path[5:]).encode(), {}, "text/html; charset=utf-8")
        return
    request_id = "req_" + os.urandom(7).hex()
    headers = {"request-id": request_id, "stripe-version": h.headers.get("stripe-version") or ""}
    fault = _take_fault(fake, h.command, path)
    if fault is not None and fault["mode"] == "status":
        status = fault["status"]
        body = _fault_body(status)
        with fake.store.lock:
            fake.store.requests.append({"method": h.command, "path": path, "status": status, "fault": "status"})
        retry = {"stripe-should-retry": "true"} if status in (409, 429) or status >= 500 else {}
        _send(h, status, json.dumps(body).encode(), {**headers, **retry}, "application/json")
        return
    status, body, extra = _api(fake, h, path, query, raw, request_id, "drop" if fault else None)
    if fault is not None:  # "drop": the request ran, its response is lost
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return
    headers.update(extra)
    if status >= 400:
        headers.setdefault("stripe-should-retry", "false" if status < 500 else "true")
    _send(h, status, body, headers, "application/json")


def _take_fault(fake: "FakeStripe", method: str, path: str) -> Any:
    with fake.store.lock:
        for i, fault in enumerate(fake.store.faults):
            if fault["path"] == path and fault["method"] in (None, method):
                fault["remaining"] -= 1
                if fault["remaining"] <= 0:
                    fake.store.faults.pop(i)
                return fault
    return None


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return invalid("Too many requests hit the API too quickly.", code="rate_limit", status=429).body()
    if status == 409:
        return StripeError(
            409, "invalid_request_error", "The request conflicted with another request.", code="lock_timeout"
        ).body()
    return {"error": {"type": "api_error", "message": "An unknown error occurred (injected by the fake)."}}


def _api(
    fake: "FakeStripe",
    h: BaseHTTPRequestHandler,
    path: str,
    query: str,
    raw: bytes,
    request_id: str,
    fault: Optional[str] = None,
) -> tuple[int, bytes, dict[str, str]]:
    store = fake.store
    method = h.command
    idem_key = h.headers.get("idempotency-key")
    log: dict[str, Any] = {
        "method": method,
        "path": path,
        "idempotency_key": idem_key,
        "stripe_version": h.headers.get("stripe-version"),
        "t": time.time(),
    }
    if fault:
        log["fault"] = fault
    try:
        key = _authenticate(fake, h, path)
        params = _decode(method, path, query, raw, h.headers.get("content-type") or "")
        log["params"] = params
        if idem_key is not None and len(idem_key) > MAX_IDEMPOTENCY_KEY:
            raise invalid(f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters.", "Idempotency-Key")
    except StripeError as exc:
        return _finish(store, log, exc.status, exc.body(), exc.headers)
    fingerprint = json.dumps([method, path, params], sort_keys=True)
    with store.lock:
        if method == "POST" and idem_key:
            seen = store.idempotent.get((key, idem_key))
            if seen is not None:
                if seen["fingerprint"] != fingerprint:
                    exc = idempotency_mismatch(idem_key)
                    return _finish(store, log, 400, exc.body(), {})
                log["replayed"] = True
                return _finish(store, log, seen["status"], seen["body"], {"idempotent-replayed": "true"}, raw=True)
        store.request_context = {"request_id": request_id, "idempotency_key": idem_key}
        try:
            status, body, saved = 200, _dispatch(store, method, path, params), True
        except StripeError as exc:
            status, body, saved = exc.status, exc.body(), exc.saved
        except Exception as exc:  # a bug of the fake: say so in Stripe's shape rather than drop the connection
            status, body, saved = 500, {"error": {"type": "api_error", "message": f"fake Stripe bug: {exc!r}"}}, False
        finally:
            store.request_context = {}
        encoded = json.dumps(body, indent=2).encode()
        events = store.take_pending()
        if method == "POST" and idem_key and saved:
            store.idempotent[(key, idem_key)] = {"fingerprint": fingerprint, "status": status, "body": encoded}
        if status >= 400 and not saved:
            events = []  # a refused request changes nothing (its handlers raise before any emit)
        fake.webhooks.enqueue(events)  # under the lock: deliveries keep the order of the changes
        if idem_key:
            extra = {"idempotency-key": idem_key}
        else:
            extra = {}
        return _finish(store, log, status, encoded, extra, raw=True)


def _finish(
    store: Any,
    log: dict[str, Any],
    status: int,
    body: Any,
    headers: dict[str, str],
    raw: bool = False,
) -> tuple[int, bytes, dict[str, str]]:
    log["status"] = status
    with store.lock:
        store.requests.append(log)
        del store.requests[:-MAX_LOGGED_REQUESTS]
    payload = body if raw else json.dumps(body, indent=2).encode()
    return status, payload, headers


def _authenticate(fake: "FakeStripe", h: BaseHTTPRequestHandler, path: str) -> str:
    auth = h.headers.get("authorization") or ""
    key = ""
    if auth.startswith("Bearer "):
        key = auth[7:].strip()
    elif auth.startswith("Basic "):
        try:
            key = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    if not key:
        raise auth_missing()
    if path == "/v2/billing/meter_event_stream":
        with fake.store.lock:
            billing.session_for(fake.store, key)
        return key
    if key != fake.api_key:
        raise auth_invalid(key)
    return key


def _decode(method: str, path: str, query: str, raw: bytes, ctype: str) -> Any:
    if path.startswith("/v2/"):
        if method != "POST":
            return {}
        if not raw:
            return {}
        if "application/json" not in ctype:
            raise invalid("v2 requests must have a JSON body (Content-Type: application/json).")
        try:
            return json.loads(raw)
        except ValueError:
            raise invalid("The request body is not valid JSON.") from None
    if method == "POST":
        if raw and "application/x-www-form-urlencoded" not in ctype:
            raise invalid("Invalid request: v1 bodies must be application/x-www-form-urlencoded.")
        form = decode_form(raw.decode("utf-8", "replace"))
        if query:
            form.update(decode_form(query))
        return form
    return decode_form(query)


def _dispatch(store: Any, method: str, path: str, params: Any) -> Any:
    if path.startswith("/v2/"):
        handler = api.ROUTES_V2.get(path)
        if handler is None or method != "POST":
            raise unrecognized_url(method, path)
        return handler(store, params)
    try:
        handler, ids = api.route(method, path)
    except LookupError:
        raise unrecognized_url(method, path) from None
    expand = check_expand(params.get("expand"))
    obj = handler(store, Params(params), *ids)
    if obj.get("object") == "checkout.session":
        return session_view(store, obj, expand)
    return store.expand(obj, expand)


def _checkout_page(fake: "FakeStripe", sid: str) -> str:
    with fake.store.lock:
        session = fake.store.objects.get(sid)
        if session is None or not sid.startswith("cs_test_"):
            return "<!doctype html><title>Not found</title><p>No such Checkout Session."
        amount = session["amount_total"] / 100
        return (
            f"<!doctype html><title>Fake Stripe Checkout</title><h1>Pay {amount:.2f} "
            f"{session['currency'].upper()}</h1><p>Session {sid} is {session['status']}. "
            f"Tests pay it with POST /_fake/checkout/{sid}/complete.</p>"
        )


def serve(fake: "FakeStripe", host: str, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    server = make_server(fake, host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-stripe", daemon=True
    )
    thread.start()
    return server, thread


__all__ = ["serve"]
