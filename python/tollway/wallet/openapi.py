"""The OpenAPI schemas of the wallet routes (merged into tollway.http.openapi_schemas.SCHEMAS)."""

from __future__ import annotations

from typing import Any

from tollway.http.openapi_schemas import INTEGER, STRING, nullable, obj, text

Schema = dict[str, Any]
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_USD: Schema = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1_000_000_000},
        {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,6})?$"},
    ]
}

_ENTRY_PROPS: dict[str, Schema] = {
    "id": STRING,
    "object": {"const": "wallet_entry"},
    "kind": {"enum": ["topup", "debit", "refund", "adjustment"]},
    "amount_micros": {**INTEGER, "description": "signed: debits and refunds are negative"},
    "amount_usd": {"type": "number"},
    "cause": STRING,
    "key_id": _NULLABLE_STR,
    "usage_event_id": _NULLABLE_STR,
    "stripe_object_id": _NULLABLE_STR,
    "stripe_event_id": _NULLABLE_STR,
    "created_at": INTEGER,
}
_BALANCE_PROPS: dict[str, Schema] = {
    "balance_micros": {**INTEGER, "description": "the sum of the wallet's entries (with calls settled since)"},
    "balance_usd": {"type": "number"},
    "reserved_micros": {**INTEGER, "description": "held by requests in flight"},
    "available_micros": INTEGER,
}
_ENTRY = obj(_ENTRY_PROPS, tuple(_ENTRY_PROPS))
_RECHARGE = obj(
    {
        "threshold_usd": {"type": "number"},
        "recharge_to_usd": {"type": "number"},
        "monthly_max_usd": {"type": "number"},
        "consecutive_failures": INTEGER,
        "payment_method_saved": {"type": "boolean"},
    },
    ("threshold_usd", "recharge_to_usd", "monthly_max_usd", "consecutive_failures", "payment_method_saved"),
)

WALLET_SCHEMAS: dict[str, Schema] = {
    "Wallet": obj(
        {
            "object": {"const": "wallet"},
            "account_id": STRING,
            **_BALANCE_PROPS,
            "auto_recharge": nullable(_RECHARGE),
            "last_topups": {"type": "array", "items": _ENTRY},
        },
        ("object", "account_id", *_BALANCE_PROPS, "auto_recharge", "last_topups"),
    ),
    "WalletEntry": obj(
        {**_ENTRY_PROPS, "wallet": obj(_BALANCE_PROPS, tuple(_BALANCE_PROPS))}, (*_ENTRY_PROPS, "wallet")
    ),
    "WalletLedger": obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ENTRY},
            "has_more": {"type": "boolean"},
            "next": _NULLABLE_STR,
        },
        ("object", "data", "has_more", "next"),
    ),
    "WalletAdjustment": obj(
        {
            "amount_usd": {
                "anyOf": [
                    {"type": "number", "minimum": -10_000_000, "maximum": 10_000_000, "not": {"const": 0}},
                    {"type": "string", "pattern": "^-?[0-9]{1,8}(\\.[0-9]{1,6})?$"},
                ],
                "description": "US dollars, whole micro-dollars, not 0; negative takes money out",
            },
            "reason": text(400, blank=False),
        },
        ("amount_usd", "reason"),
    ),
    "WalletTopupRequest": obj(
        {
            "amount_usd": {
                "anyOf": [
                    {"type": "number", "minimum": 0.5, "maximum": 999_999.99},
                    {"type": "string", "pattern": "^[0-9]{1,6}(\\.[0-9]{1,2})?$"},
                ],
                "description": "US dollars in whole cents, $0.50 to $999,999.99",
            },
            "success_url": {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^https?://[^\\x00]+$"},
            "cancel_url": {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^https?://[^\\x00]+$"},
        },
        ("amount_usd", "success_url", "cancel_url"),
    ),
    "WalletTopup": obj(
        {
            "object": {"const": "wallet_topup"},
            "checkout_session_id": STRING,
            "url": _NULLABLE_STR,
            "amount_usd": {"type": "number"},
            "amount_micros": INTEGER,
            "status": _NULLABLE_STR,
        },
        ("object", "checkout_session_id", "url", "amount_usd", "amount_micros", "status"),
    ),
    "AutoRechargeRequest": obj(
        {
            name: {**_USD, "description": "US dollars"}
            for name in ("threshold_usd", "recharge_to_usd", "monthly_max_usd")
        },
        ("threshold_usd", "recharge_to_usd", "monthly_max_usd"),
    ),
    "AutoRecharge": obj(
        {
            "object": {"const": "wallet.auto_recharge"},
            "enabled": {"type": "boolean"},
            "threshold_usd": {"type": "number"},
            "recharge_to_usd": {"type": "number"},
            "monthly_max_usd": {"type": "number"},
            "consecutive_failures": INTEGER,
            "payment_method_saved": {"type": "boolean"},
        },
        ("object", "enabled"),
    ),
    "StripeEvent": obj(
        {"id": STRING, "object": {"const": "event"}, "type": STRING, "data": obj({"object": {"type": "object"}})},
        ("id", "type", "data"),
        extra=True,
    ),
    "StripeWebhookResult": obj({"received": {"type": "boolean"}, "result": STRING}, ("received", "result")),
    "InvoiceItemsRequest": obj(
        {
            "from_ms": {"type": "integer", "minimum": 0, "maximum": 2**53},
            "to_ms": {"type": "integer", "minimum": 0, "maximum": 2**53},
            "margin_percent": {"type": "number", "minimum": 0, "maximum": 1000},
        },
        ("from_ms", "to_ms"),
    ),
    "InvoiceItemList": obj(
        {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": obj(
                    {
                        "object": {"const": "billing.invoice_item"},
                        "key_id": STRING,
                        "stripe_customer_id": STRING,
                        "invoice_item_id": STRING,
                        "amount_cents": INTEGER,
                        "requests": INTEGER,
                        "created": {"type": "boolean"},
                    },
                    (
                        "object",
                        "key_id",
                        "stripe_customer_id",
                        "invoice_item_id",
                        "amount_cents",
                        "requests",
                        "created",
                    ),
                ),
            },
            "has_more": {"type": "boolean"},
        },
        ("object", "data", "has_more"),
    ),
    "MeterExport": obj(
        {
            "object": {"const": "billing.meter_export"},
            "sent": INTEGER,
            "already": INTEGER,
            "skipped": INTEGER,
            "last_usage_id": INTEGER,
        },
        ("object", "sent", "already", "skipped", "last_usage_id"),
    ),
}
