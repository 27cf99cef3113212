"""Shared by the fuzz tests (test_schemathesis, test_fuzz_bodies, test_roundtrip; their gateway is
conftest's ``fuzz_gateway``): the error shape of each route, which 5xx answers are the provider's
own rather than ours, and the collection of every distinct failure of a run."""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import orjson
from hypothesis import HealthCheck, Phase

from tests.conftest import Gateway

# Models of the test config that answer quickly (dead-gpt retries a closed port; unpriced-gpt is a 400).
FAST_MODELS = ["test-gpt", "test-claude", "out-gpt", "out-claude", "tiny-claude"]
_UPSTREAM_CODES = {"upstream_error", "upstream_unreachable", "upstream_timeout", "upstream_bad_response"}


def route_shape(path: str) -> str:
    return "anthropic" if path.split("?", 1)[0].startswith("/v1/messages") else "openai"


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def error_shape_problem(path: str, body: bytes) -> Optional[str]:
    """Why ``body`` is not an error in the route's shape (None when it is)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not JSON: {body[:200]!r}"
    if route_shape(path) == "anthropic":
        if not isinstance(data, dict) or data.get("type") != "error":
            return f"not an Anthropic error object: {data!r:.300}"
        error = data.get("error")
        if not isinstance(error, dict) or not _is_str(error.get("type")) or not _is_str(error.get("message")):
            return f"not an Anthropic error object: {data!r:.300}"
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or not {"message", "type", "param", "code"} <= set(error):
        return f"not an OpenAI error object: {data!r:.300}"
    if not _is_str(error["message"]) or not _is_str(error["type"]):
        return f"not an OpenAI error object: {data!r:.300}"
    if not all(error[k] is None or _is_str(error[k]) for k in ("param", "code")):
        return f"not an OpenAI error object: {data!r:.300}"
    return None


def provider_own(path: str, headers: Any, body: bytes) -> bool:
    """Is this 5xx the provider's (passed through, or its failure to answer) rather than the gateway's?"""
    if "x-upstream-request-id" in headers or "request-id" in headers:  # the provider's response, passed on
        return True
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return False
    if route_shape(path) == "anthropic":  # the Anthropic shape has no code: the gateway's message says it
        return str(error.get("message", "")).startswith("the upstream provider")
    return error.get("code") in _UPSTREAM_CODES


def server_log_excerpt(gw: Gateway, request_id: Optional[str]) -> str:
    """The gateway's logged error for ``request_id``: its first line, our own frames and the exception."""
    log = gw.log().splitlines()
    if not request_id:
        return "\n".join(log[-20:])
    for i, line in enumerate(log):
        if f"(request {request_id})" in line:
            end = i + 1
            while end < len(log) and not re.match(r"^\d{4}-\d\d-\d\d ", log[end]):
                end += 1
            block = log[i:end]
            ours = [
                f"{a.strip()} :: {b.strip()}" for a, b in zip(block, block[1:], strict=False) if "/python/tollway/" in a
            ]
            raised = [ln for ln in block if re.match(r"^[A-Za-z_][\w.]*: ", ln)][-1:]
            return "\n".join([block[0], *ours, *raised])
    return f"(no log entry for request {request_id})"


def exception_line(excerpt: str) -> str:
    """The last line of a logged traceback (the exception), for grouping failures."""
    lines = [ln for ln in excerpt.splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def response_problems(
    gw: Gateway, method: str, path: str, response: Any, sent: Any = None, route: Optional[str] = None
) -> list[tuple[str, str]]:
    """What breaks the rules every answer keeps (no 5xx of our own; every error in the route's
    shape), as (grouping key, report) pairs; ``route`` (the path template) groups them."""
    route = route or path.split("?")[0]
    status = response.status_code
    body = response.content
    where = f"{method} {path} -> {status}\nsent: {sent!r:.400}\nbody: {body[:300]!r}"
    problems = []
    if status >= 500 and not provider_own(path, response.headers, body):
        request_id = response.headers.get("x-request-id")
        if isinstance(request_id, list):  # schemathesis' responses hold a list per header
            request_id = request_id[0] if request_id else None
        excerpt = server_log_excerpt(gw, request_id)
        problems.append((f"5xx {method} {route} {exception_line(excerpt)}", f"gateway {status}: {where}\n{excerpt}"))
    if status >= 400:
        problem = error_shape_problem(path, body)
        if problem is not None:
            problems.append(
                (f"shape {method} {route} {status}", f"error body outside the route's shape ({problem}): {where}")
            )
    return problems


def check_response(gw: Gateway, method: str, path: str, response: Any, sent: Any = None) -> None:
    problems = response_problems(gw, method, path, response, sent)
    assert not problems, "\n\n".join(text for _, text in problems)


class Findings:
    """Failures collected over a whole run (instead of stopping at the first), one per distinct key."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, report: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.first.setdefault(key, report)

    def extend(self, problems: list[tuple[str, str]]) -> None:
        for key, report in problems:
            self.add(key, report)

    def assert_none(self) -> None:
        dump = os.environ.get("TOLLWAY_FUZZ_FINDINGS")  # a JSON-lines file to collect them across tests
        if dump and self.first:
            with open(dump, "ab") as out:
                for key, report in self.first.items():
                    test = os.environ.get("PYTEST_CURRENT_TEST", "")
                    out.write(
                        orjson.dumps({"test": test, "key": key, "count": self.counts[key], "report": report}) + b"\n"
                    )
        assert not self.first, f"{len(self.first)} distinct failure(s):\n\n" + "\n\n".join(
            f"[{self.counts[k]}x] {k}\n{report}" for k, report in self.first.items()
        )


def deep(levels: int, leaf: Any = 1, kind: str = "list") -> Any:
    """``levels`` nested arrays (or objects) around ``leaf``."""
    value = leaf
    for _ in range(levels):
        value = [value] if kind == "list" else {"a": value}
    return value


# Every hypothesis run here: seeded (derandomized), no example database, no deadline on
# a shared 2-core machine, the pinned examples first.
FUZZ_SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def register_lookup_tool(gw: Any) -> str:
    """The webhook tool the fuzz runs name in ``tool_ids`` (its webhook never answers)."""
    tool = gw.request(
        "POST", "/v1/tools", gw.admin,
        json={"name": "lookup", "description": "look up", "webhook_url": "http://127.0.0.1:9/hook",
              "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
    )  # fmt: skip
    assert tool.status_code == 201, tool.text
    return tool.json()["id"]
