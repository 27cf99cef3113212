"""The OpenAPI schemas of the key routes and the key policy (merged into tollway.http.openapi_schemas.SCHEMAS)."""

from __future__ import annotations

from typing import Any

from tollway.http.limits import MAX_NAME_CHARS, MAX_SPEND_USD
from tollway.http.openapi_schemas import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    METADATA,
    SPEND_USD,
    STRING,
    _list_of,
    nullable,
    obj,
    text,
)
from tollway.policy.fields import MAX_EXPIRES_AT, MAX_MODELS, MAX_TAGS, RATE_RANGES
from tollway.policy.windows import PERIODS

Schema = dict[str, Any]
_ID: Schema = {"type": "string"}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_USD: Schema = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_SPEND_USD},
        {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,6})?$"},
    ]
}
_RATES: Schema = nullable(
    obj({name: nullable({"type": "integer", "minimum": 1, "maximum": top}) for name, top in RATE_RANGES.items()})
)
_NAMES: Schema = {"type": "array", "maxItems": MAX_MODELS, "items": text(200, blank=False)}
_POLICY_FIELDS: dict[str, Schema] = {
    "limits": nullable(
        {
            "type": "array",
            "maxItems": len(PERIODS),
            "description": "spend windows; each period at most once (total = max_spend_usd)",
            "items": obj({"max_spend_usd": _USD, "period": {"enum": list(PERIODS)}}, ("max_spend_usd",)),
        }
    ),
    "budget_period": {"enum": list(PERIODS), "description": "with max_spend_usd: the window it applies to"},
    "rate_limits": _RATES,
    "model_limits": nullable(
        {
            "type": "object",
            "maxProperties": MAX_MODELS,
            "additionalProperties": _RATES,
            "description": "model or glob -> limits",
        }
    ),
    "allowed_models": nullable({**_NAMES, "description": "model names or globs (claude-*); null: every model"}),
    "tags": nullable({"type": "array", "maxItems": MAX_TAGS, "items": text(64, blank=False)}),
    "expires_at": nullable({"type": "integer", "minimum": 0, "maximum": MAX_EXPIRES_AT, "description": "Unix ms"}),
    "disabled": BOOLEAN,
}
_WINDOW = obj(
    {
        "period": {"enum": list(PERIODS)},
        "max_spend_usd": {"type": "number"},
        "max_spend_micros": INTEGER,
        "credit_micros": INTEGER,
        "spent_micros": INTEGER,
        "reserved_micros": INTEGER,
        "remaining_micros": INTEGER,
        "window_start": _NULLABLE_INT,
        "resets_at": {**_NULLABLE_INT, "description": "Unix ms; null for the total"},
    },
    ("period", "max_spend_micros", "spent_micros", "remaining_micros", "resets_at"),
)
_LIMITS: Schema = {"type": "array", "items": _WINDOW}
_API_KEY_PROPS: dict[str, Schema] = {
    "id": _ID,
    "object": {"const": "api_key"},
    "name": STRING,
    "scope": {"enum": ["standard", "admin"]},
    "max_spend_usd": {"type": ["number", "null"]},
    "max_spend_micros": _NULLABLE_INT,
    "spent_micros": INTEGER,
    "reserved_micros": INTEGER,
    "end_user_id": _NULLABLE_STR,
    "metadata": ANY_OBJECT,
    "limits": _LIMITS,
    "rate_limits": {"type": ["object", "null"]},
    "model_limits": ANY_OBJECT,
    "allowed_models": {"type": ["array", "null"]},
    "tags": {"type": "array", "items": STRING},
    "expires_at": _NULLABLE_INT,
    "disabled": BOOLEAN,
    "previous_secret_expires_at": _NULLABLE_INT,
    "secret_hint": STRING,
    "created_at": INTEGER,
    "revoked_at": _NULLABLE_INT,
}
_USAGE_EVENT = obj(
    {
        "request_id": STRING, "model": STRING, "status": INTEGER, "outcome": STRING, "stream": BOOLEAN,
        "latency_ms": INTEGER, "cost_micros": INTEGER, "input_tokens": INTEGER, "output_tokens": INTEGER,
        "cache_read_tokens": INTEGER, "cache_write_tokens": INTEGER, "estimated": BOOLEAN, "created_at": INTEGER,
    },
    ("request_id", "model", "status", "outcome", "stream", "cost_micros", "created_at"),
)  # fmt: skip
_CREDIT_PROPS: dict[str, Schema] = {
    "id": _ID, "object": {"const": "key_credit"}, "key_id": _ID, "amount_micros": INTEGER,
    "amount_usd": {"type": "number"}, "period": {"enum": list(PERIODS)}, "window_start": _NULLABLE_INT,
    "granted_by": _ID, "created_at": INTEGER,
}  # fmt: skip

KEY_SCHEMAS: dict[str, Schema] = {
    "KeyCreate": obj(
        {
            "name": text(MAX_NAME_CHARS, blank=False),
            "scope": {"enum": ["standard", "admin"], "default": "standard"},
            "max_spend_usd": SPEND_USD,
            "end_user_id": nullable(text(MAX_NAME_CHARS, blank=False)),
            "metadata": nullable(METADATA),
            **_POLICY_FIELDS,
        },
        ("name",),
    ),
    "KeyUpdate": obj(
        {
            "name": text(MAX_NAME_CHARS, blank=False),
            "max_spend_usd": SPEND_USD,
            "metadata": nullable(METADATA),
            **_POLICY_FIELDS,
        }
    ),
    "KeyRotate": obj({"grace_seconds": {"type": "number", "minimum": 0, "maximum": 30 * 24 * 3600}}),
    "KeyCreditRequest": obj(
        {"amount_usd": {**_USD, "description": "more than 0"}, "period": {"enum": list(PERIODS), "default": "total"}},
        ("amount_usd",),
    ),
    "AccountUpdate": obj(
        {
            "name": text(200, blank=False),
            "timezone": nullable({"type": "string", "maxLength": 64, "pattern": "^[^\\x00]*$"}),
        }
    ),
    "ApiKey": obj(_API_KEY_PROPS, tuple(_API_KEY_PROPS)),
    "ApiKeyCreated": obj({**_API_KEY_PROPS, "secret": STRING}, (*_API_KEY_PROPS, "secret")),
    "ApiKeyList": _list_of("ApiKey", first_id=False),
    "KeyUsage": obj(
        {
            "object": {"const": "key_usage"},
            "key_id": _ID,
            "total_cost_micros": INTEGER,
            "max_spend_micros": _NULLABLE_INT,
            "reserved_micros": INTEGER,
            "remaining_micros": _NULLABLE_INT,
            "limits": _LIMITS,
            "events": {"type": "array", "items": _USAGE_EVENT},
        },
        ("object", "key_id", "total_cost_micros", "max_spend_micros", "reserved_micros", "remaining_micros", "events"),
    ),
    "KeyCredit": obj(_CREDIT_PROPS, tuple(_CREDIT_PROPS)),
    "KeyCreditList": obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": obj(_CREDIT_PROPS, tuple(_CREDIT_PROPS))},
            "has_more": BOOLEAN,
        },
        ("object", "data", "has_more"),
    ),
    "KeyQuota": obj(
        {
            "object": {"const": "api_key_quota"},
            "id": _ID,
            "name": STRING,
            "scope": STRING,
            "end_user_id": _NULLABLE_STR,
            "spent_micros": INTEGER,
            "reserved_micros": INTEGER,
            "limits": _LIMITS,
            "rate_limits": {"type": ["object", "null"]},
            "model_limits": ANY_OBJECT,
            "rate_limit_state": {"type": "array", "items": ANY_OBJECT},
            "allowed_models": {"type": ["array", "null"]},
            "expires_at": _NULLABLE_INT,
            "tags": {"type": "array"},
        },
        ("object", "id", "limits", "rate_limit_state", "allowed_models"),
    ),  # fmt: skip
    "Account": obj(
        {"id": _ID, "object": {"const": "account"}, "name": STRING, "timezone": STRING, "created_at": INTEGER},
        ("id", "object", "name", "timezone", "created_at"),
    ),
}
