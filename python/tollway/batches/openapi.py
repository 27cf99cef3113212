"""The OpenAPI entries of the batch routes: their schemas (merged into
tollway.http.openapi_schemas.SCHEMAS) and their operations (into tollway.http.openapi.OPERATIONS)."""

from __future__ import annotations

from typing import Any, Callable

from tollway.http.openapi_schemas import ANY_OBJECT, BOOLEAN, INTEGER, METADATA, STRING, nullable, obj, ref

Schema = dict[str, Any]
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
_RFC3339: Schema = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
_ENDPOINT: Schema = {"enum": ["/v1/chat/completions", "/v1/responses"]}

_MESSAGE_BATCH_PROPS: dict[str, Schema] = {
    "id": STRING,
    "type": {"const": "message_batch"},
    "processing_status": {"enum": ["in_progress", "canceling", "ended"]},
    "request_counts": obj(
        {name: INTEGER for name in ("processing", "succeeded", "errored", "canceled", "expired")},
        ("processing", "succeeded", "errored", "canceled", "expired"),
    ),
    "ended_at": _NULLABLE_TIME,
    "created_at": _RFC3339,
    "expires_at": _RFC3339,
    "archived_at": _NULLABLE_TIME,
    "cancel_initiated_at": _NULLABLE_TIME,
    "results_url": {**_NULLABLE_STR, "description": "the results' JSONL, once processing ended"},
}
_MESSAGE_BATCH = obj(_MESSAGE_BATCH_PROPS, tuple(_MESSAGE_BATCH_PROPS))

_FILE_PROPS: dict[str, Schema] = {
    "id": STRING,
    "object": {"const": "file"},
    "bytes": INTEGER,
    "created_at": INTEGER,
    "filename": STRING,
    "purpose": {"enum": ["batch", "batch_output"]},
    "status": {"const": "processed"},
    "expires_at": _NULLABLE_INT,
    "status_details": _NULLABLE_STR,
}
_FILE = obj(_FILE_PROPS, tuple(_FILE_PROPS))

_BATCH_PROPS: dict[str, Schema] = {
    "id": STRING,
    "object": {"const": "batch"},
    "endpoint": STRING,
    "errors": {"type": "null"},
    "input_file_id": STRING,
    "completion_window": {"const": "24h"},
    "status": {
        "enum": ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"]
    },  # fmt: skip
    "output_file_id": _NULLABLE_STR,
    "error_file_id": _NULLABLE_STR,
    "created_at": INTEGER,
    "in_progress_at": _NULLABLE_INT,
    "expires_at": _NULLABLE_INT,
    "finalizing_at": _NULLABLE_INT,
    "completed_at": _NULLABLE_INT,
    "failed_at": _NULLABLE_INT,
    "expired_at": _NULLABLE_INT,
    "cancelling_at": _NULLABLE_INT,
    "cancelled_at": _NULLABLE_INT,
    "request_counts": obj(
        {"total": INTEGER, "completed": INTEGER, "failed": INTEGER}, ("total", "completed", "failed")
    ),
    "metadata": nullable(ANY_OBJECT),
}
_BATCH = obj(_BATCH_PROPS, tuple(_BATCH_PROPS))


def _list(item: Schema, object_field: bool) -> Schema:
    props: dict[str, Schema] = {
        "data": {"type": "array", "items": item},
        "has_more": BOOLEAN,
        "first_id": _NULLABLE_STR,
        "last_id": _NULLABLE_STR,
    }
    if object_field:
        props = {"object": {"const": "list"}, **props}
    return obj(props, tuple(props))


BATCH_SCHEMAS: dict[str, Schema] = {
    "MessageBatch": _MESSAGE_BATCH,
    "MessageBatchList": _list(_MESSAGE_BATCH, False),
    "MessageBatchDeleted": obj({"id": STRING, "type": {"const": "message_batch_deleted"}}, ("id", "type")),
    "MessageBatchCreate": obj(
        {
            "requests": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {
                        "custom_id": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                        "params": ref("MessagesRequest"),
                    },
                    ("custom_id", "params"),
                ),
                "description": "each request a job of POST /v1/messages (no stream); custom_ids unique",
            }
        },
        ("requests",),
    ),
    "File": _FILE,
    "FileList": _list(_FILE, True),
    "FileDeleted": obj({"id": STRING, "object": {"const": "file"}, "deleted": BOOLEAN}, ("id", "object", "deleted")),
    "FileUpload": obj(
        {
            "file": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "JSONL: one {custom_id, method: POST, url, body} per line",
            },
            "purpose": {"const": "batch"},
        },
        ("file", "purpose"),
    ),  # fmt: skip
    "Batch": _BATCH,
    "BatchList": _list(_BATCH, True),
    "BatchCreate": obj(
        {
            "input_file_id": {"type": "string", "minLength": 1},
            "endpoint": _ENDPOINT,
            "completion_window": {"const": "24h"},
            "metadata": nullable(METADATA),
            "output_expires_after": ANY_OBJECT,
        },
        ("input_file_id", "endpoint", "completion_window"),
    ),
}


def batch_operations(op: Callable[..., Any], auth: tuple[int, ...], body: tuple[int, ...], limit: Any, cursor: Schema) -> dict[tuple[str, str], Any]:  # fmt: skip
    """The batch routes' entries, built with tollway.http.openapi's ``Op`` and helpers."""
    anthropic = {"tag": "batches", "shape": "anthropic"}
    openai = {"tag": "batches"}
    return {
        ("POST", "/v1/messages/batches"): op(
            "Anthropic Message Batches: each request a job of /v1/messages; every request's worst case is held now "
            "(402 if the key cannot afford them all: nothing queued)",
            {200: "MessageBatch"}, (*auth, *body, 402), "MessageBatchCreate", **anthropic,
        ),
        ("GET", "/v1/messages/batches"): op(
            "The key's message batches (an admin key: the account's), newest first",
            {200: "MessageBatchList"}, (*auth, 400),
            query={"limit": limit(20, 1000), "after_id": cursor, "before_id": cursor}, **anthropic,
        ),
        ("GET", "/v1/messages/batches/{message_batch_id}"): op(
            "A message batch: its status and counts, from its jobs", {200: "MessageBatch"}, (*auth, 404), **anthropic
        ),
        ("DELETE", "/v1/messages/batches/{message_batch_id}"): op(
            "Delete an ended message batch and its results (400 while it is processing: cancel it first)",
            {200: "MessageBatchDeleted"}, (*auth, 400, 404), **anthropic,
        ),
        ("POST", "/v1/messages/batches/{message_batch_id}/cancel"): op(
            "Cancel a message batch: its queued requests canceled (their holds released), running ones finish",
            {200: "MessageBatch"}, (*auth, 404), **anthropic,
        ),
        ("GET", "/v1/messages/batches/{message_batch_id}/results"): op(
            "The results, JSONL in request order ({custom_id, result}), once processing ended",
            {200: "jsonl:MessageBatchResults"}, (*auth, 400, 404), **anthropic,
        ),
        ("POST", "/v1/files"): op(
            "Upload a batch input file (multipart: file, purpose \"batch\"), checked line by line",
            {200: "File"}, (*auth, *body), "multipart:FileUpload", **openai,
        ),
        ("GET", "/v1/files"): op(
            "The key's files (an admin key: the account's): batch inputs and batch outputs",
            {200: "FileList"}, (*auth, 400),
            query={"purpose": {"type": "string", "pattern": "^[^\\x00]*$"}, "limit": limit(100, 10_000),
                   "after": cursor, "order": {"enum": ["asc", "desc"]}}, **openai,
        ),  # fmt: skip
        ("GET", "/v1/files/{file_id}"): op("A file", {200: "File"}, (*auth, 404), **openai),
        ("DELETE", "/v1/files/{file_id}"): op("Delete a file", {200: "FileDeleted"}, (*auth, 404), **openai),
        ("GET", "/v1/files/{file_id}/content"): op(
            "A file's content: a batch input, or a batch's output / error JSONL built from its jobs",
            {200: "jsonl:FileContent"}, (*auth, 404), **openai,
        ),
        ("POST", "/v1/batches"): op(
            "OpenAI Batch: each line of the input file a job; every line's worst case is held now "
            "(402 if the key cannot afford them all: nothing queued)",
            {200: "Batch"}, (*auth, *body, 402, 404), "BatchCreate", **openai,
        ),
        ("GET", "/v1/batches"): op(
            "The key's batches (an admin key: the account's), newest first, in cursor pages",
            {200: "BatchList"}, (*auth, 400), query={"limit": limit(20, 100), "after": cursor}, **openai,
        ),
        ("GET", "/v1/batches/{batch_id}"): op(
            "A batch: its status and counts, from its jobs", {200: "Batch"}, (*auth, 404), **openai
        ),
        ("POST", "/v1/batches/{batch_id}/cancel"): op(
            "Cancel a batch: its queued lines cancelled (their holds released), running ones finish",
            {200: "Batch"}, (*auth, 404), **openai,
        ),
    }  # fmt: skip
