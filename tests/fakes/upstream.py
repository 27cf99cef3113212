"""Fake OpenAI + Anthropic upstream: one pure ASGI app speaking both real wire formats.

Replies, token counts and failures are deterministic and steered by ``#directives``
in the last user message; see README.md next to this file.
"""

import asyncio
import gc
import itertools
import os
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import orjson

from . import extras
from .fdtable import reserve_fd_table

OPENAI_KEY = os.environ.get("FAKE_OPENAI_KEY", "sk-fake-openai")
ANTHROPIC_KEY = os.environ.get("FAKE_ANTHROPIC_KEY", "sk-ant-fake")
_OPENAI_BEARER = b"Bearer " + OPENAI_KEY.encode()
_ANTHROPIC_KEY = ANTHROPIC_KEY.encode()

DEFAULT_REPLY_LEN = 12
TOKENS_PER_MESSAGE = 3
TOKENS_PER_IMAGE = 85
MAX_RECORDS = 500
HANG_SECONDS = 600.0

_INT_DIRECTIVES = frozenset(
    ("words", "status", "fail", "delay_ms", "chunk_delay_ms", "cut_after", "cache_read", "cache_write", "tool_turns")
)
_STR_DIRECTIVES = frozenset(("id", "tool"))
_FLAG_DIRECTIVES = frozenset(("hang", "no_usage"))

_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"

# A provider does not pause every stream at once, so neither may its stand-in. With
# thousands of streams open, a collection of the cyclic GC's older generations walks
# every stream's objects: 30-120 ms on a 2-core VM, stalling them all, and the fake's
# own pauses were then what any latency measured through it showed (the hold tests of
# benches/load.py saw exactly that). Its objects are almost all acyclic: the young
# generation is still collected (short pauses; cycles mostly die young) and the older
# ones practically never.
gc.set_threshold(2_000, 1_000_000, 1_000_000)


reserve_fd_table()  # see fdtable.py

# --- introspection state (per worker process) -------------------------------------

_records: deque = deque(maxlen=MAX_RECORDS)  # (path, raw headers, raw body, monotonic t)
_fail_counts: dict[str, int] = {}
_sent: dict[str, bytes] = {}  # #id -> the exact body bytes of its last successful reply
_stats = {"open_streams": 0, "aborted_streams": 0, "completed_streams": 0, "requests": 0, "completed_calls": 0}

_ID_PREFIX = os.urandom(4).hex()  # keeps ids distinct across workers
_serial = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}{_ID_PREFIX}{next(_serial):016x}"


# --- request model --------------------------------------------------------------


class BadRequest(Exception):
    """The request body is not something the real API would accept."""


@dataclass(slots=True)
class Turn:
    """What a provider parser extracts from a request body."""

    model: str
    input_tokens: int
    directives: dict
    tools: tuple  # declared tools that #tool=a,b asks to call in this turn (empty: a text reply)
    query: str  # tool calls only: first non-directive word of the prompt
    max_tokens: int | None
    stream: bool
    include_usage: bool = False


@dataclass(slots=True)
class Reply:
    tokens: tuple  # text tokens ("w0", " w1", ...) or tool-argument JSON fragments (all calls)
    finish: str  # "stop" | "length" | "tool"
    tool_args: str = ""
    fragments: tuple = ()  # one call's argument fragments

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def text_tokens(text: str) -> int:
    return (len(text.encode()) + 3) // 4


def parse_directives(text: str) -> dict:
    """``#name=value`` / ``#name`` words of ``text``; unknown names are ignored."""
    found: dict = {}
    if "#" not in text:
        return found
    for word in text.split():
        if not word.startswith("#"):
            continue
        name, has_value, value = word[1:].partition("=")
        try:
            if name in _INT_DIRECTIVES and has_value:
                found[name] = int(value)
            elif name in _STR_DIRECTIVES and has_value:
                found[name] = value
            elif name == "retry_after" and has_value:
                float(value)
                found[name] = value
            elif name in _FLAG_DIRECTIVES:
                found[name] = True
        except ValueError:
            raise BadRequest(f"fake upstream: bad directive {word!r}") from None
    return found


def first_word(text: str) -> str:
    return next((w for w in text.split() if not w.startswith("#")), "")


@lru_cache(maxsize=256)
def reply_tokens(n: int) -> tuple:
    return tuple(f"w{i}" if i == 0 else f" w{i}" for i in range(n))


def make_reply(turn: Turn) -> Reply:
    if turn.tools:
        args = orjson.dumps({"query": turn.query}).decode()
        fragments = tuple(args[i : i + 4] for i in range(0, len(args), 4))
        return Reply(fragments * len(turn.tools), "tool", args, fragments)
    wanted = turn.directives.get("words", DEFAULT_REPLY_LEN)
    if turn.max_tokens is not None and turn.max_tokens < wanted:
        return Reply(reply_tokens(max(turn.max_tokens, 0)), "length")
    return Reply(reply_tokens(max(wanted, 0)), "stop")


def tools_to_call(
    req: dict, directives: dict, declared: set, messages: list, prompt_index: int, is_tool_round
) -> tuple:
    """The tools ``#tool=a,b`` asks for, while fewer than ``#tool_turns`` (default 1) tool
    rounds followed the prompt; () when any of them is not declared, or tool_choice is none."""
    names = tuple(n for n in str(directives.get("tool", "")).split(",") if n)
    choice = req.get("tool_choice")
    if choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none"):
        return ()
    if not names or not set(names) <= declared:
        return ()
    rounds = sum(1 for m in messages[prompt_index + 1 :] if is_tool_round(m))
    return names if rounds < directives.get("tool_turns", 1) else ()


def user_text(message: dict | None) -> str:
    """The text a user message says: string content or its text parts/blocks (same shape in both APIs)."""
    content = message.get("content") if message else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise BadRequest(message)


def _openai_tool_pairing(messages: list) -> None:
    """As the real API: tool calls answered right after, and no tool message without its call."""
    pending: list = []
    for msg in messages:
        role = msg.get("role")
        if role == "tool":
            _expect(
                msg.get("tool_call_id") in pending,
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
            )
            pending.remove(msg.get("tool_call_id"))
            continue
        _expect(
            not pending,
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
        )
        if role == "assistant":
            pending = [c.get("id") for c in msg.get("tool_calls") or () if isinstance(c, dict)]
    _expect(not pending, f"The following tool_call_ids did not have response messages: {', '.join(pending)}")


def _anthropic_tool_pairing(messages: list) -> None:
    """As the real API: every tool_use answered in the next message, every tool_result with its tool_use."""
    previous_calls: set = set()
    for i, msg in enumerate(messages):
        blocks = (
            [b for b in msg.get("content") or () if isinstance(b, dict)] if isinstance(msg.get("content"), list) else []
        )
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if msg.get("role") == "user":
            _expect(
                results <= previous_calls,
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks. Each `tool_result` "
                "block must have a corresponding `tool_use` block in the previous message.",
            )
        missing = previous_calls - results
        _expect(
            not missing,
            f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(sorted(missing))}",
        )
        previous_calls = (
            {b.get("id") for b in blocks if b.get("type") == "tool_use"} if msg.get("role") == "assistant" else set()
        )


# --- OpenAI Chat Completions ----------------------------------------------------


class OpenAI:
    rid_header = b"x-request-id"
    _FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}
    _FINGERPRINT = "fp_fa4e0ce1d2"

    @staticmethod
    def refuse(headers: dict) -> tuple[int, str | None] | None:
        """(status, message) when the request headers would be rejected."""
        if headers.get(b"authorization") != _OPENAI_BEARER:
            return 401, None
        return None

    _ERRORS = {  # status: (type, code, default message)
        401: (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        ),
        429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
        500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    }

    @classmethod
    def error(cls, status: int, message: str | None = None) -> bytes:
        kind, code, default = cls._ERRORS.get(status) or (
            cls._ERRORS[500] if status >= 500 else ("invalid_request_error", None, f"Error {status}")
        )
        return orjson.dumps({"error": {"message": message or default, "type": kind, "param": None, "code": code}})

    @staticmethod
    def parse(req) -> Turn:
        _expect(isinstance(req, dict), "Invalid request body: expected a JSON object.")
        model, messages = req.get("model"), req.get("messages")
        _expect(isinstance(model, str), "you must provide a model parameter")
        _expect(isinstance(messages, list) and messages, "Missing required parameter: 'messages'.")
        tokens, last_user, prompt_index = 0, None, -1
        _expect(all(isinstance(m, dict) for m in messages), "Invalid type for 'messages': expected an object.")
        _openai_tool_pairing(messages)
        for index, msg in enumerate(messages):
            tokens += TOKENS_PER_MESSAGE
            content = msg.get("content")
            if isinstance(content, str):
                tokens += text_tokens(content)
            elif isinstance(content, list):
                for part in content:
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind == "text":
                        tokens += text_tokens(part.get("text") or "")
                    elif kind == "image_url":
                        tokens += TOKENS_PER_IMAGE
            if msg.get("role") == "user":
                last_user, prompt_index = msg, index
        text = user_text(last_user)
        directives = parse_directives(text)
        tools = tools_to_call(
            req,
            directives,
            _openai_tool_names(req),
            messages,
            prompt_index,
            lambda m: m.get("role") == "assistant" and m.get("tool_calls"),
        )
        limit = req.get("max_completion_tokens")
        if limit is None:
            limit = req.get("max_tokens")
        _expect(limit is None or isinstance(limit, int), "Invalid type for 'max_tokens': expected an integer.")
        options = req.get("stream_options")
        return Turn(
            model=model,
            input_tokens=tokens,
            directives=directives,
            tools=tools,
            query=first_word(text) if tools else "",
            max_tokens=limit,
            stream=req.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    @staticmethod
    def usage(turn: Turn, reply: Reply) -> dict:
        cached = turn.directives.get("cache_read", 0)
        prompt = turn.input_tokens + cached
        out = len(reply.tokens)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @classmethod
    def render(cls, turn: Turn, reply: Reply) -> bytes:
        message = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
        if reply.finish == "tool":
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": _new_id("call_"),
                    "type": "function",
                    "function": {"name": name, "arguments": reply.tool_args},
                }
                for name in turn.tools
            ]
        return orjson.dumps(
            {
                "id": _new_id("chatcmpl-"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": turn.model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": cls._FINISH[reply.finish]}
                ],
                "usage": cls.usage(turn, reply),
                "service_tier": "default",
                "system_fingerprint": cls._FINGERPRINT,
            }
        )

    @classmethod
    def events(cls, turn: Turn, reply: Reply) -> tuple[list, list, list]:
        """(head, content deltas, tail) of the SSE stream, each item one ``data:`` event."""
        prefix = b"".join(
            (
                b'data: {"id":"',
                _new_id("chatcmpl-").encode(),
                b'","object":"chat.completion.chunk","created":',
                str(int(time.time())).encode(),
                b',"model":',
                orjson.dumps(turn.model),
                b',"service_tier":"default","system_fingerprint":"',
                cls._FINGERPRINT.encode(),
                b'","choices":',
            )
        )
        end = b',"usage":null}\n\n' if turn.include_usage else b"}\n\n"

        def chunk(delta: bytes, finish: bytes = b"null") -> bytes:
            return b"".join(
                (prefix, b'[{"index":0,"delta":', delta, b',"logprobs":null,"finish_reason":', finish, b"}]", end)
            )

        dumps = orjson.dumps
        if reply.finish == "tool":
            head, deltas = [], []
            for i, name in enumerate(turn.tools):
                call = {
                    "index": i,
                    "id": _new_id("call_"),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                if i == 0:
                    head.append(
                        chunk(dumps({"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}))
                    )
                else:
                    deltas.append(chunk(dumps({"tool_calls": [call]})))
                deltas += [
                    chunk(
                        b'{"tool_calls":[{"index":'
                        + str(i).encode()
                        + b',"function":{"arguments":'
                        + dumps(f)
                        + b"}}]}"
                    )
                    for f in reply.fragments
                ]
        else:
            head = [chunk(b'{"role":"assistant","content":"","refusal":null}')]
            deltas = [chunk(b'{"content":' + dumps(t) + b"}") for t in reply.tokens]
        tail = [chunk(b"{}", b'"' + cls._FINISH[reply.finish].encode() + b'"')]
        if turn.include_usage and not turn.directives.get("no_usage"):
            tail.append(prefix + b'[],"usage":' + dumps(cls.usage(turn, reply)) + b"}\n\n")
        tail.append(b"data: [DONE]\n\n")
        return head, deltas, tail

    models = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "system"}
                for name, created in (
                    ("gpt-4o-mini", 1721172741),
                    ("gpt-4o", 1715367049),
                    ("gpt-4.1", 1744316542),
                    ("gpt-4.1-mini", 1744318173),
                )
            ],
        }
    )


def _openai_tool_names(req: dict) -> set:
    return {t["function"].get("name") for t in req.get("tools") or () if isinstance(t, dict) and "function" in t}


# --- Anthropic Messages ---------------------------------------------------------


class Anthropic:
    rid_header = b"request-id"
    _STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
    _ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
    }
    _ERROR_MESSAGES = {
        "authentication_error": "invalid x-api-key",
        "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
        "overloaded_error": "Overloaded",
        "api_error": "Internal server error",
    }

    @staticmethod
    def refuse(headers: dict) -> tuple[int, str | None] | None:
        """(status, message) when the request headers would be rejected."""
        # Current SDKs send the key as a bearer token; older ones and curl users use x-api-key.
        key = headers.get(b"x-api-key") or headers.get(b"authorization", b"").removeprefix(b"Bearer ")
        if key != _ANTHROPIC_KEY:
            return 401, "invalid x-api-key" if key else "x-api-key header is required"
        if b"anthropic-version" not in headers:
            return 400, "anthropic-version: header is required"
        return None

    @classmethod
    def error(cls, status: int, message: str | None = None) -> bytes:
        kind = cls._ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        if message is None:
            message = cls._ERROR_MESSAGES.get(kind, f"Error {status}")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})

    @staticmethod
    def parse(req) -> Turn:
        _expect(isinstance(req, dict), "Invalid request body: expected a JSON object.")
        model, messages, limit = req.get("model"), req.get("messages"), req.get("max_tokens")
        _expect(isinstance(model, str), "model: Field required")
        _expect(isinstance(messages, list) and messages, "messages: Field required")
        _expect(isinstance(limit, int), "max_tokens: Field required")
        tokens, last_user, prompt_index = _anthropic_tokens(req.get("system")), None, -1
        _expect(all(isinstance(m, dict) for m in messages), "messages: Input should be a valid dictionary")
        _anthropic_tool_pairing(messages)
        for index, msg in enumerate(messages):
            tokens += TOKENS_PER_MESSAGE + _anthropic_tokens(msg.get("content"))
            if msg.get("role") == "user" and (last_user is None or user_text(msg)):
                last_user, prompt_index = msg, index  # the prompt: the last user message with text
        text = user_text(last_user)
        directives = parse_directives(text)
        tools = tools_to_call(
            req,
            directives,
            _anthropic_tool_names(req),
            messages,
            prompt_index,
            lambda m: (
                m.get("role") == "assistant"
                and isinstance(m.get("content"), list)
                and any(isinstance(b, dict) and b.get("type") == "tool_use" for b in m["content"])
            ),
        )
        return Turn(
            model=model,
            input_tokens=tokens,
            directives=directives,
            tools=tools,
            query=first_word(text) if tools else "",
            max_tokens=limit,
            stream=req.get("stream") is True,
        )

    @staticmethod
    def usage(turn: Turn, output_tokens: int) -> dict:
        written = turn.directives.get("cache_write", 0)
        return {
            "input_tokens": turn.input_tokens,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": turn.directives.get("cache_read", 0),
            "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    @classmethod
    def render(cls, turn: Turn, reply: Reply) -> bytes:
        if reply.finish == "tool":
            blocks = [
                {"type": "tool_use", "id": _new_id("toolu_"), "name": name, "input": {"query": turn.query}}
                for name in turn.tools
            ]
        else:
            blocks = [{"type": "text", "text": reply.text}]
        return orjson.dumps(
            {
                "id": _new_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": turn.model,
                "content": blocks,
                "stop_reason": cls._STOP[reply.finish],
                "stop_sequence": None,
                "usage": cls.usage(turn, len(reply.tokens)),
            }
        )

    @classmethod
    def events(cls, turn: Turn, reply: Reply) -> tuple[list, list, list]:
        """(head, content deltas, tail) of the SSE stream, each item one ``event:``."""
        dumps = orjson.dumps
        message = {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": turn.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": cls.usage(turn, 1),
        }

        def start(i: int, block: dict) -> bytes:
            return _event(
                b"content_block_start", dumps({"type": "content_block_start", "index": i, "content_block": block})
            )

        def stop_block(i: int) -> bytes:
            return _event(b"content_block_stop", b'{"type":"content_block_stop","index":' + str(i).encode() + b"}")

        if reply.finish == "tool":
            blocks = [{"type": "tool_use", "id": _new_id("toolu_"), "name": name, "input": {}} for name in turn.tools]
            delta_head = b'{"type":"input_json_delta","partial_json":'
            pieces = [reply.fragments] * len(blocks)
        else:
            blocks = [{"type": "text", "text": ""}]
            delta_head = b'{"type":"text_delta","text":'
            pieces = [reply.tokens]
        head = [
            _event(b"message_start", dumps({"type": "message_start", "message": message})),
            start(0, blocks[0]),
            _event(b"ping", b'{"type":"ping"}'),
        ]
        deltas = []
        for i, block in enumerate(blocks):
            if i:
                deltas += [stop_block(i - 1), start(i, block)]
            prefix = b'{"type":"content_block_delta","index":' + str(i).encode() + b',"delta":' + delta_head
            deltas += [_event(b"content_block_delta", prefix + dumps(t) + b"}}") for t in pieces[i]]
        stop = {"stop_reason": cls._STOP[reply.finish], "stop_sequence": None}
        tail = [
            stop_block(len(blocks) - 1),
            _event(
                b"message_delta",
                dumps({"type": "message_delta", "delta": stop, "usage": {"output_tokens": len(reply.tokens)}}),
            ),
            _event(b"message_stop", b'{"type":"message_stop"}'),
        ]
        return head, deltas, tail

    models = orjson.dumps(
        {
            "data": [
                {"type": "model", "id": name, "display_name": display, "created_at": created, "lifecycle": "active"}
                for name, display, created in (
                    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
                    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
                    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
                )
            ],
            "has_more": False,
            "first_id": "claude-sonnet-4-5-20250929",
            "last_id": "claude-opus-4-1-20250805",
        }
    )


def _anthropic_tool_names(req: dict) -> set:
    return {t.get("name") for t in req.get("tools") or () if isinstance(t, dict)}


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def _anthropic_tokens(content) -> int:
    """Tokens of a system prompt / message content: a string or a list of blocks."""
    if isinstance(content, str):
        return text_tokens(content)
    tokens = 0
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            tokens += text_tokens(block.get("text") or "")
        elif kind == "image":
            tokens += TOKENS_PER_IMAGE
        elif kind == "tool_result":
            tokens += _anthropic_tokens(block.get("content"))
    return tokens


# --- ASGI plumbing --------------------------------------------------------------


async def app(scope, receive, send):
    kind = scope["type"]
    if kind != "http":
        if kind == "lifespan":
            await _lifespan(receive, send)
        return
    path, method = scope["path"], scope["method"]
    body = await _read_body(receive)
    if path.startswith("/_fake/"):
        await _introspect(method, path, send)
        return
    raw_headers = scope["headers"]
    _records.append((path, raw_headers, body, time.monotonic()))
    _stats["requests"] += 1
    headers = dict(raw_headers)
    if method == "POST" and path == "/v1/chat/completions":
        await _complete(OpenAI, headers, body, receive, send)
    elif method == "POST" and path == "/v1/messages":
        await _complete(Anthropic, headers, body, receive, send)
    elif method == "POST" and path == "/v1/responses":
        from .responses import Responses  # the Responses API lives in its own module (it imports this one)

        await _complete(Responses, headers, body, receive, send)
    elif not await extras.dispatch(method, path, headers, body, send):  # tests/fakes/extras.py
        provider = Anthropic if b"anthropic-version" in headers else OpenAI
        if method == "GET" and path == "/v1/models":
            refused = provider.refuse(headers)
            if refused:
                await _respond(send, provider, refused[0], provider.error(*refused))
            else:
                await _respond(send, provider, 200, provider.models)
        else:
            await _respond(send, provider, 404, provider.error(404, f"Invalid URL ({method} {path})"))


async def _complete(provider, headers: dict, body: bytes, receive, send) -> None:
    refused = provider.refuse(headers)
    if refused:
        return await _respond(send, provider, refused[0], provider.error(*refused))
    try:
        turn = provider.parse(orjson.loads(body))
    except BadRequest as exc:
        problem = str(exc)
    except orjson.JSONDecodeError:
        problem = "We could not parse the JSON body of your request."
    except (AttributeError, TypeError):  # a wrongly typed field deep inside the body
        problem = "Invalid request body."
    else:
        problem = None
    if problem:
        return await _respond(send, provider, 400, provider.error(400, problem))
    directives = turn.directives
    if "hang" in directives:
        return await _until_disconnect(receive, HANG_SECONDS)
    if directives.get("delay_ms", 0) > 0:
        await asyncio.sleep(directives["delay_ms"] / 1000)
    status = _failure_status(directives)
    if status:
        extra = ((b"retry-after", directives["retry_after"].encode()),) if "retry_after" in directives else ()
        return await _respond(send, provider, status, provider.error(status), extra)
    reply = make_reply(turn)
    if turn.stream:
        await _stream(provider, turn, reply, receive, send)
    else:
        rendered = provider.render(turn, reply)
        _remember_sent(directives, rendered)
        await _respond(send, provider, 200, rendered)
        _stats["completed_calls"] += 1  # a whole 200 answer sent: what a provider bills


def _remember_sent(directives: dict, body: bytes) -> None:
    if "id" in directives:
        if len(_sent) >= MAX_RECORDS:
            _sent.pop(next(iter(_sent)))
        _sent[directives["id"]] = body


def _failure_status(directives: dict) -> int:
    """HTTP status to fail this request with, or 0 to answer normally."""
    if "fail" in directives:
        key = directives.get("id", "")
        failed = _fail_counts.get(key, 0)
        if failed >= directives["fail"]:
            return 0
        _fail_counts[key] = failed + 1
        status = directives.get("status", 503)
    else:
        status = directives.get("status", 0)
    return status if status >= 400 else 0


async def _stream(provider, turn: Turn, reply: Reply, receive, send) -> None:
    head, deltas, tail = provider.events(turn, reply)
    cut = turn.directives.get("cut_after")
    events = head + deltas + tail if cut is None else head + deltas[: max(cut, 0)]
    delay = turn.directives.get("chunk_delay_ms", 0) / 1000
    _remember_sent(turn.directives, b"".join(events))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", _SSE), (b"cache-control", b"no-cache"), _request_id(provider)],
        }
    )
    _stats["open_streams"] += 1
    try:
        if delay > 0:
            if not await _paced(events, delay, receive, send):
                _stats["aborted_streams"] += 1
                return
            last = b""
        else:
            last = b"".join(events)
        # A cut stream never ends its body: granian then drops the connection mid-response.
        await send({"type": "http.response.body", "body": last, "more_body": cut is not None})
        if cut is None:
            _stats["completed_streams"] += 1
    finally:
        _stats["open_streams"] -= 1


async def _paced(events: list, delay: float, receive, send) -> bool:
    """Send events ``delay`` seconds apart; False as soon as the client has gone away."""
    gone = asyncio.ensure_future(receive())  # the body is consumed: this only ends on disconnect
    try:
        for i, event in enumerate(events):
            if i:
                await asyncio.wait((gone,), timeout=delay)
            if gone.done():
                return False
            await send({"type": "http.response.body", "body": event, "more_body": True})
        return True
    finally:
        gone.cancel()


async def _until_disconnect(receive, timeout: float) -> None:
    try:
        await asyncio.wait_for(receive(), timeout)
    except TimeoutError:
        pass


def _request_id(provider) -> tuple[bytes, bytes]:
    return provider.rid_header, _new_id("req_").encode()


async def _respond(send, provider, status: int, body: bytes, extra: tuple = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", _JSON), _request_id(provider), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def _introspect(method: str, path: str, send) -> None:
    if method == "GET" and path == "/_fake/requests":
        status, body = 200, orjson.dumps([_record_json(r) for r in _records])
    elif method == "GET" and path == "/_fake/stats":
        status, body = 200, orjson.dumps(_stats)
    elif method == "GET" and path.startswith("/_fake/sent/"):
        sent = _sent.get(path[len("/_fake/sent/") :])
        status, body = (200, sent) if sent is not None else (404, b'{"error":"nothing sent for that #id"}')
    elif method == "POST" and path == "/_fake/reset":
        _records.clear()
        _fail_counts.clear()
        _sent.clear()
        _stats.update(aborted_streams=0, completed_streams=0, requests=0, completed_calls=0)
        status, body = 200, b'{"ok":true}'
    else:
        status, body = 404, b'{"error":"unknown introspection route"}'
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", _JSON)]})
    await send({"type": "http.response.body", "body": body})


def _record_json(record: tuple) -> dict:
    path, headers, body, t = record
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    return {
        "path": path,
        "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
        "body": parsed,
        "t": t,
    }


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return
