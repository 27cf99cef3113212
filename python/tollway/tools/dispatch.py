"""Calling a tool's webhook: signed POST, bounded retries, never past the caller's deadline.

One ``Dispatcher`` per process, shared by every tool call: it holds one
``httpx.AsyncClient`` (connection pool), created lazily on first use in the running
event loop (a new one if a call runs on another loop); ``aclose()`` at shutdown.

``call()`` never raises for a failing webhook (refused connection, timeout, HTTP
error, malformed answer): it returns a ``ToolResult`` with ``is_error`` set and a
message meant for the model. It raises only for programming errors (e.g. an input
that is not JSON-serialisable). Cancelling the awaiting task cancels the request.

Request: ``POST webhook_url`` with the JSON body
``{"tool_id", "tool_name", "call_id", "input", "thread_id"?, "end_user_id"?}`` and the
headers ``content-type: application/json``, ``x-tollway-signature: t=..,v1=..``
(signed afresh for each attempt), ``x-tollway-delivery: dlv_...`` (the same for every
attempt of one call: receivers dedupe on it), the Standard Webhooks headers
``webhook-id`` (that delivery id), ``webhook-timestamp`` and ``webhook-signature``
(``v1,<base64>``, keyed with the bytes of the ``whsec_`` secret: tollway.webhooks) and
``user-agent: tollway-webhooks/<v>``.
Redirects are not followed (a 3xx is a final error).

Attempts: up to ``max_attempts`` (3), each bounded by ``tool.timeout_ms`` in total
(connect + send + the whole response) and by the time left before ``deadline``.
Connection failures, timeouts, network errors and 5xx answers are retried after a
jittered backoff (0.2 s, then 0.5 s); any other answer is final. No attempt starts
(and no backoff sleeps) past ``deadline``, a ``time.monotonic()`` value.

Answer: a 2xx JSON object with ``"output"`` (any JSON) is a success; with
``"error"`` (a string) an error the tool reports; anything else an error explaining
what was wrong. The body of a non-2xx answer is used only for its ``"error"`` string.

Logged (DEBUG, failures at INFO): tool id, call id, delivery id, attempt, status and
timing; never the URL, the secret or a body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Optional

import httpx

from tollway import __version__
from tollway.tools.store import Tool
from tollway.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, sign, standard_headers

log = logging.getLogger("tollway.tools")

USER_AGENT = f"tollway-webhooks/{__version__}"
MAX_RESPONSE_BYTES = 1024 * 1024
# An attempt is not worth starting with less time than this before the deadline.
MIN_ATTEMPT_S = 0.05


@dataclass(slots=True)
class ToolResult:
    call_id: str
    tool_id: str
    tool_name: str
    output: Any
    error: Optional[str]
    is_error: bool
    duration_ms: int
    attempts: int
    status: Optional[int]  # the last HTTP status received, None when none was

    def content_text(self) -> str:
        """What the model sees: the output as JSON text (a string output as it is), or
        the error message, prefixed so that it reads as a failure."""
        if self.is_error:
            return f"Error: the tool {self.tool_name!r} failed: {self.error}"
        if isinstance(self.output, str):
            return self.output
        return json.dumps(self.output, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class _Outcome:
    retry: bool
    error: Optional[str] = None
    output: Any = None
    status: Optional[int] = None


def new_delivery_id() -> str:
    return "dlv_" + secrets.token_hex(12)


def _error_from(data: Any) -> Optional[str]:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, str) and error:
            return error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return None


def _interpret(status: int, body: bytes) -> _Outcome:
    data: Any = None
    parsed = False
    if body:
        try:
            data = json.loads(body)
            parsed = True
        except ValueError:
            pass
    if 200 <= status < 300:
        if not parsed:
            what = "an empty body" if not body else "a body that is not JSON"
            return _Outcome(
                False,
                f'the webhook answered HTTP {status} with {what} (expected a JSON object with "output" or "error")',
                status=status,
            )
        if not isinstance(data, dict):
            return _Outcome(
                False,
                'the webhook answered with JSON that is not an object (expected {"output": ...} or {"error": "..."})',
                status=status,
            )
        message = _error_from(data)
        if message is not None:
            return _Outcome(False, message, status=status)
        if "output" in data:
            return _Outcome(False, None, output=data["output"], status=status)
        if data.get("error") is not None:
            return _Outcome(
                False,
                "the webhook reported an error: " + json.dumps(data["error"], ensure_ascii=False)[:1000],
                status=status,
            )
        return _Outcome(
            False, 'the webhook answered with a JSON object that has neither "output" nor "error"', status=status
        )
    detail = _error_from(data)
    text = f"the webhook answered HTTP {status}"
    if 300 <= status < 400:
        text += " (redirects are not followed; register the final URL)"
    if detail:
        text += f": {detail[:1000]}"
    return _Outcome(status >= 500, text, status=status)


class Dispatcher:
    def __init__(
        self,
        *,
        max_attempts: int = 3,
        backoff_s: tuple[float, ...] = (0.2, 0.5),
        max_connections: int = 100,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        trust_env: bool = False,
    ) -> None:
        """``backoff_s[i]`` is the pause (jittered ±25 %) after the (i+1)-th failed attempt
        (the last value is reused). ``trust_env``: honour HTTP(S)_PROXY etc."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.backoff_s = tuple(backoff_s) or (0.0,)
        self.max_response_bytes = max_response_bytes
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections // 5 or 1
        )
        self._trust_env = trust_env
        self._client: Optional[httpx.AsyncClient] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            # A client from another (finished) loop cannot be closed from here: dropped.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                limits=self._limits,
                trust_env=self._trust_env,
                headers={"user-agent": USER_AGENT},
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None and not client.is_closed:
            try:
                await client.aclose()
            except RuntimeError:  # made on another, closed loop
                pass

    def _backoff(self, failed_attempts: int) -> float:
        base = self.backoff_s[min(failed_attempts - 1, len(self.backoff_s) - 1)]
        return base * random.uniform(0.75, 1.25)

    async def call(
        self,
        tool: Tool,
        call_id: str,
        input: Any,
        *,
        thread_id: Optional[str] = None,
        end_user_id: Optional[str] = None,
        deadline: Optional[float] = None,
    ) -> ToolResult:
        started = time.monotonic()
        payload: dict[str, Any] = {"tool_id": tool.id, "tool_name": tool.name, "call_id": call_id, "input": input}
        if thread_id is not None:
            payload["thread_id"] = thread_id
        if end_user_id is not None:
            payload["end_user_id"] = end_user_id
        # Programming errors (input not JSON-serialisable) raise here, before any request.
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        delivery = new_delivery_id()
        timeout_s = tool.timeout_ms / 1000
        attempts = 0
        outcome = _Outcome(False, "the tool loop's deadline passed before the webhook could be called")
        last_status: Optional[int] = None
        out_of_time = False

        while attempts < self.max_attempts:
            budget = timeout_s
            cut_by_deadline = False
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or (attempts > 0 and left < MIN_ATTEMPT_S):
                    out_of_time = attempts > 0
                    break
                if left < budget:
                    budget, cut_by_deadline = left, True
            attempts += 1
            outcome = await self._attempt(tool, body, delivery, budget, cut_by_deadline)
            if outcome.status is not None:
                last_status = outcome.status
            log.log(
                logging.INFO if outcome.error is not None else logging.DEBUG,
                "tool webhook %s call %s delivery %s attempt %d: %s",
                tool.id,
                call_id,
                delivery,
                attempts,
                outcome.status if outcome.status is not None else "no response",
            )
            if not outcome.retry or attempts >= self.max_attempts:
                break
            pause = self._backoff(attempts)
            if deadline is not None and time.monotonic() + pause + MIN_ATTEMPT_S > deadline:
                out_of_time = True
                break
            await asyncio.sleep(pause)

        duration_ms = int((time.monotonic() - started) * 1000)
        error = outcome.error
        if error is not None and attempts > 1:
            error = f"{error} (after {attempts} attempts)"
        if error is not None and out_of_time:
            error = f"{error}; not retried: the tool loop's deadline is too close"
        return ToolResult(
            call_id=call_id,
            tool_id=tool.id,
            tool_name=tool.name,
            output=None if error is not None else outcome.output,
            error=error,
            is_error=error is not None,
            duration_ms=duration_ms,
            attempts=attempts,
            status=last_status,
        )

    async def _attempt(
        self, tool: Tool, body: bytes, delivery: str, budget_s: float, cut_by_deadline: bool
    ) -> _Outcome:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(tool.signing_secret, body, timestamp),
            DELIVERY_HEADER: delivery,
            # The same request as a Standard Webhook (webhook-id = the delivery id), so one
            # verifier serves tool calls and account events (tollway.webhooks.unwrap).
            **standard_headers(tool.signing_secret, delivery, body, timestamp),
        }
        client = self._http()
        try:
            async with asyncio.timeout(budget_s):
                request = client.build_request(
                    "POST", tool.webhook_url, content=body, headers=headers, timeout=httpx.Timeout(budget_s)
                )
                response = await client.send(request, stream=True)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_response_bytes:
                            return _Outcome(
                                False,
                                f"the webhook's answer is larger than {self.max_response_bytes} bytes",
                                status=response.status_code,
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            ms = int(budget_s * 1000)
            why = " (the time left before the tool loop's deadline)" if cut_by_deadline else ""
            return _Outcome(True, f"the webhook timed out after {ms} ms{why}")
        except httpx.UnsupportedProtocol:
            return _Outcome(False, "the webhook URL's scheme is not supported")
        except httpx.ConnectError as exc:
            return _Outcome(True, f"could not connect to the webhook ({_reason(exc)})")
        except httpx.TransportError as exc:
            return _Outcome(True, f"the connection to the webhook failed ({_reason(exc)})")
        except httpx.DecodingError:
            return _Outcome(False, "the webhook's answer could not be decoded (bad content-encoding)")
        except httpx.InvalidURL:
            return _Outcome(False, "the webhook URL is not usable")
        return _interpret(response.status_code, b"".join(chunks))


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


__all__ = ["Dispatcher", "MAX_RESPONSE_BYTES", "ToolResult", "USER_AGENT", "new_delivery_id"]
