"""The OpenAPI schemas and operations of the webhook-endpoint routes (merged into
tollway.http.openapi_schemas.SCHEMAS and tollway.http.openapi.OPERATIONS)."""

from __future__ import annotations

from typing import Any, Callable

from tollway.events.outbox import EVENT_TYPES
from tollway.http.openapi_schemas import BOOLEAN, INTEGER, STRING, obj, ref

Schema = dict[str, Any]
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
_URL: Schema = {
    "type": "string",
    "maxLength": 2048,
    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(:[0-9]{1,4})?(/[!$-;=?-~]*)?$",
    "description": "absolute http:// or https:// URL (a private or loopback address only with [outbound] allow_private)",
}
_TYPES: Schema = {
    "type": "array",
    "minItems": 1,
    "maxItems": len(EVENT_TYPES) + 1,
    "items": {"enum": [*EVENT_TYPES, "*"]},
}
_DESCRIPTION: Schema = {"type": "string", "maxLength": 1000, "pattern": "^[^\\x00]*$"}

_ENDPOINT_PROPS: dict[str, Schema] = {
    "id": STRING,
    "object": {"const": "webhook_endpoint"},
    "url": STRING,
    "description": STRING,
    "events": {"type": "array", "items": STRING},
    "disabled": BOOLEAN,
    "disabled_reason": _NULLABLE_STR,
    "previous_secret_expires_at": {
        **_NULLABLE_INT,
        "description": "during a rotation: until when the old secret signs too",
    },
    "created_at": INTEGER,
    "updated_at": INTEGER,
}
_SECRET: Schema = {"type": "string", "description": "whsec_...: the Standard Webhooks signing secret, shown only here"}
_ATTEMPT = obj(
    {
        "attempt": INTEGER,
        "status": {**_NULLABLE_INT, "description": "the HTTP status; null when no answer came"},
        "error": _NULLABLE_STR,
        "latency_ms": INTEGER,
        "response_excerpt": _NULLABLE_STR,
        "attempted_at": INTEGER,
        "next_attempt_at": _NULLABLE_INT,
    },
    ("attempt", "status", "error", "latency_ms", "response_excerpt", "attempted_at", "next_attempt_at"),
)
_DELIVERY_PROPS: dict[str, Schema] = {
    "id": STRING,
    "object": {"const": "webhook_delivery"},
    "event_id": {**STRING, "description": "msg_...: the webhook-id header, the same on every attempt"},
    "event_type": STRING,
    "state": {"enum": ["pending", "succeeded", "failed"]},
    "attempt_count": INTEGER,
    "next_attempt_at": _NULLABLE_INT,
    "last_status": _NULLABLE_INT,
    "created_at": INTEGER,
    "attempts": {"type": "array", "items": _ATTEMPT},
}


def _list(item: str) -> Schema:
    props = {
        "object": {"const": "list"},
        "data": {"type": "array", "items": ref(item)},
        "has_more": BOOLEAN,
        "first_id": _NULLABLE_STR,
        "last_id": _NULLABLE_STR,
    }
    return obj(props, tuple(props))


EVENT_SCHEMAS: dict[str, Schema] = {
    "WebhookEndpoint": obj(_ENDPOINT_PROPS, tuple(_ENDPOINT_PROPS)),
    "WebhookEndpointWithSecret": obj({**_ENDPOINT_PROPS, "secret": _SECRET}, (*_ENDPOINT_PROPS, "secret")),
    "WebhookEndpointUpdated": obj({**_ENDPOINT_PROPS, "secret": _SECRET}, tuple(_ENDPOINT_PROPS)),
    "WebhookEndpointList": _list("WebhookEndpoint"),
    "WebhookEndpointCreate": obj({"url": _URL, "events": _TYPES, "description": _DESCRIPTION}, ("url", "events")),
    "WebhookEndpointUpdate": obj(
        {
            "url": _URL,
            "events": _TYPES,
            "description": _DESCRIPTION,
            "disabled": BOOLEAN,
            "rotate_secret": BOOLEAN,
            "rotation_grace_seconds": {"type": "number", "minimum": 0, "maximum": 7 * 24 * 3600, "default": 86400},
        }
    ),
    "WebhookEndpointDeleted": obj(
        {"id": STRING, "object": {"const": "webhook_endpoint.deleted"}, "deleted": {"const": True}},
        ("id", "object", "deleted"),
    ),
    "WebhookDelivery": obj(_DELIVERY_PROPS, tuple(_DELIVERY_PROPS)),
    "WebhookDeliveryList": _list("WebhookDelivery"),
    "WebhookRedelivery": obj(
        {
            "id": STRING,
            "object": {"const": "webhook_delivery"},
            "state": {"const": "pending"},
            "previous_state": {"enum": ["pending", "succeeded", "failed"]},
        },
        ("id", "object", "state", "previous_state"),
    ),
    "WebhookTest": obj(
        {"object": {"const": "webhook_test"}, "event_id": STRING, "delivery_id": STRING},
        ("object", "event_id", "delivery_id"),
    ),
}


def operations(op: Callable[..., Any], admin: tuple[int, ...], body: tuple[int, ...], page: dict[str, Schema]) -> dict:
    """The routes' entries, built with http.openapi's ``Op`` (passed in: that module imports this one)."""
    base = "/v1/webhook-endpoints"
    one = base + "/{endpoint_id}"
    return {
        ("POST", base): op(
            "Register an endpoint for account events (the signing secret is in this response only)",
            {201: "WebhookEndpointWithSecret"}, (*admin, *body), "WebhookEndpointCreate", tag="events",
        ),
        ("GET", base): op("The account's endpoints, oldest first", {200: "WebhookEndpointList"}, (*admin, 400),
                          tag="events", query=page),
        ("GET", one): op("Read an endpoint", {200: "WebhookEndpoint"}, (*admin, 404), tag="events"),
        ("PATCH", one): op(
            "Change an endpoint: url, events, description, disabled; rotate_secret (both secrets sign for the grace)",
            {200: "WebhookEndpointUpdated"}, (*admin, *body, 404), "WebhookEndpointUpdate", tag="events",
        ),
        ("DELETE", one): op("Delete an endpoint and its deliveries log", {200: "WebhookEndpointDeleted"},
                            (*admin, 404), tag="events"),
        ("GET", one + "/deliveries"): op(
            "The endpoint's deliveries, newest first, each with its attempts (status, latency, response excerpt)",
            {200: "WebhookDeliveryList"}, (*admin, 400, 404), tag="events", query=page,
        ),
        ("POST", one + "/deliveries/{delivery_id}/redeliver"): op(
            "Deliver again, now (the same event and webhook-id)", {202: "WebhookRedelivery"}, (*admin, 404, 409),
            tag="events",
        ),
        ("POST", one + "/test"): op(
            "Send a webhook.test event to this endpoint", {202: "WebhookTest"}, (*admin, 404, 409), tag="events"
        ),
    }  # fmt: skip
