"""The JSON Schemas of the OpenAPI description (http/openapi.py): bodies, resources, errors.

Written from the handlers: what they accept (types, ranges, lengths, unknown
fields refused) and what they answer. The limits come from http/limits.py.
"""

from __future__ import annotations

from typing import Any

from tollway.http.limits import MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_NAME_CHARS, MAX_SPEND_USD, MAX_TOKENS_LIMIT

Schema = dict[str, Any]

MAX_TOOL_TURNS = 50  # tools/loop.py
TOOL_TIMEOUT_MS = (100, 120_000)  # tools/store.py
MAX_DESCRIPTION = 10_000  # tools/routes.py
MAX_URL = 2048

# No NUL anywhere, and at least one character that is not white space.
_NO_NUL = "^[^\\x00]*$"
_NOT_BLANK_NO_NUL = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), extra: bool = False, **more: Any) -> Schema:
    out: Schema = {"type": "object", "properties": properties, "additionalProperties": extra, **more}
    if required:
        out["required"] = list(required)
    return out


def text(max_length: int, *, blank: bool = True, **more: Any) -> Schema:
    """A string of 1..max_length characters without NUL (``blank``: white space alone allowed)."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": _NO_NUL if blank else _NOT_BLANK_NO_NUL,
        **more,
    }


INTEGER: Schema = {"type": "integer"}
STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}

METADATA: Schema = {
    "type": "object",
    "additionalProperties": True,
    "description": (
        f"Free-form JSON object, at most {MAX_METADATA_BYTES} bytes serialised and nested at most "
        f"{MAX_JSON_DEPTH} deep; strings without NUL."
    ),
    "x-tollway-max-bytes": MAX_METADATA_BYTES,
    "x-tollway-max-depth": MAX_JSON_DEPTH,
}
MAX_TOKENS: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT}
SPEND_USD: Schema = {
    "description": 'US dollars (a JSON number, or a decimal string such as "12.50"); null: no cap.',
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_SPEND_USD},
        {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,6})?$"},
        {"type": "null"},
    ],
}
TOOL_IDS: Schema = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 64},
    "minItems": 1,
    "uniqueItems": True,
}
MAX_TOOL_TURNS_SCHEMA: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_TOOL_TURNS}

# ---- errors -------------------------------------------------------------
ERRORS: dict[str, Schema] = {
    "OpenAIError": obj(
        {
            "error": obj(
                {"message": STRING, "type": STRING, "param": nullable(STRING), "code": nullable(STRING)},
                ("message", "type", "param", "code"),
                extra=True,
            )
        },
        ("error",),
        extra=True,
    ),
    "AnthropicError": obj(
        {
            "type": {"const": "error"},
            "error": obj({"type": STRING, "message": STRING}, ("type", "message"), extra=True),
        },
        ("type", "error"),
        extra=True,
    ),
}

# ---- request bodies -----------------------------------------------------
_TOKEN_ID: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS_LIMIT}
WEBHOOK_URL: Schema = {
    "type": "string",
    "maxLength": MAX_URL,
    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[!$-;=?-~]*)?$",
    "description": "absolute http:// or https:// URL, no white space, control characters or #fragment",
}
_INPUT_SCHEMA = {
    "type": "object",
    "description": 'a JSON Schema (draft 2020-12) for an object: "type": "object" is required',
    "properties": {
        "type": {"const": "object"},
        "properties": {"type": "object", "additionalProperties": {"type": "object"}},
    },
    "required": ["type"],
    "additionalProperties": True,
}
_TOOL_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}
_TOOL_DESCRIPTION = text(MAX_DESCRIPTION, blank=False)
_TIMEOUT = {"type": "integer", "minimum": TOOL_TIMEOUT_MS[0], "maximum": TOOL_TIMEOUT_MS[1]}
_BLOCK = {
    "type": "object",
    "description": "a content block: text (with text), image or document (with source), tool_result (with tool_use_id)",
    "oneOf": [
        obj({"type": {"const": "text"}, "text": {"type": "string", "pattern": _NO_NUL}}, ("type", "text"), extra=True),
        obj({"type": {"enum": ["image", "document"]}, "source": ANY_OBJECT}, ("type", "source"), extra=True),
        obj({"type": {"const": "tool_result"}, "tool_use_id": STRING}, ("type", "tool_use_id"), extra=True),
    ],
}

REQUESTS: dict[str, Schema] = {
    "ThreadCreate": obj(
        {
            "end_user_id": nullable(text(MAX_NAME_CHARS)),
            "metadata": nullable(METADATA),
            "system": nullable({"type": "string", "pattern": _NO_NUL}),
        }
    ),
    "ThreadUpdate": obj({"metadata": nullable(METADATA), "system": nullable({"type": "string", "pattern": _NO_NUL})}),
    "ThreadTurn": obj(
        {
            "model": {"type": "string", "minLength": 1},
            "content": {
                "anyOf": [
                    {"type": "string", "minLength": 1, "pattern": _NO_NUL},
                    {"type": "array", "items": _BLOCK, "minItems": 1},
                ]
            },
            "max_tokens": MAX_TOKENS,
            "system": {"anyOf": [{"type": "string", "pattern": _NO_NUL}, {"type": "array"}, {"type": "null"}]},
            "stream": BOOLEAN,
            "metadata": nullable(METADATA),
            "tool_ids": TOOL_IDS,
            "max_tool_turns": MAX_TOOL_TURNS_SCHEMA,
            **{
                name: {}
                for name in ("temperature", "top_p", "top_k", "stop_sequences", "tools", "tool_choice", "thinking")
            },
        },
        ("model", "content"),
        description="One user turn; the model's reply is stored with it. The other fields go to the provider as given.",
    ),
    "ToolCreate": obj(
        {
            "name": _TOOL_NAME,
            "description": _TOOL_DESCRIPTION,
            "input_schema": _INPUT_SCHEMA,
            "webhook_url": WEBHOOK_URL,
            "timeout_ms": nullable(_TIMEOUT),
        },
        ("name", "description", "input_schema", "webhook_url"),
    ),
    "ToolUpdate": obj(
        {
            "name": _TOOL_NAME,
            "description": _TOOL_DESCRIPTION,
            "input_schema": _INPUT_SCHEMA,
            "webhook_url": WEBHOOK_URL,
            "timeout_ms": _TIMEOUT,
            "rotate_secret": BOOLEAN,
        }
    ),
    "ChatCompletionRequest": obj(
        {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "items": ANY_OBJECT},
            "max_tokens": MAX_TOKENS,
            "max_completion_tokens": MAX_TOKENS,
            "stream": BOOLEAN,
            "tool_ids": TOOL_IDS,
            "max_tool_turns": MAX_TOOL_TURNS_SCHEMA,
        },
        ("model",),
        extra=True,
        description="An OpenAI Chat Completions request; every other field goes to the provider unchanged.",
    ),
    "MessagesRequest": obj(
        {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "items": ANY_OBJECT},
            "max_tokens": MAX_TOKENS,
            "stream": BOOLEAN,
            "tool_ids": TOOL_IDS,
            "max_tool_turns": MAX_TOOL_TURNS_SCHEMA,
        },
        ("model",),
        extra=True,
        description="An Anthropic Messages request; every other field goes to the provider unchanged.",
    ),
    "CountTokensRequest": obj(
        {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "items": ANY_OBJECT, "minItems": 1},
            "system": {"anyOf": [STRING, {"type": "array", "items": ANY_OBJECT}]},
            "tools": {"type": "array", "items": ANY_OBJECT},
        },
        ("model", "messages"),
        extra=True,
        description="An Anthropic count_tokens request (a Messages request without max_tokens).",
    ),
    "EmbeddingsRequest": obj(
        {
            "model": {"type": "string", "minLength": 1},
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2048},
                    {"type": "array", "items": _TOKEN_ID, "minItems": 1, "maxItems": 2048},
                    {
                        "type": "array",
                        "items": {"type": "array", "items": _TOKEN_ID, "minItems": 1},
                        "minItems": 1,
                        "maxItems": 2048,
                    },
                ],
                "description": "a string, strings, token ids, or lists of token ids (none empty; at most 2048 items)",
            },
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": MAX_TOKENS,
            "user": STRING,
        },
        ("model", "input"),
        extra=True,
        description='An OpenAI embeddings request, for a model of mode "embedding"; every other field goes to the provider unchanged.',
    ),
    "ResponsesRequest": obj(
        {
            "model": {"type": "string", "minLength": 1},
            "input": {"type": ["string", "array"], "items": ANY_OBJECT},
            "instructions": {"type": ["string", "null"]},
            "max_output_tokens": MAX_TOKENS,
            "stream": BOOLEAN,
            "store": BOOLEAN,
            "previous_response_id": {"type": ["string", "null"]},
        },
        ("model",),
        extra=True,
        description="An OpenAI Responses request (translated for providers that do not speak Responses).",
    ),
}

# ---- resources ----------------------------------------------------------
_ID = {"type": "string"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STR = {"type": ["string", "null"]}


def _list_of(item: str, *, first_id: bool = True) -> Schema:
    props = {
        "object": {"const": "list"},
        "data": {"type": "array", "items": ref(item)},
        "has_more": BOOLEAN,
        "last_id": _NULLABLE_STR,
    }
    if first_id:
        props["first_id"] = _NULLABLE_STR
    return obj(props, tuple(props))


_BY_MODEL = obj(
    {"model": STRING, "cost_micros": INTEGER, "request_count": INTEGER, "input_tokens": INTEGER,
     "output_tokens": INTEGER, "avg_latency_ms": {"type": "number"}},
    ("model", "cost_micros", "request_count"),
)  # fmt: skip
_BY_KEY = obj(
    {"key_id": STRING, "name": _NULLABLE_STR, "cost_micros": INTEGER, "request_count": INTEGER,
     "input_tokens": INTEGER, "output_tokens": INTEGER, "by_model": {"type": "array", "items": _BY_MODEL}},
    ("key_id", "cost_micros", "request_count", "by_model"),
)  # fmt: skip
_THREAD_PROPS: dict[str, Schema] = {
    "id": _ID, "object": {"const": "thread"}, "end_user_id": _NULLABLE_STR, "metadata": ANY_OBJECT,
    "system": _NULLABLE_STR, "created_at": INTEGER, "updated_at": INTEGER,
}  # fmt: skip
_MESSAGE_PROPS: dict[str, Schema] = {
    "id": _NULLABLE_STR, "object": {"const": "thread.message"}, "thread_id": _ID, "role": {"enum": ["user", "assistant"]},
    "content": {"type": "array", "items": ANY_OBJECT}, "model": _NULLABLE_STR, "usage": {"type": ["object", "null"]},
    "stop_reason": _NULLABLE_STR, "metadata": {"type": ["object", "null"]}, "created_at": _NULLABLE_INT,
}  # fmt: skip
_TOOL_PROPS: dict[str, Schema] = {
    "id": _ID, "object": {"const": "tool"}, "name": STRING, "description": STRING, "input_schema": ANY_OBJECT,
    "webhook_url": STRING, "timeout_ms": INTEGER, "created_at": INTEGER, "updated_at": INTEGER,
}  # fmt: skip
_OPENAI_MODEL = obj(
    {"id": STRING, "object": {"const": "model"}, "created": INTEGER, "owned_by": STRING}, ("id", "object")
)
_ANTHROPIC_MODEL = obj(
    {"type": {"const": "model"}, "id": STRING, "display_name": STRING, "created_at": STRING}, ("type", "id")
)

RESOURCES: dict[str, Schema] = {
    "ApiKeyRevoked": obj(
        {"id": _ID, "object": {"const": "api_key"}, "deleted": {"const": True}, "revoked_at": INTEGER},
        ("id", "object", "deleted", "revoked_at"),
    ),
    "Usage": obj(
        {
            "object": {"const": "usage"},
            "from_ms": INTEGER,
            "to_ms": INTEGER,
            "total_cost_micros": INTEGER,
            "request_count": INTEGER,
            "by_key": {"type": "array", "items": _BY_KEY},
            "group_by": {"type": "array", "items": {"enum": ["key", "end_user", "model", "tag", "day"]}},
            "groups": {"type": "array", "items": ANY_OBJECT, "description": "with group_by: one entry per group"},
        },
        ("object", "from_ms", "to_ms", "total_cost_micros", "request_count", "by_key"),
    ),
    "Thread": obj(_THREAD_PROPS, tuple(_THREAD_PROPS)),
    "ThreadList": _list_of("Thread"),
    "ThreadDeleted": obj(
        {"id": _ID, "object": {"const": "thread.deleted"}, "deleted": {"const": True}}, ("id", "object", "deleted")
    ),
    "ThreadMessage": obj(_MESSAGE_PROPS, tuple(_MESSAGE_PROPS)),
    "ThreadReply": obj(
        {**_MESSAGE_PROPS, "context": ANY_OBJECT},
        (*_MESSAGE_PROPS, "context"),
        description="The assistant's stored reply, with the history sent (context)",
    ),
    "ThreadMessageList": _list_of("ThreadMessage"),
    "ThreadExport": obj(
        {
            "object": {"const": "thread.export"},
            "thread": ref("Thread"),
            "messages": {"type": "array", "items": ref("ThreadMessage")},
        },
        ("object", "thread", "messages"),
    ),
    "Tool": obj(_TOOL_PROPS, tuple(_TOOL_PROPS)),
    "ToolWithSecret": obj({**_TOOL_PROPS, "signing_secret": STRING}, (*_TOOL_PROPS, "signing_secret")),
    "ToolUpdated": obj({**_TOOL_PROPS, "signing_secret": STRING}, tuple(_TOOL_PROPS)),
    "ToolList": _list_of("Tool"),
    "ToolDeleted": obj(
        {"id": _ID, "object": {"const": "tool.deleted"}, "deleted": {"const": True}}, ("id", "object", "deleted")
    ),
    "ModelList": {
        "anyOf": [
            obj({"object": {"const": "list"}, "data": {"type": "array", "items": _OPENAI_MODEL}}, ("object", "data")),
            obj(
                {
                    "data": {"type": "array", "items": _ANTHROPIC_MODEL},
                    "has_more": BOOLEAN,
                    "first_id": _NULLABLE_STR,
                    "last_id": _NULLABLE_STR,
                },
                ("data", "has_more"),
            ),
        ],
        "description": "OpenAI's list, or Anthropic's when the request has an anthropic-version header",
    },
    "Model": {
        "anyOf": [_OPENAI_MODEL, _ANTHROPIC_MODEL],
        "description": "OpenAI's model object, or Anthropic's when the request has an anthropic-version header",
    },
    "InputTokens": obj(
        {"input_tokens": INTEGER},
        ("input_tokens",),
        extra=True,
        description="The provider's count, or (header x-tollway-estimated: true) the gateway's estimate",
    ),
    "EmbeddingList": obj(
        {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": obj(
                    {
                        "object": {"const": "embedding"},
                        "index": INTEGER,
                        "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, STRING]},
                    },
                    ("object", "index", "embedding"),
                    extra=True,
                ),
            },
            "model": STRING,
            "usage": obj({"prompt_tokens": INTEGER, "total_tokens": INTEGER}, extra=True),
        },
        ("object", "data"),
        extra=True,
        description="The provider's embeddings (base64: little-endian float32)",
    ),
    "ProviderResponse": {
        "type": "object",
        "additionalProperties": True,
        "description": "the provider's own response body",
    },
    "ResponseObject": {
        "type": "object",
        "additionalProperties": True,
        "description": "an OpenAI Responses response object",
    },
    "ResponseDeleted": obj(
        {"id": _ID, "object": {"const": "response"}, "deleted": {"const": True}}, ("id", "object", "deleted")
    ),
    "ResponseItemList": obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ANY_OBJECT},
            "first_id": _NULLABLE_STR,
            "last_id": _NULLABLE_STR,
            "has_more": BOOLEAN,
        },
        ("object", "data", "first_id", "last_id", "has_more"),
    ),
}


def _all() -> dict[str, Schema]:
    from tollway.batches.openapi import BATCH_SCHEMAS
    from tollway.events.openapi import EVENT_SCHEMAS
    from tollway.jobs.openapi import JOB_SCHEMAS
    from tollway.keys.openapi import KEY_SCHEMAS  # (they use the helpers above)
    from tollway.search.openapi import SEARCH_SCHEMAS
    from tollway.wallet.openapi import WALLET_SCHEMAS

    return {
        **ERRORS,
        **REQUESTS,
        **RESOURCES,
        **KEY_SCHEMAS,
        **SEARCH_SCHEMAS,
        **WALLET_SCHEMAS,
        **EVENT_SCHEMAS,
        **JOB_SCHEMAS,
        **BATCH_SCHEMAS,
    }


SCHEMAS: dict[str, Schema] = _all()
