"""Property tests of tollway._core.StreamScanner (SSE tee + accounting)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway._core import StreamScanner, Usage

TEXTS = ["Hello", " world", "héllo 世界 🙂", "", "line\nbreak", 'quote " and \\ back', "ok", "🙂🙂", "日本語"]
EOLS = ["\n", "\r\n", "\r"]


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Style:
    eol: str = "\n"
    comments: bool = False
    multiline: bool = False
    space: bool = True  # "data: x" vs "data:x"
    event_lines: bool = True  # Anthropic: emit "event:" lines


def event(data: str, style: Style, name: str | None = None, idx: int = 0) -> str:
    lines = []
    if style.comments:
        lines.append(": keep-alive")
    if name and style.event_lines:
        lines.append(f"event: {name}")
    prefix = "data: " if style.space else "data:"
    if style.multiline and data.startswith("{") and ',"' in data:
        # Split between two top-level members: the joined data is the same JSON
        # with a newline as whitespace.
        cut = data.find(',"choices"')
        if cut < 0:
            cut = data.index(',"')
        lines.append(prefix + data[:cut])
        lines.append(prefix + data[cut:])
    else:
        lines.append(prefix + data)
    return style.eol.join(lines) + style.eol + style.eol


# ---------------------------------------------------------------- OpenAI


@dataclass
class OpenAIStream:
    texts: list[str]
    tools: list[tuple[str, str, list[str]]]  # (id, name, argument fragments)
    usage: tuple[int, int, int]  # prompt, completion, cached
    usage_pos: int  # where "usage":null goes among the members (0 first, 1 middle, 2 last)

    def chunk(self, choices, include_usage: bool, usage=None) -> str:
        members = [
            ("id", "chatcmpl-1"),
            ("object", "chat.completion.chunk"),
            ("created", 1700000000),
            ("model", "gpt-4o-mini"),
            ("choices", choices),
        ]
        if include_usage:
            members.insert([0, 3, 5][self.usage_pos], ("usage", usage))
        return dumps(dict(members))

    def render(self, style: Style, include_usage: bool) -> bytes:
        events = []
        first = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
        events.append(self.chunk(first, include_usage))
        for t in self.texts:
            events.append(self.chunk([{"index": 0, "delta": {"content": t}, "finish_reason": None}], include_usage))
        for i, (tid, name, frags) in enumerate(self.tools):
            head = {"index": i, "id": tid, "type": "function", "function": {"name": name, "arguments": ""}}
            events.append(
                self.chunk([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}], include_usage)
            )
            for f in frags:
                d = {"tool_calls": [{"index": i, "function": {"arguments": f}}]}
                events.append(self.chunk([{"index": 0, "delta": d, "finish_reason": None}], include_usage))
        finish = "tool_calls" if self.tools else "stop"
        events.append(self.chunk([{"index": 0, "delta": {}, "finish_reason": finish}], include_usage))
        if include_usage:
            p, c, cached = self.usage
            u = {
                "prompt_tokens": p,
                "completion_tokens": c,
                "total_tokens": p + c,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            }
            events.append(self.chunk([], True, u))
        events.append("[DONE]")
        return "".join(event(e, style, idx=i) for i, e in enumerate(events)).encode()

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tools else "stop"

    @property
    def tool_calls(self) -> list[dict]:
        return [{"id": tid, "name": name, "arguments": "".join(frags)} for tid, name, frags in self.tools]


styles = st.builds(
    Style,
    eol=st.sampled_from(EOLS),
    comments=st.booleans(),
    multiline=st.booleans(),
    space=st.booleans(),
    event_lines=st.booleans(),
)
frags = st.lists(st.sampled_from(['{"city":', '"Paris', 'é 世"', ',"n":1', "}", ""]), min_size=0, max_size=4)
openai_streams = st.builds(
    OpenAIStream,
    texts=st.lists(st.sampled_from(TEXTS), min_size=0, max_size=6),
    tools=st.lists(
        st.tuples(st.sampled_from(["call_a", "call_b"]), st.sampled_from(["get_weather", "lookup"]), frags), max_size=2
    ),
    usage=st.tuples(st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 10**6)).map(
        lambda t: (t[0] + t[2], t[1], t[2])
    ),
    usage_pos=st.integers(0, 2),
)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def run(sc: StreamScanner, chunks: list[bytes]) -> bytes:
    out = []
    for c in chunks:
        r = sc.feed(c)
        assert isinstance(r, bytes)
        out.append(r)
    out.append(sc.finish())
    return b"".join(out)


def state(sc: StreamScanner):
    u = sc.usage
    return (
        None
        if u is None
        else (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens, u.model, u.finish_reason),
        sc.text,
        sc.tool_calls_json,
        sc.finish_reason,
        sc.completed,
        sc.delta_count,
        sc.error_json,
    )


cuts = st.lists(st.integers(0, 100_000), max_size=40)
small_cuts = st.lists(st.integers(0, 4000), max_size=60)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(s=openai_streams, style=styles, cut=small_cuts, include_usage=st.booleans())
def test_openai_passthrough_any_split(s: OpenAIStream, style: Style, cut, include_usage):
    data = s.render(style, include_usage)
    one = StreamScanner("openai")
    assert run(one, [data]) == data
    sc = StreamScanner("openai")
    chunks = splits(data, cut)
    forwarded = b""
    for c in chunks:
        r = sc.feed(c)
        assert r is c or r == c  # byte-faithful: the input itself
        forwarded += r
    forwarded += sc.finish()
    assert forwarded == data
    assert state(sc) == state(one)
    assert sc.text == "".join(s.texts)
    assert json.loads(sc.tool_calls_json) == s.tool_calls
    assert sc.finish_reason == s.finish_reason
    assert sc.completed
    if include_usage:
        p, c, cached = s.usage
        u = sc.usage
        assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
            p - cached,
            c,
            cached,
            0,
        )
        assert u.model == "gpt-4o-mini" and not u.estimated
    else:
        assert sc.usage is None


@SETTINGS
@given(s=openai_streams, style=styles, cut=small_cuts)
def test_openai_strip_usage_any_split(s: OpenAIStream, style: Style, cut):
    with_usage = s.render(style, include_usage=True)
    without = s.render(style, include_usage=False)
    sc = StreamScanner("openai", strip_usage_chunk=True)
    assert run(sc, splits(with_usage, cut)) == without
    p, c, cached = s.usage
    u = sc.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (p - cached, c, cached)
    assert sc.text == "".join(s.texts)
    assert json.loads(sc.tool_calls_json) == s.tool_calls
    assert sc.completed
    # Stripping a stream that never had usage is the identity.
    sc2 = StreamScanner("openai", strip_usage_chunk=True)
    assert run(sc2, splits(without, cut)) == without
    assert sc2.usage is None


def test_strip_removes_only_top_level_usage_null():
    ev = (
        b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"\\"usage\\":null","usage":null}}],"usage":null}\n\n'
    )
    sc = StreamScanner("openai", strip_usage_chunk=True)
    out = sc.feed(ev) + sc.finish()
    assert out == b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"\\"usage\\":null","usage":null}}]}\n\n'
    assert json.loads(out[6:])
    assert sc.text == '"usage":null'


def test_strip_keeps_usage_with_choices_and_pretty_json():
    # A usage object next to non-empty choices is not the usage-only chunk: keep it.
    ev = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    )
    sc = StreamScanner("openai", strip_usage_chunk=True)
    assert sc.feed(ev) == ev
    pretty = b'data: { "usage" : null , "choices": [] }\n\n'
    sc = StreamScanner("openai", strip_usage_chunk=True)
    out = sc.feed(pretty)
    assert out == b'data: { "choices": [] }\n\n'


def test_incomplete_trailing_event_flushed_as_is():
    sc = StreamScanner("openai", strip_usage_chunk=True)
    part = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}'
    assert sc.feed(part) == b""
    assert sc.finish() == part
    assert sc.text == "hi"  # still accounted for


def test_in_stream_error_and_unknown_kind():
    sc = StreamScanner("openai")
    sc.feed(b'data: {"error":{"message":"boom","type":"server_error"}}\n\n')
    assert json.loads(sc.error_json)["error"]["message"] == "boom"
    with pytest.raises(ValueError):
        StreamScanner("gemini")


# ---------------------------------------------------------------- Anthropic


@dataclass
class AnthropicStream:
    texts: list[str]
    tools: list[tuple[str, str, list[str]]]
    thinking: list[str]
    input_tokens: int
    cache_read: int
    cache_write: int
    output_tokens: int
    late_input: bool  # newer API: message_delta usage repeats input/cache counts

    def events(self) -> list[tuple[str, dict]]:
        ev = []
        usage = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": 1,
        }
        msg = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        ev.append(("message_start", {"type": "message_start", "message": msg}))
        idx = 0
        if self.thinking:
            ev.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": idx,
                        "content_block": {"type": "thinking", "thinking": ""},
                    },
                )
            )
            for t in self.thinking:
                ev.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": idx,
                            "delta": {"type": "thinking_delta", "thinking": t},
                        },
                    )
                )
            ev.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": idx,
                        "delta": {"type": "signature_delta", "signature": "c2ln"},
                    },
                )
            )
            ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
            idx += 1
        ev.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": idx, "content_block": {"type": "text", "text": ""}},
            )
        )
        ev.append(("ping", {"type": "ping"}))
        for t in self.texts:
            ev.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": t}},
                )
            )
        ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
        for tid, name, frags in self.tools:
            idx += 1
            ev.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": idx,
                        "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}},
                    },
                )
            )
            for f in frags:
                ev.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": idx,
                            "delta": {"type": "input_json_delta", "partial_json": f},
                        },
                    )
                )
            ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
        du = {"output_tokens": self.output_tokens}
        if self.late_input:
            du.update(
                input_tokens=self.input_tokens,
                cache_read_input_tokens=self.cache_read,
                cache_creation_input_tokens=self.cache_write,
            )
        ev.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.finish_reason, "stop_sequence": None},
                    "usage": du,
                },
            )
        )
        ev.append(("message_stop", {"type": "message_stop"}))
        return ev

    @property
    def finish_reason(self) -> str:
        return "tool_use" if self.tools else "end_turn"

    def render(self, style: Style, truncate_at: int | None = None) -> bytes:
        evs = self.events()[:truncate_at]
        return "".join(event(dumps(d), style, name, i) for i, (name, d) in enumerate(evs)).encode()


anthropic_streams = st.builds(
    AnthropicStream,
    texts=st.lists(st.sampled_from(TEXTS), max_size=6),
    tools=st.lists(
        st.tuples(st.sampled_from(["toolu_1", "toolu_2"]), st.sampled_from(["get_weather", "search"]), frags),
        max_size=2,
    ),
    thinking=st.lists(st.sampled_from(["hmm", "let me think 🤔"]), max_size=2),
    input_tokens=st.integers(0, 10**6),
    cache_read=st.integers(0, 10**5),
    cache_write=st.integers(0, 10**5),
    output_tokens=st.integers(1, 10**5),
    late_input=st.booleans(),
)


@SETTINGS
@given(s=anthropic_streams, style=styles, cut=small_cuts)
def test_anthropic_any_split(s: AnthropicStream, style: Style, cut):
    data = s.render(style)
    one = StreamScanner("anthropic")
    assert run(one, [data]) == data
    sc = StreamScanner("anthropic", strip_usage_chunk=True)  # strip is OpenAI-only: ignored here
    assert run(sc, splits(data, cut)) == data
    assert state(sc) == state(one)
    assert sc.text == "".join(s.texts)
    assert json.loads(sc.tool_calls_json) == [{"id": i, "name": n, "arguments": "".join(f)} for i, n, f in s.tools]
    assert sc.finish_reason == s.finish_reason
    assert sc.completed
    u = sc.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        s.input_tokens,
        s.output_tokens,
        s.cache_read,
        s.cache_write,
    )
    assert u.model == "claude-sonnet-4" and u.finish_reason == s.finish_reason
    nonempty_frags = sum(len(f) for _, _, f in s.tools)
    assert sc.delta_count == len(s.texts) + nonempty_frags + len(s.thinking)


@SETTINGS
@given(s=anthropic_streams, cut=small_cuts)
def test_anthropic_truncated(s: AnthropicStream, cut):
    # Cut before message_delta: only message_start's counts are known.
    evs = s.events()
    data = s.render(Style(), truncate_at=len(evs) - 2)
    sc = StreamScanner("anthropic")
    run(sc, splits(data, cut))
    assert not sc.completed
    assert sc.finish_reason is None
    u = sc.usage
    assert (u.input_tokens, u.output_tokens) == (s.input_tokens, 1)


def test_anthropic_error_event():
    data = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    sc = StreamScanner("anthropic")
    sc.feed(data)
    assert json.loads(sc.error_json)["error"]["type"] == "overloaded_error"
    assert sc.usage is None and not sc.completed


def test_usage_class():
    u = Usage(1, 2, estimated=True, model="m")
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.estimated, u.model, u.finish_reason) == (
        1,
        2,
        0,
        True,
        "m",
        None,
    )
    u.output_tokens = 5
    assert u.output_tokens == 5
    assert u == Usage(1, 5, estimated=True, model="m")
