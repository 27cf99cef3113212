"""Fake OpenAI Responses API (``POST /v1/responses``), the wire format of the real one.

Same token rules and ``#directives`` as the chat fake (README.md); the prompt is the
last user message item with text. Also: ``reasoning`` adds a reasoning item and
``#reasoning=N`` (default 16) reasoning tokens, counted in ``output_tokens`` and in
``max_output_tokens``; ``text.format`` json_schema makes the text a JSON value of the
schema (streamed in 4-character fragments, one output token each).
"""

import time
from dataclasses import dataclass, field

import orjson

from .upstream import (
    TOKENS_PER_IMAGE,
    TOKENS_PER_MESSAGE,
    BadRequest,
    OpenAI,
    Reply,
    Turn,
    _event,
    _expect,
    _new_id,
    first_word,
    parse_directives,
    text_tokens,
    tools_to_call,
)

MIN_OUTPUT_TOKENS = 16
DEFAULT_REASONING_TOKENS = 16
MAX_REMEMBERED = 500
_remembered: dict[str, tuple[int, frozenset]] = {}  # response id -> (context tokens, its call ids)


@dataclass(slots=True)
class ResponsesTurn(Turn):
    req: dict = field(default_factory=dict)
    reasoning_tokens: int = 0
    json_text: str | None = None  # the reply when text.format asks for JSON
    context_tokens: int = 0  # input + output of the whole turn, for previous_response_id


def _text(part) -> str:
    if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text"):
        text = part.get("text")
        _expect(isinstance(text, str), "Invalid type for 'input[].content[].text': expected a string.")
        return text
    return ""


def _message_tokens(content) -> tuple[int, str]:
    """(tokens, text) of a message item's content: a string or input_text/input_image parts."""
    if isinstance(content, str):
        return text_tokens(content), content
    _expect(isinstance(content, list), "Invalid type for 'input[].content': expected one of a string or array.")
    tokens, texts = 0, []
    for part in content:
        _expect(isinstance(part, dict), "Invalid type for 'input[].content[]': expected an object.")
        kind = part.get("type")
        if kind in ("input_image", "input_file"):
            tokens += TOKENS_PER_IMAGE
        elif kind in ("input_text", "output_text", "text", "refusal"):
            texts.append(_text(part) if kind != "refusal" else part.get("refusal") or "")
            tokens += text_tokens(texts[-1])
        else:
            raise BadRequest(
                f"Invalid value: '{kind}'. Supported values are: 'input_text', 'input_image', 'output_text', 'refusal', 'input_file'."
            )
    return tokens, " ".join(texts)


def _schema_value(schema, word: str):
    """A JSON value of a (strict) JSON schema."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "anyOf" in schema and schema["anyOf"]:
        return _schema_value(schema["anyOf"][0], word)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: _schema_value(sub, word) for name, sub in (schema.get("properties") or {}).items()}
    return {"string": word or "w0", "integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(
        kind, word
    )


class Responses(OpenAI):
    """The Responses API: ``refuse`` and ``error`` are the chat fake's (same auth, same error shape)."""

    @staticmethod
    def parse(req) -> Turn:
        _expect(isinstance(req, dict), "Invalid request body: expected a JSON object.")
        model, items = req.get("model"), req.get("input")
        _expect(isinstance(model, str), "Missing required parameter: 'model'.")
        _expect(isinstance(items, (str, list)), "Missing required parameter: 'input'.")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        instructions = req.get("instructions")
        _expect(
            instructions is None or isinstance(instructions, str), "Invalid type for 'instructions': expected a string."
        )
        tokens = text_tokens(instructions) if instructions else 0
        prior_calls: frozenset = frozenset()
        previous = req.get("previous_response_id")
        if previous is not None:
            found = _remembered.get(previous)
            _expect(found is not None, f"Previous response with id '{previous}' not found.")
            tokens += found[0]
            prior_calls = found[1]
        calls, answered, prompt_text, prompt_index, marks = set(prior_calls), set(), "", -1, []
        for index, item in enumerate(items):
            _expect(isinstance(item, dict), "Invalid type for 'input[]': expected an object.")
            kind = item.get("type", "message")
            if kind == "message":
                _expect(
                    item.get("role") in ("user", "assistant", "system", "developer"),
                    "Invalid value for 'input[].role': expected one of 'user', 'assistant', 'system' or 'developer'.",
                )
                counted, text = _message_tokens(item.get("content"))
                tokens += TOKENS_PER_MESSAGE + counted
                if item["role"] == "user" and (prompt_index < 0 or text):
                    prompt_text, prompt_index = text, index
            elif kind == "function_call":
                _expect(
                    all(isinstance(item.get(f), str) for f in ("call_id", "name", "arguments")),
                    "Missing required parameter: 'input[].call_id'.",
                )
                calls.add(item["call_id"])
            elif kind == "function_call_output":
                call_id, output = item.get("call_id"), item.get("output")
                _expect(call_id in calls, f"No tool call found for function call output with call_id {call_id}.")
                answered.add(call_id)
                tokens += TOKENS_PER_MESSAGE + (
                    text_tokens(output) if isinstance(output, str) else _message_tokens(output)[0]
                )
            elif kind != "reasoning":
                raise BadRequest(
                    f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', 'function_call_output' and 'reasoning'."
                )
            marks.append(kind == "function_call" and (not index or items[index - 1].get("type") != "function_call"))
        missing = sorted(calls - answered - prior_calls)
        _expect(not missing, f"No tool output found for function call {missing[0] if missing else ''}.")
        directives = parse_directives(prompt_text)
        declared = {
            t.get("name") for t in req.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"
        }
        tools = tools_to_call(req, directives, declared, marks, prompt_index, bool)
        limit = req.get("max_output_tokens")
        _expect(
            limit is None or (isinstance(limit, int) and not isinstance(limit, bool)),
            "Invalid type for 'max_output_tokens': expected an integer.",
        )
        _expect(
            limit is None or limit >= MIN_OUTPUT_TOKENS,
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, but got {limit} instead.",
        )
        reasoning = req.get("reasoning")
        thinks = isinstance(reasoning, dict) and reasoning.get("effort") not in ("none",)
        spent = _reasoning_directive(prompt_text) if thinks else 0
        fmt = (req.get("text") or {}).get("format") if isinstance(req.get("text"), dict) else None
        json_text = None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            _expect(
                isinstance(fmt.get("name"), str) and isinstance(fmt.get("schema"), dict),
                "Missing required parameter: 'text.format.name'.",
            )
            json_text = orjson.dumps(_schema_value(fmt["schema"], first_word(prompt_text))).decode()
        elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
            json_text = orjson.dumps({"answer": first_word(prompt_text) or "w0"}).decode()
        return ResponsesTurn(
            model=model,
            input_tokens=tokens,
            directives=directives,
            tools=tools,
            query=first_word(prompt_text) if tools else "",
            max_tokens=None if limit is None else max(limit - spent, 0),
            stream=req.get("stream") is True,
            req=req,
            reasoning_tokens=spent if limit is None else min(spent, limit),
            json_text=json_text,
        )

    @staticmethod
    def reply(turn: ResponsesTurn, reply: Reply) -> Reply:
        """The chat fake's reply, or the JSON text when one was asked for (cut by max_output_tokens)."""
        if turn.json_text is None or reply.finish == "tool":
            return reply
        pieces = tuple(turn.json_text[i : i + 4] for i in range(0, len(turn.json_text), 4))
        if turn.max_tokens is not None and turn.max_tokens < len(pieces):
            return Reply(pieces[: turn.max_tokens], "length")
        return Reply(pieces, "stop")

    @staticmethod
    def usage(turn: ResponsesTurn, reply: Reply) -> dict:
        cached = turn.directives.get("cache_read", 0)
        prompt = turn.input_tokens + cached
        out = len(reply.tokens) + turn.reasoning_tokens
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": turn.reasoning_tokens},
            "total_tokens": prompt + out,
        }

    @classmethod
    def _items(cls, turn: ResponsesTurn, reply: Reply) -> list:
        """The output items of the finished response."""
        items = []
        if turn.reasoning_tokens:
            items.append({"id": _new_id("rs_"), "type": "reasoning", "summary": []})
        if reply.finish == "tool":
            for name in turn.tools:
                items.append(
                    {
                        "id": _new_id("fc_"),
                        "type": "function_call",
                        "status": "completed",
                        "arguments": reply.tool_args,
                        "call_id": _new_id("call_"),
                        "name": name,
                    }
                )
        elif reply.tokens or turn.max_tokens != 0:
            items.append(
                {
                    "id": _new_id("msg_"),
                    "type": "message",
                    "status": "incomplete" if reply.finish == "length" else "completed",
                    "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": reply.text}],
                    "role": "assistant",
                }
            )
        return items

    @classmethod
    def _response(cls, turn: ResponsesTurn, reply: Reply, items: list, status: str, rid: str, created: int) -> dict:
        req = turn.req
        done = status != "in_progress"
        reasoning = req.get("reasoning") if isinstance(req.get("reasoning"), dict) else {}
        text = req.get("text") if isinstance(req.get("text"), dict) else {}
        return {
            "id": rid,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": turn.model,
            "output": items if done else [],
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "previous_response_id": req.get("previous_response_id"),
            "prompt_cache_key": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": None,
            "service_tier": "default",
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools") or [],
            "top_logprobs": 0,
            "top_p": req.get("top_p", 1.0),
            "truncation": req.get("truncation", "disabled"),
            "usage": cls.usage(turn, reply) if done else None,
            "user": None,
            "metadata": req.get("metadata") or {},
        }

    @classmethod
    def _finish(cls, turn: ResponsesTurn, reply: Reply, items: list) -> str:
        """The final status; remembers the response for previous_response_id."""
        rid = _new_id("resp_")
        if turn.req.get("store", True) is not False:
            if len(_remembered) >= MAX_REMEMBERED:
                _remembered.pop(next(iter(_remembered)))
            calls = frozenset(i["call_id"] for i in items if i["type"] == "function_call")
            _remembered[rid] = (turn.input_tokens + len(reply.tokens), calls)
        return rid

    @classmethod
    def render(cls, turn: ResponsesTurn, reply: Reply) -> bytes:
        reply = cls.reply(turn, reply)
        items = cls._items(turn, reply)
        rid = cls._finish(turn, reply, items)
        status = "incomplete" if reply.finish == "length" else "completed"
        return orjson.dumps(cls._response(turn, reply, items, status, rid, int(time.time())))

    @classmethod
    def events(cls, turn: ResponsesTurn, reply: Reply) -> tuple[list, list, list]:
        """(head, deltas, tail): typed events, each ``event:`` + ``data:``, with sequence numbers."""
        reply = cls.reply(turn, reply)
        items = cls._items(turn, reply)
        rid, created = cls._finish(turn, reply, items), int(time.time())
        status = "incomplete" if reply.finish == "length" else "completed"
        seq = iter(range(1 << 30))
        dumps = orjson.dumps

        def ev(kind: str, **data) -> bytes:
            return _event(kind.encode(), dumps({"type": kind, "sequence_number": next(seq), **data}))

        start = cls._response(turn, reply, items, "in_progress", rid, created)
        flat = [ev("response.created", response=start), ev("response.in_progress", response=start)]
        first_delta = None
        for index, item in enumerate(items):
            if item["type"] == "reasoning":
                flat += [
                    ev("response.output_item.added", output_index=index, item=item),
                    ev("response.output_item.done", output_index=index, item=item),
                ]
                continue
            if item["type"] == "function_call":
                flat.append(
                    ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "status": "in_progress", "arguments": ""},
                    )
                )
                first_delta = len(flat) if first_delta is None else first_delta
                flat += [
                    ev("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=f)
                    for f in reply.fragments
                ]
                flat += [
                    ev(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    ),
                    ev("response.output_item.done", output_index=index, item=item),
                ]
                continue
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            flat += [
                ev(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                ),
                ev("response.content_part.added", **where, part=part),
            ]
            first_delta = len(flat) if first_delta is None else first_delta
            flat += [ev("response.output_text.delta", **where, delta=t, logprobs=[]) for t in reply.tokens]
            flat += [
                ev("response.output_text.done", **where, text=reply.text, logprobs=[]),
                ev("response.content_part.done", **where, part={**part, "text": reply.text}),
                ev("response.output_item.done", output_index=index, item=item),
            ]
        final = cls._response(turn, reply, items, status, rid, created)
        flat.append(ev("response.completed" if status == "completed" else "response.incomplete", response=final))
        # #cut_after=N keeps the head and the next N events: the deltas come first.
        split = len(flat) - 1 if first_delta is None else first_delta
        return flat[:split], flat[split:-1], flat[-1:]


def _reasoning_directive(text: str) -> int:
    for word in text.split():
        if word.startswith("#reasoning="):
            try:
                return max(int(word.partition("=")[2]), 0)
            except ValueError:
                raise BadRequest(f"fake upstream: bad directive {word!r}") from None
    return DEFAULT_REASONING_TOKENS
