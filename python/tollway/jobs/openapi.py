"""The OpenAPI schemas of the job routes (merged into tollway.http.openapi_schemas.SCHEMAS)."""

from __future__ import annotations

from typing import Any

from tollway.http.openapi_schemas import ANY_OBJECT, INTEGER, METADATA, STRING, WEBHOOK_URL, nullable, obj

Schema = dict[str, Any]
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
_STATUS: Schema = {"enum": ["queued", "running", "succeeded", "failed", "cancelled", "expired"]}
_ENDPOINT: Schema = {
    "type": "string",
    "pattern": "^(/v1/chat/completions|/v1/messages|/v1/responses|/v1/threads/[A-Za-z0-9_-]{1,40}/messages)$",
    "description": "the synchronous route the job runs: /v1/chat/completions, /v1/messages, /v1/responses "
    "or /v1/threads/{thread_id}/messages",
}

_JOB_PROPS: dict[str, Schema] = {
    "id": STRING,
    "object": {"const": "job"},
    "endpoint": STRING,
    "status": _STATUS,
    "key_id": STRING,
    "metadata": nullable(ANY_OBJECT),
    "webhook_url": _NULLABLE_STR,
    "webhook": nullable(
        obj(
            {"attempts": INTEGER, "delivered_at": _NULLABLE_INT, "last_status": _NULLABLE_INT},
            ("attempts", "delivered_at", "last_status"),
        )
    ),
    "attempts": {**INTEGER, "description": "attempts started (a crash or a lapsed lease starts another)"},
    "status_code": {**_NULLABLE_INT, "description": "the HTTP status the synchronous call answered"},
    "result": {"description": "exactly the body the synchronous call answers (succeeded)"},
    "error": {"description": "the error body the synchronous call answers (failed)"},
    "held_micros": {**INTEGER, "description": "held for the job until its call settles (0 once it ended)"},
    "batch_id": _NULLABLE_STR,
    "custom_id": _NULLABLE_STR,
    "created_at": INTEGER,
    "started_at": _NULLABLE_INT,
    "finished_at": _NULLABLE_INT,
    "expires_at": INTEGER,
}
_JOB = obj(_JOB_PROPS, tuple(_JOB_PROPS))
_JOB_CREATED = obj(
    {**_JOB_PROPS, "webhook_secret": {**STRING, "description": "signs the webhook deliveries; shown this once"}},
    tuple(_JOB_PROPS),
)

JOB_SCHEMAS: dict[str, Schema] = {
    "Job": _JOB,
    "JobCreated": _JOB_CREATED,
    "JobCreate": obj(
        {
            "endpoint": _ENDPOINT,
            "body": {**ANY_OBJECT, "description": "the synchronous call's body (no stream)"},
            "metadata": nullable(METADATA),
            "webhook_url": nullable(WEBHOOK_URL),
        },
        ("endpoint", "body"),
    ),
    "JobList": obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _JOB},
            "first_id": _NULLABLE_STR,
            "last_id": _NULLABLE_STR,
            "has_more": {"type": "boolean"},
        },
        ("object", "data", "first_id", "last_id", "has_more"),
    ),
}
