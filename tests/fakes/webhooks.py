"""A real local webhook receiver for tool tests.

A stdlib ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) on 127.0.0.1 and a free port,
served from a background thread; every request is handled in its own thread, so
concurrent calls overlap (delays included).

    from tests.fakes.webhooks import start_webhook_server

    hooks = start_webhook_server()            # or: with start_webhook_server() as hooks:
    url = hooks.url("/lookup")                # http://127.0.0.1:P/lookup
    hooks.program("/lookup", responses=[{"status": 500}, {"status": 500}], default="echo",
                  secret=signing_secret)      # then: echo for every later request
    ...
    hooks.requests("/lookup")                 # what arrived, in order
    hooks.reset(); hooks.stop()

A response spec (a dict; every key optional):

    {"status": 200}                           # the HTTP status (default 200)
    {"json": {"output": ...}}                 # a JSON body (default: none, or the echo below)
    {"json": {"error": "no such account"}}
    {"body": b"not json", "content_type": "text/plain"}   # a raw body
    {"delay_ms": 500}                         # wait before answering (interrupted by stop())
    {"echo": True}                            # {"output": {"echo": <input>, "tool": <tool_name>}}
    {"drop": True}                            # close the connection without answering
    {"headers": {"x-extra": "1"}}

and the string ``"echo"`` stands for ``{"echo": True}``. A spec with neither ``json``
nor ``body`` (e.g. ``{"status": 500}`` or ``{"delay_ms": 300}``) answers the echo body
when its status is 2xx, and an empty JSON object otherwise. ``responses`` are used one
per request, in order; then ``default`` (itself "echo" unless programmed) forever.
Unprogrammed paths answer the echo.

Each recorded request is a dict: ``path``, ``headers`` (lower-case names), ``body``
(raw bytes), ``json`` (parsed, or None), ``start``/``end`` (``time.monotonic()`` when it
arrived / just before the answer was written or the connection dropped; ``end`` is None
while in flight), ``attempt`` (1, 2, ... per path, in arrival order), ``status`` (answered;
None while in flight or when dropped), ``client_gone`` (present, True, when writing the
answer failed: the client had given up), and ``signature_ok`` (``tollway.webhooks.verify`` with the path's ``secret``; None without one).
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union

from tollway.webhooks import verify

Spec = Union[str, dict[str, Any]]


def _normalise(spec: Spec) -> dict[str, Any]:
    if spec == "echo":
        return {"echo": True}
    if not isinstance(spec, dict):
        raise ValueError(f"a response spec is 'echo' or a dict, not {spec!r}")
    return dict(spec)


class _Program:
    def __init__(self, responses: list[Spec], default: Spec, secret: Optional[str]) -> None:
        self.responses = [_normalise(r) for r in responses]
        self.default = _normalise(default)
        self.secret = secret

    def next(self) -> dict[str, Any]:
        return self.responses.pop(0) if self.responses else self.default


class WebhookServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._programs: dict[str, _Program] = {}
        self._records: list[dict[str, Any]] = []
        self._counts: dict[str, int] = {}
        self._stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                owner._handle(self)

            do_PUT = do_POST
            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-server", daemon=True)
        self._thread.start()

    # ---- test API -----------------------------------------------------------------
    def url(self, path: str = "/hook") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def program(
        self,
        path: str,
        responses: Optional[list[Spec]] = None,
        default: Spec = "echo",
        secret: Optional[str] = None,
    ) -> None:
        """Answer the next requests to ``path`` with ``responses`` in order, then ``default``.
        With ``secret``, each request's signature is checked (``signature_ok``)."""
        path = path if path.startswith("/") else "/" + path
        with self._lock:
            self._programs[path] = _Program(list(responses or []), default, secret)

    def requests(self, path: Optional[str] = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self._records if path is None or r["path"] == path]

    def wait_for(self, path: Optional[str], count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` requests to ``path`` have been answered; return them."""
        deadline = time.monotonic() + timeout
        while True:
            done = [r for r in self.requests(path) if r["end"] is not None]
            if len(done) >= count or time.monotonic() > deadline:
                return done
            time.sleep(0.01)

    def reset(self) -> None:
        """Forget every request and every program."""
        with self._lock:
            self._programs.clear()
            self._records.clear()
            self._counts.clear()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "WebhookServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- serving ------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        start = time.monotonic()
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            program = self._programs.get(path)
            spec = program.next() if program else {"echo": True}
            secret = program.secret if program else None
            self._counts[path] = self._counts.get(path, 0) + 1
            record: dict[str, Any] = {
                "path": path,
                "method": h.command,
                "headers": headers,
                "body": body,
                "json": parsed,
                "start": start,
                "end": None,
                "attempt": self._counts[path],
                "status": None,
                "signature_ok": None if secret is None else verify(secret, headers, body),
            }
            self._records.append(record)

        delay = spec.get("delay_ms")
        if delay:
            self._stopping.wait(delay / 1000)

        if spec.get("drop"):
            h.close_connection = True
            with self._lock:
                record["end"] = time.monotonic()
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return

        status = int(spec.get("status", 200))
        content_type = spec.get("content_type", "application/json")
        if "body" in spec:
            raw = spec["body"]
            payload = raw.encode() if isinstance(raw, str) else bytes(raw)
        elif "json" in spec:
            payload = json.dumps(spec["json"]).encode()
        elif spec.get("echo") or 200 <= status < 300:
            inp = parsed.get("input") if isinstance(parsed, dict) else None
            tool = parsed.get("tool_name") if isinstance(parsed, dict) else None
            payload = json.dumps({"output": {"echo": inp, "tool": tool}}).encode()
        else:
            payload = b"{}"
        # Recorded before the answer is written, so a client that has its answer also
        # sees the record complete.
        with self._lock:
            record["status"] = status
            record["end"] = time.monotonic()
        try:
            h.send_response(status)
            h.send_header("content-type", content_type)
            h.send_header("content-length", str(len(payload)))
            for name, value in (spec.get("headers") or {}).items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
        except OSError:  # the client gave up (timed out) meanwhile
            h.close_connection = True
            with self._lock:
                record["client_gone"] = True


def start_webhook_server() -> WebhookServer:
    """A running receiver on 127.0.0.1 and a free port; ``stop()`` it (or use ``with``)."""
    return WebhookServer()


__all__ = ["WebhookServer", "start_webhook_server"]
