"""What is accepted can always be read back: whenever a write route answers 2xx, every read route
answers 200, for the standard key and for the admin key, as each may see.

Hypothesis draws the bodies of every write route (near-valid, with odd metadata, unicode, NULs,
long strings, huge numbers); seeded, a fixed number of examples per route and database. A read
that fails is reported with the write that caused it; the written object is then put right (or
deleted) so that one bad row does not fail every later example.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway
from tests.fuzzing import FUZZ_SETTINGS, Findings, deep, response_problems
from tollway.keys import KeyStore
from tollway.store import Database

EXAMPLES_PER_ROUTE = 40  # per database

_names = itertools.count()
TEXT = st.text(min_size=1, max_size=30)
ODD_TEXT = (
    st.sampled_from(
        ["x" * 200, "x" * 201, "\x00", "a\x00b", "é" * 200, "\U0001f600" * 200, " x ", "\u202e\ufeff", "x" * 20_000]
    )
    | TEXT
)
NUMBERS = st.sampled_from([2**64, -(2**63) - 1, 10**40, 1e308, -0.0, 5e-324, 2**53 + 1])
METADATA = st.one_of(
    st.builds(deep, st.sampled_from([31, 32, 33, 100, 300]), st.just("v"), st.sampled_from(["dict", "list"])).map(lambda v: {"m": v}),
    st.sampled_from([{"big": "x" * 20_000}, {"\x00": 1}, {"s": "a\x00b"}, {"é" * 100: "\U0001f600"}, {}]),
    st.dictionaries(TEXT, NUMBERS | ODD_TEXT | st.none() | st.booleans(), max_size=3),
    st.recursive(st.none() | st.integers() | st.text(max_size=5), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=10)
    .map(lambda v: {"r": v}),
)  # fmt: skip
SPEND = st.sampled_from([0, 1, 1e9, 1e9 + 1, 999999999.9999995, "1e9", "0.0000005", 1e-7, 2**64, -0.0, "12.50", None])
SYSTEM = st.sampled_from(["", "\x00", "s\x00s", "x" * 100_000, "é\u202e", None]) | TEXT
SCHEMAS = st.sampled_from(
    [{"type": "object"}, {"type": "object", "description": "\x00"}, {"type": "object", "x-n": 2**64},
     {"type": "object", "properties": {"a": {"type": "string", "pattern": "a\x00"}}}]
) | st.builds(lambda n: {"type": "object", **deep(n, {"type": "string"}, "dict")}, st.sampled_from([30, 100, 300])) | st.builds(
    lambda n: nested_properties(n), st.sampled_from([10, 31, 50, 100])
)  # fmt: skip
URLS = st.sampled_from(
    ["http://127.0.0.1:9/h", "http://127.0.0.1:9/" + "x" * 2000, "http://xn--e-ufa.example/é", "http://[::1]:9/"]
)
CONTENT = st.sampled_from(["hi", "hi \x00 there", "é" * 1000, [{"type": "text", "text": "x\x00"}],
                           [{"type": "text", "text": "t", "extra": deep(100)}], [{"type": "text", "text": "t", "n": 2**64}]])  # fmt: skip


@st.composite
def near_valid(draw, base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    body = dict(base)
    for name in sorted(draw(st.sets(st.sampled_from(sorted(fields)), min_size=1, max_size=2))):
        body[name] = draw(fields[name])
    return body


def _tool_name() -> str:
    return f"t{next(_names)}"


@dataclass
class Ctx:
    gw: Gateway
    admin: str  # the admin key of this route's own account
    std_id: str
    std: str
    written: dict[str, str] = field(default_factory=dict)  # "key" / "thread" / "tool" -> id
    std_sees_thread: bool = True  # the written thread is the standard key's (not an admin's)


@dataclass
class Write:
    method: str
    template: str
    bodies: Any
    target: Optional[Callable[[Ctx], tuple[str, str]]] = None  # makes the object written to: (kind, id)
    as_admin: bool = True


def _new_key(c: Ctx) -> tuple[str, str]:
    return "key", c.gw.mint(c.admin)[0]


def _new_thread(c: Ctx) -> tuple[str, str]:
    r = c.gw.request("POST", "/v1/threads", c.std, json={})
    assert r.status_code == 201, r.text
    return "thread", r.json()["id"]


def _new_tool(c: Ctx) -> tuple[str, str]:
    body = {
        "name": _tool_name(),
        "description": "d",
        "input_schema": {"type": "object"},
        "webhook_url": "http://127.0.0.1:9/h",
    }
    r = c.gw.request("POST", "/v1/tools", c.admin, json=body)
    assert r.status_code == 201, r.text
    return "tool", r.json()["id"]


_KEY_FIELDS = {"name": ODD_TEXT, "max_spend_usd": SPEND, "metadata": METADATA}
_THREAD_FIELDS = {"metadata": METADATA, "system": SYSTEM}
_TOOL_FIELDS = {
    "name": ODD_TEXT,
    "description": ODD_TEXT,
    "input_schema": SCHEMAS,
    "webhook_url": URLS,
    "timeout_ms": st.sampled_from([100, 120_000]),
}
_TURN_FIELDS = {
    "content": CONTENT,
    "metadata": METADATA,
    "system": SYSTEM,
    "max_tokens": st.sampled_from([1, 16, 2**31 - 1]),
}

WRITES = {
    "POST /v1/keys": Write("POST", "/v1/keys", near_valid({"name": "k"}, {**_KEY_FIELDS, "end_user_id": ODD_TEXT, "scope": st.sampled_from(["standard", "admin"])})),
    "PATCH /v1/keys/{id}": Write("PATCH", "/v1/keys/{id}", near_valid({}, _KEY_FIELDS), _new_key),
    "POST /v1/threads (standard)": Write("POST", "/v1/threads", near_valid({}, _THREAD_FIELDS), as_admin=False),
    "POST /v1/threads (admin)": Write("POST", "/v1/threads", near_valid({}, {**_THREAD_FIELDS, "end_user_id": ODD_TEXT})),
    "PATCH /v1/threads/{id}": Write("PATCH", "/v1/threads/{id}", near_valid({}, _THREAD_FIELDS), _new_thread, as_admin=False),
    "POST /v1/threads/{id}/messages": Write(
        "POST", "/v1/threads/{id}/messages", near_valid({"model": "out-claude", "content": "hi", "max_tokens": 8}, _TURN_FIELDS),
        _new_thread, as_admin=False,
    ),
    "POST /v1/tools": Write(
        "POST", "/v1/tools",
        near_valid({"description": "d", "input_schema": {"type": "object"}, "webhook_url": "http://127.0.0.1:9/h"}, _TOOL_FIELDS),
    ),
    "PATCH /v1/tools/{id}": Write("PATCH", "/v1/tools/{id}", near_valid({}, {**_TOOL_FIELDS, "rotate_secret": st.booleans()}), _new_tool),
}  # fmt: skip


_DEEP_META = {"m": deep(300, "v", "dict")}


def nested_properties(levels: int) -> dict[str, Any]:
    """An object schema whose property is an object schema, ``levels`` deep (valid JSON Schema)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


_DEEP_SCHEMA = nested_properties(100)
_TOOL = {"description": "d", "input_schema": {"type": "object"}, "webhook_url": "http://127.0.0.1:9/h"}
_TURN = {"model": "out-claude", "content": "hi", "max_tokens": 8}
SEEDS: dict[str, list[dict[str, Any]]] = {  # bodies that once broke a read (or the write): tried on every run
    "POST /v1/keys": [{"name": "k", "metadata": _DEEP_META}, {"name": "a\x00b"}, {"name": "k", "end_user_id": "u\x00"}],
    "PATCH /v1/keys/{id}": [{"metadata": _DEEP_META}, {"name": "a\x00b"}],
    "POST /v1/threads (standard)": [{"metadata": _DEEP_META}, {"system": "s\x00"}],
    "POST /v1/threads (admin)": [{"metadata": _DEEP_META}, {"end_user_id": "u\x00"}],
    "PATCH /v1/threads/{id}": [{"metadata": _DEEP_META}, {"system": "s\x00"}],
    "POST /v1/threads/{id}/messages": [
        {**_TURN, "metadata": _DEEP_META},
        {**_TURN, "content": "hi \x00"},
        {**_TURN, "content": [{"type": "text", "text": "t", "extra": deep(300)}]},
    ],
    "POST /v1/tools": [{**_TOOL, "input_schema": _DEEP_SCHEMA}, {**_TOOL, "description": "d\x00"}],
    "PATCH /v1/tools/{id}": [{"input_schema": _DEEP_SCHEMA}, {"description": "d\x00"}],
}


def _pages(gw: Gateway, path: str, key: str, limit: int) -> list[tuple[str, Any]]:
    """Every page of a list (following last_id): (url, response) of each."""
    out, after = [], None
    for _ in range(50):
        url = f"{path}?limit={limit}" + (f"&after={after}" if after else "")
        r = gw.request("GET", url, key)
        out.append((url, r))
        if r.status_code != 200 or not r.json().get("has_more"):
            break
        after = r.json()["last_id"]
    return out


def reads(c: Ctx, admin: bool) -> list[tuple[str, str, Any]]:
    """(route, url, response) of every read the key may make after the write."""
    gw, key = c.gw, (c.admin if admin else c.std)
    urls: list[tuple[str, str]] = [("GET /v1/threads", "/v1/threads?limit=100")]
    thread = c.written.get("thread")
    if thread and (admin or c.std_sees_thread):
        urls += [
            (f"GET /v1/threads/{{id}}{s}", f"/v1/threads/{thread}{s}{q}")
            for s, q in (("", ""), ("/messages", "?limit=100"), ("/export", ""))
        ]
    if c.written.get("tool"):
        urls.append(("GET /v1/tools/{id}", f"/v1/tools/{c.written['tool']}"))
    urls.append(("GET /v1/keys/{id}/usage", f"/v1/keys/{c.std_id}/usage"))
    if admin:
        urls.append(("GET /v1/usage", "/v1/usage?from_ms=0"))
        for key_id in {c.std_id, c.written.get("key", c.std_id)}:
            urls += [
                ("GET /v1/keys/{id}", f"/v1/keys/{key_id}"),
                ("GET /v1/keys/{id}/usage", f"/v1/keys/{key_id}/usage"),
            ]
    out = [(route, url, gw.request("GET", url, key)) for route, url in urls]
    out += [("GET /v1/tools", url, r) for url, r in _pages(gw, "/v1/tools", key, 100)]
    if admin:
        out += [("GET /v1/keys", url, r) for url, r in _pages(gw, "/v1/keys", key, 500)]
    return out


def repair(c: Ctx) -> None:
    """Put the written object right (or delete it), so that later examples read cleanly."""
    gw = c.gw
    if "thread" in c.written:
        gw.request("DELETE", f"/v1/threads/{c.written.pop('thread')}", c.admin)
    if "tool" in c.written:
        gw.request("DELETE", f"/v1/tools/{c.written.pop('tool')}", c.admin)
    if "key" in c.written:
        gw.request("PATCH", f"/v1/keys/{c.written['key']}", c.admin, json={"name": "repaired", "metadata": {}})


def new_account(gw: Gateway, name: str) -> str:
    """A tenant of its own (its admin key's secret): a row one route leaves unreadable cannot
    fail the reads of another route's run."""
    db = Database(gw.database_url)
    try:
        return KeyStore(db).new_account(name)[1]
    finally:
        db.dispose()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("write", list(WRITES))
def test_accepted_writes_read_back(fuzz_gateway: Gateway, write: str) -> None:
    gw, spec = fuzz_gateway, WRITES[write]
    owner = new_account(gw, write)
    std = gw.mint(owner, max_spend_usd=1000)
    findings = Findings()
    broken: list[str] = []

    @settings(max_examples=EXAMPLES_PER_ROUTE, **FUZZ_SETTINGS)
    @given(spec.bodies)
    def run(body: dict[str, Any]) -> None:
        if broken:  # a bad row that could not be repaired would fail every later read
            return
        c = Ctx(gw, owner, *std, std_sees_thread=not spec.as_admin)
        path = spec.template
        if spec.target is not None:
            kind, target = spec.target(c)
            c.written[kind] = target
            path = path.format(id=target)
        if spec.template == "/v1/tools" and "name" not in body:
            body = {**body, "name": _tool_name()}
        r = gw.request(spec.method, path, owner if spec.as_admin else c.std, json=body)
        findings.extend(response_problems(gw, spec.method, path, r, body, spec.template))
        accepted = 200 <= r.status_code < 300
        if not accepted and r.status_code < 500:  # refused: nothing stored (a 5xx may have stored it all the same)
            return
        if accepted and spec.target is None:
            c.written[{"/v1/keys": "key", "/v1/threads": "thread", "/v1/tools": "tool"}[spec.template]] = r.json()["id"]
        failed = False
        for admin in (False, True):
            for route, url, resp in reads(c, admin):
                if resp.status_code != 200:
                    failed = True
                    who = "admin" if admin else "standard"
                    problems = response_problems(gw, "GET", url, resp, route=route)
                    detail = problems[0][1] if problems else resp.text[:300]
                    key = f"{write} -> {route} ({who}) {resp.status_code} " + (
                        problems[0][0].rsplit(route, 1)[-1] if problems else ""
                    )
                    findings.add(key, f"after {spec.method} {path} with {body!r:.400} -> {r.status_code}:\n{detail}")
        if failed or r.status_code >= 500:
            repair(c)
            if any(resp.status_code != 200 for admin in (False, True) for _, _, resp in reads(c, admin)):
                broken.append(write)

    for body in SEEDS[write]:
        run = example(body)(run)
    run()
    findings.assert_none()
