"""Hypothesis fuzz of the model routes' request bodies (POST /v1/chat/completions, /v1/messages,
/v1/responses and a thread turn): arbitrary JSON and raw bytes mixed with near-valid bodies whose fields take wrong types,
huge integers, deep nesting, NUL characters and long strings.

Every answer: below 500 unless the provider answered 5xx, any error in the route's shape, and no
money left held on the key afterwards. Seeded (derandomized), a fixed number of examples per route.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway
from tests.fuzzing import FAST_MODELS, FUZZ_SETTINGS, Findings, deep, register_lookup_tool, response_problems

EXAMPLES_PER_ROUTE = 200  # per database

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12
)
HUGE_INTS = st.sampled_from(
    [0, -1, 2**31 - 1, 2**31, 2**53, 2**53 + 1, 2**63, 2**64, 14757395258967642, 10**40, -(2**63)]
)
ODD_STRINGS = st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "x" * 100_000, "é" * 5000, "\u202e\ufeff"])
DEPTHS = st.sampled_from([31, 32, 33, 64, 100, 300, 600])
DEEP = st.builds(deep, DEPTHS, st.just(1), st.sampled_from(["list", "dict"]))
ODD = HUGE_INTS | ODD_STRINGS | DEEP | JSON


def _messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


PROMPTS = st.sampled_from(
    ["hi", "hello #words=3", "hi \x00 there", "x" * 50_000, "fail #status=500 #retry_after=0", "é\u202e"]
)
MESSAGES = (
    st.builds(_messages, PROMPTS)
    | st.sampled_from([1, "hi", [], [1], [None], ["hi"], [{"role": "bogus", "content": 1}], [{"role": "user"}],
                       [{"role": "user", "content": [{"type": "text", "text": 5}]}],
                       [{"role": "user", "content": [{"type": "image", "source": "x"}]}],
                       [{"role": "assistant", "content": "a", "tool_calls": 1}], [{"role": "tool", "content": "r"}]])
    | DEEP
)  # fmt: skip
TOOLS = st.sampled_from(
    [1, "x", [1], [{}], [{"type": "function"}], [{"type": "function", "function": 1}], {"a": 1},
     [{"name": "t", "input_schema": deep(100, kind="dict")}], [{"name": "t", "description": 1, "input_schema": []}]]
) | DEEP  # fmt: skip
STREAMS = st.sampled_from([True, False, None, "true", 1, 0, [], {}])


def tool_ids(real: str):
    return (
        st.sampled_from([1, "x", [], [1], [None], ["\x00"], ["nope"], [real], [real, real], [real, 1], [real, "\x00"]])
        | DEEP
    )


@st.composite
def near_valid(draw, base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``base`` (with any of the fast models) with one or two fields given odd values: more at once
    would mostly stop at the first check, never reaching the later ones."""
    body = {**base, "model": draw(st.sampled_from(FAST_MODELS))}
    for name in sorted(draw(st.sets(st.sampled_from(sorted(fields)), min_size=1, max_size=2))):
        body[name] = draw(fields[name])
    if draw(st.integers(0, 9)) == 0:
        body.pop(draw(st.sampled_from(sorted(base))), None)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["x", "metadata", "\x00", "n" * 300, "stop"]))] = draw(ODD)
    return body


def bodies(base: dict[str, Any], fields: dict[str, Any]):
    near = near_valid(base, fields)
    return st.one_of(near, near, near, near, JSON, RAW)


def encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode()  # \ud800 and such go out as JSON escapes, huge ints as digits


RAW = st.sampled_from([b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000,
                       b'{"model": "test-gpt", "messages": [' * 1 + b"1" * 10, b'{"model":"test-gpt"}' * 2])  # fmt: skip


def chat_bodies(real_tool: str):
    base = {"model": "test-gpt", "messages": _messages("hi"), "max_tokens": 16}
    fields = {
        "model": st.sampled_from(FAST_MODELS) | ODD, "max_tokens": HUGE_INTS | ODD, "max_completion_tokens": HUGE_INTS,
        "stream": STREAMS, "messages": MESSAGES, "tools": TOOLS, "tool_ids": tool_ids(real_tool),
        "max_tool_turns": HUGE_INTS | ODD, "stream_options": st.sampled_from([1, {"include_usage": "yes"}, {"include_usage": True}]),
    }  # fmt: skip
    return bodies(base, fields)


def anthropic_bodies(real_tool: str):
    base = {"model": "test-claude", "messages": _messages("hi"), "max_tokens": 16}
    fields = {
        "model": st.sampled_from(FAST_MODELS) | ODD, "max_tokens": HUGE_INTS | ODD, "stream": STREAMS,
        "messages": MESSAGES, "system": ODD | st.sampled_from([[{"type": "text", "text": "s"}], [1]]),
        "tools": TOOLS, "tool_ids": tool_ids(real_tool), "max_tool_turns": HUGE_INTS | ODD,
        "tool_choice": st.sampled_from([1, "auto", {"type": "none"}, {"type": "tool"}]),
    }  # fmt: skip
    return bodies(base, fields)


RESPONSES_INPUTS = st.sampled_from(
    [[], [1], [{"role": "user", "content": "hi"}], [{"role": "bogus", "content": "x"}], [{"role": "user"}],
     [{"role": "user", "content": [{"type": "input_text", "text": 5}]}], [{"role": "user", "content": [{"type": "input_image"}]}],
     [{"type": "function_call_output", "call_id": "call_x", "output": "1"}], [{"type": "function_call", "call_id": 1}]]
) | PROMPTS | DEEP  # fmt: skip


def responses_bodies(real_tool: str):
    base = {"model": "test-gpt", "input": "hi", "max_output_tokens": 16}
    fields = {
        "model": st.sampled_from(FAST_MODELS) | ODD, "max_output_tokens": HUGE_INTS | ODD, "stream": STREAMS,
        "input": RESPONSES_INPUTS | ODD, "instructions": ODD, "tools": TOOLS, "tool_ids": tool_ids(real_tool),
        "previous_response_id": ODD, "reasoning": ODD, "text": ODD | st.just({"format": {"type": "json_schema", "schema": 1}}),
    }  # fmt: skip
    return bodies(base, fields)


def turn_bodies(real_tool: str):
    base = {"model": "out-claude", "content": "hi", "max_tokens": 16}
    fields = {
        "model": st.sampled_from(FAST_MODELS) | ODD, "content": PROMPTS | ODD | st.sampled_from(
            [[], [1], [{"type": "text"}], [{"type": "image", "source": 1}], [{"type": "tool_result"}], [{"type": "text", "text": "\x00"}]]
        ),
        "max_tokens": HUGE_INTS | ODD, "stream": STREAMS, "system": ODD, "metadata": ODD,
        "tools": TOOLS, "tool_ids": tool_ids(real_tool), "max_tool_turns": HUGE_INTS | ODD, "temperature": ODD,
    }  # fmt: skip
    return bodies(base, fields)


def seeds(route: str, tool: str) -> list[Any]:
    """Known near-valid bodies that failed once: tried on every run, before the generated ones."""
    hi = _messages("hi")
    if route == "thread-turn":
        common = [{"model": m, "content": "hi", "max_tokens": 14757395258967642} for m in FAST_MODELS]
        return common + [
            {"model": "out-claude", "content": "hi", "max_tokens": 2**63},
            {"model": "out-claude", "content": "hi", "tools": 1, "tool_ids": [tool]},
            {"model": "out-gpt", "content": "hi", "tools": 1, "tool_ids": [tool]},
            {"model": "out-claude", "content": "hi \x00", "system": "s\x00"},
            {"model": "out-claude", "content": "hi", "metadata": deep(300, kind="dict")},
        ]
    common = [{"model": m, "messages": hi, "max_tokens": 14757395258967642} for m in FAST_MODELS]
    return common + [
        {"model": "test-gpt", "messages": hi, "max_tokens": 2**63},
        {"model": "test-claude", "messages": hi, "max_tokens": 2**63},
        {"model": "test-gpt", "messages": hi, "max_tokens": 16, "tools": 1, "tool_ids": [tool]},
        {"model": "test-claude", "messages": hi, "max_tokens": 16, "tools": 1, "tool_ids": [tool]},
        {"model": "test-claude", "messages": hi, "max_tokens": 16, "metadata": deep(300, kind="dict")},
        {"model": "test-gpt", "messages": hi, "max_tokens": 16, "tool_ids": ["\x00"]},
    ]


ROUTES = {
    "chat": ("/v1/chat/completions", chat_bodies),
    "messages": ("/v1/messages", anthropic_bodies),
    "responses": ("/v1/responses", responses_bodies),
    "thread-turn": ("/v1/threads/{thread}/messages", turn_bodies),
}


@pytest.fixture(scope="module")
def setup(fuzz_gateway: Gateway) -> dict[str, str]:
    gw = fuzz_gateway
    key_id, secret = gw.mint(max_spend_usd=1000)
    tool = register_lookup_tool(gw)
    thread = gw.request("POST", "/v1/threads", secret, json={})
    assert thread.status_code == 201, thread.text
    return {"key_id": key_id, "secret": secret, "tool": tool, "thread": thread.json()["id"]}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_model_route_bodies(fuzz_gateway: Gateway, setup: dict[str, str], route: str) -> None:
    gw = fuzz_gateway
    template, make_bodies = ROUTES[route]
    path = template.format(thread=setup["thread"])
    headers = {
        "authorization": f"Bearer {setup['secret']}",
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
    }
    findings = Findings()
    leaked: list[int] = []

    @settings(max_examples=EXAMPLES_PER_ROUTE, **FUZZ_SETTINGS)
    @given(make_bodies(setup["tool"]))
    def run(body: Any) -> None:
        raw = encode(body)
        response = gw._client.request("POST", gw.url + path, headers=headers, content=raw)
        findings.extend(response_problems(gw, "POST", path, response, body, template))
        if leaked:  # a hold that never returns would be reported for every later example too
            return
        held = gw.wait_settled(setup["key_id"], timeout=5)["reserved_micros"]
        if held:
            leaked.append(held)
            findings.add(
                f"held POST {template}",
                f"{held} micro-USD still held 5 s after POST {path} -> {response.status_code}: sent {raw[:300]!r}",
            )

    for body in seeds(route, setup["tool"]):  # cases that once broke the gateway, first
        run = example(body)(run)
    run()
    findings.assert_none()
